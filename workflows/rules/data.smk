# Inputs -> prepared datasets: train/val split by sequence cluster, test sets parsed, leakage removed and reported.


rule fetch_default_sources:
    """The embedded default data: two wheels from PyPI (no install; files are read from the zip archives)."""
    output:
        **DEFAULT_WHEEL_FILES,
    params:
        requirements=" ".join(shlex.quote(r) for r in DEFAULT_WHEELS.values()),
        dest=parent_of("cgdms"),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/fetch_default_sources.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_default_sources.tsv"
    shell:
        "\"$PROTRNN_PY\" -m pip download --no-deps --disable-pip-version-check {params.requirements} -d {params.dest} > {log} 2>&1"


rule fetch_pdb_entry:
    """One PDB entry as mmCIF via Bio.PDB.PDBList (needs internet)."""
    output:
        f"{CACHE}/pdb/{{pdb_id}}.cif",
    wildcard_constraints:
        pdb_id="[0-9][a-z0-9]{3}",
    params:
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/fetch_pdb/{{pdb_id}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_pdb/{{pdb_id}}.tsv"
    shell:
        "\"$PROTRNN_PY\" \"$PROTRNN_SCRIPTS/fetch_pdb.py\" {wildcards.pdb_id} {output} > {log} 2>&1"


rule prepare:
    input:
        sources=prepare_inputs,
        tests=datasets(TEST_SETS.values()),
    output:
        train=f"{RESULTS}/data/train.npz",
        val=f"{RESULTS}/data/val.npz",
        tests=[prepared_test_file(n) for n in TEST_NAMES],
        manifest=f"{RESULTS}/data/manifest.tsv",
        leakage=f"{RESULTS}/data/leakage.tsv",
    params:
        outdir=parent_of("train"),
        tests=" ".join(f"--test-set {n}={shlex.quote(p)}" for n, p in TEST_SETS.items()),
        split=",".join(f"{k}={v}" for k, v in SPLIT.items()),
        limit=f"--limit {config['sources']['limit']}" if "limit" in config["sources"] else "",
        prep=config["prepare"],
        leakage_rule=LEAKAGE_RULE,  # not on the command line: a new rule reruns the job
    threads: workflow.cores
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/prepare.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn prepare {input.sources:q} {params.tests} -o {params.outdir}"
        " --split {params.split} --identity {params.prep[identity]} --seed {params.prep[seed]}"
        " --min-length {params.prep[min_length]} --max-length {params.prep[max_length]} {params.limit}"
        " --threads {threads} > {log} 2>&1"
