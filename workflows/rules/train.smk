# The model grid: one Lightning training job per (model, seed) run, GPU when present. Grid runs train for the same
# number of optimiser steps (train.max_steps; max_time is only a safety cap) and export their final weights.
# An interrupted job resumes from its last checkpoint (the run directory is kept; only the exported model is an output).
# A finished run trained again (its settings or inputs changed) starts afresh in the same run directory: checkpoints/
# keeps the earlier run's best-*.ckpt beside the new run's, but the export takes the checkpoint callback's own best
# (model.json's source_checkpoint names it), never a file found there (docs/pipeline.md, "Interruptions").
# A model with `pretrained: true` also depends on the pretrained encoder (workflows/rules/pretrain.smk) and starts from
# it through the PretrainedEncoder callback (appended to its overrides: see model_overrides in common.smk).


rule train:
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/models/{{run}}/model.json",
        weights=f"{RESULTS}/models/{{run}}/model.safetensors",
    wildcard_constraints:
        run=ALL_RUNS,
    params:
        config_sha256=lambda wc: config_digest(model_config_path(run_model(wc.run)), TRAIN_BASE_CONFIG),
        overrides=lambda wc: model_overrides(run_model(wc.run), run_encoder_dir(wc.run)),
        rundir=parent_of("model"),
        resume=resume_flag,
        # only the train keys this command reads: a whole section would rerun every run when an unused key changed
        # (train.max_epochs under a step budget, train.threads, ...)
        accelerator=config["train"]["accelerator"],
        devices=config["train"]["devices"],
        num_nodes=config["train"]["num_nodes"],
        seed=lambda wc: run_seed(wc.run),
        max_time=lambda wc: model_max_time(run_model(wc.run)),
        budget=lambda wc: model_budget(run_model(wc.run)),
        # Multi-GPU DDP under SLURM: a `mpi: srun` resource (profile set-resources) launches one task per GPU.
        launcher=lambda wc, resources: resources.get("mpi", ""),
    threads: config["train"].get("threads", 2)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else config["train"].get("devices", 1),
        runtime=lambda wc: runtime_minutes(run_model(wc.run)),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/train/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}.tsv"
    shell:
        "{params.launcher} \"$PROTRNN_PY\" -m protrnn train --config {input.config:q} {params.overrides}"
        " --data.train_path {input.train} --data.val_path {input.val} --num_threads {threads}"
        " --trainer.default_root_dir {params.rundir} --export_dir {params.rundir}"
        " --trainer.max_time {params.max_time} {params.budget}"
        " --trainer.accelerator {params.accelerator} --trainer.devices {params.devices}"
        " --trainer.num_nodes {params.num_nodes}"
        " --trainer.enable_progress_bar false --seed_everything {params.seed} --data.seed {params.seed}"
        " {params.resume} > {log} 2>&1"
