# Shared settings and start-up checks: every problem with the configuration fails here, before any job runs.

import ast
import difflib
import hashlib
import importlib.util
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError


def _fail(key, why):
    raise WorkflowError(f"config key {key!r}: {why}")


#: Characters a results or cache folder may not hold: rules pass these folders to shell commands unquoted, and Snakemake
#: reads braces in a path as wildcards.
_UNSAFE_FOLDER = re.compile(r"[\s{}'\"$`\\;&|<>*?!#()\[\]]")


#: The checkout's tracked folders: a results or cache folder inside one would mix outputs with the code (and
#: `snakemake bundle` swaps protrnn/pretrained whole, so results there would be deleted).
CODE_FOLDERS = (".ci", "benchmarks", "data", "docs", "protrnn", "tests", "workflows")


def _folder(key):
    """A results or cache folder from the config, checked: not the file-system root, the checkout (or a folder above
    it) or a folder inside one of its CODE_FOLDERS, where outputs would land among the code (data/, models/), and
    without whitespace, shell characters or a leading `~` (Snakemake would create a folder named `~` while the shell
    expands it to $HOME, splitting the outputs between two trees)."""
    value = config[key]
    folder = value.rstrip("/")
    if not folder:
        _fail(key, f"{value!r} is the file-system root; give a folder of its own, e.g. 'results'")
    if folder.startswith("~"):
        _fail(key, f"{value!r}: '~' is not expanded (Snakemake would make a folder named '~'); give the full path")
    if _UNSAFE_FOLDER.search(folder):
        _fail(key, f"{value!r}: use a folder name without whitespace, quotes, braces or shell characters")
    if folder.startswith("-"):
        _fail(key, f"{value!r}: a name starting with '-' reads as an option to the commands; give e.g. './{folder}'")
    checkout, resolved = CHECKOUT, Path(folder).resolve()
    if resolved == checkout or resolved in checkout.parents:
        _fail(key, f"{value!r} is the checkout or a folder above it, so outputs would mix with the code; give a "
              "folder of its own, e.g. 'results'")
    for code in CODE_FOLDERS:
        if resolved == checkout / code or checkout / code in resolved.parents:
            _fail(key, f"{value!r} is inside the checkout's {code}/ folder, so outputs would mix with the code; give "
                  "a folder of its own, e.g. 'results'")
    return folder


def _relative(path):
    """A file of the checkout, relative to the working directory where possible: input paths are recorded (the `input`
    rerun trigger), so moving the checkout keeps results."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


#: The checkout: the folder of the Snakefile. Its own files (scripts, bundled configs, the installed model) are found
#: from here, so the pipeline also runs in another working directory (`snakemake -s CHECKOUT/Snakefile -d DIR`),
#: where the outputs (results, cache_dir, .snakemake) go. Resolved, as the working directory is: a checkout reached
#: through a link still gives the paths relative to it (_relative) that the rules record, not absolute ones that
#: would rerun every job.
CHECKOUT = Path(workflow.basedir).resolve()
#: No --configfile: the checkout's workflows/config.yaml is in use (the Snakefile loads it).
DEFAULT_CONFIG = not workflow.config_settings.configfiles


def _code_constant(relative, name):
    """The literal value of the module-level constant `name` (``NAME = ...`` or ``NAME: type = ...``) in the checkout's
    file `relative`, read with `ast` (the package is not imported at start-up); a one-line WorkflowError otherwise."""
    path = CHECKOUT / relative
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as err:
        raise WorkflowError(f"{path}: cannot read the constant {name} the pipeline needs ({err})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise WorkflowError(f"{path}:{node.lineno}: {name} must be a literal (the pipeline reads it without "
                                    "importing the package)") from None
    raise WorkflowError(f"{path}: no constant {name}, which the pipeline reads")


#: protrnn.data.splits.LEAKAGE_RULE, a parameter of the two data rules (prepare, pretrain_prepare): data prepared under
#: an earlier leakage rule are prepared again by the next run, and what was trained on them trained again.
LEAKAGE_RULE = _code_constant("protrnn/data/splits.py", "LEAKAGE_RULE")


def config_input(keys, value):
    """A relative input path of the config, as the rules read it. Snakemake reads paths from the working directory,
    and so does the pipeline, but for the paths the default config file gives (no --configfile, the key not replaced
    by --config): they name files of the checkout (data/example.fasta) and the data beside it (../shared/data), so
    they are read from the checkout wherever the pipeline runs. `keys` is the key's path in the config, e.g.
    ("predict", "fasta")."""
    if not DEFAULT_CONFIG or Path(value).is_absolute() or Path.cwd() == CHECKOUT:
        return value  # in the checkout itself: as written (no rerun for a path spelt ./x or x/)
    node = workflow.config_settings.config or {}
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return _relative(CHECKOUT / value)
        node = node[key]
    return value


RESULTS = _folder("results")
CACHE = _folder("cache_dir")
# Under --use-conda, rules run the conda environment's python (envs/protrnn.yaml); otherwise Snakemake's own.
_USES_CONDA = "CONDA" in str(getattr(workflow.deployment_settings, "deployment_method", ""))
PY = "python" if _USES_CONDA else shlex.quote(sys.executable)
CONDA_ENV = "../envs/protrnn.yaml"
BUNDLED_CONFIGS = CHECKOUT / "protrnn" / "configs"
# `protrnn pretrain fit` configs live in their own subfolder (protrnn.training.cli.PRETRAIN_CONFIG_DIR).
PRETRAIN_CONFIGS = BUNDLED_CONFIGS / "pretrain"
#: The config file each fit command reads before its --config (the `default_config` of protrnn train and protrnn
#: pretrain fit in protrnn.training.cli; tests/test_workflow.py checks they agree).
TRAIN_BASE_CONFIG = BUNDLED_CONFIGS / "default.yaml"
PRETRAIN_BASE_CONFIG = PRETRAIN_CONFIGS / "pretrain.yaml"
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
# The workflow's scripts are found from the checkout as $PROTRNN_SCRIPTS (not recorded, like $PROTRNN_PY). Snakemake
# formats the prefix, so braces of a path are doubled.
def _shell_word(text):
    return shlex.quote(str(text)).replace("{", "{{").replace("}", "}}")


shell.prefix(
    "set -euo pipefail; export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736; "
    f"export PYTHONPATH={_shell_word(CHECKOUT)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f"export PROTRNN_PY={PY}; "
    f"export PROTRNN_SCRIPTS={_shell_word(CHECKOUT / 'workflows' / 'scripts')}; "
)


# --- inputs -------------------------------------------------------------------------------------------------------
def _input_path(key, value):
    """A path from the config that becomes a rule's input: Snakemake reads braces in an input as wildcards (a
    WildcardError naming no key), and the commands read a leading '-' as an option, so both are refused here."""
    text = str(value)
    if "{" in text or "}" in text:
        _fail(key, f"{text!r}: Snakemake reads braces in a path as wildcards; rename the file or link it under a "
              "name without braces")
    if text.startswith("-"):
        _fail(key, f"{text!r}: a path starting with '-' reads as an option to the commands; give e.g. './{text}'")
    return value


SOURCE_PATHS = [config_input(("sources", "paths"), p) for p in config["sources"].get("paths", [])]
for _i, _p in enumerate(SOURCE_PATHS):
    _input_path(f"sources.paths[{_i}]", _p)
    if not Path(_p).exists():
        _fail(f"sources.paths[{_i}]", f"input path does not exist: {_p}")
PDB_IDS = [p.lower() for p in config["sources"].get("pdb_ids", [])]
if not (config["sources"]["default"] or SOURCE_PATHS or PDB_IDS):
    _fail("sources", "no training inputs: set default: true, or give paths or pdb_ids")

TEST_SETS = {}
for _name, _spec in config["test_sets"].items():
    _path = config_input(("test_sets", _name, "path"), _input_path(f"test_sets.{_name}.path", _spec["path"]))
    if Path(_path).exists():
        TEST_SETS[_name] = _path
    elif _spec.get("optional", False):
        print(f"protrnn pipeline: optional test set {_name!r} skipped: {_path} not found", file=sys.stderr)
    else:
        _fail(f"test_sets.{_name}.path", f"test set not found: {_path}")
# A prepared test set NAME is the split TEST_SPLIT_PREFIX + NAME, file data/test_NAME.npz: the prefix equals
# protrnn.conventions.TEST_SPLIT_PREFIX (tests/test_workflow.py checks the two agree).
TEST_SPLIT_PREFIX = "test_"


def prepared_test_file(name):
    """`results/data/test_ts50.npz` for test set `ts50`."""
    return f"{RESULTS}/data/{TEST_SPLIT_PREFIX}{name}.npz"


# Split fractions by sequence cluster. With none of the configured test sets on disk (e.g. a fresh machine without
# ../shared/data) the pipeline still runs end to end: a homology-disjoint 10 % of the training clusters becomes the
# test set `heldout` (prepare writes it as test_heldout.npz).
SPLIT = dict(config["prepare"].get("split", {"train": 0.9, "val": 0.1}))
if abs(sum(SPLIT.values()) - 1.0) > 1e-6:
    _fail("prepare.split", f"the fractions must add up to 1, got {' + '.join(str(v) for v in SPLIT.values())}")
for _section in ("prepare", "pretrain"):
    _lengths = config.get(_section) or {}
    if _lengths.get("min_length", 0) > _lengths.get("max_length", float("inf")):
        _fail(f"{_section}.min_length", f"{_lengths['min_length']} is above {_section}.max_length "
              f"({_lengths['max_length']})")
TEST_NAMES = list(TEST_SETS)
if not TEST_SETS:
    print("protrnn pipeline: none of the configured test sets exists; holding out 10% of the training clusters "
          "as test set 'heldout'", file=sys.stderr)
    SPLIT = {**{name: round(0.9 * value, 6) for name, value in SPLIT.items()}, f"{TEST_SPLIT_PREFIX}heldout": 0.1}
    TEST_NAMES = ["heldout"]

# FreeContact needs the Ollikainen-40 alignments (a folder or the shipped tarball); without them it is skipped with a
# message, like an optional test set, and the report simply has no coevolution baseline.
OLLIKAINEN_ROOT = config["evaluate"].get("ollikainen_root")
if OLLIKAINEN_ROOT:
    OLLIKAINEN_ROOT = config_input(("evaluate", "ollikainen_root"),
                                   _input_path("evaluate.ollikainen_root", OLLIKAINEN_ROOT))
if OLLIKAINEN_ROOT and not Path(OLLIKAINEN_ROOT).exists():
    print(f"protrnn pipeline: evaluate.ollikainen_root {OLLIKAINEN_ROOT} not found: FreeContact baseline skipped",
          file=sys.stderr)
    OLLIKAINEN_ROOT = None
BASELINES = [b for b in config["evaluate"].get("baselines", ["random", "separation", "propensity"])
             if b != "freecontact" or OLLIKAINEN_ROOT]
if "freecontact" in config["evaluate"].get("baselines", []) and not config["evaluate"].get("ollikainen_root"):
    print("protrnn pipeline: evaluate.baselines lists freecontact but evaluate.ollikainen_root is not set: FreeContact "
          "baseline skipped", file=sys.stderr)
if not BASELINES:
    _fail("evaluate.baselines", "lists only freecontact, which is skipped without evaluate.ollikainen_root: add "
          "random, separation or propensity, or set evaluate.ollikainen_root")
#: Method names the evaluation gives its baselines (protrnn.evaluation.results.BASELINE_NAMES; tests/test_workflow.py
#: checks the two agree): a grid model may not take one, or the report would merge the two.
BASELINE_NAMES = ("random", "separation", "propensity", "freecontact")

# --- settings the pipeline sets itself ------------------------------------------------------------------------------
# The commands append the pipeline's own flags after a model's `set:` (train), `pretrain.set` (pretrain_fit) and a
# synthetic variant's options (synthetic), and the last value of a flag wins: such a key in those places would be
# overridden without a word, so it fails at start-up (the checks of `set:` keys, after model_budget below), naming the
# config key that controls it. Each table lists the flags its rule's command gives after the user's
# (tests/test_workflow.py checks them against the rules); `{model}` is the model's config key; "none: WHY" where no
# config key controls it.
_SEEDS_KEY = "seeds (train.seed without seeds; bundle.seeds for the bundle)"
#: protrnn train (rule train), besides the budget flags of model_budget, which are managed only where it gives them.
TRAIN_MANAGED = {
    "data.train_path": "none: the pipeline trains on its prepared data (sources, prepare)",
    "data.val_path": "none: the pipeline trains on its prepared data (sources, prepare)",
    "num_threads": "train.threads",
    "trainer.default_root_dir": "results (the run directory is <results>/models/<run>)",
    "export_dir": "results (the run directory is <results>/models/<run>)",
    "trainer.max_time": "{model}.max_time or train.max_time",
    "trainer.accelerator": "train.accelerator",
    "trainer.devices": "train.devices",
    "trainer.num_nodes": "train.num_nodes",
    "trainer.enable_progress_bar": "none: the pipeline turns the progress bar off in its logs",
    "seed_everything": _SEEDS_KEY,
    "data.seed": _SEEDS_KEY,
    "ckpt_path": "none: the pipeline resumes an interrupted run from its last checkpoint",
}
BUDGET_MANAGED = {
    "trainer.max_steps": "{model}.max_steps or train.max_steps",
    "trainer.max_epochs": "{model}.max_epochs or train.max_epochs",
    "early_stopping.patience": "none: the step budget (train.max_steps or {model}.max_steps) turns early stopping "
                               "off; give {model}.max_epochs to train by epochs with the config's early stopping",
    "checkpoint.monitor": "none: the step budget (train.max_steps or {model}.max_steps) exports the last step; give "
                          "{model}.max_epochs to train by epochs and export the best checkpoint",
}
#: protrnn pretrain fit (rule pretrain_fit; trainer.max_steps only with pretrain.max_steps).
PRETRAIN_MANAGED = {
    "trainer.max_time": "pretrain.max_time",
    "trainer.max_steps": "pretrain.max_steps",
    "data.train_path": "none: the pipeline pretrains on its labels (pretrain_prepare)",
    "data.val_path": "none: the pipeline pretrains on its labels (pretrain_prepare)",
    "num_threads": "pretrain.threads",
    "trainer.default_root_dir": "results (the run directory is <results>/pretrain/encoder)",
    "export_dir": "results (the run directory is <results>/pretrain/encoder)",
    "trainer.accelerator": "train.accelerator",
    "trainer.enable_progress_bar": "none: the pipeline turns the progress bar off in its logs",
    "seed_everything": "pretrain.seed",
    "data.seed": "pretrain.seed",
    "ckpt_path": "none: the pipeline resumes an interrupted run from its last checkpoint",
}
#: protrnn synthetic (rule synthetic), by option name without the dashes.
SYNTHETIC_MANAGED = {
    "distances": "synthetic.distances",
    "steps": "synthetic.steps",
    "eval-queries": "synthetic.eval_queries",
    "jacobian-max-lag": "none: the pipeline skips the Jacobian products (docs/synthetic.md)",
    "seed": "seeds (train.seed without seeds)",
    "threads": "none: the pipeline runs each synthetic job on one thread",
    "outdir": "results (the job writes <results>/synthetic/<variant>/seed<S>)",
}
#: The options the rules give each fit command themselves (the tables above): the command has them, so they count
#: among its settings even in a group whose settings could not be read here (fit_settings).
GIVEN_OPTIONS = {"protrnn train": (*TRAIN_MANAGED, *BUDGET_MANAGED), "protrnn pretrain fit": tuple(PRETRAIN_MANAGED)}


# --- settings the fit commands accept -------------------------------------------------------------------------------
# A model's `set:` and `pretrain.set` reach `protrnn train` and `protrnn pretrain fit` as LightningCLI overrides
# (`--model.model.hidden_size=128`): a key the command does not know had failed only when its job started, after every
# job before it. The keys each command accepts are read here from the code that defines them: the __init__
# parameters of its LightningModule, DataModule, Trainer and checkpoint callbacks, and ModelConfig's fields. They are
# parsed with `ast`, not imported: importing Lightning would add about 4 s to every start-up. tests/test_workflow.py
# checks the result against each command's --help.
# Under --use-conda the jobs run the environment's Python, whose Lightning may differ from the one found here: its
# groups are then left to the command, all but the options the rules give it themselves (GIVEN_OPTIONS); protrnn's own
# groups are read from this checkout, which the jobs run either way.
# The commands' parser takes an option's name or an unambiguous prefix of it (`--model.model.hidden=128` sets
# model.model.hidden_size): which setting a `set:` key names is resolve_setting's answer alone, for every check of
# the key (unknown_setting, the pipeline's own settings in _managed_entry, the pretrained encoder's match in
# encoder_settings), so that they cannot take one key for different settings.
_LIGHTNING_SPEC = None if _USES_CONDA else importlib.util.find_spec("pytorch_lightning")  # found, not imported
SOURCE_ROOTS = {"protrnn": CHECKOUT / "protrnn",
                "pytorch_lightning": Path(next(iter(_LIGHTNING_SPEC.submodule_search_locations)))
                if _LIGHTNING_SPEC and _LIGHTNING_SPEC.submodule_search_locations else None}
#: Each fit command's options outside any group (LightningCLI's own and ProtrnnCLI.add_arguments_to_parser's in
#: protrnn.training.cli; --help and --print_config are not settings) ...
FIT_OPTIONS = ("config", "seed_everything", "ckpt_path", "export_dir", "num_threads")
#: ... and its groups: (package, file, class) whose __init__ parameters, or a dataclass's fields, are the group's keys
#: (protrnn.training.cli: the FitParts classes, RunCheckpoint's parent, EarlyStopping; `model.model` is ModelConfig).
FIT_GROUPS = {
    "protrnn train": {
        "trainer": ("pytorch_lightning", "trainer/trainer.py", "Trainer"),
        "model": ("protrnn", "training/module.py", "ContactLightningModule"),
        "model.model": ("protrnn", "model/config.py", "ModelConfig"),
        "data": ("protrnn", "training/datamodule.py", "ContactDataModule"),
        "checkpoint": ("pytorch_lightning", "callbacks/model_checkpoint.py", "ModelCheckpoint"),
        "early_stopping": ("pytorch_lightning", "callbacks/early_stopping.py", "EarlyStopping"),
    },
    "protrnn pretrain fit": {
        "trainer": ("pytorch_lightning", "trainer/trainer.py", "Trainer"),
        "model": ("protrnn", "training/pretrain.py", "PretrainLightningModule"),
        "model.model": ("protrnn", "model/config.py", "ModelConfig"),
        "data": ("protrnn", "training/pretrain.py", "StructureLabelDataModule"),
        "checkpoint": ("pytorch_lightning", "callbacks/model_checkpoint.py", "ModelCheckpoint"),
    },
}
_LIST_TYPE = re.compile(r"\b(?:list|List|Iterable|Sequence)\[")
_FIT_SETTINGS = {}
_ANNOUNCED = set()


def _class_keys(package, file, name):
    """{key: takes a list} of the class `name` in `file` of `package`: its __init__'s parameters, or a dataclass's
    fields. None when that cannot be read (the package is not installed here, the class is gone or takes **kwargs):
    the group's keys are then left to the command."""
    root = SOURCE_ROOTS.get(package)
    if root is None:
        return None
    try:
        tree = ast.parse((root / file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    found = next((node for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name == name), None)
    if found is None:
        return None

    def takes_list(annotation):
        return annotation is not None and bool(_LIST_TYPE.search(ast.unparse(annotation)))

    init = next((node for node in found.body if isinstance(node, ast.FunctionDef) and node.name == "__init__"), None)
    if init is not None:
        if init.args.kwarg is not None:
            return None
        parameters = [*init.args.posonlyargs, *init.args.args][1:] + init.args.kwonlyargs  # without self
        return {arg.arg: takes_list(arg.annotation) for arg in parameters}
    if not any("dataclass" in ast.unparse(decorator) for decorator in found.decorator_list):
        return None  # inherits its __init__
    return {node.target.id: takes_list(node.annotation) for node in found.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and "ClassVar" not in ast.unparse(node.annotation)}


def fit_settings(command):
    """({option: takes a list}, groups whose keys could not be read) of `command` ("protrnn train" or "protrnn
    pretrain fit"), read once. In a group that could not be read, the options are only those the rules give the
    command themselves (GIVEN_OPTIONS)."""
    if command not in _FIT_SETTINGS:
        options = dict.fromkeys((*FIT_OPTIONS, *FIT_GROUPS[command]), False)
        unread = []
        for group, source in FIT_GROUPS[command].items():
            keys = _class_keys(*source)
            if keys is None:
                unread.append(group)
                options.update(dict.fromkeys((o for o in GIVEN_OPTIONS[command] if o.startswith(f"{group}.")), False))
            else:
                options.update({f"{group}.{key}": is_list for key, is_list in keys.items()})
        _FIT_SETTINGS[command] = options, unread
    return _FIT_SETTINGS[command]


def _option_matches(key, command):
    """The option names of `command` that `--KEY=...` stands for, as its parser matches them: [KEY] when KEY is one,
    else every name KEY begins (none, one or several). A list option has a second name, `OPTION+` (it appends to the
    list), which counts as a name of its own: `model.model.distogram` begins distogram_bins and distogram_bins+."""
    options, _ = fit_settings(command)
    names = [*options, *(f"{option}+" for option, is_list in options.items() if is_list)]
    return [key] if key in names else [name for name in names if name.startswith(key)]


def resolve_setting(key, command):
    """The option of `command` that the `set:` key `key` sets, as the command's parser takes `--KEY=...`: the key
    itself when it is an option, else the one option name it is a prefix of (`model.model.hidden` ->
    model.model.hidden_size, `seed_every` -> seed_everything); `OPTION+`, a list option's second name, sets OPTION.
    None when the command refuses the key (no option begins with it, or several do: `trainer.gradient_clip`), when it
    lies below an option (a callback's `init_args`), or when it lies in a group whose settings could not be read here
    and begins none of the options the rules give the command (GIVEN_OPTIONS), the only ones known there."""
    matches = _option_matches(key, command)
    return matches[0].removesuffix("+") if len(matches) == 1 else None


def unknown_setting(key, command):
    """Why `command` would refuse the override `--KEY=...`, or None where it takes it: an option or an unambiguous
    prefix of one (resolve_setting), or a key below an option (a callback's or a strategy's init_args). A key that
    begins several option names is refused as ambiguous, as the parser does. Keys in a group whose settings could not
    be read are taken unless they begin several of the options known there."""
    if resolve_setting(key, command) is not None:
        return None
    options, unread = fit_settings(command)
    matches = _option_matches(key, command)
    if len(matches) > 1:
        return (f"{command} refuses it as ambiguous: it could be any of {', '.join(sorted(matches))}; give the whole "
                "name")
    if any(key.startswith(f"{group}.") for group in unread):
        return None
    if any(key.startswith(f"{option}.") for option in options if option not in FIT_GROUPS[command]):
        return None
    close = difflib.get_close_matches(key, list(options), n=1)
    hint = f"did you mean {close[0]}?" if close else f"`{command} --help` lists its settings"
    return f"{command} has no setting {key!r}; {hint}"


def _refuse_unknown(key, setting, command):
    """Fail at `key` (the config key of `setting`, an override of `command`) when the command would refuse it."""
    why = unknown_setting(setting, command)
    if why:
        _fail(key, why)
    _, unread = fit_settings(command)
    if command not in _ANNOUNCED and any(setting.startswith(f"{group}.") for group in unread):
        _ANNOUNCED.add(command)
        why = ("the jobs run the conda environment's Lightning" if _USES_CONDA
               else "is pytorch_lightning installed for this Python?")
        print(f"protrnn pipeline: the settings of {command}'s {', '.join(unread)} could not be read here ({why}), "
              f"so `set:` keys there, e.g. {key}, are checked only when their jobs start", file=sys.stderr)


def _flags(text):
    """The option names (`trainer.max_steps`) of a command-line fragment."""
    return re.findall(r"(?:^|\s)--([A-Za-z_][\w.-]*)", text)


def _refuse_managed(key, managed, model=""):
    """Fail at `key`, a setting the pipeline overrides; `managed` is its table entry (or _managed_entry's)."""
    managed = managed.format(model=model)
    if managed.startswith("group: "):
        _fail(key, managed[len("group: "):])
    how = managed[len("none: "):] if managed.startswith("none: ") else f"use {managed} instead"
    _fail(key, f"the pipeline sets this itself after this entry, so the value would be ignored; {how}")


def _managed_entry(key, managed, command):
    """The table entry (of `managed`, a table of the options the rules give `command` after the user's) of the setting
    `key` names, or None: the key itself or the option it abbreviates (resolve_setting: `seed_every` for
    seed_everything). `config` adds a config file the rule does not track, and a group's own key (`data`) reads the
    whole group from a config file, where the pipeline's own settings of that group would be ignored."""
    setting = resolve_setting(key, command)
    if setting == "config":
        return "none: give the model's config file as its `config` key, which the rule tracks"
    if setting in managed:
        return managed[setting]
    inside = sorted(option for option in managed if setting and option.startswith(f"{setting}."))
    if inside:
        return (f"group: `{setting}` sets the whole group from a config file, and the pipeline gives "
                f"{', '.join(inside)} itself after it, so those would be ignored; give the group's other settings "
                f"one by one ({setting}.NAME)")
    return None


# --- models -------------------------------------------------------------------------------------------------------
MODELS = config["models"]
if "bundle" in MODELS:
    _fail("models.bundle", "the name 'bundle' is reserved for the bundled default model (config key `bundle`)")
for _name in MODELS:
    if "@" in _name or "/" in _name:
        _fail(f"models.{_name}", "model names may not contain '@' or '/' (runs are named NAME@seedS)")
    if _name in BASELINE_NAMES:
        _fail(f"models.{_name}", f"{_name!r} is the name of a baseline; give the model another name")
# Every grid model trains once per seed (seed_everything and the data order); evaluation, diagnostics and the report
# aggregate over seeds. A run is `<model>/seed<S>` on disk and `<model>@seed<S>` as a method name: SEED_TAG equals
# protrnn.diagnostics.results.SEED_TAG, which the report splits names on (tests/test_workflow.py checks the two agree).
SEED_TAG = "@seed"
SEEDS = [int(s) for s in config.get("seeds", [config["train"].get("seed", 0)])]
if len(set(SEEDS)) != len(SEEDS):
    _fail("seeds", f"seeds must be distinct, got {SEEDS}")
if config["train"].get("max_steps") is None:
    print("protrnn pipeline: train.max_steps is not set, so grid models train by epochs (train.max_epochs) with early "
          "stopping and their best checkpoint, not a matched number of steps", file=sys.stderr)
# The bundled default model (target `bundle`) trains and evaluates through the same rules as the grid: one run
# (`bundle`, seed train.seed), or with `bundle.seeds` one run per seed (`bundle/seed<S>`, trained side by side) that
# `protrnn ensemble` combines into ensembles/bundle (ensemble.json + member exports; not under models/bundle, which
# holds the member runs), evaluated and shipped as one model.
BUNDLE = config.get("bundle", {"config": "default", "max_time": "00:00:15:00", "max_epochs": 18})
BUNDLE_SEEDS = [int(s) for s in BUNDLE.get("seeds", [])]  # distinct, two or more: checked by the schema
BUNDLE_MEMBER_RUNS = [f"bundle/seed{s}" for s in BUNDLE_SEEDS]
#: Where the target `bundle` installs the model (bundle_model.py swaps the folder in whole). It is not a Snakemake
#: output, because Snakemake deletes a job's outputs before it runs, so a failed install would leave the package without
#: its model. The job's output is a copy of the installed record in the results folder instead.
BUNDLE_DIR = _relative(CHECKOUT / "protrnn" / "pretrained")
BUNDLE_RECORD = f"{RESULTS}/bundle/installed.json"
#: The installed model's record, an input of the job (workflows/rules/bundle.smk). Every install rewrites it, and
#: (since 2026-12-07) ends it with the installed weights' SHA-256, so once another results folder's bundle (or a
#: checkout) has replaced the model, it is newer than this folder's BUNDLE_RECORD and differs from it: the job
#: installs this folder's model again. Snakemake (9) also compares the record's checksum with the one it noted after the last install, so new
#: times on the same record (a fresh clone) rerun nothing. A record put back with times older than BUNDLE_RECORD's (a
#: copy that keeps them) goes unnoticed: `--forcerun bundle`. Left out while there is none (an input must exist).
INSTALLED_RECORD = f"{BUNDLE_DIR}/evaluation.json"
MODEL_SPECS = {**MODELS, "bundle": BUNDLE}
GRID_RUNS = [f"{m}/seed{s}" for m in MODELS for s in SEEDS]
_MODEL_ALTERNATIVES = "|".join(MODELS)
ALL_RUNS = f"bundle|(?:bundle|{_MODEL_ALTERNATIVES})/seed-?[0-9]+"
_GRID_RUN = re.compile(r"(?P<model>.+)/seed(?P<seed>-?[0-9]+)")


def run_model(run):
    """`lstm` of the run `lstm/seed1`; `bundle` of `bundle`."""
    match = _GRID_RUN.fullmatch(run)
    return match["model"] if match else run


def run_seed(run):
    """The seed of a grid run or bundle member (`lstm/seed1` -> 1); the single bundle's is train.seed."""
    match = _GRID_RUN.fullmatch(run)
    return int(match["seed"]) if match else int(config["train"].get("seed", 0))


def run_name(run):
    """Method / diagnostics name of a run: `lstm@seed1` (docs/pipeline.md), `bundle` for the bundle."""
    return f"{run_model(run)}{SEED_TAG}{run_seed(run)}" if _GRID_RUN.fullmatch(run) else run


def spec_key(name):
    """Where a model's entry lives in the config: `models.<name>`, or `bundle`."""
    return "bundle" if name == "bundle" else f"models.{name}"


def _config_file(value, key, directory=BUNDLED_CONFIGS):
    """A bundled config name (`directory`/<name>.yaml) or a path to a YAML file; `key` names it in errors."""
    bundled = directory / f"{value}.yaml"
    if bundled.is_file():
        return _relative(bundled)
    path = config_input(tuple(key.split(".")), value)
    if Path(path).is_file():
        return _input_path(key, path)
    if Path(path).exists():
        _fail(key, f"{path!r} is not a file: give a bundled config name or a YAML file")
    choices = sorted(p.stem for p in directory.glob("*.yaml"))
    _fail(key, f"unknown config {value!r}; bundled: {', '.join(choices)}, or give a path")


def model_config_path(name):
    """The training config file of a grid entry or the bundle."""
    return _config_file(MODEL_SPECS[name]["config"], f"{spec_key(name)}.config")


for _name in MODEL_SPECS:
    model_config_path(_name)

# --- pretraining (protrnn pretrain, docs/pretraining.md; rules in workflows/rules/pretrain.smk) ----------------------
# sidechainnet DSSP labels -> {RESULTS}/pretrain/data (test-set homologues removed, split by cluster) -> the encoder
# pretrained for pretrain.max_time -> {RESULTS}/pretrain/encoder/encoder.{json,safetensors}. A model entry with
# `pretrained: true` starts from that export (protrnn.training.finetune.PretrainedEncoder, frozen for freeze_steps).
PRETRAIN = dict(config.get("pretrain") or {})
PRETRAIN_ENABLED = bool(PRETRAIN.get("enabled", False))
SIDECHAINNET_REQUIREMENT = "sidechainnet==1.0.1"
SIDECHAINNET_WHEEL_FILE = f"{CACHE}/wheels/sidechainnet-1.0.1-py2.py3-none-any.whl"
PRETRAIN_SOURCE = (config_input(("pretrain", "source"), PRETRAIN["source"]) if PRETRAIN.get("source")
                   else SIDECHAINNET_WHEEL_FILE)
PRETRAIN_DATA = f"{RESULTS}/pretrain/data"
#: The pretraining labels (training split): rule pretrain_prepare writes them, pretrain_fit learns from them, and an
#: `aux_ss_weight` model draws its auxiliary secondary-structure batches from them.
PRETRAIN_LABELS = f"{PRETRAIN_DATA}/train.npz"
PRETRAIN_DIR = f"{RESULTS}/pretrain/encoder"
DEFAULT_FREEZE_STEPS = 200
#: pretrain.seed: the seed of the labels' split and of the encoder's training (`pretrain/encoder`).
PRETRAIN_SEED = int(PRETRAIN.get("seed", 0))
# bundle.encoder_per_seed: bundle member S starts from an encoder pretrained at seed S (the same labels and settings,
# another initialisation and batch order), so the members differ in the encoder as well as in the contact training.
# The member whose seed is pretrain.seed uses `pretrain/encoder`; the others `pretrain/encoder_seed<S>`.
ENCODER_PER_SEED = bool(BUNDLE.get("encoder_per_seed", False))
#: Names of encoder run directories (the wildcard constraint of rule pretrain_fit).
ENCODER_DIR_PATTERN = r"encoder(?:_seed-?[0-9]+)?"
#: The settings a pretrained encoder and the contact model starting from it must share
#: (protrnn.model.pretrain_heads.ENCODER_KEYS; tests/test_workflow.py checks the two lists agree).
ENCODER_KEYS = ("vocab_size", "cell", "embed_dim", "hidden_size", "num_layers", "residual", "layer_norm")
if PRETRAIN.get("source"):
    _input_path("pretrain.source", PRETRAIN["source"])
if PRETRAIN.get("source") and not Path(PRETRAIN_SOURCE).exists():
    _fail("pretrain.source", f"sidechainnet source does not exist: {PRETRAIN_SOURCE}")


def model_pretrained(name):
    """Whether a grid entry (or the bundle) starts from the pretrained encoder."""
    return bool(MODEL_SPECS[name].get("pretrained", False))


def encoder_dir(seed):
    """The run directory of the encoder pretrained at `seed`: `pretrain/encoder` at pretrain.seed, else
    `pretrain/encoder_seed<S>`."""
    return PRETRAIN_DIR if seed == PRETRAIN_SEED else f"{RESULTS}/pretrain/encoder_seed{seed}"


def encoder_seed(name):
    """The pretraining seed of an encoder directory name (`encoder` -> pretrain.seed, `encoder_seed1` -> 1)."""
    return PRETRAIN_SEED if name == "encoder" else int(name[len("encoder_seed"):])


def run_encoder_dir(run):
    """The encoder a run starts from: its own seed's for a bundle member under bundle.encoder_per_seed, else
    `pretrain/encoder`."""
    if ENCODER_PER_SEED and run in BUNDLE_MEMBER_RUNS:
        return encoder_dir(run_seed(run))
    return PRETRAIN_DIR


def encoder_files(directory):
    """An encoder's export: {json, weights} in its run directory."""
    return {"json": f"{directory}/encoder.json", "weights": f"{directory}/encoder.safetensors"}


PRETRAIN_ENCODER = encoder_files(PRETRAIN_DIR)


def model_freeze_steps(name):
    """Optimiser steps for which a pretrained model keeps its embedding and encoder frozen."""
    return int(MODEL_SPECS[name].get("freeze_steps", DEFAULT_FREEZE_STEPS))


def model_aux_ss_weight(name):
    """The weight of a pretrained model's auxiliary 8-state SS loss (AuxiliarySecondaryStructure), None when off."""
    weight = MODEL_SPECS[name].get("aux_ss_weight")
    return None if weight is None else float(weight)


def pretrain_config_path():
    """The `protrnn pretrain fit` config (pretrain.config: a bundled name or a path)."""
    return _config_file(PRETRAIN.get("config", "pretrain"), "pretrain.config", PRETRAIN_CONFIGS)


def _plain(value):
    """A `set:` value as the CLI would parse it ("128" -> 128, "true" -> True)."""
    return yaml.safe_load(value) if isinstance(value, str) else value


def encoder_settings(config_file, base_file, overrides, command):
    """The ENCODER_KEYS of a LightningCLI model block as `command` resolves it: the command's default config file
    (`base_file`), then `config_file`, then the overrides of `model.model.*` settings (a key as resolve_setting reads
    it: `model.model.hidden` sets hidden_size, while `model.model.h`, a prefix of several settings, sets none and is
    refused by the unknown-setting check). A key none of them sets takes ModelConfig's default on both sides of a
    comparison, so it is left as None here."""
    values = {}
    for path in (base_file, config_file):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise WorkflowError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        model = data.get("model") if isinstance(data, dict) else None
        block = model.get("model") if isinstance(model, dict) else None
        if isinstance(block, dict):
            values.update(block)
    for key, value in (overrides or {}).items():
        setting = resolve_setting(key, command) or ""
        if setting.startswith("model.model."):
            values[setting[len("model.model."):]] = _plain(value)
    return {key: values.get(key) for key in ENCODER_KEYS}


def pretrain_encoder_settings():
    return encoder_settings(pretrain_config_path(), PRETRAIN_BASE_CONFIG, PRETRAIN.get("set"), "protrnn pretrain fit")


def model_encoder_settings(name):
    return encoder_settings(model_config_path(name), TRAIN_BASE_CONFIG, MODEL_SPECS[name].get("set"), "protrnn train")


PRETRAINED_MODELS = [name for name in MODEL_SPECS if model_pretrained(name)]
for _name, _spec in MODEL_SPECS.items():
    for _key in ("freeze_steps", "aux_ss_weight"):
        if _key in _spec and not model_pretrained(_name):
            _fail(f"{spec_key(_name)}.{_key}", "applies only to a model with `pretrained: true`")
if ENCODER_PER_SEED and not (BUNDLE_SEEDS and model_pretrained("bundle")):
    _fail("bundle.encoder_per_seed", "needs an ensemble bundle (bundle.seeds) that starts from pretrained encoders "
          "(bundle.pretrained: true)")
#: Every pretrained encoder some run starts from (the target `pretrain` builds them all).
ENCODER_DIRS = sorted({PRETRAIN_DIR} | {run_encoder_dir(run) for run in BUNDLE_MEMBER_RUNS})
if PRETRAINED_MODELS and not PRETRAIN_ENABLED:
    _fail(f"{spec_key(PRETRAINED_MODELS[0])}.pretrained",
          "starts from the pretrained encoder, but the pretraining stage is off: set pretrain.enabled: true")
if PRETRAIN_ENABLED:
    pretrain_config_path()
    _ENCODER = pretrain_encoder_settings()
    for _name in PRETRAINED_MODELS:
        _model = model_encoder_settings(_name)
        _diff = [k for k in ENCODER_KEYS if _plain(_model[k]) != _plain(_ENCODER[k])]
        if _diff:
            _fail(f"{spec_key(_name)}.pretrained",
                  "the pretrained encoder cannot start this model, their encoders differ: "
                  + "; ".join(f"{k} is {_ENCODER[k]} in pretraining (pretrain.config "
                              f"{PRETRAIN.get('config', 'pretrain')!r} + pretrain.set) but {_model[k]} in this model "
                              f"(config {MODEL_SPECS[_name]['config']!r} + set)" for k in _diff)
                  + f". Make them agree, e.g. pretrain.set: {{model.model.{_diff[0]}: {_model[_diff[0]]}}} "
                  f"or {spec_key(_name)}.set: {{model.model.{_diff[0]}: {_ENCODER[_diff[0]]}}}")
        if model_freeze_steps(_name) > 0 and (config["train"].get("devices", 1) > 1
                                              or config["train"].get("num_nodes", 1) > 1):
            _fail(f"{spec_key(_name)}.freeze_steps", "freezing the pretrained encoder is single-process only "
                  "(DDP would need find_unused_parameters): set freeze_steps: 0 or train.devices/num_nodes: 1")
    if not TEST_SETS:
        print("protrnn pipeline: no test set on disk, so the pretraining labels are not filtered against any "
              "(the held-out contact clusters may have homologues among them)", file=sys.stderr)


def pretrain_prepare_options():
    """`protrnn pretrain prepare` options from the pretrain section (the library's defaults where unset; identity
    defaults to prepare.identity: the same leakage threshold as the contact data)."""
    options = {key.replace("_", "-"): PRETRAIN[key] for key in
               ("min_length", "max_length", "coverage", "val_fraction", "seed", "max_chains")
               if PRETRAIN.get(key) is not None}
    if PRETRAIN.get("subsets"):
        options["subsets"] = ",".join(PRETRAIN["subsets"])
    identity = PRETRAIN.get("identity", config["prepare"].get("identity"))
    if identity is not None:
        options["identity"] = identity
    return " ".join(f"--{key} {shlex.quote(str(value))}" for key, value in options.items())


def pretrain_fit_options():
    """`protrnn pretrain fit` options of the pretrain section: its overrides, time cap and optional step cap."""
    flags = [_overrides_text(PRETRAIN.get("set")), f"--trainer.max_time {PRETRAIN.get('max_time', '00:00:15:00')}"]
    if PRETRAIN.get("max_steps") is not None:
        flags.append(f"--trainer.max_steps {PRETRAIN['max_steps']}")
    return " ".join(f for f in flags if f)


def pretrain_resume_flag(wildcards, output):
    """`--ckpt_path last.ckpt` when an interrupted pretraining run left a checkpoint but no export (derived from the
    output, so not a recorded parameter: see resume_flag)."""
    return _resume_from(Path(output.json).parent, Path(output.json))


def config_inputs(config_file, base_file):
    """A fit command's config files as inputs: `config` (its --config) and `base_config` (the file the command reads
    before it), flagged `ancient`: a fresh clone or a checkout switch gives them new modification times without
    changing them. Their contents count instead, through config_digest() as a param (the `params` trigger): editing
    one reruns the job."""
    return {"config": ancient(config_file), "base_config": ancient(_relative(base_file))}


def config_digest(config_file, base_file):
    """SHA-256 of a fit command's two config files' contents (a param of its rule: see config_inputs)."""
    digest = hashlib.sha256()
    for path in (config_file, base_file):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def train_inputs(wildcards):
    """A run's training data and config files, and the pretrained encoder when its model starts from it."""
    inputs = {"train": f"{RESULTS}/data/train.npz", "val": f"{RESULTS}/data/val.npz",
              **config_inputs(model_config_path(run_model(wildcards.run)), TRAIN_BASE_CONFIG)}
    if model_pretrained(run_model(wildcards.run)):
        encoder = encoder_files(run_encoder_dir(wildcards.run))
        inputs.update(encoder=encoder["json"], encoder_weights=encoder["weights"])
        if model_aux_ss_weight(run_model(wildcards.run)) is not None:
            inputs.update(aux_labels=PRETRAIN_LABELS)
    return inputs

if config["predict"].get("fasta") and config["predict"].get("model", next(iter(MODELS))) not in MODELS:
    _fail("predict.model", f"{config['predict']['model']!r} is not a model of the grid ({', '.join(MODELS)})")

PREDICT_MODEL = config["predict"].get("model", next(iter(MODELS)))
# Predictions come from the first seed's run of the chosen model.
PREDICT_RUN = f"{PREDICT_MODEL}/seed{SEEDS[0]}"
# One folder per FASTA file, named by its file name's stem made safe (letters, digits, '_', '-'), with _2, _3 ... for
# stems met before (results/predict/<name>/).
PREDICT_FASTA = {}
for _i, _p in enumerate(config["predict"].get("fasta", [])):
    _p = config_input(("predict", "fasta"), _input_path(f"predict.fasta[{_i}]", _p))
    if not Path(_p).exists():
        _fail(f"predict.fasta[{_i}]", f"FASTA file does not exist: {_p}")
    _stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(_p).name.split(".")[0]).strip("_") or f"fasta{_i}"
    _key, _n = _stem, 1
    while _key in PREDICT_FASTA:
        _n += 1
        _key = f"{_stem}_{_n}"
    PREDICT_FASTA[_key] = _p


def _option_text(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _overrides_text(overrides):
    """LightningCLI dotted overrides (`key: value`), shell-quoted."""
    return " ".join(f"--{key}={shlex.quote(_option_text(value))}" for key, value in (overrides or {}).items())


def model_overrides(name, encoder=PRETRAIN_DIR):
    """LightningCLI dotted overrides of a grid entry, shell-quoted, then the PretrainedEncoder callback (from the
    encoder directory `encoder`) of a `pretrained: true` entry and, with `aux_ss_weight`, the AuxiliarySecondaryStructure
    callback (the pretraining labels, the SS read-out of the same encoder, the weight; its other arguments at their
    defaults). Both are appended to the config's callbacks; a model without them gets exactly the old flags, so adding
    the options did not change any recorded parameter."""
    text = _overrides_text(MODEL_SPECS[name].get("set"))
    if model_pretrained(name):
        text += (" --trainer.callbacks+=protrnn.training.finetune.PretrainedEncoder"
                 f" --trainer.callbacks.path {shlex.quote(encoder)}"
                 f" --trainer.callbacks.freeze_steps {model_freeze_steps(name)}")
        weight = model_aux_ss_weight(name)
        if weight is not None:
            text += (" --trainer.callbacks+=protrnn.training.finetune.AuxiliarySecondaryStructure"
                     f" --trainer.callbacks.labels {shlex.quote(PRETRAIN_LABELS)}"
                     f" --trainer.callbacks.encoder {shlex.quote(encoder)} --trainer.callbacks.weight {weight!r}")
    return text.strip()


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
    budget keeps the config's early stopping and best-checkpoint export. The learning-rate schedule spans the budget
    either way. The bundle always keeps its config's early stopping and best-checkpoint export: with `max_steps` it
    gets `--trainer.max_steps N` alone (and its own `max_epochs` if it sets one), as in the hand-run recipe of
    workflows/config.bundle.yaml."""
    steps = model_max_steps(name)
    if name == "bundle":
        flags = [] if steps is None else [f"--trainer.max_steps {steps}"]
        if steps is None or "max_epochs" in MODEL_SPECS[name]:
            flags.append(f"--trainer.max_epochs {MODEL_SPECS[name].get('max_epochs', config['train']['max_epochs'])}")
        return " ".join(flags)
    if steps is None:
        epochs = MODEL_SPECS[name].get("max_epochs", config["train"]["max_epochs"])
        return f"--trainer.max_epochs {epochs}"
    return (f"--trainer.max_steps {steps} --trainer.max_epochs -1 --early_stopping.patience 1000000000"
            " --checkpoint.monitor null")


def _minutes(max_time):
    """Whole minutes of a DD:HH:MM:SS time limit."""
    days, hours, minutes, _ = (int(x) for x in max_time.split(":"))
    return days * 24 * 60 + hours * 60 + minutes


def runtime_minutes(name):
    """Cluster runtime request: the training time limit plus 30 minutes for start-up, validation and export."""
    return 30 + _minutes(model_max_time(name))


# A time limit of zero (the schema checks only the DD:HH:MM:SS form) stops a run before its first step: the job then
# exports untrained weights, exits 0, and everything after it evaluates them.
for _key, _value in (("train.max_time", config["train"].get("max_time")),
                     *((f"{spec_key(_name)}.max_time", _spec.get("max_time")) for _name, _spec in MODEL_SPECS.items()),
                     ("pretrain.max_time", PRETRAIN.get("max_time"))):
    if _value is not None and not any(int(part) for part in str(_value).split(":")):
        _fail(_key, f"{_value!r} is no time at all: training would stop before its first step and export untrained "
              "weights; give a limit, e.g. '00:00:15:00'")


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


# --- `set:` keys and synthetic options, checked ---------------------------------------------------------------------
# Each key of a model's `set:` and of `pretrain.set` must name a setting its command takes (unknown_setting) and none
# the pipeline gives the command itself (_managed_entry), both as resolve_setting reads the key; a synthetic variant's
# options may name none of those the pipeline gives `protrnn synthetic`.
for _name, _spec in MODEL_SPECS.items():
    _managed = {**TRAIN_MANAGED, **{k: BUDGET_MANAGED[k] for k in _flags(model_budget(_name))}}
    for _key in (_spec.get("set") or {}):
        _refuse_unknown(f"{spec_key(_name)}.set.{_key}", _key, "protrnn train")
        _entry = _managed_entry(_key, _managed, "protrnn train")
        if _entry:
            _refuse_managed(f"{spec_key(_name)}.set.{_key}", _entry, spec_key(_name))
_pretrain_managed = {k: v for k, v in PRETRAIN_MANAGED.items()
                     if k != "trainer.max_steps" or PRETRAIN.get("max_steps") is not None}
for _key in (PRETRAIN.get("set") or {}):
    _refuse_unknown(f"pretrain.set.{_key}", _key, "protrnn pretrain fit")
    _entry = _managed_entry(_key, _pretrain_managed, "protrnn pretrain fit")
    if _entry:
        _refuse_managed(f"pretrain.set.{_key}", _entry)
for _variant, _options in SYNTHETIC_VARIANTS.items():
    for _key in (_options or {}):
        # argparse also takes an unambiguous prefix of an option (`--step` for `--steps`)
        _option = _key.replace("_", "-")
        _hit = next((m for m in SYNTHETIC_MANAGED if m.startswith(_option)), None)
        if _hit:
            _refuse_managed(f"synthetic.variants.{_variant}.{_key}", SYNTHETIC_MANAGED[_hit])


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


def datasets(paths):
    """Input datasets (structure files and folders, wheels, test sets, the pretraining source), flagged `ancient`:
    their modification times are ignored, so a copied, re-extracted or re-mounted dataset does not rerun `prepare`
    (and every model after it) or the hour-long `pretrain_prepare`. A different set of paths still reruns them (the
    `input` and `params` triggers); after editing a dataset in place, rerun with `--forcerun prepare pretrain_prepare`
    (docs/pipeline.md, "Interruptions")."""
    return [ancient(path) for path in paths]


def prepare_inputs(wildcards):
    """Every training input (:func:`datasets`): user paths, the default wheels and fetched PDB entries (fetched
    again, an entry gets a new time, not new contents)."""
    inputs = datasets(SOURCE_PATHS)
    if config["sources"]["default"]:
        inputs += datasets(DEFAULT_WHEEL_FILES.values())
    inputs += datasets(f"{CACHE}/pdb/{p}.cif" for p in PDB_IDS)
    return inputs


def resume_flag(wildcards, output):
    """`--ckpt_path last.ckpt` when an interrupted run left a checkpoint but no exported model.

    It takes `output` so that Snakemake counts it as derived from the outputs and leaves it out of the params it
    records for its `params` rerun trigger: otherwise the next invocation after a resumed job would see the flag go
    from `--ckpt_path ...` to '' and train that model again from scratch.
    """
    run = Path(output.model).parent
    return _resume_from(run, run / "model.json")


def _resume_from(run, export):
    """`--ckpt_path last-if-same` when RUN/checkpoints/last.ckpt exists and the run's export does not (an interrupted
    job), else ''. The command resumes only when the checkpoint's run had this job's architecture, settings and data,
    and otherwise moves checkpoints/ aside and trains from the start (docs/training.md): an interrupted job rerun
    after its settings or data changed had resumed the old run."""
    last = run / "checkpoints" / "last.ckpt"
    return "--ckpt_path last-if-same" if last.exists() and not export.exists() else ""


def parent_of(key):
    """Params function: the directory holding output `key` (keeps params in step with the outputs)."""
    return lambda wildcards, output: str(Path(output[key]).parent)


def model_file(run):
    """The file that stands for a trained run: its model.json, or the ensemble.json of an ensemble bundle."""
    if run == "bundle" and BUNDLE_SEEDS:
        return f"{RESULTS}/ensembles/bundle/ensemble.json"  # not under models/bundle, which holds the member runs
    return f"{RESULTS}/models/{run}/model.json"


def bundle_inputs(wildcards):
    """The bundle's model and evaluations, and the records of the data it was trained on."""
    inputs = {"model": model_file("bundle"),
              "evaluation": f"{RESULTS}/evaluation/bundle/summary.json",
              "baselines": f"{RESULTS}/evaluation/baselines/summary.json",
              "manifest": f"{RESULTS}/data/manifest.tsv",
              "leakage": f"{RESULTS}/data/leakage.tsv"}
    if model_pretrained("bundle"):  # the record's encoder is the first member's (bundle_model.py reads the others')
        first = BUNDLE_MEMBER_RUNS[0] if BUNDLE_MEMBER_RUNS else "bundle"
        inputs.update(pretrain_manifest=f"{PRETRAIN_DATA}/manifest.json",
                      encoder=encoder_files(run_encoder_dir(first))["json"])
    if config.get("bundle", {}).get("notes"):
        inputs["notes"] = config_input(("bundle", "notes"), _input_path("bundle.notes", config["bundle"]["notes"]))
    if Path(INSTALLED_RECORD).is_file():
        inputs["installed"] = INSTALLED_RECORD
    return inputs


def bundle_records(wildcards, input):
    """bundle_model.py's record options: data, pretraining, the card's notes (derived from the inputs, so not recorded
    as parameters)."""
    flags = f"--data {shlex.quote(str(Path(input.manifest).parent))}"
    if "encoder" in input.keys():
        flags += (f" --pretrain-data {shlex.quote(str(Path(input.pretrain_manifest).parent))}"
                  f" --encoder {shlex.quote(str(Path(input.encoder).parent))}")
    if "notes" in input.keys():
        flags += f" --notes {shlex.quote(str(input.notes))}"
    return flags
