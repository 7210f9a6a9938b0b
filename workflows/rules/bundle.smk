# The bundled default model (protrnn/pretrained/): `snakemake bundle` trains the config's `bundle` entry on the
# configured data through the grid's own train and evaluate rules (from the pretrained encoder when it sets
# `pretrained: true`), then installs the weights with a record of how they were trained, on which data (sources,
# chains kept, leakage removed per test set; the pretraining labels and encoder when used) and how they score on
# every test set next to the baselines.
#   snakemake bundle --cores 2 --configfile workflows/config.bundle.yaml   # the shipped model: the long-range recipe
#       (longrange config, pretrained encoder, default + three JSONL structure sets; about 3 h on 2 CPU cores)
#   snakemake bundle --cores 2                                            # a quick one on the default data (15 min)


rule bundle:
    input:
        unpack(bundle_inputs),
    output:
        model="protrnn/pretrained/model.json",
        weights="protrnn/pretrained/model.safetensors",
        record="protrnn/pretrained/evaluation.json",
        card="protrnn/pretrained/README.md",
    params:
        model=lambda wc, input: str(Path(input.model).parent),
        evaluation=lambda wc, input: str(Path(input.evaluation).parent),
        baselines=lambda wc, input: str(Path(input.baselines).parent),
        records=bundle_records,
        outdir=parent_of("model"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/bundle.log",
    benchmark:
        f"{RESULTS}/benchmarks/bundle.tsv"
    shell:
        "\"$PROTRNN_PY\" workflows/scripts/bundle_model.py {params.model} {params.evaluation} {params.baselines}"
        " {params.outdir} {params.records} > {log} 2>&1"
