"""Gradient-flow diagnostics: horizon arithmetic, the fit diagnosis, exactness of the measurement on real chains
(batching, truncation cuts), the tanh-RNN vs LSTM contrast, the training callback and the ``diagnose`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.diagnostics.fit import (
    constant_predictor_loss,
    contact_rate,
    contact_rates_by_length,
    diagnose_fit,
    effective_horizon,
    length_label,
    length_matched_losses,
    summarise,
)
from protrnn.diagnostics.gradients import (
    chains_to_batches,
    contact_loss_by_length,
    gradient_flow,
    gradient_flow_from_batches,
    iter_pair_gradients,
    sample_pairs,
)
from protrnn.diagnostics.results import (
    BALANCED,
    OVERFIT,
    OVERFIT_LONG_MEMORY,
    UNDERFIT,
    UNDERFIT_VANISHING,
    UNDETERMINED,
    DiagnosticsResult,
    DistanceProfile,
    FitThresholds,
    GradientFlow,
    LossByLength,
    load_diagnostics,
    save_diagnostics,
)
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import save_model
from protrnn.training.loss import LossSettings


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def val_chains(shared_data: Path) -> list:
    """Real cgdms validation chains (the upstream val split), 60-100 residues, in file order."""
    from protrnn.data.sources import iter_chains

    chains = [o.chain for o in iter_chains(shared_data / "cgdms" / "cgdms_train_val.tar.gz")
              if o.ok and o.chain.meta.get("split_hint") == "val" and len(o.chain) >= 60]
    assert len(chains) >= 16
    return chains


def tiny_model(cell: str = "lstm", *, seed: int = 0, head: str = "pairwise", **overrides: object) -> ContactModel:
    torch.manual_seed(seed)
    settings = {"cell": cell, "head": head, "hidden_size": 32, "embed_dim": 16, "pair_dim": 16, "num_layers": 2,
                "head_blocks": 1, "dropout": 0.0}
    settings.update(overrides)
    return ContactModel(ModelConfig(**settings))  # type: ignore[arg-type]


def synthetic(values: list[float] | np.ndarray, counts: list[int] | None = None) -> DistanceProfile:
    values = np.asarray(values, dtype=np.float64)
    count = np.asarray(counts if counts is not None else [10] * len(values), dtype=np.int64)
    mean = np.where(count > 0, values, np.nan)
    return DistanceProfile(quantity="input_sensitivity", rule="nearest", distance=np.arange(len(values)), mean=mean,
                           std=np.zeros(len(values)), sem=np.zeros(len(values)), count=count, raw_mean=mean,
                           n_pairs=1, n_chains=1)


def label_by_the_documented_rules(train: float, val: float, reference: float, horizon: int | None,
                                  val_by_length: dict[str, float], measured_to: int) -> str:
    """The fit label as docs/diagnostics.md's table reads, at the default thresholds (high train loss: >= 0.9 x the
    reference; validation worse: >= 10 % above train, or the longest length group >= 10 % above the shortest;
    collapsing: horizon <= 16; carrying far: horizon >= 48, or none within a measured range reaching 48; a horizon
    beyond a range that ends before 16 (48) leaves "collapsing" ("carrying far") unknown, and a label that needs it
    undetermined)."""
    high = train / reference >= 0.9
    groups = sorted(val_by_length.items(), key=lambda kv: int(kv[0].lstrip(">=").split("-")[0]))
    trend = len(groups) >= 2 and groups[-1][1] >= 1.1 * groups[0][1]
    worse = val >= 1.1 * train or trend
    short = (horizon <= 16) if horizon is not None else (False if measured_to >= 16 else None)
    far = (horizon >= 48) if horizon is not None else (True if measured_to >= 48 else None)
    if high and short is None or worse and not high and far is None:
        return UNDETERMINED
    if high and short:
        return UNDERFIT_VANISHING
    if worse and not high and far:
        return OVERFIT_LONG_MEMORY
    if high:
        return UNDERFIT
    return OVERFIT if worse else BALANCED


def focal_loss_by_hand(logit: np.ndarray, label: np.ndarray, pos_weight: float, gamma: float) -> np.ndarray:
    """Lin et al. 2017 focal loss with class weight, written out: -w_y (1 - p_t)^gamma log p_t, p_t the probability
    given to the true class, w_y = pos_weight for a contact and 1 otherwise."""
    p = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    p_true = np.where(label > 0.5, p, 1.0 - p)
    weight = np.where(label > 0.5, pos_weight, 1.0)
    return -weight * (1.0 - p_true) ** gamma * np.log(p_true)


# ------------------------------------------------------------------------------------------ horizon arithmetic
def test_horizon_of_an_exponential_decay() -> None:
    # 0.9**d < 0.01 first at d = 44 (0.9**43 = 0.0108, 0.9**44 = 0.0097); a median keeps a monotone curve as is.
    assert effective_horizon(synthetic(0.9 ** np.arange(100)), 0.01) == 44
    assert effective_horizon(synthetic(0.9 ** np.arange(100)), 0.1) == 22  # 0.9**21 = 0.109, 0.9**22 = 0.098


def test_horizon_of_a_hard_cut_is_the_cut() -> None:
    profile = synthetic([1.0, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05] + [0.0] * 40)
    assert effective_horizon(profile, 0.01) == 8
    assert effective_horizon(profile, 0.01, smooth=1) == 8
    # a single non-zero point (e.g. the last layer under a pairwise head: only t = i, j) falls at distance 1
    assert effective_horizon(synthetic([1.0] + [0.0] * 20)) == 1


def test_horizon_is_none_when_sensitivity_never_falls_and_zero_for_no_signal() -> None:
    assert effective_horizon(synthetic(np.linspace(1.0, 0.2, 64))) is None
    assert effective_horizon(synthetic(np.zeros(10))) == 0


def test_horizon_ignores_a_lone_spike_but_not_a_sustained_rise() -> None:
    values = 0.8 ** np.arange(80)  # below 0.01 from d = 21 on
    spiked = values.copy()
    spiked[60] = 0.5
    assert effective_horizon(synthetic(spiked), 0.01) == 21  # the running median discards the lone spike
    assert effective_horizon(synthetic(spiked), 0.01, smooth=1) == 61  # unsmoothed: "stays below" only after it
    plateau = values.copy()
    plateau[50:60] = 0.5
    assert effective_horizon(synthetic(plateau), 0.01) == 60


def test_horizon_peak_away_from_zero_and_unmeasured_distances() -> None:
    values = np.r_[[0.2, 0.6, 1.0], 0.7 ** np.arange(1, 40)]
    assert effective_horizon(synthetic(values), 0.01) == 3 + int(np.argmax(0.7 ** np.arange(1, 40) < 0.01))
    counts = [10] * 30 + [0] * 10
    profile = synthetic(np.r_[0.5 ** np.arange(30), np.ones(10)], counts)  # unmeasured tail must not count
    assert effective_horizon(profile, 0.01) == 7  # 0.5**7 = 0.0078
    with pytest.raises(InputError, match="fraction"):
        effective_horizon(profile, 1.5)
    with pytest.raises(InputError, match="no measured distance"):
        effective_horizon(synthetic([1.0, 0.5], [0, 0]))


# ---------------------------------------------------------------------------------------------- fit diagnosis
def test_diagnose_fit_labels() -> None:
    ref = constant_predictor_loss(0.04)
    assert diagnose_fit(0.97 * ref, 0.98 * ref, 8, reference_loss=ref).label == UNDERFIT_VANISHING
    assert diagnose_fit(0.97 * ref, 0.98 * ref, None, max_distance=128, reference_loss=ref).label == UNDERFIT
    # an intermediate horizon (between short and long) is not called "far": the summary states the threshold
    middle = diagnose_fit(0.97 * ref, 0.98 * ref, 25, reference_loss=ref)
    assert middle.label == UNDERFIT and "beyond 16 residues" in middle.summary and "far" not in middle.summary
    over = diagnose_fit(0.4 * ref, 0.7 * ref, None, max_distance=128, reference_loss=ref)
    assert over.label == OVERFIT_LONG_MEMORY
    assert any("carry far" in r for r in over.reasons) and any("notably worse" in r for r in over.reasons)
    assert diagnose_fit(0.4 * ref, 0.7 * ref, 10, reference_loss=ref).label == OVERFIT
    assert diagnose_fit(0.6 * ref, 0.62 * ref, 30, reference_loss=ref).label == BALANCED
    assert diagnose_fit(None, None, 30).label == UNDETERMINED
    # worse validation on longer chains counts as over-fitting evidence even with a small overall gap
    by_length = {"128-255": 0.7 * ref, "0-63": 0.5 * ref, "64-127": 0.6 * ref}
    trend = diagnose_fit(0.55 * ref, 0.58 * ref, 100, reference_loss=ref, val_loss_by_length=by_length)
    assert trend.label == OVERFIT_LONG_MEMORY and trend.evidence["length_trend"] == pytest.approx(0.4)
    # thresholds are configurable; absolute thresholds replace the reference loss
    strict = FitThresholds(short_horizon=4)
    assert diagnose_fit(0.97 * ref, 0.98 * ref, 8, reference_loss=ref, thresholds=strict).label == UNDERFIT
    absolute = FitThresholds(high_train_loss=0.5, low_train_loss=0.2)
    assert diagnose_fit(0.6, 0.61, 4, thresholds=absolute).label == UNDERFIT_VANISHING
    assert diagnose_fit(0.3, 0.31, 4).label == UNDETERMINED  # level cannot be judged without a reference
    json.dumps(over.to_dict(), allow_nan=False)


def test_over_fitting_needs_the_train_loss_judged_not_high() -> None:
    """Both over-fitting labels need the train loss judged "not high"; without a reference loss or absolute thresholds
    (or with a focal loss, or loss chains without contacts) its level is unknown, so a validation loss 67 % above the
    training loss is undetermined, whatever the horizon. It was called over-fitting (with long memory at horizon 60)."""
    for horizon in (60, 8, None):
        unjudged = diagnose_fit(0.30, 0.50, horizon, max_distance=128, reference_loss=None)
        assert unjudged.label == UNDETERMINED, horizon
        assert unjudged.evidence["train_high"] is None and unjudged.evidence["val_worse"] is True
        assert "not judged" in unjudged.summary and "validation is worse" in unjudged.summary
    # judged "not high" by a reference, the same losses are over-fitting
    assert diagnose_fit(0.30, 0.50, 60, max_distance=128, reference_loss=1.0).label == OVERFIT_LONG_MEMORY
    assert diagnose_fit(0.30, 0.50, 8, max_distance=128, reference_loss=1.0).label == OVERFIT


def test_a_horizon_beyond_a_short_measured_range_is_not_called_long() -> None:
    """None (the sensitivity never fell within the measured range) says the horizon lies beyond the range's end: it is
    long only when that end reaches long_horizon (48), not short only when it reaches short_horizon (16); a label
    that needs the unknown side is undetermined. It used to count as long whatever the range."""
    ref = constant_predictor_loss(0.04)
    over = (0.4 * ref, 0.7 * ref)  # train low, validation 75 % worse
    under = (0.97 * ref, 0.98 * ref)  # train high
    unknown = diagnose_fit(*over, None, max_distance=32, reference_loss=ref)
    assert unknown.label == UNDETERMINED and "over-fitting" in unknown.summary
    assert unknown.evidence["horizon_long"] is None and unknown.evidence["horizon_short"] is False
    assert any("not known" in r and "32" in r for r in unknown.reasons)
    assert diagnose_fit(*over, None, max_distance=48, reference_loss=ref).label == OVERFIT_LONG_MEMORY
    assert diagnose_fit(*over, None, reference_loss=ref).label == UNDETERMINED  # no range: nothing assumed
    assert diagnose_fit(*over, 48, max_distance=32, reference_loss=ref).label == OVERFIT_LONG_MEMORY  # measured
    vanishing = diagnose_fit(*under, None, max_distance=8, reference_loss=ref)
    assert vanishing.label == UNDETERMINED and vanishing.evidence["horizon_short"] is None
    assert diagnose_fit(*under, None, max_distance=16, reference_loss=ref).label == UNDERFIT
    assert diagnose_fit(*under, None, max_distance=32, reference_loss=ref).label == UNDERFIT
    # a balanced fit needs no gradient signature
    assert diagnose_fit(0.6 * ref, 0.62 * ref, None, max_distance=8, reference_loss=ref).label == BALANCED
    json.dumps(unknown.to_dict(), allow_nan=False)

    # over seeds: every seed beyond its range, and short chains measured distances 0-32 only of --max-distance 96
    from protrnn.diagnostics.fit import diagnose_over_seeds

    profile = synthetic(np.linspace(1.0, 0.5, 97), counts=[10] * 33 + [0] * 64)
    assert profile.measured_max() == 32
    flow = GradientFlow(sensitivity=profile, sensitivity_anchor=profile, hidden=[], max_distance=96,
                        pairs_per_chain=1, seed=0, n_chains=1, n_pairs=1)
    seeds = [DiagnosticsResult(model="m", flow=flow, fraction=0.01, horizon=None, horizon_anchor=None,
                               hidden_horizons=[], metrics={"train_loss": over[0], "val_loss": over[1],
                                                            "reference_loss": ref}) for _ in range(2)]
    assert diagnose_over_seeds(seeds)["label"] == UNDETERMINED
    # one seed measured (horizon 12), one beyond its range of 32: the mean lies beyond (12 + 32) / 2 = 22, which
    # does not reach 48, so over-fitting with long memory cannot be told; the cap (96) used to stand in for the
    # censored seed, giving a mean of 54 and "long memory"
    mixed = [DiagnosticsResult(model="m", flow=flow, fraction=0.01, horizon=h, horizon_anchor=None, hidden_horizons=[],
                               metrics={"train_loss": over[0], "val_loss": over[1], "reference_loss": ref})
             for h in (12, None)]
    assert diagnose_over_seeds(mixed)["label"] == UNDETERMINED
    far = [DiagnosticsResult(model="m", flow=flow, fraction=0.01, horizon=h, horizon_anchor=None, hidden_horizons=[],
                             metrics={"train_loss": over[0], "val_loss": over[1], "reference_loss": ref})
           for h in (70, None)]  # beyond (70 + 32) / 2 = 51 >= 48: long memory is known
    assert diagnose_over_seeds(far)["label"] == OVERFIT_LONG_MEMORY


def test_fit_diagnosis_over_seeds_uses_the_seed_means() -> None:
    """Two seeds whose own labels disagree: the model's label is the documented rule applied to the seed means of
    train loss, validation loss, reference loss and horizon, worked out here by hand."""
    from protrnn.diagnostics.fit import diagnose_over_seeds

    ref = constant_predictor_loss(0.04)

    def run(train: float, val: float, horizon: int | None) -> DiagnosticsResult:
        flow = GradientFlow(sensitivity=synthetic([1.0, 0.5]), sensitivity_anchor=synthetic([1.0, 0.5]), hidden=[],
                            max_distance=96, pairs_per_chain=1, seed=0, n_chains=1, n_pairs=1)
        result = DiagnosticsResult(model="m", flow=flow, fraction=0.01, horizon=horizon, horizon_anchor=None,
                                   hidden_horizons=[], metrics={"train_loss": train, "val_loss": val,
                                                                "reference_loss": ref})
        result.diagnosis = diagnose_fit(train, val, horizon, max_distance=96, reference_loss=ref)
        return result

    seeds = [run(0.95 * ref, 0.96 * ref, 10), run(0.80 * ref, 0.81 * ref, 30)]
    assert [r.diagnosis.label for r in seeds] == [UNDERFIT_VANISHING, BALANCED]
    combined = diagnose_over_seeds(seeds)
    # means: train 0.875 x ref (not high: < 0.9), gap ~ +1 % (not worse), horizon 20 -> balanced
    assert combined["label"] == label_by_the_documented_rules(0.875 * ref, 0.885 * ref, ref, 20, {}, measured_to=96)
    assert combined["inputs"]["horizon"]["mean"] == 20.0 and combined["seed_labels"] == [UNDERFIT_VANISHING, BALANCED]
    assert combined["agreeing_seeds"] == 1 and combined["n_seeds"] == 2


def test_constant_predictor_loss_is_the_best_constant() -> None:
    rate, weight = 0.05, 4.0
    grid = np.linspace(1e-4, 1 - 1e-4, 20001)
    losses = -(weight * rate * np.log(grid) + (1 - rate) * np.log(1 - grid))
    assert constant_predictor_loss(rate, weight) == pytest.approx(losses.min(), rel=1e-6)
    assert constant_predictor_loss(0.5) == pytest.approx(math.log(2))
    with pytest.raises(InputError):
        constant_predictor_loss(0.0)


def test_length_labels() -> None:
    assert [length_label(n, (64, 128)) for n in (20, 64, 127, 300)] == ["0-63", "64-127", "64-127", ">=128"]


# -------------------------------------------------------------------------------------------------- pair sampling
def test_sample_pairs_spreads_separations_and_respects_the_mask() -> None:
    mask = np.ones((80, 80), dtype=bool)
    idx = np.arange(80)
    mask &= np.abs(idx[:, None] - idx[None, :]) >= 6
    mask[:, 10] = mask[10, :] = False  # an unobserved residue
    pairs = sample_pairs(mask, 8, np.random.default_rng(0))
    assert len(pairs) == len(set(pairs)) == 8
    assert all(i < j and mask[i, j] and i != 10 and j != 10 for i, j in pairs)
    separations = sorted(j - i for i, j in pairs)
    assert separations[0] == 6 and separations[-1] >= 70  # the shortest and (nearly) the longest are included
    assert pairs == sample_pairs(mask, 8, np.random.default_rng(0))
    assert sample_pairs(np.zeros((5, 5), dtype=bool), 4, np.random.default_rng(0)) == []


# ------------------------------------------------------------------------------------ exactness on real chains
def test_batched_pairs_equal_single_chain_pairs(val_chains: list) -> None:
    """Chains in a batch are independent: padding and batch-mates change no gradient."""
    model = tiny_model("lstm")
    chains = val_chains[:3]
    pairs = {c.id: sample_pairs(c.pair_mask(), 2, np.random.default_rng(k)) for k, c in enumerate(chains)}
    together = list(iter_pair_gradients(model, chains_to_batches(chains, 3), pairs=pairs))
    alone = [pg for c in chains for pg in iter_pair_gradients(model, chains_to_batches([c], 1), pairs=pairs)]
    assert len(together) == len(alone) == 6
    key = {(pg.chain, pg.i, pg.j): pg for pg in alone}
    for pg in together:
        ref = key[(pg.chain, pg.i, pg.j)]
        np.testing.assert_allclose(pg.input_norms, ref.input_norms, rtol=1e-4, atol=1e-9)
        for mine, theirs in zip(pg.hidden_norms, ref.hidden_norms, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-9)
    # and the norms are those of plain autograd on the pair's logit
    chain, (i, j) = chains[0], pairs[chains[0].id][0]
    batch = next(chains_to_batches([chain], 1))
    x = model.embed(batch["tokens"]).detach().requires_grad_(True)
    model.forward_embedded(x, batch["mask"])[0, i, j].backward()
    direct = x.grad[0].norm(dim=-1).numpy()
    np.testing.assert_allclose(key[(chain.id, i, j)].input_norms, direct, rtol=1e-5, atol=1e-9)


def test_gradient_horizon_gives_exact_zeros_beyond_the_cuts(val_chains: list) -> None:
    """Cuts every k: d logit_ij / d x_s is exactly zero unless s shares a block with i or j (pairwise head: the
    logit only mixes h_i and h_j), and non-zero everywhere inside those blocks."""
    k = 8
    model = tiny_model("lstm", gradient_horizon=k)
    chains = val_chains[:4]
    seen = 0
    for pg in iter_pair_gradients(model, chains_to_batches(chains, 4), pairs_per_chain=4, hidden=False):
        block = np.arange(len(pg.input_norms)) // k
        inside = (block == pg.i // k) | (block == pg.j // k)
        assert np.all(pg.input_norms[~inside] == 0.0), (pg.chain, pg.i, pg.j)
        assert np.all(pg.input_norms[inside] > 0.0), (pg.chain, pg.i, pg.j)
        seen += 1
    assert seen == 16
    flow = gradient_flow(model, chains, max_distance=48, pairs_per_chain=4, hidden=False)
    profile = flow.sensitivity
    assert np.all(profile.mean[k:][profile.count[k:] > 0] == 0.0)  # distance >= k from both residues
    assert np.all(profile.mean[:k] > 0.0)
    assert effective_horizon(profile) <= k
    # without the cut the same model reaches beyond k
    free = gradient_flow(tiny_model("lstm"), chains[:2], max_distance=48, pairs_per_chain=2, hidden=False)
    assert free.sensitivity.mean[k + 4] > 1e-3


def test_hidden_gradients_of_the_last_layer_sit_on_the_pair(val_chains: list) -> None:
    model = tiny_model("rnn")
    flow = gradient_flow(model, val_chains[:4], max_distance=40, pairs_per_chain=2)
    assert len(flow.hidden) == 2
    first, last = flow.hidden
    # the pairwise head reads h_i and h_j only, so the last layer's dL/dh_t is zero elsewhere
    assert last.mean[0] == pytest.approx(1.0) and np.all(last.mean[1:][last.count[1:] > 0] == 0.0)
    assert first.mean[3] > 0.0 and np.all(np.isfinite(first.raw_mean[:10]))


def test_measurement_leaves_training_state_alone(val_chains: list) -> None:
    model = tiny_model("lstm", dropout=0.2)
    model.train()
    rng_before = torch.random.get_rng_state()
    batches = list(chains_to_batches(val_chains[:2], 2))
    gradient_flow_from_batches(model, batches, max_distance=16, pairs_per_chain=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng_before, torch.random.get_rng_state())
    with torch.inference_mode():  # as inside Lightning's validation loop, with inference tensors as inputs
        cached = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in b.items()} for b in batches]
        flow = gradient_flow_from_batches(model, cached, max_distance=16, pairs_per_chain=2)
    assert flow.n_pairs == 4 and flow.n_chains == 2


def test_no_scored_pairs_is_an_error() -> None:
    from protrnn.data.chain import ProteinChain

    short = ProteinChain("tiny", "ACDE", np.ones(4, dtype=bool), np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="no scored pairs"):
        gradient_flow(tiny_model(), [short], max_distance=8)


# -------------------------------------------------------------------------------------- the scientific contrast
def test_tanh_rnn_sensitivity_decays_faster_than_lstm(val_chains: list) -> None:
    """Same real chains, same seed, untrained: a forget-bias-1 LSTM carries input sensitivity much further than a
    tanh RNN (measured on 12 cgdms val chains, seeds 0-2: LSTM horizon 39-50, RNN 18-19, GRU 13)."""
    chains = val_chains[:12]
    horizons, at24 = {}, {}
    for cell in ("lstm", "rnn"):
        flow = gradient_flow(tiny_model(cell, seed=0), chains, max_distance=64, pairs_per_chain=4, hidden=False)
        horizons[cell] = effective_horizon(flow.sensitivity, 0.01)
        at24[cell] = flow.sensitivity.value_at(24)
    assert horizons["rnn"] is not None
    assert horizons["lstm"] is None or horizons["lstm"] >= horizons["rnn"] + 10
    assert at24["lstm"] > 5 * at24["rnn"]


# ------------------------------------------------------------------------------------------------- persistence
def test_save_and_load_round_trip(val_chains: list, tmp_path: Path) -> None:
    model = tiny_model("gru")
    flow = gradient_flow(model, val_chains[:2], max_distance=120, pairs_per_chain=2)  # chains < 120: NaN tail
    result = summarise(flow, 0.05, model="gru", config=model.config.to_dict())
    result.diagnosis = diagnose_fit(0.3, 0.4, result.horizon, reference_loss=0.35)
    from protrnn.diagnostics.usage import usage_profile

    result.usage = usage_profile(model, val_chains[:2], distances=[0, 8, 200], draws=2, pairs_per_chain=2,
                                 precision_chains=1)
    result.training = {"seed": 1, "global_step": 700}
    assert result.usage.count[-1] == 0  # no chain reaches 200 residues from a pair: not measured, null in JSON
    path = tmp_path / "diag.json"
    save_diagnostics([result, result], path)
    text = path.read_text()
    assert "NaN" not in text and json.loads(text)["format"] == "protrnn-diagnostics"
    loaded = load_diagnostics(path)
    assert len(loaded) == 2 and loaded[0].to_dict() == result.to_dict()
    # Version 2: usage horizons count the first distance not read. A version-1 file (before 2026-12-07) stored the
    # radius beyond which nothing was read, one less, without horizon_rule: it is read with the 1 added.
    document = json.loads(text)
    assert document["format_version"] == 2
    old = {**document, "format_version": 1, "models": [
        {**m, "usage": {**{k: v for k, v in m["usage"].items() if k != "horizon_rule"}, "horizon": 7}}
        for m in document["models"]]}
    (tmp_path / "v1.json").write_text(json.dumps(old))
    assert [r.usage.horizon for r in load_diagnostics(tmp_path / "v1.json")] == [8, 8]
    np.testing.assert_array_equal(loaded[0].flow.sensitivity.count, flow.sensitivity.count)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(InputError, match="bad.json"):
        load_diagnostics(tmp_path / "bad.json")


def test_loss_by_length_matches_a_direct_computation(val_chains: list) -> None:
    model = tiny_model("lstm")
    chains = val_chains[:3]
    result = contact_loss_by_length(model, chains, LossSettings(pos_weight=2.0), length_edges=(64, 90))
    total = count = 0.0
    for chain in chains:
        batch = next(chains_to_batches([chain], 1))
        with torch.no_grad():
            logits = model(batch["tokens"], batch["mask"])[0].double()
        scored = torch.triu(batch["pair_mask"][0], diagonal=1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits[scored], batch["contacts"][0].double()[scored], pos_weight=torch.tensor(2.0, dtype=torch.float64),
            reduction="sum")
        total, count = total + float(loss), count + int(scored.sum())
    assert result.loss == pytest.approx(total / count, rel=1e-4)
    assert sum(result.pairs_by_length.values()) == result.n_pairs == count


def test_diagnostic_losses_are_plain_means_whatever_the_far_weight(val_chains: list) -> None:
    """A model trained with far_weight is scored with every pair weighing 1 (pos_weight kept): the far-weighted sum
    was divided by the unweighted pair count, which inflated long chains' losses (they hold the far pairs)."""
    model = tiny_model("lstm")
    chains = val_chains[:3]  # 72, 91 and 95 residues: groups 0-79 and >=80
    far = LossSettings(pos_weight=2.0, far_weight=4.0, far_separation=20)
    result = contact_loss_by_length(model, chains, far, length_edges=(80,))
    groups: dict[str, list[np.ndarray]] = {}
    for chain in chains:
        tokens = torch.from_numpy(DEFAULT_ALPHABET.encode(chain.sequence).astype(np.int64))[None]
        with torch.no_grad():
            logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool))[0].double().numpy()
        upper = np.triu(chain.pair_mask(), 1)
        assert (np.argwhere(upper) @ [-1, 1]).max() >= 20  # far pairs present: the weight would matter
        terms = focal_loss_by_hand(logits[upper], chain.contact_map()[upper].astype(np.float64), 2.0, 0.0)
        groups.setdefault("0-79" if len(chain) < 80 else ">=80", []).append(terms)
    assert set(result.by_length) == set(groups)
    for key, terms in groups.items():
        assert result.by_length[key] == pytest.approx(np.concatenate(terms).mean(), rel=1e-4)
    assert result.loss == pytest.approx(np.concatenate([t for v in groups.values() for t in v]).mean(), rel=1e-4)


def test_hidden_gradients_weigh_far_pairs_as_training_does(val_chains: list) -> None:
    """dL/dh of a pair at least far_separation apart carries training's far_weight (the pair's term in the summed
    objective is far_weight x its loss); a nearer pair's does not. The logit's own gradient is unchanged."""
    model = tiny_model("gru")
    chain = val_chains[0]
    scored = np.argwhere(np.triu(chain.pair_mask(), 1))
    near = next((int(i), int(j)) for i, j in scored if j - i < 30)
    far_pair = next((int(i), int(j)) for i, j in scored if j - i >= 30)
    pairs = {chain.id: [near, far_pair]}
    plain = list(iter_pair_gradients(model, chains_to_batches([chain], 1), pairs=pairs,
                                     loss=LossSettings(pos_weight=2.0)))
    weighted = list(iter_pair_gradients(model, chains_to_batches([chain], 1), pairs=pairs,
                                        loss=LossSettings(pos_weight=2.0, far_weight=4.0, far_separation=30)))
    for factor, base, mine in zip((1.0, 4.0), plain, weighted, strict=True):
        np.testing.assert_allclose(mine.input_norms, base.input_norms)
        assert any(h.max() > 0 for h in base.hidden_norms)
        for h_mine, h_base in zip(mine.hidden_norms, base.hidden_norms, strict=True):
            np.testing.assert_allclose(h_mine, factor * h_base, rtol=1e-5, atol=1e-12)


def test_a_model_with_no_sensitivity_at_all_has_horizon_zero(val_chains: list) -> None:
    """A head with all weights zero ignores the encoder: every pair's gradient is exactly zero everywhere. Those pairs
    are measurements of zero (they were dropped, and the run failed with "no measured distance"); a profile that is
    zero everywhere has horizon 0 (docs/diagnostics.md)."""
    chains = val_chains[:2]
    reference = gradient_flow(tiny_model("lstm"), chains, max_distance=20, pairs_per_chain=2)
    model = tiny_model("lstm")
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter.zero_()
    flow = gradient_flow(model, chains, max_distance=20, pairs_per_chain=2)
    assert flow.n_pairs == 4 and flow.sensitivity.n_pairs == 4 and len(flow.hidden) == 2
    for profile, counted in zip([flow.sensitivity, flow.sensitivity_anchor, *flow.hidden],
                                [reference.sensitivity, reference.sensitivity_anchor, *reference.hidden], strict=True):
        # the same pairs and positions as any model's (one sample per position within 20 of the pair)
        np.testing.assert_array_equal(profile.count, counted.count)
        assert profile.count.min() > 0 and np.all(profile.mean == 0) and np.all(profile.raw_mean == 0)
    result = summarise(flow)
    assert result.horizon == 0 and result.horizon_anchor == 0 and result.hidden_horizons == [0, 0]


def test_profile_pairs_with_a_non_finite_gradient_are_skipped() -> None:
    """Per pair: normalised by its own peak; all-zero counts as zeros; a NaN or inf anywhere drops the pair."""
    from protrnn.diagnostics.gradients import _Accumulator

    acc = _Accumulator("input_sensitivity", "nearest", 3)
    at = np.arange(4)
    acc.add(np.array([2.0, 1.0, 0.0, 0.0]), at)
    acc.add(np.zeros(4), at)
    acc.add(np.array([1.0, np.nan, 1.0, 1.0]), at)
    acc.add(np.array([1.0, 1.0, np.inf, 1.0]), at)
    profile = acc.profile(n_chains=1)
    assert profile.n_pairs == 2 and profile.count.tolist() == [2, 2, 2, 2]
    # pair means [0.5, 0.25, 0, 0], divided by their peak 0.5
    np.testing.assert_allclose(profile.mean, [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(profile.raw_mean, [1.0, 0.5, 0.0, 0.0])


def test_profile_sem_treats_the_chain_as_the_unit() -> None:
    """``sem`` is the standard error across chains, not across (pair, position) samples, which are correlated
    within a chain: with equal sample counts it is the standard deviation of the chain means over sqrt(chains)."""
    from protrnn.diagnostics.gradients import _Accumulator

    acc = _Accumulator("input_sensitivity", "nearest", 1)
    at = np.array([0, 1, 1])
    for _ in range(3):  # three pairs of chain A, identical: more samples of one chain add no information
        acc.add(np.array([1.0, 0.5, 0.5]), at, "A")
    for _ in range(3):
        acc.add(np.array([1.0, 0.1, 0.1]), at, "B")
    profile = acc.profile(n_chains=2)
    # distance 1: chain means 0.5 and 0.1; their sample standard deviation is 0.4 / sqrt(2); over sqrt(2) chains: 0.2
    np.testing.assert_allclose(profile.mean, [1.0, 0.3])
    np.testing.assert_allclose(profile.sem, [0.0, 0.2])

    one = _Accumulator("input_sensitivity", "nearest", 1)
    for value in (0.2, 0.4, 0.6):  # one chain: its spread says nothing about other chains
        one.add(np.array([1.0, value]), np.array([0, 1]), "A")
    assert np.isnan(one.profile(n_chains=1).sem).all()


def _length_sorted_batches(lengths: list[int], rows_per_batch: int) -> list[dict]:
    """Validation batches as the loader yields them (shuffle off: ascending length), ids ``c<rank by length>``."""
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    batches = []
    for start in range(0, len(order), rows_per_batch):
        rows = order[start:start + rows_per_batch]
        width = max(lengths[k] for k in rows)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, k in enumerate(rows):
            mask[r, :lengths[k]] = True
        pair = mask[:, :, None] & mask[:, None, :]
        batches.append({"tokens": mask.long() * 5, "mask": mask, "pair_mask": pair, "contacts": pair.clone(),
                        "ids": [f"c{order.index(k)}" for k in rows]})
    return batches


def _fake_trainer(sanity: bool = False) -> object:
    import types

    return types.SimpleNamespace(is_global_zero=True, sanity_checking=sanity, current_epoch=0, global_step=0,
                                 loggers=[], callback_metrics={}, default_root_dir=".")


def test_callback_draws_its_chains_from_the_whole_first_validation_run() -> None:
    """The validation loader yields the shortest chains first. The callback used to keep the first n rows it saw, so
    it measured the n shortest chains only (a measured range ending far below max_distance, a horizon of inf). Now
    every row of the first validation run is kept with probability n / rows: over 300 seeds each length rank is kept
    about 8 / 40 = 20 % of the time, the shortest ranks as often as the longest; sanity-check batches are not drawn
    from, each kept row is cropped to its own length, and the draw is kept for later validation runs."""
    from protrnn.diagnostics.callback import GradientFlowCallback

    lengths = [20 + 7 * k for k in range(40)]  # 20 .. 293, rank k = length 20 + 7k
    batches = _length_sorted_batches(lengths, rows_per_batch=5)
    kept = np.zeros(len(lengths))
    for seed in range(300):
        callback = GradientFlowCallback(n_chains=8, seed=seed)
        for index, batch in enumerate(batches):
            callback.on_validation_batch_end(_fake_trainer(), None, None, batch, index)
        ranks = [int(entry["ids"][0][1:]) for entry in callback._cache]
        assert len(ranks) == len(set(ranks)) == 8
        kept[ranks] += 1
    rate = kept / 300
    assert rate.sum() == pytest.approx(8.0)
    # binomial sd of a 10-rank mean over 300 draws: sqrt(0.2 * 0.8 / 300 / 10) = 0.007
    assert abs(rate[:10].mean() - 0.2) < 0.03 and abs(rate[-10:].mean() - 0.2) < 0.03
    assert rate.min() > 0.08 and rate.max() < 0.35

    callback = GradientFlowCallback(n_chains=8, seed=0)
    for index, batch in enumerate(batches[:2]):  # the sanity check sees the first batches: not drawn from
        callback.on_validation_batch_end(_fake_trainer(sanity=True), None, None, batch, index)
    assert callback._cache == []
    for index, batch in enumerate(batches):
        callback.on_validation_batch_end(_fake_trainer(), None, None, batch, index)
    for entry in callback._cache:  # one row each, cropped to that chain's own length
        length = lengths[int(entry["ids"][0][1:])]
        assert entry["mask"].shape == (1, length) and bool(entry["mask"].all())
        assert entry["pair_mask"].shape == (1, length, length)
    drawn = [entry["ids"] for entry in callback._cache]
    repeat = GradientFlowCallback(n_chains=8, seed=0)  # the same seed draws the same chains
    for index, batch in enumerate(batches):
        repeat.on_validation_batch_end(_fake_trainer(), None, None, batch, index)
    assert [entry["ids"] for entry in repeat._cache] == drawn
    import types

    callback.write_json = False
    callback.max_distance = 128
    callback.on_validation_epoch_end(_fake_trainer(), types.SimpleNamespace(net=tiny_model("lstm"), hparams={}))
    # the 8 shortest chains (20-69 residues) cannot be measured beyond distance 68; the draw reaches further
    assert callback.last_result.flow.sensitivity.measured_max() > 69
    for index, batch in enumerate(reversed(batches)):  # a later validation run: the draw is kept
        callback.on_validation_batch_end(_fake_trainer(), None, None, batch, index)
    assert [entry["ids"] for entry in callback._cache] == drawn


# -------------------------------------------------------------------------------------------------- integration
@pytest.mark.slow
def test_callback_logs_inside_a_tiny_fit(val_chains: list, tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from protrnn.data.dataset import save_dataset
    from protrnn.diagnostics.callback import GradientFlowCallback
    from protrnn.training.datamodule import ContactDataModule
    from protrnn.training.module import ContactLightningModule

    save_dataset(val_chains[:8], tmp_path / "train.npz")
    save_dataset(val_chains[8:12], tmp_path / "val.npz")
    config = tiny_model("lstm").config
    module = ContactLightningModule(config, warmup_steps=1)
    data = ContactDataModule(tmp_path / "train.npz", tmp_path / "val.npz", crop_length=64, max_tokens=400)
    callback = GradientFlowCallback(n_chains=3, pairs_per_chain=2, max_distance=32, log_distances=(8, 16, 64))
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path / "logs"), callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_train_batches=1, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=data)
    log_dir = Path(trainer.logger.log_dir)
    header = (log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"gradient_flow/horizon", "gradient_flow/sensitivity@8", "gradient_flow/sensitivity@16",
            "gradient_flow/hidden0_horizon", "gradient_flow/hidden1_horizon"} <= set(header)
    assert "gradient_flow/sensitivity@64" not in header  # beyond max_distance: not measured, not logged
    files = sorted((log_dir / "gradient_flow").glob("epoch=*.json"))
    assert [f.name for f in files] == ["epoch=0000.json", "epoch=0001.json"]
    results = load_diagnostics(files[-1])
    assert results[0].flow.n_chains == 3 and results[0].flow.n_pairs == 6
    assert results[0].config["cell"] == "lstm"


def test_diagnose_command_on_an_exported_model(val_chains: list, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main
    from protrnn.data.dataset import save_dataset

    save_model(tiny_model("rnn"), tmp_path / "rnn", extra={"training_hparams": {"pos_weight": 2.0}})
    # the lstm was (as the pipeline's `pretrained: true` models are) started from a pretrained encoder
    encoder = _encoder_export(tmp_path / "pretrain" / "encoder", {"val/Q8": 0.61, "val/Q3": 0.73})
    save_model(tiny_model("lstm"), tmp_path / "lstm", extra={"training_config": {"trainer": {"callbacks": [
        {"class_path": "protrnn.training.finetune.PretrainedEncoder",
         "init_args": {"path": str(encoder), "freeze_steps": 200}}]}}})
    save_dataset(val_chains[:4], tmp_path / "val.npz")
    save_dataset(val_chains[4:8], tmp_path / "train.npz")
    out = tmp_path / "diag.json"
    rc = main(["diagnose", str(tmp_path / "rnn"), f"long={tmp_path / 'lstm'}", "--data", str(tmp_path / "val.npz"),
               "--train-data", str(tmp_path / "train.npz"), "-o", str(out), "--max-distance", "48",
               "--n-chains", "3", "--pairs-per-chain", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "horizon" in printed and "long" in printed
    results = load_diagnostics(out)
    assert [r.model for r in results] == ["rnn", "long"]
    rnn = results[0]
    assert rnn.flow.n_chains == 3 and rnn.flow.max_distance == 48 and len(rnn.flow.hidden) == 2
    assert rnn.metrics["pos_weight"] == 2.0 and results[1].metrics["pos_weight"] == 1.0
    assert rnn.training == {"pretrained_encoder": False}
    assert results[1].training == {"pretrained_encoder": True, "freeze_steps": 200, "encoder_lr_scale": 1.0,
                                   "pretrained_encoder_path": str(encoder),
                                   "pretrained_encoder_metrics": {"Q8": 0.61, "Q3": 0.73},
                                   "pretrained_encoder_init": DEFAULT_INITS}
    for result in results:
        m = result.metrics
        assert m["train_loss"] > 0 and m["val_loss"] > 0 and m["reference_loss"] > 0
        expected = label_by_the_documented_rules(m["train_loss"], m["val_loss"], m["reference_loss"],
                                                 result.horizon, m["data_loss"]["by_length"], measured_to=48)
        assert result.diagnosis is not None and result.diagnosis.label == expected, (result.model, m)

    # metrics.csv route, and bad input on one line
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss,val/loss\n0,9,,0.50\n0,9,0.60,\n1,19,,0.45\n1,19,0.40,\n")
    from protrnn.diagnostics.run import read_last_losses

    assert read_last_losses(csv_path) == (0.40, 0.45)
    rc = main(["diagnose", str(tmp_path / "missing"), "--data", str(tmp_path / "val.npz"), "-o", str(out)])
    assert rc == 2 and "missing" in capsys.readouterr().err


#: ModelConfig's default init settings: those of _encoder_export's config, which records only the cell.
DEFAULT_INITS = {"orthogonal_init": True, "forget_bias": 1.0, "chrono_init": False, "chrono_tmax": 200}


def _encoder_export(directory: Path, val_metrics: dict) -> Path:
    """An ``encoder.json`` as ``protrnn pretrain fit`` writes it (format, config, alphabet, validation metrics); the
    weights are never read by the training record."""
    directory.mkdir(parents=True)
    (directory / "encoder.json").write_text(json.dumps({
        "format": "protrnn-pretrained-encoder", "format_version": 1, "config": {"cell": "lstm"},
        "alphabet": {"residues": "ACDEFGHIKLMNPQRSTVWY"}, "global_step": 700, "val_metrics": val_metrics}))
    return directory


def test_training_record_says_whether_training_started_from_a_pretrained_encoder(tmp_path: Path) -> None:
    """model.json's recorded trainer.callbacks decide ``pretrained_encoder``; its freeze steps and the export's
    held-out Q8 / Q3 / masked-residue accuracy come along; old records and other callbacks mean not pretrained."""
    from protrnn.diagnostics.run import training_record

    flow = {"class_path": "protrnn.diagnostics.callback.GradientFlowCallback",
            "init_args": {"n_chains": 8, "pairs_per_chain": 4, "max_distance": 128}}
    encoder = _encoder_export(tmp_path / "encoder", {"val/Q8": 0.598, "val/Q3": 0.71, "val/mask_acc": 0.2,
                                                      "val/loss": 1.9})

    def record(callbacks: object, path: object = encoder, module: dict | None = None) -> dict:
        pretrained = {"class_path": "protrnn.training.finetune.PretrainedEncoder",
                      "init_args": {"path": str(path), "freeze_steps": 200}}
        config = {"seed_everything": 1, "trainer": {
            "gradient_clip_val": 1.0, "max_steps": 700,
            "callbacks": [pretrained if c == "pretrained" else c for c in callbacks]}}
        return training_record({"global_step": 700, "training_config": config | ({"model": module} if module else {})})

    base = {"seed": 1, "gradient_clip_val": 1.0, "max_steps": 700, "global_step": 700}
    assert record([flow]) == {**base, "pretrained_encoder": False}
    assert record([]) == {**base, "pretrained_encoder": False}
    assert record([flow, "pretrained"]) == {**base, "pretrained_encoder": True, "freeze_steps": 200,
                                            "encoder_lr_scale": 1.0, "pretrained_encoder_path": str(encoder),
                                            "pretrained_encoder_metrics": {"Q8": 0.598, "Q3": 0.71, "mask_acc": 0.2},
                                            "pretrained_encoder_init": DEFAULT_INITS}
    # the rate the encoder was fine-tuned at (model.encoder_lr_scale), recorded for pretrained models only
    assert record(["pretrained"], module={"lr": 0.003, "encoder_lr_scale": 0.1})["encoder_lr_scale"] == 0.1
    assert "encoder_lr_scale" not in record([flow], module={"encoder_lr_scale": 0.1})
    # the encoder moved away since: still pretrained, just without its metrics
    gone = record(["pretrained"], tmp_path / "gone")
    assert gone["pretrained_encoder"] is True and gone["freeze_steps"] == 200
    assert "pretrained_encoder_metrics" not in gone and "pretrained_encoder_init" not in gone
    # a model.json written before callbacks were recorded, or with no training config at all
    assert training_record({"global_step": 5, "training_config": {"trainer": {"max_steps": 5}}}) == {
        "max_steps": 5, "global_step": 5, "pretrained_encoder": False}
    assert training_record({}) == {"pretrained_encoder": False}


def test_training_record_holds_the_init_settings_of_the_pretrained_encoder(tmp_path: Path) -> None:
    """A reviewer's case: load_pretrained_encoder copies a pretrained export's embedding and encoder over a contact
    model whose config may ask for other inits, so the config's inits stop describing the weights. The training record
    keeps the encoder's own (pretrained_encoder_init, read from its encoder.json without loading any weight), and
    they are the ones the loaded weights show: chrono forget-gate biases in log [1, T_max - 1] where the config says a
    forget bias of 1, a forget-gate block that is not orthogonal where the config says orthogonal. A config that this
    version cannot build gives no init (and keeps the metrics)."""
    from protrnn.diagnostics.run import training_record
    from protrnn.model.pretrain_heads import PretrainNetwork, save_pretrained
    from protrnn.report.findings import effective_settings
    from protrnn.training.finetune import load_pretrained_encoder

    hidden = 8
    sizes = {"cell": "lstm", "embed_dim": 8, "hidden_size": hidden, "num_layers": 1, "head": "pairwise"}
    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    save_pretrained(PretrainNetwork(ModelConfig(**sizes, orthogonal_init=False, chrono_init=True, chrono_tmax=512)),
                    encoder, extra={"val_metrics": {"val/Q8": 0.5}})
    net = ContactModel(ModelConfig(**sizes))  # orthogonal, forget bias 1.0, no chrono
    load_pretrained_encoder(net, encoder)
    rnn = net.encoder.layers[0].fwd
    forget = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach()[hidden:2 * hidden]
    assert not torch.allclose(forget, torch.ones(hidden))
    assert bool(((forget >= 0) & (forget <= math.log(511) + 1e-5)).all())
    block = rnn.weight_hh_l0.detach()[hidden:2 * hidden]
    assert not torch.allclose(block @ block.T, torch.eye(hidden), atol=1e-3)

    callback = {"class_path": "protrnn.training.finetune.PretrainedEncoder",
                "init_args": {"path": str(encoder), "freeze_steps": 0}}
    record = training_record({"training_config": {"trainer": {"callbacks": [callback]}}})
    assert record["pretrained_encoder_init"] == {"orthogonal_init": False, "forget_bias": 1.0, "chrono_init": True,
                                                 "chrono_tmax": 512}
    assert record["pretrained_encoder_metrics"] == {"Q8": 0.5}
    settings = effective_settings(net.config.to_dict(), None, record["pretrained_encoder"], record["freeze_steps"],
                                  record["encoder_lr_scale"], record["pretrained_encoder_init"])
    assert (settings["orthogonal_init"], settings["chrono_init"], settings["chrono_tmax"],
            settings["forget_bias"]) == (False, True, 512, None)

    meta = json.loads((encoder / "encoder.json").read_text())
    (encoder / "encoder.json").write_text(json.dumps({**meta, "config": {**meta["config"], "hidden_size": "8"}}))
    broken = training_record({"training_config": {"trainer": {"callbacks": [callback]}}})
    assert "pretrained_encoder_init" not in broken and broken["pretrained_encoder_metrics"] == {"Q8": 0.5}


def test_batches_respect_the_padded_pair_budget(val_chains: list) -> None:
    """A long chain never pads its batch-mates up to its length beyond max_pairs; order and coverage are kept."""
    chains = sorted(val_chains[:12], key=len)[::-1]  # longest first: the worst case for padding
    longest = len(chains[0])
    budget = 2 * longest * longest
    batches = list(chains_to_batches(chains, batch_size=8, max_pairs=budget))
    assert [i for b in batches for i in b["ids"]] == [c.id for c in chains]
    for batch in batches:
        count, width = batch["tokens"].shape
        assert count * width * width <= budget or count == 1
        assert count <= 8
    assert len(next(chains_to_batches(chains, batch_size=8, max_pairs=1))["ids"]) == 1
    with pytest.raises(InputError, match="max_pairs"):
        next(chains_to_batches(chains, max_pairs=0))


def test_fit_losses_compare_like_lengths_with_like() -> None:
    """A set of longer chains has a lower pooled loss by itself; matching length groups removes that bias."""
    train = LossByLength(loss=0.15, n_pairs=1100, n_chains=20, by_length={"0-63": 0.30, ">=256": 0.135},
                         pairs_by_length={"0-63": 100, ">=256": 1000})
    val = LossByLength(loss=0.27, n_pairs=1100, n_chains=20, by_length={"0-63": 0.30, ">=256": 0.135},
                       pairs_by_length={"0-63": 900, ">=256": 200})
    matched_train, matched_val = length_matched_losses(train, val)
    assert matched_train == pytest.approx(matched_val)  # identical per group: no gap once lengths are matched
    assert matched_val == pytest.approx((900 * 0.30 + 200 * 0.135) / 1100)
    lonely = LossByLength(loss=0.2, n_pairs=10, n_chains=1, by_length={"64-127": 0.2}, pairs_by_length={"64-127": 10})
    assert length_matched_losses(lonely, val) == (0.2, 0.27)  # no common group: the pooled losses


def test_batches_are_the_chains_right_padded(val_chains: list) -> None:
    """Each row holds its chain's tokens, observed mask, scored pairs and contacts, then zeros (the batch contract)."""
    chains = val_chains[:5]
    batches = list(chains_to_batches(chains, batch_size=2))
    assert [len(b["ids"]) for b in batches] == [2, 2, 1]
    rows = [(batch, b) for batch in batches for b in range(len(batch["ids"]))]
    for chain, (batch, b) in zip(chains, rows, strict=True):
        n, width = len(chain), batch["tokens"].shape[1]
        assert batch["ids"][b] == chain.id and width == max(len(c) for c in chains if c.id in batch["ids"])
        tokens = np.zeros(width, dtype=np.int64)
        tokens[:n] = DEFAULT_ALPHABET.encode(chain.sequence)
        np.testing.assert_array_equal(batch["tokens"][b].numpy(), tokens)
        assert batch["mask"][b].numpy().tolist() == [True] * n + [False] * (width - n)
        idx = np.arange(n)
        scored = (np.abs(idx[:, None] - idx[None, :]) >= 6) & chain.observed[:, None] & chain.observed[None, :]
        cb = chain.cb
        with np.errstate(invalid="ignore"):
            contact = np.linalg.norm(cb[:, None] - cb[None, :], axis=-1) < 8.0
        pair_mask = batch["pair_mask"][b].numpy()
        contacts = batch["contacts"][b].numpy()
        np.testing.assert_array_equal(pair_mask[:n, :n], scored)
        np.testing.assert_array_equal(contacts[:n, :n], contact.astype(np.float32))
        assert not pair_mask[n:].any() and not pair_mask[:, n:].any() and not contacts[n:].any()


def cb_labels(chain, cutoff: float) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Cβ-Cβ < ``cutoff`` Å between observed residues, from the chain's coordinates with numpy alone."""
    cb = chain.coords[:, 3].astype(np.float64)
    distance = np.sqrt(((cb[:, None] - cb[None]) ** 2).sum(-1))
    with np.errstate(invalid="ignore"):
        return (distance < cutoff) & np.outer(chain.observed, chain.observed)


def test_diagnostic_labels_are_contacts_at_the_cutoff_given(val_chains: list) -> None:
    """protrnn diagnose labelled contacts at 8 Å whatever cutoff --data was prepared at (`prepare --contact-cutoff 6`):
    its batches, contact rates, losses and hidden gradients' labels take the cutoff given (the data's stored one:
    protrnn.diagnostics.run.load_data). Checked against Cβ distances, rates and a written-out BCE."""
    model = tiny_model("lstm")
    chains = val_chains[:3]
    rates = {}
    for cutoff in (6.0, 8.0):
        hits = pairs = 0
        total = 0.0
        by_length: dict[str, list[int]] = {}
        for chain in chains:
            labels = cb_labels(chain, cutoff)
            batch = next(chains_to_batches([chain], 1, contact_cutoff=cutoff))
            np.testing.assert_array_equal(batch["contacts"][0].numpy().astype(bool), labels)
            upper = np.triu(chain.pair_mask(), 1)
            tokens = torch.from_numpy(DEFAULT_ALPHABET.encode(chain.sequence).astype(np.int64))[None]
            with torch.no_grad():
                logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool))[0].double().numpy()
            total += float(focal_loss_by_hand(logits[upper], labels[upper].astype(np.float64), 2.0, 0.0).sum())
            hits, pairs = hits + int(labels[upper].sum()), pairs + int(upper.sum())
            entry = by_length.setdefault(length_label(len(chain), (80,)), [0, 0])
            entry[0], entry[1] = entry[0] + int(labels[upper].sum()), entry[1] + int(upper.sum())
        rates[cutoff] = contact_rate(chains, contact_cutoff=cutoff)
        assert rates[cutoff] == hits / pairs
        assert contact_rates_by_length(chains, (80,), contact_cutoff=cutoff) == {
            key: h / n for key, (h, n) in by_length.items()}
        result = contact_loss_by_length(model, chains, LossSettings(pos_weight=2.0), length_edges=(80,),
                                        contact_cutoff=cutoff)
        assert result.loss == pytest.approx(total / pairs, rel=1e-4)
    assert rates[6.0] < rates[8.0]
    assert contact_rate(chains) == rates[8.0]  # chains from no prepared dataset: the CASP 8 Å, as before
    # the hidden gradients' loss is taken against the label at the cutoff given: a pair 6-8 Å apart is a
    # non-contact at 6 Å and a contact at 8 Å
    chain = chains[0]
    between = np.argwhere(np.triu(chain.pair_mask(), 1) & cb_labels(chain, 8.0) & ~cb_labels(chain, 6.0))
    assert len(between)
    pairs = {chain.id: [tuple(int(v) for v in between[0])]}
    for cutoff, label in ((6.0, 0.0), (8.0, 1.0)):
        [measured] = iter_pair_gradients(model, chains_to_batches([chain], 1, contact_cutoff=cutoff), pairs=pairs)
        assert measured.label == label
    six = gradient_flow(model, chains, max_distance=20, pairs_per_chain=16, contact_cutoff=6.0)
    eight = gradient_flow(model, chains, max_distance=20, pairs_per_chain=16)
    np.testing.assert_allclose(six.sensitivity.raw_mean, eight.sensitivity.raw_mean)  # d logit / d x: no label
    assert not np.allclose(six.hidden[0].raw_mean, eight.hidden[0].raw_mean, equal_nan=True)


def test_hidden_gradients_follow_the_training_loss(val_chains: list) -> None:
    """dL/dh = (dL/dz) dz/dh: with a focal, weighted loss each pair's hidden norms scale by |dL/dz| of that loss
    (taken here by central differences of the written-out formula) instead of BCE's |sigmoid(z) - y|."""
    model = tiny_model("gru")
    chain = val_chains[0]
    contacts = chain.contact_map()
    scored = np.argwhere(np.triu(chain.pair_mask(), 1))
    positive = next((i, j) for i, j in scored if contacts[i, j])
    negative = next((i, j) for i, j in scored if not contacts[i, j])
    pairs = {chain.id: [tuple(int(v) for v in positive), tuple(int(v) for v in negative)]}
    focal = LossSettings(pos_weight=3.0, focal_gamma=2.0)
    plain = list(iter_pair_gradients(model, chains_to_batches([chain], 1), pairs=pairs))
    weighted = list(iter_pair_gradients(model, chains_to_batches([chain], 1), pairs=pairs, loss=focal))
    step = 1e-4
    for bce, foc in zip(plain, weighted, strict=True):
        y = np.array([bce.label])
        slope = (focal_loss_by_hand(np.array([bce.logit + step]), y, 3.0, 2.0)
                 - focal_loss_by_hand(np.array([bce.logit - step]), y, 3.0, 2.0))[0] / (2 * step)
        bce_slope = abs(1.0 / (1.0 + math.exp(-bce.logit)) - bce.label)
        np.testing.assert_allclose(foc.input_norms, bce.input_norms)  # the logit's own gradient does not change
        for mine, reference in zip(foc.hidden_norms, bce.hidden_norms, strict=True):
            np.testing.assert_allclose(mine, reference * abs(slope) / bce_slope, rtol=1e-4, atol=1e-12)


def test_diagnose_uses_the_recorded_focal_loss(val_chains: list, tmp_path: Path) -> None:
    """A model trained with focal_gamma > 0 is scored with its focal loss (and pos_weight) from model.json, and its
    train-loss level is not judged against the BCE base rate (there is no closed form for a focal optimum)."""
    import io

    from protrnn.data.dataset import save_dataset
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose

    model = tiny_model("lstm")
    save_model(model, tmp_path / "focal", extra={"training_hparams": {"pos_weight": 3.0, "focal_gamma": 2.0}})
    chains = val_chains[:2]
    save_dataset(chains, tmp_path / "val.npz")
    (result,) = diagnose([("focal", tmp_path / "focal")], tmp_path / "val.npz", tmp_path / "diag.json",
                         DiagnoseOptions(max_distance=16, n_chains=2, pairs_per_chain=1, device="cpu"),
                         stream=io.StringIO())
    focal_terms, bce_terms = [], []
    for chain in chains:
        tokens = torch.from_numpy(DEFAULT_ALPHABET.encode(chain.sequence).astype(np.int64))[None]
        with torch.no_grad():
            logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool))[0].double().numpy()
        upper = np.triu(chain.pair_mask(), 1)
        z, y = logits[upper], chain.contact_map()[upper].astype(np.float64)
        focal_terms.append(focal_loss_by_hand(z, y, 3.0, 2.0))
        bce_terms.append(focal_loss_by_hand(z, y, 3.0, 0.0))
    expected, bce = np.concatenate(focal_terms).mean(), np.concatenate(bce_terms).mean()
    assert abs(expected - bce) > 0.5 * bce  # the two losses are far apart here: the test tells them apart
    assert result.metrics["data_loss"]["loss"] == pytest.approx(expected, rel=1e-4)
    assert result.metrics["pos_weight"] == 3.0 and result.metrics["focal_gamma"] == 2.0
    assert result.metrics["reference_loss"] is None
    assert load_diagnostics(tmp_path / "diag.json")[0].metrics["data_loss"]["loss"] == pytest.approx(expected, rel=1e-4)


def test_diagnose_from_metrics_csv_with_a_cut_model(val_chains: list, tmp_path: Path) -> None:
    """A gradient horizon of 8 caps the effective horizon at 8 (<= 16: collapsing); a logged train loss at 0.95 x the
    base-rate entropy is high (>= 0.9): the rules give under-fitting with vanishing gradients."""
    import io

    from protrnn.data.dataset import save_dataset
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose

    chains = val_chains[:4]
    save_model(tiny_model("lstm", gradient_horizon=8), tmp_path / "cut")
    save_dataset(chains, tmp_path / "val.npz")
    positives = total = 0
    for chain in chains:
        upper = np.triu(chain.pair_mask(), 1)
        positives, total = positives + int(chain.contact_map()[upper].sum()), total + int(upper.sum())
    rate = positives / total
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))  # best constant BCE at pos_weight 1
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(f"epoch,step,train/loss,val/loss\n0,9,{0.95 * entropy!r},{0.96 * entropy!r}\n")
    (result,) = diagnose([("cut", tmp_path / "cut")], tmp_path / "val.npz", tmp_path / "diag.json",
                         DiagnoseOptions(max_distance=48, n_chains=4, pairs_per_chain=2, device="cpu",
                                         train_metrics=[csv_path]), stream=io.StringIO())
    assert result.horizon is not None and result.horizon <= 8
    assert result.metrics["reference_loss"] == pytest.approx(entropy, rel=1e-9)
    assert result.diagnosis is not None and result.diagnosis.label == UNDERFIT_VANISHING


def test_reference_loss_is_the_best_constant_per_length_group_weighted_as_the_train_loss(
        val_chains: list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The train loss is length-matched: each length group's mean loss on --train-data, weighted by the --data pairs
    of that group. Its reference is the same weighted mean of each group's best constant loss, at that group's contact
    rate in the training chains (worked out here by counting contacts). A model that outputs one constant thus has a
    ratio of at least 1 (high: it learnt nothing), and exactly 1 when the constant is the optimum of the only matched
    group. The reference used to be the best constant at the pooled rate of all training chains: other pairs."""
    import io

    from protrnn.data.dataset import save_dataset
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose

    short = [c for c in val_chains if len(c) < 80]  # length groups 0-79 and >=80
    long = [c for c in val_chains if len(c) >= 80]
    train, val_both, val_long = short[:4] + long[:2], short[4:6] + long[2:4], long[2:4]
    save_dataset(train, tmp_path / "train.npz")
    save_dataset(val_both, tmp_path / "val_both.npz")
    save_dataset(val_long, tmp_path / "val_long.npz")
    weight = 3.0

    def counts(chains: list) -> tuple[int, int]:
        positives = pairs = 0
        for chain in chains:
            upper = np.triu(chain.pair_mask(), 1)
            positives, pairs = positives + int(chain.contact_map()[upper].sum()), pairs + int(upper.sum())
        return positives, pairs

    def mean_loss(rate: float, p: float) -> float:  # weighted BCE of a constant probability p at contact rate r
        return -(weight * rate * math.log(p) + (1 - rate) * math.log(1 - p))

    def best(rate: float) -> float:  # at the optimum p* = w r / (w r + 1 - r)
        return mean_loss(rate, weight * rate / (weight * rate + 1 - rate))

    rate = {key: counts(group)[0] / counts(group)[1] for key, group in (("0-79", short[:4]), (">=80", long[:2]))}
    pooled = counts(train)[0] / counts(train)[1]
    assert abs(rate["0-79"] - rate[">=80"]) > 0.2 * pooled  # short chains are denser in contacts: the mix matters

    def constant_model(p: float, name: str) -> Path:
        model = tiny_model("lstm")
        with torch.no_grad():  # logit exactly log(p / (1 - p)) in float32; a 1e-30 weight keeps gradients non-zero
            model.head.out.weight.mul_(1e-30)
            model.head.out.bias.fill_(math.log(p / (1 - p)))
        save_model(model, tmp_path / name, extra={"training_hparams": {"pos_weight": weight}})
        return tmp_path / name

    options = DiagnoseOptions(max_distance=16, n_chains=1, pairs_per_chain=1, device="cpu", usage=False,
                              length_bins=[80], train_data=tmp_path / "train.npz")
    # the pooled base rate everywhere, judged on both groups
    p_pooled = weight * pooled / (weight * pooled + 1 - pooled)
    (both,) = diagnose([("pooled", constant_model(p_pooled, "pooled"))], tmp_path / "val_both.npz",
                       tmp_path / "both.json", options, stream=io.StringIO())
    val_pairs = {"0-79": counts(short[4:6])[1], ">=80": counts(long[2:4])[1]}
    total = sum(val_pairs.values())
    expected_reference = sum(val_pairs[k] * best(rate[k]) for k in rate) / total
    p32 = float(torch.sigmoid(torch.tensor(math.log(p_pooled / (1 - p_pooled)), dtype=torch.float32)))
    expected_train = sum(val_pairs[k] * mean_loss(rate[k], p32) for k in rate) / total
    m = both.metrics
    assert m["reference_loss"] == pytest.approx(expected_reference, rel=1e-6)
    assert m["train_loss"] == pytest.approx(expected_train, rel=1e-5)
    assert m["contact_rate_by_length"] == pytest.approx(rate)
    assert both.diagnosis is not None and both.diagnosis.evidence["train_ratio"] >= 1.0
    assert both.diagnosis.evidence["train_high"] is True
    # each group's own optimum scores exactly its reference: ratio 1 when only that group is matched
    p_long = weight * rate[">=80"] / (weight * rate[">=80"] + 1 - rate[">=80"])
    (alone,) = diagnose([("long", constant_model(p_long, "long"))], tmp_path / "val_long.npz",
                        tmp_path / "long.json", options, stream=io.StringIO())
    assert alone.metrics["reference_loss"] == pytest.approx(best(rate[">=80"]), rel=1e-6)
    assert alone.diagnosis is not None and alone.diagnosis.evidence["train_ratio"] == pytest.approx(1.0, abs=1e-5)
    # --max-distance 16 is below --long-horizon 48: said on stderr
    assert "--max-distance 16 is below --long-horizon 48" in capsys.readouterr().err


def test_diagnose_command_passes_absolute_train_loss_thresholds(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """`protrnn diagnose --high-train-loss/--low-train-loss` reach FitThresholds (the only way the command can judge
    the train-loss level of a focal-loss model, which has no closed-form reference loss); unset by default."""
    import protrnn.diagnostics.run as run_module
    from protrnn.cli import main

    seen = []
    monkeypatch.setattr(run_module, "diagnose", lambda models, data, output, options: seen.append(options.thresholds))
    common = ["diagnose", "m=model_dir", "--data", str(tmp_path / "val.npz"), "-o", str(tmp_path / "d.json")]
    assert main([*common, "--high-train-loss", "0.5", "--low-train-loss", "0.2"]) == 0
    assert main(common) == 0
    assert (seen[0].high_train_loss, seen[0].low_train_loss) == (0.5, 0.2)
    assert (seen[1].high_train_loss, seen[1].low_train_loss) == (None, None)


def test_diagnose_command_refuses_bad_options_up_front(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Bad values are refused before anything is loaded or measured, naming the option: non-finite or out-of-range
    numbers by the argument parser, options that must agree with each other in one line."""
    import protrnn.diagnostics.run as run_module
    from protrnn.cli import main

    seen = []
    monkeypatch.setattr(run_module, "diagnose", lambda models, data, output, options: seen.append(options))
    common = ["diagnose", "m=model_dir", "--data", str(tmp_path / "val.npz"), "-o", str(tmp_path / "d.json")]
    refused = [("--pos-weight", "0"), ("--pos-weight", "-2"), ("--pos-weight", "nan"), ("--pos-weight", "inf"),
               ("--high-train-ratio", "nan"), ("--low-train-ratio", "inf"), ("--high-train-loss", "nan"),
               ("--low-train-loss", "-inf"), ("--overfit-gap", "nan"), ("--length-trend", "inf"),
               ("--usage-pool-factor", "1"), ("--usage-pool-factor", "0.5"), ("--usage-pool-factor", "nan"),
               ("--usage-pool-factor", "inf"), ("--smooth", "4"), ("--smooth", "0"),
               ("--max-distance", "10001"), ("--max-distance", "1000000000000"),
               ("--seed", "-1"), ("--seed", str(2**63))]
    for option, value in refused:
        with pytest.raises(SystemExit) as stop:
            main([*common, option, value])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"argument {option}" in err, (option, value, err)
    disagreeing = [(["--short-horizon", "48"], "--short-horizon (48) must be below --long-horizon (48)"),
                   (["--short-horizon", "20", "--long-horizon", "10"], "--short-horizon (20) must be below"),
                   (["--low-train-ratio", "0.9"], "--low-train-ratio (0.9) must be below --high-train-ratio (0.9)"),
                   (["--low-train-loss", "0.5", "--high-train-loss", "0.4"], "--low-train-loss (0.5) must be below"),
                   (["--max-distance", "8", "--smooth", "11"], "--smooth 11 is wider than the profile"),
                   (["--usage-draws", "1"], "--usage-draws must be at least 2")]
    for extra, message in disagreeing:
        assert main([*common, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)
    assert not seen
    # the limits themselves are accepted
    # an odd --usage-draws is accepted: its noise floor is scaled to the spread of equal halves (fit.usage_noise_floor)
    assert main([*common, "--seed", str(2**63 - 1), "--smooth", "9", "--max-distance", "10000",
                 "--usage-pool-factor", "1.01", "--pos-weight", "4", "--overfit-gap", "0", "--usage-draws", "3"]) == 0
    assert main([*common, "--no-usage", "--usage-draws", "1"]) == 0  # no usage measurement: its draws do not matter
    options = seen[0]
    assert (options.seed, options.smooth, options.max_distance) == (2**63 - 1, 9, 10000)
    assert (options.usage_pool_factor, options.pos_weight, options.usage_draws) == (1.01, 4.0, 3)


def test_an_unknown_device_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main
    from protrnn.model.predictor import resolve_device

    with pytest.raises(InputError, match="unknown device 'foo'"):
        resolve_device("foo")
    # device types torch knows but this package does not run on failed deep in loading (meta: after inference)
    for other in ("mps", "xpu", "meta"):
        with pytest.raises(InputError, match=f"device '{other}' is not supported"):
            resolve_device(other)
    assert resolve_device("cpu") == torch.device("cpu")
    assert main(["diagnose", str(tmp_path / "m"), "--data", str(tmp_path / "val.npz"), "-o", str(tmp_path / "d.json"),
                 "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert err == "protrnn: error: unknown device 'foo': use cpu, cuda, cuda:N or auto\n"


def test_diagnose_takes_an_ensemble_member_by_member(val_chains: list, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An ensemble (such as the bundled model) is diagnosed as its members, NAME/member-K in order, each exactly as
    that export alone, each read from disk once; --train-metrics then needs one file per member."""
    import io

    import protrnn.diagnostics.run as run
    from protrnn.data.dataset import save_dataset
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose
    from protrnn.model.io import save_ensemble

    reads: list[str] = []
    real_load = run.load_network

    def counting_load(path, *args, **kwargs):
        reads.append(Path(path).name)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(run, "load_network", counting_load)

    save_model(tiny_model("lstm"), tmp_path / "full")
    save_model(tiny_model("lstm", gradient_horizon=8), tmp_path / "cut")
    save_ensemble([tmp_path / "full", tmp_path / "cut"], tmp_path / "pair")
    save_dataset(val_chains[:3], tmp_path / "val.npz")
    options = DiagnoseOptions(max_distance=32, n_chains=3, pairs_per_chain=2, device="cpu", usage=False)
    results = diagnose([("pair", tmp_path / "pair"), ("alone", tmp_path / "cut")], tmp_path / "val.npz",
                       tmp_path / "diag.json", options, stream=io.StringIO())
    assert [r.model for r in results] == ["pair/member-1", "pair/member-2", "alone"]
    assert sorted(reads) == ["cut", "member-1", "member-2"]  # three networks, three reads
    by_name = {r.model: r for r in results}
    assert by_name["pair/member-2"].horizon == by_name["alone"].horizon and by_name["alone"].horizon <= 8
    assert by_name["pair/member-2"].metrics["data_loss"] == by_name["alone"].metrics["data_loss"]
    # member 1 is the same network without the cut (same weights, same forward): its gradients carry past 8
    assert by_name["pair/member-1"].horizon is None or by_name["pair/member-1"].horizon > 8
    assert [r.model for r in load_diagnostics(tmp_path / "diag.json")] == [r.model for r in results]
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("epoch,step,train/loss,val/loss\n0,9,0.5,0.6\n")
    with pytest.raises(InputError, match="one file per model: 2 model"):
        diagnose([("pair", tmp_path / "pair")], tmp_path / "val.npz", tmp_path / "diag2.json",
                 DiagnoseOptions(device="cpu", usage=False, train_metrics=[csv_path]), stream=io.StringIO())


def test_loss_chains_without_a_contact_are_diagnosed_without_a_reference_level(tmp_path: Path, capsys) -> None:
    """A real single helix has no contact 6 or more apart: the whole run failed on "contact rate must be in (0, 1)";
    now the level is not judged (as with a focal loss) and the rest is measured."""
    import io

    from protrnn.data.dataset import save_dataset
    from protrnn.data.structure import build_chain
    from protrnn.diagnostics.run import DiagnoseOptions, diagnose

    length = 40
    t = np.arange(length, dtype=np.float64)
    ca = np.stack([3.8 * t, np.zeros(length), np.zeros(length)], axis=1)  # a straight chain: no pair within 8 Å
    coords = np.stack([ca + [-1.2, 0.8, 0.0], ca, ca + [1.2, 0.8, 0.0], ca + [0.0, -1.0, 1.2]], axis=1)
    chain = build_chain("line_A", "ACDEFHIKLMNPQRSTVWYA" * 2, coords)
    assert not (np.triu(chain.contact_map(), 6)).any()
    save_dataset([chain], tmp_path / "val.npz")
    save_model(tiny_model("lstm"), tmp_path / "m")
    (result,) = diagnose([("m", tmp_path / "m")], tmp_path / "val.npz", tmp_path / "diag.json",
                         DiagnoseOptions(max_distance=16, n_chains=1, pairs_per_chain=1, device="cpu"),
                         stream=io.StringIO())
    assert result.metrics["contact_rate"] == 0.0 and result.metrics["reference_loss"] is None
    assert "contact rate is 0, so the loss is not judged against the base rate" in capsys.readouterr().err
    assert (tmp_path / "diag.json").is_file()
