# The model grid: one Lightning training job per entry of `models`, GPU when present.
# An interrupted job resumes from its last checkpoint (the run directory is kept; only the exported model is an output).


rule train:
    input:
        train=f"{RESULTS}/data/train.npz",
        val=f"{RESULTS}/data/val.npz",
    output:
        model=f"{RESULTS}/models/{{model}}/model.json",
        weights=f"{RESULTS}/models/{{model}}/model.safetensors",
    wildcard_constraints:
        model=ALL_MODELS,
    params:
        config=lambda wc: model_config_path(wc.model),
        overrides=lambda wc: model_overrides(wc.model),
        rundir=parent_of("model"),
        resume=resume_flag,
        trainer=config["train"],
        max_time=lambda wc: model_max_time(wc.model),
        max_epochs=lambda wc: model_max_epochs(wc.model),
        # Multi-GPU DDP under SLURM: a `mpi: srun` resource (profile set-resources) launches one task per GPU.
        launcher=lambda wc, resources: resources.get("mpi", ""),
    threads: config["train"].get("threads", 2)
    resources:
        gpu=lambda wc: 0 if config["train"].get("accelerator", "auto") == "cpu" else config["train"].get("devices", 1),
        runtime=lambda wc: runtime_minutes(wc.model),
    conda:
        CONDA_ENV
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{model}}.tsv"
    shell:
        "{params.launcher} \"$PROTRNN_PY\" -m protrnn train --config {params.config} {params.overrides}"
        " --data.train_path {input.train} --data.val_path {input.val} --num_threads {threads}"
        " --trainer.default_root_dir {params.rundir} --export_dir {params.rundir}"
        " --trainer.max_time {params.max_time} --trainer.max_epochs {params.max_epochs}"
        " --trainer.accelerator {params.trainer[accelerator]} --trainer.devices {params.trainer[devices]}"
        " --trainer.num_nodes {params.trainer[num_nodes]}"
        " --trainer.enable_progress_bar false --seed_everything {params.trainer[seed]} {params.resume} > {log} 2>&1"
