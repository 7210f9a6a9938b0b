# The bundled default model (protrnn/pretrained/): `snakemake bundle` trains the config's `bundle` entry on the
# configured data through the grid's own train and evaluate rules (from the pretrained encoder when it sets
# `pretrained: true`), then installs the weights with a record of how they were trained, on which data (sources,
# chains kept, leakage removed per test set; the pretraining labels and encoder when used) and how they score on
# every test set next to the baselines.
#   snakemake bundle --cores 2 --configfile workflows/config.bundle.yaml   # the shipped model: the long-range recipe
#       (longrange config, pretrained encoder, default + three JSONL structure sets; about 3 h on 2 CPU cores)
#   snakemake bundle --cores 2                                            # a quick one on the default data (15 min)
# With `bundle.seeds` the bundle is an ensemble: one training run per seed (`bundle/seed<S>`, side by side on the
# cores), combined by rule bundle_ensemble (`protrnn ensemble`), evaluated as one model and installed as
# protrnn/pretrained/ensemble.json + member-K/. With `bundle.encoder_per_seed` member S starts from an encoder
# pretrained at seed S (rule pretrain_fit, pretrain/encoder_seed<S>; the member at pretrain.seed from pretrain/encoder).
# The rule's output is <results>/bundle/installed.json, a copy of the installed record: protrnn/pretrained/ is not a
# Snakemake output, because Snakemake deletes a job's outputs before it runs, and a failed install would then leave
# the package without its model (bundle_model.py swaps the folder in whole once the new bundle is complete).
# The installed record (protrnn/pretrained/evaluation.json; an install ends it with the weights' SHA-256) is an input: once
# another results folder's bundle, or a checkout, has replaced the installed model, it is newer than this folder's
# copy and differs from it, so `snakemake bundle` installs this folder's model again (results A, then B, then A
# installs A the third time); while the installed model is this folder's there is nothing to do.


rule bundle_ensemble:
    input:
        members=[f"{RESULTS}/models/{run}/model.json" for run in BUNDLE_MEMBER_RUNS],
    output:
        f"{RESULTS}/ensembles/bundle/ensemble.json",
    params:
        members=lambda wc, input: " ".join(shlex.quote(str(Path(m).parent)) for m in input.members),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/bundle_ensemble.log",
    benchmark:
        f"{RESULTS}/benchmarks/bundle_ensemble.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn ensemble {params.members} -o {params.outdir} > {log} 2>&1"


rule bundle:
    input:
        unpack(bundle_inputs),
    output:
        record=BUNDLE_RECORD,
    params:
        model=lambda wc, input: str(Path(input.model).parent),
        evaluation=lambda wc, input: str(Path(input.evaluation).parent),
        baselines=lambda wc, input: str(Path(input.baselines).parent),
        records=bundle_records,
        outdir=BUNDLE_DIR,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/bundle.log",
    benchmark:
        f"{RESULTS}/benchmarks/bundle.tsv"
    shell:
        "\"$PROTRNN_PY\" \"$PROTRNN_SCRIPTS/bundle_model.py\" {params.model} {params.evaluation} {params.baselines}"
        " {params.outdir} {params.records} > {log} 2>&1 && cp {params.outdir}/evaluation.json {output.record}"
