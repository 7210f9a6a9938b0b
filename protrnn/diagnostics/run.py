"""The ``protrnn diagnose`` pipeline: models and chains in, ``protrnn-diagnostics`` JSON and a table out.

For each model: load it (:func:`protrnn.model.io.load_network`), measure the gradient flow on a seeded sample of the
chains, summarise the horizons, measure context usage by ablation (:mod:`protrnn.diagnostics.usage`), compute the
training loss (the model's recorded ``pos_weight`` and ``focal_gamma``) on
whole chains by length, take train/validation losses from a training set or a Lightning ``metrics.csv``, and diagnose
the fit. :func:`diagnose` is the one call the command makes.

Every contact label (losses, contact rates, hidden gradients, the usage precision) is taken at the cutoff of the
``--data`` chains: a prepared dataset's stored cutoff (``protrnn prepare --contact-cutoff``, as ``protrnn evaluate``
scores it), the CASP 8 Å for any other input (:func:`load_data`); it is recorded as each model's
``metrics.contact_cutoff``, and ``--train-data`` must have the same.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.data.chain import ProteinChain
from protrnn.data.sources import read_collection
from protrnn.diagnostics.fit import (
    constant_predictor_loss,
    contact_rate,
    contact_rates_by_length,
    diagnose_fit,
    length_matched_losses,
    length_matched_reference_loss,
    length_weights,
    summarise,
)
from protrnn.diagnostics.gradients import contact_loss_by_length, gradient_flow
from protrnn.diagnostics.results import (
    DEFAULT_FRACTION,
    DEFAULT_MAX_DISTANCE,
    DEFAULT_USAGE_FRACTION,
    DiagnosticsResult,
    FitThresholds,
    save_diagnostics,
)
from protrnn.diagnostics.usage import DEFAULT_USAGE_DISTANCES, background_composition, usage_profile
from protrnn.errors import InputError, reading
from protrnn.model.config import INIT_SETTINGS
from protrnn.model.io import LoadedModel, ensemble_members, is_ensemble, load_network, recorded_config
from protrnn.model.predictor import resolve_device
from protrnn.model.pretrain_heads import read_pretrained_metadata
from protrnn.training.loss import LossSettings

#: Column names of the last logged train and validation losses in a Lightning CSVLogger ``metrics.csv``.
TRAIN_LOSS_KEYS = ("train/loss", "train/loss_epoch", "train_loss_epoch", "train_loss")
VAL_LOSS_KEYS = ("val/loss", "val_loss")


@dataclass
class DiagnoseOptions:
    """Settings of one ``protrnn diagnose`` run (the command's options; defaults are the command's defaults).

    ``pos_weight`` overrides the model's recorded training ``pos_weight`` (``None``: use the record, else 1);
    ``focal_gamma`` always comes from the record. ``train_metrics`` holds one ``metrics.csv`` per model, used for the
    losses when ``train_data`` is not given. ``usage*``: the context-ablation measurement
    (:mod:`protrnn.diagnostics.usage`) on ``usage_chains`` chains of the same seeded sample order;
    ``usage_background`` None means ``train`` when ``train_data`` is given, else ``chain``.
    """

    max_distance: int = DEFAULT_MAX_DISTANCE
    fraction: float = DEFAULT_FRACTION
    smooth: int = 5
    n_chains: int = 32
    pairs_per_chain: int = 8
    batch_size: int = 8
    seed: int = 0
    hidden: bool = True
    device: str = "auto"
    train_data: str | os.PathLike[str] | None = None
    loss_chains: int = 200
    train_metrics: Sequence[str | os.PathLike[str]] | None = None
    pos_weight: float | None = None
    length_bins: Sequence[int] = (64, 128, 256)
    thresholds: FitThresholds = field(default_factory=FitThresholds)
    usage: bool = True
    usage_distances: Sequence[int] = DEFAULT_USAGE_DISTANCES
    usage_draws: int = 4
    usage_chains: int = 16
    usage_pairs_per_chain: int = 8
    usage_precision_chains: int = 4
    usage_pool_factor: float = 2.0
    usage_fraction: float = DEFAULT_USAGE_FRACTION
    usage_background: str | None = None


def expand_ensembles(models: Sequence[tuple[str, str | os.PathLike[str]]]) -> list[tuple[str, Path]]:
    """Each ``(name, path)`` with an ensemble (``protrnn ensemble``, e.g. the bundled model) replaced by its members,
    named ``NAME/member-K`` in the listed order: gradients and horizons are properties of one network, so an ensemble
    is diagnosed member by member. Other entries are kept as they are."""
    out: list[tuple[str, Path]] = []
    for name, path in models:
        if is_ensemble(path):
            out += [(f"{name}/{member.name}", member) for member in ensemble_members(path)]
        else:
            out.append((name, Path(path)))
    return out


def diagnose(models: Sequence[tuple[str, str | os.PathLike[str]]], data: str | os.PathLike[str],
             output: str | os.PathLike[str], options: DiagnoseOptions | None = None, *,
             stream: TextIO | None = None) -> list[DiagnosticsResult]:
    """Diagnose every ``(name, path)`` model on the chains of ``data``, write ``output`` (atomically) and print the
    table and ``wrote OUTPUT`` to ``stream`` (default stdout); ``options`` default to :class:`DiagnoseOptions`. An
    ensemble counts as its members (:func:`expand_ensembles`), also for ``train_metrics`` (one file per member).
    Returns the results, in model order."""
    stream = sys.stdout if stream is None else stream
    options = DiagnoseOptions() if options is None else options
    models = expand_ensembles(models)
    if options.train_metrics and len(options.train_metrics) != len(models):
        raise InputError(f"--train-metrics needs one file per model: {len(models)} model(s), "
                         f"{len(options.train_metrics)} file(s)")
    names = [name for name, _ in models]
    if len(set(names)) != len(names):
        raise InputError(f"model names must be unique, got {', '.join(names)} (use NAME=PATH)")
    device = resolve_device(options.device)

    chains, cutoff = load_data(data)
    measured = sample_chains(chains, options.n_chains, np.random.default_rng(options.seed))
    loss_val = sample_chains(chains, options.loss_chains, np.random.default_rng(options.seed))
    loss_train = train_chains = None
    if options.train_data:
        train_chains, train_cutoff = load_data(options.train_data)
        check_same_cutoff(data, cutoff, options.train_data, train_cutoff)
        loss_train = sample_chains(train_chains, options.loss_chains, np.random.default_rng(options.seed))
    rate = contact_rate(loss_train if loss_train is not None else loss_val, contact_cutoff=cutoff)
    if not 0.0 < rate < 1.0:
        print(f"protrnn diagnose: the loss chains' contact rate is {rate:g}, so the loss is not judged against the "
              "base rate (fit diagnosis without a reference level)", file=sys.stderr)
    train_rates = (None if loss_train is None
                   else contact_rates_by_length(loss_train, options.length_bins, contact_cutoff=cutoff))
    if options.max_distance < options.thresholds.long_horizon:
        print(f"protrnn diagnose: --max-distance {options.max_distance} is below --long-horizon "
              f"{options.thresholds.long_horizon}: a horizon beyond the measured range cannot be called long, so such "
              "a model's fit label may be undetermined", file=sys.stderr)
    background = options.usage_background or ("train" if options.train_data else "chain")
    composition = None
    if options.usage and background == "train":
        if train_chains is None:
            raise InputError("--usage-background train needs --train-data (the training composition)")
        composition = background_composition(train_chains)
    usage_chains = sample_chains(chains, options.usage_chains, np.random.default_rng(options.seed))

    loaded_models = [load_network(path) for _, path in models]  # each read once, all checked before one is measured
    for (name, _), loaded in zip(models, loaded_models, strict=True):
        check_model_cutoff(name, loaded, cutoff)
    results = []
    for index, ((name, path), loaded) in enumerate(zip(models, loaded_models, strict=True)):
        result = _diagnose_model(name, Path(path), loaded, index, measured, loss_val, loss_train, rate, device, options,
                                 usage_chains if options.usage else None, background, composition, train_rates,
                                 contact_cutoff=cutoff)
        results.append(result)
    save_diagnostics(results, output)
    print_table(results, stream)
    print(f"wrote {output}", file=stream)
    return results


def model_record(loaded: LoadedModel) -> Mapping[str, Any]:
    """The metadata a loaded model's training record is read from: an export's ``model.json``; for a checkpoint,
    what ``protrnn export`` would record of it (:func:`protrnn.training.callbacks.checkpoint_record`: its step and the
    run's config, from the checkpoint or its run directory)."""
    if loaded.kind != "checkpoint":
        return loaded.metadata
    from protrnn.training.callbacks import checkpoint_record  # Lightning: only for a checkpoint

    return {**loaded.metadata, **checkpoint_record(loaded.checkpoint or {}, loaded.path)}


def training_record(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a model's ``model.json`` says about how it was trained: ``seed`` (seed_everything), ``gradient_clip_val``,
    ``max_steps``, ``max_epochs``, the ``global_step`` of the exported weights, ``model_settings`` (the optimisation
    and loss settings: lr, weight_decay, pos_weight, ...) and ``data_settings`` (crops, budgets, blocks; not paths,
    seed or workers) (keys absent from the record are left out), and
    always ``pretrained_encoder``: whether training started from a pretrained encoder (a
    :data:`PRETRAINED_CALLBACK` in ``trainer.callbacks``; False for a model.json that records no callbacks). It is
    None, unknown, where the metadata cannot tell (:func:`config_unknown`: ``protrnn export`` found no config of the
    checkpoint's run, and says why in ``training_config_source``, which the record then copies; or an export by a
    ``protrnn export`` that did not record the config yet).

    A pretrained model also gets ``freeze_steps``, ``encoder_lr_scale`` (the encoder's learning rate as a multiple
    of the head's; 1 when the record predates the option), ``pretrained_encoder_path`` and, when that export's
    ``encoder.json`` can still be read, ``pretrained_encoder_metrics`` (its held-out ``Q8``, ``Q3``, ``mask_acc``)
    and ``pretrained_encoder_init``: the init settings (:data:`~protrnn.model.config.INIT_SETTINGS`) of the
    encoder's own config, as :func:`protrnn.model.pretrain_heads.load_pretrained` builds it (missing keys at their
    defaults). They describe the loaded weights; the contact model's own init settings do not (its embedding and
    encoder are overwritten).

    A model started from a trained contact model (an :data:`INITIAL_WEIGHTS_CALLBACK` in ``trainer.callbacks``)
    gets ``initial_weights``: ``{"path": ..., "parts": "all" | "encoder"}``; absent otherwise.
    """
    config = metadata.get("training_config") or {}
    trainer = config.get("trainer") or {} if isinstance(config, Mapping) else {}
    out: dict[str, Any] = {}
    if config_unknown(metadata):
        from protrnn.training.callbacks import EXPORT_COMMAND, TRAINING_CONFIG_SOURCE

        if metadata.get("global_step") is not None:
            out["global_step"] = metadata["global_step"]
        out["pretrained_encoder"] = None
        out[TRAINING_CONFIG_SOURCE] = str(metadata.get(TRAINING_CONFIG_SOURCE)
                                          or f"unknown: exported by a {EXPORT_COMMAND} that did not record it")
        return out
    if isinstance(config, Mapping) and config.get("seed_everything") is not None:
        out["seed"] = config["seed_everything"]
    for key in ("gradient_clip_val", "max_steps", "max_epochs"):
        if isinstance(trainer, Mapping) and key in trainer:
            out[key] = trainer[key]
    # The optimisation and data settings besides the architecture, seeds, paths and workers: two runs that differ in
    # them (a learning rate, a loss weight, a crop) do not isolate a knob (protrnn.report.findings).
    for section, left_out in (("model", TRAINING_KEYS_LEFT_OUT), ("data", DATA_KEYS_LEFT_OUT)):
        values = config.get(section) if isinstance(config, Mapping) else None
        if isinstance(values, Mapping):
            out[f"{section}_settings"] = {k: v for k, v in values.items() if k not in left_out}
    if metadata.get("global_step") is not None:
        out["global_step"] = metadata["global_step"]
    callback = pretrained_callback(trainer.get("callbacks") if isinstance(trainer, Mapping) else None)
    out["pretrained_encoder"] = callback is not None
    if callback is not None:
        init_args = callback.get("init_args") or {}
        init_args = init_args if isinstance(init_args, Mapping) else {}
        out["freeze_steps"] = int(init_args.get("freeze_steps") or 0)
        module = config.get("model") if isinstance(config, Mapping) else None
        scale = module.get("encoder_lr_scale") if isinstance(module, Mapping) else None
        out["encoder_lr_scale"] = float(scale) if scale is not None else 1.0
        path = init_args.get("path")
        if path:
            out["pretrained_encoder_path"] = str(path)
            metrics, init = _encoder_description(path)
            if metrics:
                out["pretrained_encoder_metrics"] = metrics
            if init is not None:
                out["pretrained_encoder_init"] = init
    initial = recorded_callback(trainer.get("callbacks") if isinstance(trainer, Mapping) else None,
                                INITIAL_WEIGHTS_CALLBACK)
    if initial is not None:
        init_args = initial.get("init_args") or {}
        init_args = init_args if isinstance(init_args, Mapping) else {}
        path = init_args.get("path")
        out["initial_weights"] = {"path": None if path is None else str(path),
                                  "parts": str(init_args.get("parts") or "all")}
    return out


def config_unknown(metadata: Mapping[str, Any]) -> bool:
    """Whether a model's metadata cannot tell how it was trained: it records no ``training_config`` (or null) and
    either says where it would have come from (``training_config_source``: ``protrnn export`` found none) or was
    written by ``protrnn export`` (which recorded none before it looked). A model.json of neither kind without a
    config (an end-of-fit export that predates the record) reads as before: trained without callbacks."""
    if isinstance(metadata.get("training_config"), Mapping):
        return False
    from protrnn.training.callbacks import EXPORT_COMMAND, TRAINING_CONFIG_SOURCE

    return (metadata.get("training_config", {}) is None or TRAINING_CONFIG_SOURCE in metadata
            or metadata.get("exported_by") == EXPORT_COMMAND)


#: Keys of a recorded ``training_config["model"]`` that are no training setting of their own: the architecture (the
#: knobs read it from the model's config) and the encoder's learning-rate scale (part of the pretraining knob).
TRAINING_KEYS_LEFT_OUT = frozenset({"model", "encoder_lr_scale"})
#: Keys of a recorded ``training_config["data"]`` that do not change what is learnt: paths, the seed, workers,
#: the validation batches' budgets.
DATA_KEYS_LEFT_OUT = frozenset({"train_path", "val_path", "seed", "num_workers", "val_max_tokens", "val_max_pairs"})
#: The callback (``trainer.callbacks`` class path) that starts contact training from a pretrained encoder.
PRETRAINED_CALLBACK = "protrnn.training.finetune.PretrainedEncoder"
#: The callback that adds the auxiliary secondary-structure loss during contact training.
AUXILIARY_SS_CALLBACK = "protrnn.training.finetune.AuxiliarySecondaryStructure"
#: The callback that starts contact training from the weights of a trained contact model (all, or its encoder).
INITIAL_WEIGHTS_CALLBACK = "protrnn.training.finetune.InitialWeights"
#: Validation metrics of a pretrained export's ``encoder.json`` copied into the training record (recorded name -> key).
ENCODER_METRICS = {"val/Q8": "Q8", "val/Q3": "Q3", "val/mask_acc": "mask_acc"}


def recorded_callback(callbacks: Any, class_path: str) -> Mapping[str, Any] | None:
    """The entry of a recorded ``trainer.callbacks`` (a list, or one entry) whose ``class_path`` is ``class_path`` or
    its bare class name, if any."""
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    if not isinstance(callbacks, Sequence) or isinstance(callbacks, str):
        return None
    names = (class_path, class_path.rsplit(".", 1)[-1])
    for entry in callbacks:
        if isinstance(entry, Mapping) and entry.get("class_path") in names:
            return entry
    return None


def pretrained_callback(callbacks: Any) -> Mapping[str, Any] | None:
    """The :data:`PRETRAINED_CALLBACK` entry of a recorded ``trainer.callbacks``, if any."""
    return recorded_callback(callbacks, PRETRAINED_CALLBACK)


def _encoder_description(path: str | os.PathLike[str]) -> tuple[dict[str, float], dict[str, Any] | None]:
    """What a pretrained export's ``encoder.json`` says (no weights read, nothing unpickled): its held-out Q8 / Q3 /
    masked-residue accuracy (empty when absent) and its config's init settings
    (:data:`~protrnn.model.config.INIT_SETTINGS`; None when the config cannot be built). Both empty / None when the
    file cannot be read: the record stays about the model, a moved or deleted encoder is no error."""
    try:
        metadata = read_pretrained_metadata(path)
    except (InputError, OSError, ValueError):
        return {}, None
    values = metadata.get("val_metrics") or {}
    metrics = {}
    for recorded, key in ENCODER_METRICS.items():
        value = values.get(recorded) if isinstance(values, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[key] = float(value)
    try:  # the config load_pretrained builds the encoder from (defaults filled in), not the raw JSON
        config = recorded_config(metadata["config"], what="pretrained encoder description", source=path).to_dict()
    except InputError:
        return metrics, None
    return metrics, {key: config[key] for key in INIT_SETTINGS}


def _diagnose_model(name: str, path: Path, loaded: LoadedModel, index: int, measured: Sequence[ProteinChain],
                    loss_val: Sequence[ProteinChain], loss_train: Sequence[ProteinChain] | None, rate: float,
                    device: Any, options: DiagnoseOptions, usage_chains: Sequence[ProteinChain] | None = None,
                    background: str = "chain", composition: np.ndarray | None = None,
                    train_rates: Mapping[str, float] | None = None,
                    contact_cutoff: float = DEFAULT_CONTACT_CUTOFF) -> DiagnosticsResult:
    model = loaded.network
    model.to(device)
    loss = LossSettings.from_hparams(loaded.metadata.get("training_hparams"))
    if options.pos_weight is not None:
        loss = dataclasses.replace(loss, pos_weight=float(options.pos_weight))
    flow = gradient_flow(model, measured, max_distance=options.max_distance, pairs_per_chain=options.pairs_per_chain,
                         seed=options.seed, batch_size=options.batch_size, hidden=options.hidden,
                         alphabet=loaded.alphabet, loss=loss, contact_cutoff=contact_cutoff)
    result = summarise(flow, options.fraction, model=name, config=model.config.to_dict(), smooth=options.smooth)

    def loss_by_length(chains: Sequence[ProteinChain]) -> Any:
        return contact_loss_by_length(model, chains, loss, length_edges=options.length_bins,
                                      batch_size=options.batch_size, alphabet=loaded.alphabet,
                                      contact_cutoff=contact_cutoff)

    val_eval = loss_by_length(loss_val)
    metrics: dict[str, Any] = {"source": str(path), "pos_weight": loss.pos_weight, "focal_gamma": loss.focal_gamma,
                               "contact_cutoff": contact_cutoff, "contact_rate": rate, "data_loss": val_eval.to_dict()}
    train_loss = val_loss = None
    weights: dict[str, int] = {}
    if loss_train is not None:
        train_eval = loss_by_length(loss_train)
        metrics["train_data_loss"] = train_eval.to_dict()
        metrics["contact_rate_by_length"] = dict(train_rates or {})
        train_loss, val_loss = length_matched_losses(train_eval, val_eval)
        weights = length_weights(train_eval, val_eval)
        metrics["loss_source"] = ("eval-mode loss on --train-data and --data, over the length groups both have, "
                                  "weighted by the --data pairs per group")
    elif options.train_metrics:
        train_loss, val_loss = read_last_losses(options.train_metrics[index])
        metrics["loss_source"] = f"last logged losses in {options.train_metrics[index]}"
    # The reference is the train loss of the best constant predictor on the same pairs, weighted the same way: per
    # length group, at that group's training contact rate, when the train loss is length-matched; at the pooled rate
    # otherwise. A focal loss has no closed-form base-rate optimum, and loss chains without a contact (or all
    # contacts) have no informative one: the level is then not judged (docs/diagnostics.md).
    reference = source = None
    closed_form = not loss.focal_gamma > 0
    if closed_form and weights:
        matched = length_matched_reference_loss(train_rates or {}, weights, loss.pos_weight)
        reference = matched if matched > 0 else None
        source = "best constant per length group at that group's --train-data contact rate, weighted as the train loss"
        if reference is None and 0.0 < rate < 1.0:
            print(f"protrnn diagnose: {name}: the --train-data chains of the length groups shared with --data have "
                  "no contact, so the loss is not judged against the base rate", file=sys.stderr)
    elif closed_form and 0.0 < rate < 1.0:
        reference = constant_predictor_loss(rate, loss.pos_weight)
        source = ("best constant at the pooled contact rate of the "
                  + ("--train-data" if loss_train is not None else "--data") + " loss chains")
    metrics.update(train_loss=train_loss, val_loss=val_loss, reference_loss=reference, reference_source=source)
    result.metrics = metrics
    result.diagnosis = diagnose_fit(train_loss, val_loss, result.horizon,
                                    max_distance=flow.sensitivity.measured_max(),
                                    reference_loss=reference, val_loss_by_length=val_eval.by_length,
                                    thresholds=options.thresholds)
    result.training = training_record(model_record(loaded))
    if usage_chains is not None:
        result.usage = usage_profile(model, usage_chains, distances=options.usage_distances,
                                     draws=options.usage_draws, pairs_per_chain=options.usage_pairs_per_chain,
                                     seed=options.seed, composition=composition, background=background,
                                     precision_chains=options.usage_precision_chains,
                                     pool_factor=options.usage_pool_factor, fraction=options.usage_fraction,
                                     alphabet=loaded.alphabet, contact_cutoff=contact_cutoff)
    model.to("cpu")
    return result


def load_chains(path: str | os.PathLike[str]) -> list[ProteinChain]:
    """Chains of any input :func:`protrnn.data.sources.read_chains` reads (a prepared ``.npz`` included); inputs that
    fail are counted on stderr, and finding none is an error."""
    return load_data(path)[0]


def load_data(path: str | os.PathLike[str]) -> tuple[list[ProteinChain], float]:
    """:func:`load_chains` and the cutoff (Å) their contacts are labelled at: a prepared dataset's stored cutoff
    (:attr:`protrnn.data.sources.LoadOutcome.contact_cutoff`, as ``protrnn evaluate`` scores it), the CASP
    :data:`~protrnn.conventions.DEFAULT_CONTACT_CUTOFF` for any other input."""
    chains, failures, cutoff = read_collection(path)
    if failures:
        print(f"protrnn diagnose: skipped {len(failures)} unreadable input(s) in {Path(path)}", file=sys.stderr)
    if not chains:
        reason = f" ({failures[0].error})" if failures else ""
        raise InputError(f"no chains to diagnose on{reason}", path=path)
    return chains, cutoff


def check_model_cutoff(name: str, loaded: LoadedModel, contact_cutoff: float) -> None:
    """The model was trained at the cutoff the ``--data`` chains are labelled at (:func:`load_data`): its losses,
    contact rates and usage precision are measured against those labels, and a model trained for contacts below 6 Å
    would read as badly fitted on contacts below 8 Å. A one-line :class:`InputError` naming the model and both
    cutoffs (as ``protrnn evaluate`` refuses a model on a test set at another cutoff)."""
    if loaded.contact_cutoff != contact_cutoff:
        raise InputError(f"model {name}: trained at contact cutoff {loaded.contact_cutoff:g} Å, but --data labels "
                         f"contacts at {contact_cutoff:g} Å (a prepared dataset's stored contact cutoff, 8 Å for any "
                         "other input): diagnose it on data at its own cutoff", path=loaded.path)


def check_same_cutoff(data: str | os.PathLike[str], cutoff: float, train_data: str | os.PathLike[str],
                      train_cutoff: float) -> None:
    """``--train-data`` and ``--data`` label contacts at one cutoff (:func:`load_data`): the fit diagnosis compares
    their losses, and the reference loss comes from the training chains' contact rates, so a difference of cutoffs
    would read as over- or under-fitting. A one-line :class:`InputError` naming both inputs and both cutoffs."""
    if train_cutoff != cutoff:
        raise InputError(f"--train-data {train_data} labels contacts at {train_cutoff:g} Å but --data {data} at "
                         f"{cutoff:g} Å (a prepared dataset's stored contact cutoff, 8 Å for any other input): "
                         "losses at two cutoffs do not compare; give both at one cutoff")


def sample_chains(chains: Sequence[ProteinChain], n: int, rng: np.random.Generator) -> list[ProteinChain]:
    """``n`` chains drawn without replacement by ``rng``, in their original order (all of them when n >= count)."""
    if n >= len(chains):
        return list(chains)
    return [chains[i] for i in sorted(rng.choice(len(chains), size=n, replace=False))]


def read_last_losses(path: str | os.PathLike[str]) -> tuple[float | None, float | None]:
    """Last non-empty train and validation loss in a Lightning CSVLogger ``metrics.csv``."""
    source = Path(path)
    try:
        with reading(source), open(source, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"unreadable metrics CSV ({exc})", path=source) from None
    columns = set(rows[0]) if rows else set()

    def last(keys: Sequence[str]) -> float | None:
        key = next((k for k in keys if k in columns), None)
        if key is None:
            return None
        for row in reversed(rows):
            text = (row.get(key) or "").strip()
            if text:
                try:
                    value = float(text)
                except ValueError:
                    raise InputError(f"non-numeric {key!r} value {text!r}", path=source) from None
                if math.isfinite(value):
                    return value
        return None

    train, val = last(TRAIN_LOSS_KEYS), last(VAL_LOSS_KEYS)
    if train is None and val is None:
        raise InputError(f"no train or validation loss column (looked for {', '.join(TRAIN_LOSS_KEYS + VAL_LOSS_KEYS)})",
                         path=source)
    return train, val


def print_table(results: Sequence[DiagnosticsResult], stream: TextIO) -> None:
    """One line per model: gradient horizon, usage horizon, sensitivity at a few distances, per-layer horizons and the
    diagnosis label."""
    def fmt_h(value: int | None, cap: int) -> str:
        return f">{cap}" if value is None else str(value)

    points = [d for d in (8, 16, 32, 64, 128) if results and d <= results[0].flow.max_distance]
    header = ["model", "horizon", "usage"] + [f"s@{d}" for d in points] + ["hidden horizons", "diagnosis"]
    rows = []
    for r in results:
        values = [r.flow.sensitivity.value_at(d) for d in points]
        usage = "-" if r.usage is None else fmt_h(r.usage.horizon, r.usage.range_end)
        rows.append([r.model, fmt_h(r.horizon, r.range_end), usage]
                    + ["-" if not math.isfinite(v) else f"{v:.2g}" for v in values]
                    + [",".join(fmt_h(h, profile.measured_max() or 0)
                                for h, profile in zip(r.hidden_horizons, r.flow.hidden, strict=False)) or "-",
                       r.diagnosis.label if r.diagnosis is not None else "-"])
    widths = [max(len(str(row[k])) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=stream)


__all__ = ["AUXILIARY_SS_CALLBACK", "ENCODER_METRICS", "INITIAL_WEIGHTS_CALLBACK",
           "PRETRAINED_CALLBACK", "TRAIN_LOSS_KEYS", "VAL_LOSS_KEYS",
           "DiagnoseOptions", "check_model_cutoff", "check_same_cutoff", "diagnose", "load_chains", "load_data", "print_table",
           "read_last_losses", "recorded_callback", "sample_chains", "training_record"]
