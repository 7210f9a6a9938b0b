# Structure-aware pretraining of the recurrent encoder (protrnn pretrain; docs/pretraining.md, docs/pipeline.md):
# the sidechainnet==1.0.1 wheel's 8-state DSSP labels -> identical sequences collapsed, chains at >= identity to any
# test set removed, split by mmseqs2 cluster -> the encoder pretrained for pretrain.max_time -> encoder.safetensors +
# encoder.json, from which models with `pretrained: true` start. Cached like every stage: the wheel is fetched once per
# cache_dir, labels and encoder once per results directory (rerun only when their inputs or settings change); an
# interrupted pretraining run resumes from its last checkpoint.


rule fetch_pretrain_source:
    """The sidechainnet wheel from PyPI (no install: its annotation JSON is read from the zip archive)."""
    output:
        SIDECHAINNET_WHEEL_FILE,
    params:
        requirement=shlex.quote(SIDECHAINNET_REQUIREMENT),
        dest=lambda wc, output: str(Path(output[0]).parent),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/fetch_pretrain_source.log",
    benchmark:
        f"{RESULTS}/benchmarks/fetch_pretrain_source.tsv"
    shell:
        "\"$PROTRNN_PY\" -m pip download --no-deps --disable-pip-version-check {params.requirement} -d {params.dest} > {log} 2>&1"


rule pretrain_prepare:
    """Pretraining labels: test-set homologues removed (leakage.tsv), split by cluster, counts in manifest.json."""
    input:
        source=ancient(PRETRAIN_SOURCE),
        tests=datasets(TEST_SETS.values()),
    output:
        train=PRETRAIN_LABELS,
        val=f"{PRETRAIN_DATA}/val.npz",
        records=f"{PRETRAIN_DATA}/records.tsv",
        leakage=f"{PRETRAIN_DATA}/leakage.tsv",
        manifest=f"{PRETRAIN_DATA}/manifest.json",
    params:
        outdir=parent_of("train"),
        tests=" ".join(f"--test-set {n}={shlex.quote(p)}" for n, p in TEST_SETS.items()),
        options=pretrain_prepare_options(),
        leakage_rule=LEAKAGE_RULE,  # not on the command line: a new rule reruns the job
    threads: PRETRAIN.get("prepare_threads", workflow.cores)
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/pretrain_prepare.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_prepare.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn pretrain prepare {input.source:q} -o {params.outdir} {params.tests} {params.options}"
        " --threads {threads} > {log} 2>&1"


rule pretrain_fit:
    """Pretrain the encoder (Lightning) and export encoder.safetensors + encoder.json into its run directory:
    `pretrain/encoder` at pretrain.seed, `pretrain/encoder_seed<S>` at seed S (bundle.encoder_per_seed)."""
    input:
        train=PRETRAIN_LABELS,
        val=f"{PRETRAIN_DATA}/val.npz",
        **config_inputs(pretrain_config_path(), PRETRAIN_BASE_CONFIG),
    output:
        **encoder_files(f"{RESULTS}/pretrain/{{encoder}}"),
    wildcard_constraints:
        encoder=ENCODER_DIR_PATTERN,
    params:
        config_sha256=config_digest(pretrain_config_path(), PRETRAIN_BASE_CONFIG),
        options=pretrain_fit_options(),
        rundir=parent_of("json"),
        resume=pretrain_resume_flag,
        accelerator=config["train"].get("accelerator", "auto"),
        seed=lambda wc: encoder_seed(wc.encoder),
    threads: PRETRAIN.get("threads", 1)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else 1,
        runtime=30 + _minutes(PRETRAIN.get("max_time", "00:00:15:00")),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/pretrain_fit/{{encoder}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_fit/{{encoder}}.tsv"
    shell:
        "\"$PROTRNN_PY\" -m protrnn pretrain fit --config {input.config:q} {params.options}"
        " --data.train_path {input.train} --data.val_path {input.val} --num_threads {threads}"
        " --trainer.default_root_dir {params.rundir} --export_dir {params.rundir}"
        " --trainer.accelerator {params.accelerator} --trainer.enable_progress_bar false"
        " --seed_everything {params.seed} --data.seed {params.seed} {params.resume} > {log} 2>&1"


rule pretrain:
    """Target: the pretrained encoders alone (`snakemake pretrain --cores 2`)."""
    localrule: True
    input:
        [path for directory in ENCODER_DIRS for path in encoder_files(directory).values()],
