# Predictions for the FASTA files of `predict.fasta`: each file is split into shards, predicted in parallel, gathered.


scattergather:
    shard=config["predict"].get("shards", 2),


rule split_fasta:
    """Validate the FASTA and split it round-robin; record IDs become unique safe names over the whole file."""
    input:
        lambda wc: PREDICT_FASTA[wc.fasta],
    output:
        shards=scatter.shard(f"{RESULTS}/predict/{{{{fasta}}}}/shards/{{scatteritem}}.fasta"),
        names=f"{RESULTS}/predict/{{fasta}}/names.tsv",
    params:
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/predict/{{fasta}}.split.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{fasta}}.split.tsv"
    shell:
        "\"$PROTRNN_PY\" \"$PROTRNN_SCRIPTS/split_fasta.py\" {input:q} --names {output.names} {output.shards} > {log} 2>&1"


rule predict_shard:
    """Predict one shard; a shard left empty (a file with fewer records than predict.shards) gives an empty folder."""
    input:
        fasta=f"{RESULTS}/predict/{{fasta}}/shards/{{scatteritem}}.fasta",
        model=f"{RESULTS}/models/{PREDICT_RUN}/model.json",
    output:
        directory(f"{RESULTS}/predict/{{fasta}}/shards/{{scatteritem}}"),
    params:
        model=lambda wc, input: str(Path(input.model).parent),
    threads: config["train"].get("threads", 2)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else 1,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/predict/{{fasta}}.{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{fasta}}.{{scatteritem}}.tsv"
    shell:
        "if [ -s {input.fasta} ]; then"
        " OMP_NUM_THREADS={threads} \"$PROTRNN_PY\" -m protrnn predict {input.fasta} -o {output} --model {params.model}"
        " --no-progress > {log} 2>&1;"
        " else mkdir -p {output} && echo 'empty shard: the file has fewer records than predict.shards' > {log}; fi"


rule gather_predictions:
    """One directory per FASTA: every record's RR/npz files and one summary in the original record order."""
    input:
        shards=gather.shard(f"{RESULTS}/predict/{{{{fasta}}}}/shards/{{scatteritem}}"),
        names=f"{RESULTS}/predict/{{fasta}}/names.tsv",
    output:
        summary=f"{RESULTS}/predict/{{fasta}}/summary.tsv",
        contacts=directory(f"{RESULTS}/predict/{{fasta}}/contacts"),
    params:
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/predict/{{fasta}}.gather.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict/{{fasta}}.gather.tsv"
    shell:
        "\"$PROTRNN_PY\" \"$PROTRNN_SCRIPTS/gather_predictions.py\" --names {input.names} --summary {output.summary}"
        " --contacts {output.contacts} {input.shards} > {log} 2>&1"
