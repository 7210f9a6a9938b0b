# Shared settings and start-up checks: every problem with the configuration fails here, before any job runs.

import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

RESULTS = config["results"].rstrip("/")
CACHE = config["cache_dir"].rstrip("/")
# Under --use-conda, rules run the conda environment's python (envs/protrnn.yaml); otherwise Snakemake's own.
_USES_CONDA = "CONDA" in str(getattr(workflow.deployment_settings, "deployment_method", ""))
PY = "python" if _USES_CONDA else shlex.quote(sys.executable)
CONDA_ENV = "../envs/protrnn.yaml"
BUNDLED_CONFIGS = Path(workflow.basedir) / "protrnn" / "configs"
DEFAULT_WHEELS = {
    "cgdms": "cgdms==1.0",
    "bioemu": "bioemu-benchmarks==0.0.2.post1",
}
DEFAULT_WHEEL_FILES = {
    "cgdms": f"{CACHE}/wheels/cgdms-1.0-py3-none-any.whl",
    "bioemu": f"{CACHE}/wheels/bioemu_benchmarks-0.0.2.post1-py3-none-any.whl",
}

# glibc returns large freed blocks to the OS by default, which costs 1.6-2.4x in CPU training speed (docs/training.md).
# The checkout goes first on PYTHONPATH so workflow scripts import this protrnn even when it is not pip-installed.
# Rules run the interpreter as $PROTRNN_PY rather than as a param: a param would be recorded, and starting Snakemake as
# `snakemake` one day and `python -m snakemake` the next (two paths to one interpreter) would then rerun everything.
shell.prefix(
    "set -euo pipefail; export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736; "
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"export PROTRNN_PY={PY}; "
)


def _fail(key, why):
    raise WorkflowError(f"config key {key!r}: {why}")


# --- inputs -------------------------------------------------------------------------------------------------------
SOURCE_PATHS = list(config["sources"].get("paths", []))
for _i, _p in enumerate(SOURCE_PATHS):
    if not Path(_p).exists():
        _fail(f"sources.paths[{_i}]", f"input path does not exist: {_p}")
PDB_IDS = [p.lower() for p in config["sources"].get("pdb_ids", [])]
if not (config["sources"]["default"] or SOURCE_PATHS or PDB_IDS):
    _fail("sources", "no training inputs: set default: true, or give paths or pdb_ids")

TEST_SETS = {}
for _name, _spec in config["test_sets"].items():
    if Path(_spec["path"]).exists():
        TEST_SETS[_name] = _spec["path"]
    elif _spec.get("optional", False):
        print(f"protrnn pipeline: optional test set {_name!r} skipped: {_spec['path']} not found", file=sys.stderr)
    else:
        _fail(f"test_sets.{_name}.path", f"test set not found: {_spec['path']}")
# Split fractions by sequence cluster. With none of the configured test sets on disk (e.g. a fresh machine without
# ../shared/data) the pipeline still runs end to end: a homology-disjoint 10 % of the training clusters becomes the
# test set `heldout` (prepare writes it as test_heldout.npz).
SPLIT = dict(config["prepare"].get("split", {"train": 0.9, "val": 0.1}))
TEST_NAMES = list(TEST_SETS)
if not TEST_SETS:
    print("protrnn pipeline: none of the configured test sets exists; holding out 10% of the training clusters "
          "as test set 'heldout'", file=sys.stderr)
    SPLIT = {**{name: round(0.9 * value, 6) for name, value in SPLIT.items()}, "test_heldout": 0.1}
    TEST_NAMES = ["heldout"]

# FreeContact needs the Ollikainen-40 alignments (a folder or the shipped tarball); without them it is skipped with a
# message, like an optional test set, and the report simply has no coevolution baseline.
OLLIKAINEN_ROOT = config["evaluate"].get("ollikainen_root")
if OLLIKAINEN_ROOT and not Path(OLLIKAINEN_ROOT).exists():
    print(f"protrnn pipeline: evaluate.ollikainen_root {OLLIKAINEN_ROOT} not found: FreeContact baseline skipped",
          file=sys.stderr)
    OLLIKAINEN_ROOT = None
BASELINES = [b for b in config["evaluate"].get("baselines", ["random", "separation", "propensity"])
             if b != "freecontact" or OLLIKAINEN_ROOT]

# --- models -------------------------------------------------------------------------------------------------------
MODELS = config["models"]
if "bundle" in MODELS:
    _fail("models.bundle", "the name 'bundle' is reserved for the bundled default model (config key `bundle`)")
for _name in MODELS:
    if "@" in _name or "/" in _name:
        _fail(f"models.{_name}", "model names may not contain '@' or '/' (runs are named NAME@seedS)")
# Every grid model trains once per seed (seed_everything and the data order); evaluation, diagnostics and the report
# aggregate over seeds. A run is `<model>/seed<S>` on disk and `<model>@seed<S>` as a method name.
SEEDS = [int(s) for s in config.get("seeds", [config["train"].get("seed", 0)])]
if len(set(SEEDS)) != len(SEEDS):
    _fail("seeds", f"seeds must be distinct, got {SEEDS}")
# The bundled default model (target `bundle`) trains and evaluates through the same rules as the grid (one run, the
# first seed of train.seed).
BUNDLE = config.get("bundle", {"config": "default", "max_time": "00:00:15:00", "max_epochs": 18})
MODEL_SPECS = {**MODELS, "bundle": BUNDLE}
GRID_RUNS = [f"{m}/seed{s}" for m in MODELS for s in SEEDS]
_MODEL_ALTERNATIVES = "|".join(MODELS)
ALL_RUNS = f"bundle|(?:{_MODEL_ALTERNATIVES})/seed-?[0-9]+"
_GRID_RUN = re.compile(r"(?P<model>.+)/seed(?P<seed>-?[0-9]+)")


def run_model(run):
    """`lstm` of the run `lstm/seed1`; `bundle` of `bundle`."""
    match = _GRID_RUN.fullmatch(run)
    return match["model"] if match else run


def run_seed(run):
    """The seed of a grid run (`lstm/seed1` -> 1); the bundle's is train.seed."""
    match = _GRID_RUN.fullmatch(run)
    return int(match["seed"]) if match else int(config["train"].get("seed", 0))


def run_name(run):
    """Method / diagnostics name of a run: `lstm@seed1` (docs/pipeline.md), `bundle` for the bundle."""
    return f"{run_model(run)}@seed{run_seed(run)}" if _GRID_RUN.fullmatch(run) else run


def model_config_path(name):
    """A bundled config name (protrnn/configs/<name>.yaml) or a path to a YAML file."""
    value = MODEL_SPECS[name]["config"]
    bundled = BUNDLED_CONFIGS / f"{value}.yaml"
    if bundled.exists():  # relative where possible: the path is a recorded param, moving the checkout keeps results
        try:
            return str(bundled.relative_to(Path.cwd()))
        except ValueError:
            return str(bundled)
    if Path(value).exists():
        return value
    choices = sorted(p.stem for p in BUNDLED_CONFIGS.glob("*.yaml"))
    _fail(f"models.{name}.config", f"unknown model config {value!r}; bundled: {', '.join(choices)}, or give a path")


for _name in MODEL_SPECS:
    model_config_path(_name)

if config["predict"].get("fasta") and config["predict"].get("model", next(iter(MODELS))) not in MODELS:
    _fail("predict.model", f"{config['predict']['model']!r} is not a model of the grid ({', '.join(MODELS)})")

PREDICT_MODEL = config["predict"].get("model", next(iter(MODELS)))
# Predictions come from the first seed's run of the chosen model.
PREDICT_RUN = f"{PREDICT_MODEL}/seed{SEEDS[0]}"
PREDICT_FASTA = {}
for _i, _p in enumerate(config["predict"].get("fasta", [])):
    if not Path(_p).exists():
        _fail(f"predict.fasta[{_i}]", f"FASTA file does not exist: {_p}")
    _stem = Path(_p).name.split(".")[0] or f"fasta{_i}"
    PREDICT_FASTA[_stem if _stem not in PREDICT_FASTA else f"{_stem}_{_i}"] = _p


def _option_text(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def model_overrides(name):
    """LightningCLI dotted overrides of a grid entry, shell-quoted."""
    return " ".join(f"--{key}={shlex.quote(_option_text(value))}"
                    for key, value in MODEL_SPECS[name].get("set", {}).items())


def model_max_time(name):
    """Lightning's trainer.max_time (DD:HH:MM:SS) for one model: its own `max_time`, else train.max_time."""
    return MODEL_SPECS[name].get("max_time", config["train"]["max_time"])


def model_max_steps(name):
    """The optimiser-step budget of a model: its own `max_steps`, else train.max_steps unless the model sets its own
    `max_epochs` or is the bundle (which trains by epochs unless it sets `max_steps`); None = trained by epochs."""
    spec = MODEL_SPECS[name]
    if "max_steps" in spec:
        return spec["max_steps"]
    if "max_epochs" in spec or name == "bundle":
        return None
    return config["train"].get("max_steps")


def model_budget(name):
    """Trainer flags of a model's budget. A step budget (the grid: every model gets exactly the same number of
    optimiser updates) runs to max_steps with no early stopping and exports the final weights (no best-epoch
    selection, which would hand models different numbers of updates again); max_time stays as a safety cap. An epoch
    budget (the bundle) keeps the config's early stopping and best-checkpoint export. The learning-rate schedule
    spans the budget either way."""
    steps = model_max_steps(name)
    if steps is None:
        epochs = MODEL_SPECS[name].get("max_epochs", config["train"]["max_epochs"])
        return f"--trainer.max_epochs {epochs}"
    return (f"--trainer.max_steps {steps} --trainer.max_epochs -1 --early_stopping.patience 1000000000"
            " --checkpoint.monitor null")


def runtime_minutes(name):
    """Cluster runtime request: the training time limit plus 30 minutes for start-up, validation and export."""
    days, hours, minutes, _ = (int(x) for x in model_max_time(name).split(":"))
    return 30 + days * 24 * 60 + hours * 60 + minutes


# --- synthetic reach task (protrnn synthetic) -------------------------------------------------------------------------
SYNTHETIC = config.get("synthetic") or {}
SYNTHETIC_VARIANTS = dict(SYNTHETIC.get("variants") or {})
SYNTHETIC_RUNS = [f"{v}/seed{s}" for v in SYNTHETIC_VARIANTS for s in SEEDS]
for _name in SYNTHETIC_VARIANTS:
    if not _name.replace("_", "").isalnum():
        _fail(f"synthetic.variants.{_name}", "variant names are letters, digits and '_'")


# The reference every knob of the findings table is compared against (a grid model; a synthetic variant of the same
# name is the synthetic reference).
REPORT_REFERENCE = (config.get("report") or {}).get("reference", next(iter(MODELS)))
if REPORT_REFERENCE not in MODELS:
    _fail("report.reference", f"{REPORT_REFERENCE!r} is not a model of the grid ({', '.join(MODELS)})")


def synthetic_options(variant):
    """`protrnn synthetic` flags of a variant: `key: value` -> `--key value`, booleans -> `--key` / `--no-key`."""
    out = []
    for key, value in (SYNTHETIC_VARIANTS[variant] or {}).items():
        option = key.replace("_", "-")
        flag = f"--{option}"
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{option}")
        else:
            out.append(f"{flag} {shlex.quote(_option_text(value))}")
    return " ".join(out)


def diagnose_usage_flags():
    """`protrnn diagnose` options of the usage-horizon measurement (config diagnose.usage), or --no-usage."""
    usage = config["diagnose"].get("usage", {})
    if not usage.get("enabled", True):
        return "--no-usage"
    flags = {"distances": ",".join(str(d) for d in usage.get("distances", [0, 2, 4, 8, 16, 32, 64, 96])),
             "draws": usage.get("draws", 4), "chains": usage.get("chains", 16),
             "pairs-per-chain": usage.get("pairs_per_chain", 8), "precision-chains": usage.get("precision_chains", 4),
             "fraction": usage.get("fraction", 0.05), "background": usage.get("background", "train")}
    return " ".join(f"--usage-{key} {value}" for key, value in flags.items())


def prepare_inputs(wildcards):
    """Every training input: user paths, the default wheels and fetched PDB entries."""
    inputs = list(SOURCE_PATHS)
    if config["sources"]["default"]:
        inputs += list(DEFAULT_WHEEL_FILES.values())
    inputs += [f"{CACHE}/pdb/{p}.cif" for p in PDB_IDS]
    return inputs


def resume_flag(wildcards, output):
    """`--ckpt_path last.ckpt` when an interrupted run left a checkpoint but no exported model.

    It takes `output` so that Snakemake counts it as derived from the outputs and leaves it out of the params it
    records for its `params` rerun trigger: otherwise the next invocation after a resumed job would see the flag go
    from `--ckpt_path ...` to '' and train that model again from scratch.
    """
    run = Path(output.model).parent
    if (run / "checkpoints" / "last.ckpt").exists() and not (run / "model.json").exists():
        return f"--ckpt_path {shlex.quote(str(run / 'checkpoints' / 'last.ckpt'))}"
    return ""


def parent_of(key):
    """Params function: the directory holding output `key` (keeps params in step with the outputs)."""
    return lambda wildcards, output: str(Path(output[key]).parent)
