"""The findings table: for each knob, its effect on reach (synthetic task), on the usage and gradient horizons and on
long-range precision on real proteins, each a difference from the reference model with a 95 % interval, and one
sentence derived from those intervals (torch-free).

Which runs measure which knob is read from what was run, not declared: two models (grid runs, or synthetic variants)
measure a knob when their configurations differ in that knob's settings and nothing else, and the one that is
compared against holds the reference model's setting of the knob (:data:`KNOBS` lists the knobs and the settings
each covers; settings that have no effect are ignored, e.g. the forget bias of a GRU, or ``residual`` between two
models in which no layer can add it, :func:`residual_layers`). Grid models differing from the reference in several
knobs at once give a *combined* row. A model whose settings equal the reference's is a repeat of it, never a base.
Pretraining is read from the training record (``pretrained_encoder`` and ``freeze_steps`` of
:func:`protrnn.diagnostics.run.training_record`); the synthetic task has no pretraining, so a pretraining row's reach
column says so (:data:`NO_SYNTHETIC`). A pretrained model's init settings are its encoder's
(``pretrained_encoder_init``), not its contact config's, whose inits were overwritten with the encoder's weights; a
record that does not say them, or a model started from another trained model's weights (``initial_weights``), is not
compared (``not_compared`` of :func:`build_findings`).

Rule (also in docs/diagnostics.md): a knob **matters** for a measure when the 95 % interval of the difference
(variant - reference) excludes 0; **no effect detected** when every measured interval includes 0; **not measured**
when no pair of runs isolates it. Intervals: Welch t over seeds for horizons and the synthetic reach score,
paired-protein x seed bootstrap for precision (:mod:`protrnn.report.aggregate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from protrnn.diagnostics.fit import GRADIENT_HORIZON_NOISE, difference_interval, horizon_value
from protrnn.evaluation.metrics import INTERVAL_PERCENT
from protrnn.model.config import INIT_SETTINGS
from protrnn.report.aggregate import (
    ModelDiagnostics,
    SyntheticVariant,
    paired_difference_bootstrap,
    protein_matrix,
    usage_noise,
)
from protrnn.report.inputs import Evaluation
from protrnn.utils.io import json_safe

#: (knob, the settings it covers). ``gradient_clip`` is the training run's clipping threshold (0 / None = off);
#: ``pretrained`` whether training started from a pretrained encoder, ``freeze_steps`` for how many steps it stayed
#: frozen and ``encoder_lr_scale`` the rate it was fine-tuned at afterwards, as a multiple of the head's (both None
#: without pretraining).
KNOBS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cell", ("cell",)),
    ("gradient horizon", ("gradient_horizon",)),
    ("forget bias / chrono init", ("forget_bias", "chrono_init", "chrono_tmax")),
    ("orthogonal init", ("orthogonal_init",)),
    ("residual", ("residual",)),
    ("layer norm", ("layer_norm",)),
    ("gradient clipping", ("gradient_clip",)),
    ("pretraining", ("pretrained", "freeze_steps", "encoder_lr_scale")),
)
#: Knobs the synthetic planted-distance task cannot vary: their rows' reach column holds this note instead of a number.
NO_SYNTHETIC = {"pretraining": "n/a (no synthetic variant: the planted-distance task has no pretraining)"}
#: Settings that exist for the LSTM only (ignored when the cells differ).
LSTM_ONLY = frozenset({"forget_bias", "chrono_init", "chrono_tmax"})
#: Settings that do not change the function a model computes (inference tiling).
IGNORED = frozenset({"pair_chunk_size", "vocab_size"})
#: The encoder's init settings (:data:`~protrnn.model.config.INIT_SETTINGS`) of a pretrained model are its pretrained
#: export's (``pretrained_encoder_init`` of the training record), never the contact config's. This is their value
#: for a pretrained model whose record does not say them (written before they were recorded, or the encoder's
#: ``encoder.json`` could not be read when it was diagnosed): such a model is no repeat of any other and isolates no
#: knob (:func:`comparisons` skips every pair it is in).
UNKNOWN_INIT = "unknown (pretrained encoder)"
#: The precision measure of the findings (long range, top-L/5), pooled over every test set.
PRECISION_KEY = "long/P@L/5"
MEASURES = ("reach", "usage", "gradient", "precision")
MEASURE_TITLES = {"reach": "reach (synthetic score)", "usage": "usage horizon", "gradient": "gradient horizon",
                  "precision": f"{PRECISION_KEY} on real proteins"}
RULE = (f"A knob matters for a measure when the {INTERVAL_PERCENT} interval of the difference (variant - "
        "reference) excludes 0; no effect is detected when every measured interval includes 0. Intervals: Welch t "
        "over seeds for the horizons and the synthetic reach score (mean over distances of (accuracy - chance) / "
        "(1 - chance)), each group's spread floored at the measurement noise of one run (binomial error of the "
        "held-out queries; the resolution of a horizon); bootstrap over proteins (paired, all test sets pooled) and "
        "seeds for precision. Horizons beyond the measured range count as its end (a lower bound).")


def effective_settings(config: Mapping[str, Any], gradient_clip: Any = None, pretrained: Any = False,
                       freeze_steps: Any = None, encoder_lr_scale: Any = None,
                       encoder_init: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A model's settings as the knobs see them: LSTM-only settings dropped for other cells, the forget bias
    dropped under chrono init (which replaces it) and chrono's T_max without it, clipping 0/None = off, pretraining
    on/off (``pretrained``; a missing record, None, means off) with its ``freeze_steps`` (None when off, else an
    integer, None = 0) and ``encoder_lr_scale`` (None when off, else a float, None = 1).

    A pretrained model's init settings (:data:`~protrnn.model.config.INIT_SETTINGS`) are ``encoder_init``'s (the
    training record's ``pretrained_encoder_init``: the pretrained encoder's own inits, which made the weights it starts
    from); without all of them they are :data:`UNKNOWN_INIT`, never the contact config's (which describe weights that
    were overwritten)."""
    out = {k: v for k, v in config.items() if k not in IGNORED}
    clip = gradient_clip
    out["gradient_clip"] = None if clip in (None, 0, 0.0, False) else float(clip)
    out["pretrained"] = bool(pretrained)
    out["freeze_steps"] = int(freeze_steps or 0) if pretrained else None
    out["encoder_lr_scale"] = (1.0 if encoder_lr_scale is None else float(encoder_lr_scale)) if pretrained else None
    if pretrained:
        known = isinstance(encoder_init, Mapping) and all(key in encoder_init for key in INIT_SETTINGS)
        for key in INIT_SETTINGS:
            out[key] = encoder_init[key] if known else UNKNOWN_INIT  # type: ignore[index]
    if out.get("cell") != "lstm":
        for key in ("forget_bias", "chrono_init", "chrono_tmax"):
            out[key] = None
    elif out.get("chrono_init") == UNKNOWN_INIT:
        pass  # which of the forget bias and chrono init applied is unknown too
    elif out.get("chrono_init"):
        out["forget_bias"] = None
    else:
        out["chrono_tmax"] = None
    return out


def residual_layers(config: Mapping[str, Any]) -> int | None:
    """How many recurrent layers of ``config`` (a model config, or its :func:`effective_settings`) can add the
    residual connection: :class:`protrnn.model.encoder.RecurrentEncoder` adds it (when ``residual`` is on) to a
    layer whose input width equals its output width, ``2 * hidden_size`` (bidirectional): every layer after the first,
    and the first only when ``embed_dim == 2 * hidden_size``. With 0, ``residual`` changes nothing (a one-layer
    encoder under a narrower embedding, as in the synthetic task's defaults). None when a size is not recorded."""
    try:
        layers, embed, hidden = (int(config[key]) for key in ("num_layers", "embed_dim", "hidden_size"))
    except (KeyError, TypeError, ValueError):
        return None
    if layers <= 0:
        return 0
    return layers - 1 + (embed == 2 * hidden)


#: Prefix of the settings that are no knob but must agree for a pair of runs to isolate one (the budget, the
#: optimisation, the loss, the data's crops): a pair differing in one is not compared (comparisons skips it).
TRAINING_PREFIX = "training."
#: Synthetic-task settings that do not change what is learnt (the seed varies within a variant).
SYNTHETIC_KEYS_LEFT_OUT = frozenset({"seed", "threads", "gradient_clip", "max_lag", "jacobian_max_lag",
                                     "eval_queries"})


def training_settings(training: Mapping[str, Any]) -> dict[str, Any]:
    """A grid model's training record (protrnn.diagnostics.run.training_record) as non-knob settings: the step and
    epoch budgets and the recorded optimisation and data settings. A record without them (written before they were
    recorded) gives nothing, so older records compare as before."""
    out = {f"{TRAINING_PREFIX}{key}": training[key] for key in ("max_steps", "max_epochs") if key in training}
    for section in ("model_settings", "data_settings"):
        values = training.get(section)
        if isinstance(values, Mapping):
            out.update({f"{TRAINING_PREFIX}{section}.{k}": json.dumps(v, sort_keys=True) for k, v in values.items()})
    return out


def synthetic_training_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """A synthetic run's recorded settings (steps, batch size, learning rate, symbols, ...) as non-knob settings."""
    return {f"{TRAINING_PREFIX}{k}": json.dumps(v, sort_keys=True) for k, v in (settings or {}).items()
            if k not in SYNTHETIC_KEYS_LEFT_OUT}


def knob_of(key: str) -> str | None:
    return next((name for name, keys in KNOBS if key in keys), None)


def differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Settings whose values differ (a key missing on one side counts as differing, except a training setting: a
    record written before that setting was recorded says nothing about it). ``residual`` does not differ between two
    models in which no layer can add it (:func:`residual_layers` 0 in both: it changes nothing in either); it is kept
    as set otherwise, so a one-layer reference's setting still picks which two-layer context holds it."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>")
                  and not (k.startswith(TRAINING_PREFIX) and (k not in a or k not in b)))
    if "residual" in keys and residual_layers(a) == 0 and residual_layers(b) == 0:
        keys.remove("residual")
    return keys


def describe(settings: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``cell=gru`` style text of ``keys`` of ``settings`` (clipping: ``off`` or the threshold)."""
    parts = []
    for key in keys:
        value = settings.get(key)
        if key == "gradient_clip":
            parts.append(f"clip={'off' if value is None else f'{value:g}'}")
        elif value is None and key in ("chrono_tmax", "freeze_steps", "encoder_lr_scale") or \
                key == "encoder_lr_scale" and value == 1.0:  # the default rate: nothing to say
            continue
        else:
            parts.append(f"{key}={'none' if value is None else value}")
    return ", ".join(parts)


@dataclass
class Comparison:
    """One variant against the run that holds the reference setting: which knob(s) differ and how."""

    knobs: tuple[str, ...]
    keys: tuple[str, ...]
    variant: str
    base: str
    change: str


def comparisons(settings: Mapping[str, Mapping[str, Any]], reference: str, *,
                combined: bool = True) -> list[Comparison]:
    """Pairs of runs that isolate a knob (module docstring). ``settings``: name -> :func:`effective_settings`.
    Comparisons against ``reference`` come first; another base is a context that differs from the reference only in
    its cell or in settings that are no knob (e.g. clipping in the tanh-RNN, residual connections in two-layer models
    when the reference has one layer), and the change then names that base. With ``combined``, a variant that differs from the reference in several
    knobs, and is not the variant of any single-knob comparison, is compared as one combined change."""
    if reference not in settings:
        return []
    ref = settings[reference]
    single: list[Comparison] = []
    multiple: list[Comparison] = []
    seen: set[tuple[tuple[str, ...], str]] = set()

    def knob_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
        keys = differing(a, b)
        if "cell" in keys:  # settings of one cell only mean nothing across cells
            keys = [k for k in keys if k not in LSTM_ONLY]
        return keys

    # A model whose init settings are unknown (a pretrained model whose record does not say its encoder's) is in no
    # pair: its inits may or may not differ from another model's, so the pair isolates nothing, not even a repeat.
    known = {name for name, values in settings.items() if UNKNOWN_INIT not in (values.get(k) for k in INIT_SETTINGS)}
    if reference not in known:
        return []
    # A base other than the reference is a context: it may differ from the reference in its cell and in settings
    # that are no knob (size, depth), never in another knob. A model with the reference's settings is a repeat of it.
    # (The residual setting of a one-layer reference, which no layer adds, still picks the context of two-layer
    # models: the one that holds it, so that a row reads "reference setting -> other".)
    bases = [reference] + [name for name in settings if name != reference and name in known
                           and knob_keys(settings[name], ref)
                           and {knob_of(k) for k in knob_keys(settings[name], ref)} <= {"cell", None}]
    for base in bases:
        for variant, values in settings.items():
            if variant == base or variant not in known:
                continue
            keys = knob_keys(values, settings[base])
            knobs = tuple(dict.fromkeys(knob_of(k) for k in keys))
            if not keys or None in knobs:
                continue
            if len(knobs) > 1 and base != reference:
                continue
            # the base must hold the reference's setting of the knob(s): the row reads "reference setting -> other"
            if any(settings[base].get(k) != ref.get(k) for k in keys):
                continue
            change = f"{describe(settings[base], keys)} -> {describe(values, keys)}"
            if base != reference:
                change += f" (in {base})"
            if (knobs, change) in seen:
                continue
            seen.add((knobs, change))
            target = single if len(knobs) == 1 else multiple
            target.append(Comparison(knobs=knobs, keys=tuple(keys), variant=variant, base=base, change=change))
    isolated = {c.variant for c in single}
    return single + ([c for c in multiple if c.variant not in isolated] if combined else [])


@dataclass
class FindingRow:
    """One row of the findings table."""

    knob: str
    change: str
    grid: tuple[str, str] | None = None        # (variant, base) grid models
    synthetic: tuple[str, str] | None = None   # (variant, base) synthetic variants
    effects: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""

    def _measured(self) -> dict[str, dict[str, Any]]:
        """The effects with a difference (a finite mean), by measure."""
        return {m: e for m, e in self.effects.items() if _finite(e.get("mean"))}

    @property
    def verdict(self) -> str:
        measured = self._measured()
        if not measured:
            return "not measured"
        if any(excludes_zero(e) for e in measured.values()):
            return "matters"
        if any(not _finite(e.get("low")) or e.get("bound") for e in measured.values()):
            return "undetermined"  # no interval, or a censored horizon's one-sided one that does not settle it
        return "no effect detected"

    def undetermined_because(self) -> str:
        """Why an undetermined row settles nothing: its measured differences without an interval (one seed), and
        those that are a censored horizon's bound (:attr:`verdict`)."""
        measured = self._measured()
        causes = []
        bounded = [MEASURE_TITLES[m] for m in MEASURES if m in measured and measured[m].get("bound")]
        one_seed = [MEASURE_TITLES[m] for m in MEASURES if m in measured and not measured[m].get("bound")
                    and not _finite(measured[m].get("low"))]
        if one_seed:
            causes.append(f"no interval with one seed: {', '.join(one_seed)}")
        if bounded:
            causes.append(f"only a bound, a horizon lying beyond the measured range: {', '.join(bounded)}")
        return "; ".join(causes)

    def matters_for(self) -> list[str]:
        return [m for m in MEASURES if m in self.effects and excludes_zero(self.effects[m])]

    def to_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "change": self.change,
                "grid": None if self.grid is None else {"variant": self.grid[0], "reference": self.grid[1]},
                "synthetic": None if self.synthetic is None else {"variant": self.synthetic[0],
                                                                  "reference": self.synthetic[1]},
                "effects": {k: json_safe(v) for k, v in self.effects.items()}, "verdict": self.verdict,
                "matters_for": self.matters_for(), "note": self.note}


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def excludes_zero(effect: Mapping[str, Any]) -> bool:
    """Whether the effect's interval settles its sign. A horizon difference with censored runs (``bound``) is
    one-sided: with the variant's runs censored it is a lower bound (the true difference is at least it), so only a
    positive interval settles it; with the reference's, an upper bound, settled only by a negative one; with both,
    never."""
    low, high = effect.get("low"), effect.get("high")
    if not (_finite(low) and _finite(high)):
        return False
    bound = effect.get("bound")
    if bound == "lower":
        return low > 0  # type: ignore[operator]
    if bound == "upper":
        return high < 0  # type: ignore[operator]
    return bound is None and (low > 0 or high < 0)  # type: ignore[operator]


def _horizon_effect(variant: ModelDiagnostics, base: ModelDiagnostics, kind: str) -> dict[str, Any] | None:
    if kind == "gradient":
        # a run beyond its measured range counts as that range's end (a lower bound), not as max_distance
        measured_a = [(r.horizon, r.range_end) for r in variant.runs]
        measured_b = [(r.horizon, r.range_end) for r in base.runs]
        noise = (GRADIENT_HORIZON_NOISE, GRADIENT_HORIZON_NOISE)
    else:
        if variant.usage is None or base.usage is None:
            return None
        measured_a = [(r.usage.horizon, r.usage.range_end) for r in variant.runs if r.usage is not None]
        measured_b = [(r.usage.horizon, r.usage.range_end) for r in base.runs if r.usage is not None]
        noise = (float(sum(usage_noise(r) for r in variant.runs) / len(variant.runs)),
                 float(sum(usage_noise(r) for r in base.runs) / len(base.runs)))
    a = [horizon_value(horizon, end) for horizon, end in measured_a]
    b = [horizon_value(horizon, end) for horizon, end in measured_b]
    cap = min(end for _, end in (*measured_a, *measured_b))
    censored_a = sum(horizon is None for horizon, _ in measured_a)
    censored_b = sum(horizon is None for horizon, _ in measured_b)
    censored = censored_a + censored_b
    if a and b and censored == len(a) + len(b):
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "censored": censored, "cap": cap,
                "note": f"beyond the measured range (> {cap}) in every run of both models"}
    effect = difference_interval(a, b, noise_sd=noise)
    effect.update(variant_values=a, reference_values=b, censored=censored, cap=cap, noise_sd=list(noise))
    # a censored run counts as its range's end, a lower bound of its horizon: the difference is then one-sided
    bound = {(True, False): "lower", (False, True): "upper", (True, True): "both"}.get((censored_a > 0, censored_b > 0))
    if bound is not None:
        effect["bound"] = bound
    return effect


def build_findings(models: Sequence[ModelDiagnostics], synthetic: Sequence[SyntheticVariant],
                   evaluations: Sequence[Evaluation], reference: str | None,
                   members: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Rows (one per knob change, plus combined changes and unmeasured knobs), the rule and the sentence.

    ``members``: model -> its evaluation method names (one per seed), for the precision differences.
    """
    by_model = {m.model: m for m in models}
    names = list(by_model) or list(members)
    if reference is None:
        reference = "lstm" if ("lstm" in by_model or any(v.name == "lstm" for v in synthetic)) else \
            (names[0] if names else (synthetic[0].name if synthetic else None))
    # A model whose record leaves its settings unknown (not_compared_because) is named under the table instead.
    reasons = {m.model: not_compared_because(m.training) for m in models if m.config}
    not_compared = {name: reason for name, reason in reasons.items() if reason}
    grid_settings = {m.model: {**effective_settings(m.config, m.training.get("gradient_clip_val"),
                                                    m.training.get("pretrained_encoder", False),
                                                    m.training.get("freeze_steps"),
                                                    m.training.get("encoder_lr_scale"),
                                                    m.training.get("pretrained_encoder_init")),
                               **training_settings(m.training)}
                     for m in models if m.config and m.model not in not_compared}
    synth_by_name = {v.name: v for v in synthetic}
    synth_settings = {v.name: {**effective_settings(v.result.get("model", {}),
                                                    (v.result.get("settings") or {}).get("gradient_clip")),
                               **synthetic_training_settings(v.result.get("settings"))}
                      for v in synthetic}
    rows: dict[tuple[tuple[str, ...], str], FindingRow] = {}

    def row_for(comparison: Comparison) -> FindingRow:
        knob = comparison.knobs[0] if len(comparison.knobs) == 1 else " + ".join(comparison.knobs) + " (together)"
        key = (comparison.knobs, comparison.change)
        if key not in rows:
            rows[key] = FindingRow(knob=knob, change=comparison.change)
        return rows[key]

    for comparison in comparisons(grid_settings, reference or ""):
        row = row_for(comparison)
        row.grid = (comparison.variant, comparison.base)
        variant, base = by_model[comparison.variant], by_model[comparison.base]
        if "pretraining" in comparison.knobs:
            row.note = pretraining_note(variant.training)
        for kind in ("usage", "gradient"):
            effect = _horizon_effect(variant, base, kind)
            if effect is not None:
                row.effects[kind] = effect
        if members.get(comparison.variant) and members.get(comparison.base):
            a, proteins = protein_matrix(evaluations, [*members[comparison.variant], *members[comparison.base]],
                                         None, PRECISION_KEY)
            if proteins:
                n = len(members[comparison.variant])
                effect = paired_difference_bootstrap(a[:n], a[n:])
                effect["test_sets"] = sorted({t for t, _ in proteins})
                row.effects["precision"] = effect
    synth_reference = reference if reference in synth_settings else None
    for comparison in comparisons(synth_settings, synth_reference or "", combined=False):
        row = row_for(comparison)
        row.synthetic = (comparison.variant, comparison.base)
        variant, base = synth_by_name[comparison.variant], synth_by_name[comparison.base]
        effect = difference_interval(variant.score, base.score, noise_sd=(variant.score_noise, base.score_noise))
        effect.update(variant_values=variant.score, reference_values=base.score, variant_reach=variant.reach,
                      reference_reach=base.reach, noise_sd=[variant.score_noise, base.score_noise])
        row.effects["reach"] = effect
    for (knobs, _), row in rows.items():
        missing = [NO_SYNTHETIC[k] for k in knobs if k in NO_SYNTHETIC]
        if missing and "reach" not in row.effects:
            row.effects["reach"] = {"note": missing[0]}
    ordered = sorted(rows.values(), key=lambda r: (_knob_rank(r.knob), r.change))
    measured_knobs = {r.knob for r in ordered}
    for knob, _ in KNOBS:
        if knob not in measured_knobs:
            ordered.append(FindingRow(knob=knob, change="", note="not measured: no pair of runs in this "
                                      "configuration differs in this knob alone"))
    return {"reference": reference, "rule": RULE, "rows": [r.to_dict() for r in ordered],
            "sentence": findings_sentence(ordered), "not_compared": not_compared, "_rows": ordered}


def not_compared_because(training: Mapping[str, Any]) -> str:
    """Why a grid model's training record leaves it out of every comparison, or "" when it does not:

    * it cannot say whether the model started from a pretrained encoder (``pretrained_encoder`` None: an export that
      found no config of its run): comparing it would count it as not pretrained;
    * it started from a pretrained encoder whose init settings it does not record (``pretrained_encoder_init``:
      written before they were recorded, or the encoder's ``encoder.json`` could not be read when it was diagnosed):
      the contact config's inits describe weights that were overwritten, so its inits are unknown;
    * it started from the weights of a trained contact model (``initial_weights``: the InitialWeights callback): with
      ``parts="encoder"`` its inits are the source model's encoder's, with ``"all"`` every weight is, and either way
      its training continued another run's, which no setting of its own describes.
    """
    if training.get("pretrained_encoder", False) is None:
        return ("its training record does not say whether it started from a pretrained encoder ("
                + str(training.get("training_config_source") or "unknown") + ")")
    initial = training.get("initial_weights")
    if isinstance(initial, Mapping):
        return (f"it started from the weights of a trained model ({initial.get('path')}, parts="
                f"{initial.get('parts')}): its settings describe neither the weights it started from nor the training "
                "before")
    init = training.get("pretrained_encoder_init")
    if training.get("pretrained_encoder") and not (isinstance(init, Mapping) and all(k in init for k in INIT_SETTINGS)):
        return ("its training record does not say the init settings of its pretrained encoder ("
                + str(training.get("pretrained_encoder_path") or "no path recorded")
                + "), which replaced its own: rerun protrnn diagnose while the encoder's encoder.json can be read")
    return ""


def pretraining_note(training: Mapping[str, Any]) -> str:
    """What the training record says about a pretrained model's encoder: held-out Q8 / Q3 and the frozen steps."""
    parts = []
    metrics = training.get("pretrained_encoder_metrics") or {}
    scores = [f"{key} {metrics[key]:.3f}" for key in ("Q8", "Q3") if _finite(metrics.get(key))]
    if scores:
        parts.append("pretrained encoder: " + ", ".join(scores) + " on its validation clusters")
    if training.get("freeze_steps") is not None:
        parts.append(f"encoder frozen for the first {training['freeze_steps']} optimiser steps")
    scale = training.get("encoder_lr_scale")
    if _finite(scale) and scale != 1.0:
        parts.append(f"then fine-tuned at {scale:g} x the head's learning rate")
    return "; ".join(parts)


def _knob_rank(knob: str) -> int:
    order = [name for name, _ in KNOBS]
    first = knob.split(" + ")[0].replace(" (together)", "")
    return order.index(first) + (len(order) if "(together)" in knob else 0) if first in order else 99


def findings_sentence(rows: Sequence[FindingRow]) -> str:
    """One sentence: which knobs matter (and for what), which showed no effect, which were not measured."""
    matters: dict[str, list[str]] = {}
    quiet: list[str] = []
    unmeasured: list[str] = []
    undetermined: list[str] = []
    for row in rows:
        label = row.knob + (f" ({row.change})" if row.change and " + " not in row.knob else "")
        verdict = row.verdict
        if verdict == "matters":
            matters[label] = [MEASURE_TITLES[m] for m in row.matters_for()]
        elif verdict == "no effect detected":
            quiet.append(label)
        elif verdict == "undetermined":
            undetermined.append(f"{label} ({row.undetermined_because()})")
        else:
            unmeasured.append(row.knob)
    parts = []
    if matters:
        parts.append(f"Matter ({INTERVAL_PERCENT} interval of the difference excludes 0): "
                     + "; ".join(f"{k} for {', '.join(v)}" for k, v in matters.items()))
    else:
        parts.append(f"No knob's effect has a {INTERVAL_PERCENT} interval that excludes 0")
    if quiet:
        parts.append("no effect detected for " + "; ".join(quiet))
    if undetermined:
        parts.append("undetermined for " + "; ".join(undetermined))
    if unmeasured:
        parts.append("not measured: " + ", ".join(dict.fromkeys(unmeasured)))
    return ". ".join(p[0].upper() + p[1:] for p in parts) + "."


__all__ = ["KNOBS", "MEASURES", "MEASURE_TITLES", "NO_SYNTHETIC", "PRECISION_KEY", "RULE", "UNKNOWN_INIT",
           "Comparison", "FindingRow", "build_findings", "comparisons", "effective_settings", "excludes_zero",
           "findings_sentence", "not_compared_because", "pretraining_note", "residual_layers"]
