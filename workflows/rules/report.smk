# One self-contained HTML report over every model, baseline and test set.


rule report:
    input:
        evaluations=expand(f"{RESULTS}/evaluation/{{method}}/summary.json", method=[*MODELS, "baselines"]),
        diagnostics=expand(f"{RESULTS}/diagnostics/{{model}}.json", model=list(MODELS)),
        models=expand(f"{RESULTS}/models/{{model}}/model.json", model=list(MODELS)),
        leakage=f"{RESULTS}/data/leakage.tsv",
    output:
        html=f"{RESULTS}/report/report.html",
    params:
        evaluations=" ".join(f"--evaluation {RESULTS}/evaluation/{m}" for m in [*MODELS, "baselines"]),
        diagnostics=" ".join(f"--diagnostics {RESULTS}/diagnostics/{m}.json" for m in MODELS),
        runs=" ".join(f"--runs {RESULTS}/models/{m}" for m in MODELS),
        outdir=parent_of("html"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn report {params.evaluations} {params.diagnostics} {params.runs} --leakage {input.leakage}"
        " -o {params.outdir} > {log} 2>&1"
