# Evaluation by residue separation (every model and the baselines on every test set) and gradient-flow diagnostics.


rule evaluate_model:
    input:
        model=f"{RESULTS}/models/{{model}}/model.json",
        tests=expand(f"{RESULTS}/data/test_{{name}}.npz", name=TEST_NAMES),
    output:
        summary=f"{RESULTS}/evaluation/{{model}}/summary.json",
        per_protein=f"{RESULTS}/evaluation/{{model}}/per_protein.csv",
    wildcard_constraints:
        model=ALL_MODELS,
    params:
        tests=" ".join(f"--test-set {n}={RESULTS}/data/test_{n}.npz" for n in TEST_NAMES),
        outdir=parent_of("summary"),
        rundir=lambda wc, input: str(Path(input.model).parent),
        ev=config["evaluate"],
    threads: config["train"].get("threads", 2)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else 1,
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/evaluate/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{model}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} \"$PROTRNN_PY\" -m protrnn evaluate --model {wildcards.model}={params.rundir} {params.tests}"
        " --bootstrap {params.ev[bootstrap]} --save-predictions {params.ev[save_predictions]} -o {params.outdir} > {log} 2>&1"


rule evaluate_baselines:
    input:
        train=f"{RESULTS}/data/train.npz",
        tests=expand(f"{RESULTS}/data/test_{{name}}.npz", name=TEST_NAMES),
    output:
        summary=f"{RESULTS}/evaluation/baselines/summary.json",
        per_protein=f"{RESULTS}/evaluation/baselines/per_protein.csv",
    params:
        tests=" ".join(f"--test-set {n}={RESULTS}/data/test_{n}.npz" for n in TEST_NAMES),
        baselines=",".join(BASELINES),
        ollikainen=f"--ollikainen-root {shlex.quote(OLLIKAINEN_ROOT)}" if OLLIKAINEN_ROOT else "",
        outdir=parent_of("summary"),
        ev=config["evaluate"],
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/evaluate/baselines.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/baselines.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn evaluate --baselines {params.baselines} --train {input.train} {params.tests} {params.ollikainen}"
        " --bootstrap {params.ev[bootstrap]} --save-predictions {params.ev[save_predictions]} -o {params.outdir} > {log} 2>&1"


rule diagnose:
    input:
        model=f"{RESULTS}/models/{{model}}/model.json",
        val=f"{RESULTS}/data/val.npz",
        train=f"{RESULTS}/data/train.npz",
    output:
        f"{RESULTS}/diagnostics/{{model}}.json",
    wildcard_constraints:
        model=ALL_MODELS,
    params:
        rundir=lambda wc, input: str(Path(input.model).parent),
        dg=config["diagnose"],
    threads: config["train"].get("threads", 2)
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/diagnose/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/diagnose/{{model}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} \"$PROTRNN_PY\" -m protrnn diagnose {wildcards.model}={params.rundir} --data {input.val}"
        " --train-data {input.train} -o {output}"
        " --max-distance {params.dg[max_distance]} --fraction {params.dg[fraction]} > {log} 2>&1"
