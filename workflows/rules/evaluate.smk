# Evaluation by residue separation (every run and the baselines on every test set), gradient-flow and context-usage
# diagnostics per run, and the synthetic planted-distance task per (variant, seed).


rule evaluate_model:
    input:
        model=lambda wc: model_file(wc.run),
        tests=[prepared_test_file(n) for n in TEST_NAMES],
    output:
        summary=f"{RESULTS}/evaluation/{{run}}/summary.json",
        per_protein=f"{RESULTS}/evaluation/{{run}}/per_protein.csv",
    wildcard_constraints:
        run=ALL_RUNS,
    params:
        tests=" ".join(f"--test-set {n}={prepared_test_file(n)}" for n in TEST_NAMES),
        outdir=parent_of("summary"),
        name=lambda wc: run_name(wc.run),
        rundir=lambda wc, input: str(Path(input.model).parent),
        # only the evaluate keys the command reads (a change of evaluate.baselines reran every model's evaluation)
        bootstrap=config["evaluate"]["bootstrap"],
        save_predictions=config["evaluate"]["save_predictions"],
    threads: config["train"].get("threads", 2)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else 1,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/evaluate/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} \"$PROTRNN_PY\" -m protrnn evaluate --model {params.name}={params.rundir} {params.tests}"
        " --bootstrap {params.bootstrap} --save-predictions {params.save_predictions} -o {params.outdir} > {log} 2>&1"


rule evaluate_baselines:
    input:
        train=f"{RESULTS}/data/train.npz",
        tests=[prepared_test_file(n) for n in TEST_NAMES],
    output:
        summary=f"{RESULTS}/evaluation/baselines/summary.json",
        per_protein=f"{RESULTS}/evaluation/baselines/per_protein.csv",
    params:
        tests=" ".join(f"--test-set {n}={prepared_test_file(n)}" for n in TEST_NAMES),
        baselines=",".join(BASELINES),
        ollikainen=f"--ollikainen-root {shlex.quote(OLLIKAINEN_ROOT)}" if OLLIKAINEN_ROOT else "",
        outdir=parent_of("summary"),
        bootstrap=config["evaluate"]["bootstrap"],
        save_predictions=config["evaluate"]["save_predictions"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/evaluate/baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/baselines.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn evaluate --baselines {params.baselines} --train {input.train} {params.tests} {params.ollikainen}"
        " --bootstrap {params.bootstrap} --save-predictions {params.save_predictions} -o {params.outdir} > {log} 2>&1"


rule diagnose:
    input:
        model=f"{RESULTS}/models/{{run}}/model.json",
        val=f"{RESULTS}/data/val.npz",
        train=f"{RESULTS}/data/train.npz",
    output:
        f"{RESULTS}/diagnostics/{{run}}.json",
    wildcard_constraints:
        run=ALL_RUNS,
    params:
        name=lambda wc: run_name(wc.run),
        rundir=lambda wc, input: str(Path(input.model).parent),
        dg=config["diagnose"],
        usage=lambda wc: diagnose_usage_flags(),
    threads: config["train"].get("threads", 2)
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/diagnose/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/diagnose/{{run}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} \"$PROTRNN_PY\" -m protrnn diagnose {params.name}={params.rundir} --data {input.val}"
        " --train-data {input.train} -o {output}"
        " --max-distance {params.dg[max_distance]} --fraction {params.dg[fraction]} {params.usage} > {log} 2>&1"


rule synthetic:
    """One variant of the planted-distance recall task for one seed (protrnn synthetic; docs/synthetic.md)."""
    output:
        f"{RESULTS}/synthetic/{{variant}}/seed{{seed}}/result.json",
    wildcard_constraints:
        variant="|".join(SYNTHETIC_VARIANTS) or "^$",
        seed="-?[0-9]+",
    params:
        options=lambda wc: synthetic_options(wc.variant),
        steps=SYNTHETIC.get("steps", 1000),
        queries=SYNTHETIC.get("eval_queries", 1000),
        distances=",".join(str(d) for d in SYNTHETIC.get("distances", [8, 16, 32, 64])),
        outdir=lambda wc, output: str(Path(output[0]).parent),
    threads: 1
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/synthetic/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthetic/{{variant}}/seed{{seed}}.tsv"
    shell:
        "OMP_NUM_THREADS=1 \"$PROTRNN_PY\" -m protrnn synthetic {params.options} --distances {params.distances}"
        " --steps {params.steps} --eval-queries {params.queries} --jacobian-max-lag 0"
        " --seed {wildcards.seed} --threads 1 -o {params.outdir} > {log} 2>&1"
