# One self-contained HTML report over every run (aggregated over seeds), baseline, test set and synthetic variant,
# opening with the findings table; summary.json beside it holds the same numbers.


rule report:
    input:
        evaluations=expand(f"{RESULTS}/evaluation/{{run}}/summary.json", run=[*GRID_RUNS, "baselines"]),
        diagnostics=expand(f"{RESULTS}/diagnostics/{{run}}.json", run=GRID_RUNS),
        models=expand(f"{RESULTS}/models/{{run}}/model.json", run=GRID_RUNS),
        synthetic=expand(f"{RESULTS}/synthetic/{{run}}/result.json", run=SYNTHETIC_RUNS),
        leakage=f"{RESULTS}/data/leakage.tsv",
    output:
        html=f"{RESULTS}/report/report.html",
        summary=f"{RESULTS}/report/summary.json",
    params:
        evaluations=" ".join(f"--evaluation {RESULTS}/evaluation/{r}" for r in [*GRID_RUNS, "baselines"]),
        diagnostics=" ".join(f"--diagnostics {RESULTS}/diagnostics/{r}.json" for r in GRID_RUNS),
        runs=" ".join(f"--runs {run_name(r)}={RESULTS}/models/{r}" for r in GRID_RUNS),
        synthetic=" ".join(f"--synthetic {run_model(r)}={RESULTS}/synthetic/{r}" for r in SYNTHETIC_RUNS),
        reference=REPORT_REFERENCE,
        outdir=parent_of("html"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn report {params.evaluations} {params.diagnostics} {params.runs} {params.synthetic}"
        " --reference {params.reference} --leakage {input.leakage} -o {params.outdir} > {log} 2>&1"
