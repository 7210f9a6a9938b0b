# The bundled default model (protrnn/pretrained/): `snakemake bundle --cores 2` trains the `bundle` config (default:
# BiLSTM + dilated ResNet head, 15 minutes) on the configured data through the grid's own train and evaluate rules,
# then installs the weights with a record of how they were trained and how they score on every test set.


rule bundle:
    input:
        model=f"{RESULTS}/models/bundle/model.json",
        weights=f"{RESULTS}/models/bundle/model.safetensors",
        evaluation=f"{RESULTS}/evaluation/bundle/summary.json",
        baselines=f"{RESULTS}/evaluation/baselines/summary.json",
    output:
        model="protrnn/pretrained/model.json",
        weights="protrnn/pretrained/model.safetensors",
        record="protrnn/pretrained/evaluation.json",
        card="protrnn/pretrained/README.md",
    params:
        model=lambda wc, input: str(Path(input.model).parent),
        evaluation=lambda wc, input: str(Path(input.evaluation).parent),
        baselines=lambda wc, input: str(Path(input.baselines).parent),
        outdir=parent_of("model"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/bundle.log",
    benchmark:
        f"{RESULTS}/benchmarks/bundle.tsv"
    shell:
        "\"$PROTRNN_PY\" workflows/scripts/bundle_model.py {params.model} {params.evaluation} {params.baselines}"
        " {params.outdir} > {log} 2>&1"
