"""Usage horizon by context ablation: models whose context window is known by construction, the horizon rule, the
pair scorer's shortcut, and the command's output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protrnn.alphabet import STANDARD_AMINO_ACIDS
from protrnn.cli import main
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import save_dataset
from protrnn.diagnostics.fit import usage_horizon, usage_horizon_noise, usage_noise_floor
from protrnn.diagnostics.results import UsageProfile, load_diagnostics
from protrnn.diagnostics.usage import PairScorer, background_composition, usage_profile
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import save_model


def random_chain(name: str, length: int, seed: int) -> ProteinChain:
    """A chain on a compact random walk (3.8 A steps, pulled back towards the origin so it folds onto itself and has
    long-range contacts); every backbone atom at the walk's point."""
    rng = np.random.default_rng(seed)
    points = np.zeros((length, 3))
    for k in range(1, length):
        step = rng.normal(size=3)
        step = 3.8 * step / np.linalg.norm(step)
        points[k] = 0.9 * points[k - 1] + step
    coords = np.repeat(points[:, None, :], 4, axis=1).astype(np.float32)
    sequence = "".join(rng.choice(list(STANDARD_AMINO_ACIDS), size=length))
    return ProteinChain(id=name, sequence=sequence, observed=np.ones(length, dtype=bool), coords=coords)


@pytest.fixture(scope="module")
def chains() -> list[ProteinChain]:
    return [random_chain(f"c{k}", length, seed=k) for k, length in enumerate((70, 90, 60, 110))]


class WindowEncoder(nn.Module):
    """h_t = sum of the embeddings within ``radius`` of t: a model that reads exactly ``radius`` residues of context
    on each side (radius 0: nothing but the residue itself)."""

    def __init__(self, radius: int) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, x: torch.Tensor, mask: torch.Tensor, return_layers: bool = False):  # type: ignore[no-untyped-def]
        x = x * mask.unsqueeze(-1).to(x.dtype)
        padded = F.pad(x, (0, 0, self.radius, self.radius))
        h = sum(padded[:, k:k + x.shape[1]] for k in range(2 * self.radius + 1))
        return (h, [h]) if return_layers else h


def window_model(radius: int, head: str = "pairwise", seed: int = 0) -> ContactModel:
    torch.manual_seed(seed)
    model = ContactModel(ModelConfig(embed_dim=16, hidden_size=8, num_layers=1, head=head, pair_dim=8,
                                     max_separation=20, head_blocks=1, dropout=0.0))
    model.encoder = WindowEncoder(radius)  # type: ignore[assignment]
    with torch.no_grad():
        model.embedding.weight.normal_()  # clear differences between residues
    return model.eval()


def test_a_model_without_context_has_usage_horizon_one(chains: list[ProteinChain]) -> None:
    """Each output reads its own residue only: nothing from distance 1 on is read, so the horizon is 1 (as the
    gradient horizon of the same model: sensitivity at d = 0 alone)."""
    profile = usage_profile(window_model(0), chains, distances=[0, 1, 2, 4, 8], draws=2, pairs_per_chain=6,
                            precision_chains=2)
    assert profile.horizon == 1
    assert np.all(profile.mean_abs_delta[profile.count > 0] == 0.0)
    # nothing read beyond the pair: precision under ablation is the intact precision at every radius
    assert profile.precision is not None
    np.testing.assert_array_equal(profile.precision.ablated, np.full(5, profile.precision.original))


@pytest.mark.parametrize("radius", [2, 3])
def test_usage_horizon_is_the_known_context_window(chains: list[ProteinChain], radius: int) -> None:
    profile = usage_profile(window_model(radius), chains, distances=[0, 1, 2, 3, 4, 6, 8], draws=4,
                            pairs_per_chain=8, seed=1, fraction=0.05)
    measured = profile.mean_abs_delta
    inside = profile.distances < radius
    assert np.all(measured[inside] > 0.01) and np.all(measured[~inside] == 0.0)
    assert profile.horizon == radius + 1  # reads distances 0..radius: the first one not read


@pytest.mark.parametrize("k", [1, 3, 5])
def test_a_model_cut_at_k_has_gradient_and_usage_horizon_k(chains: list[ProteinChain], k: int) -> None:
    """Both horizons count the same thing: the first distance from the pair that the model no longer reads.

    The encoder of ``window_model(k - 1)`` reads exactly the residues fewer than k away (h_t sums the embeddings at
    |s - t| <= k - 1), so the pairwise logit z_ij = f(h_i, h_j) depends on x_s iff min(|s - i|, |s - j|) <= k - 1:
    a model cut at k. By hand:

    * gradient: d z_ij / d x_s is d z / d h_i, d z / d h_j or their sum (s in both windows), so every sample at a
      nearest distance 0..k-1 is of the order of its pair's largest (the normalised mean there is far above the
      1 % threshold) and every sample from k on is exactly 0; the running median keeps that step where it is, so
      the effective horizon is k;
    * usage: ablating beyond radius d replaces the residues at distance >= d + 1 from both, which the model reads
      iff d + 1 <= k - 1: U(d) > 0 for d <= k - 2 and U(d) == 0 for d >= k - 1 (radii 0..8 all measured), so the
      first distance no longer read is k.

    Before, the usage horizon was the radius itself (k - 1: "the last distance read") while the gradient horizon
    was k ("the first not read"), one residue apart by construction for the same model."""
    from protrnn.diagnostics.fit import effective_horizon
    from protrnn.diagnostics.gradients import gradient_flow

    model = window_model(k - 1)
    flow = gradient_flow(model, chains, max_distance=16, pairs_per_chain=6, hidden=False)
    sensitivity = flow.sensitivity
    measured = sensitivity.count > 0
    assert np.all(sensitivity.mean[:k] > 0.01) and np.all(sensitivity.mean[k:][measured[k:]] == 0.0)
    assert effective_horizon(sensitivity) == k
    usage = usage_profile(model, chains, distances=list(range(9)), draws=2, pairs_per_chain=6, seed=2)
    assert np.all(usage.mean_abs_delta[: k - 1] > 0.0) and np.all(usage.mean_abs_delta[k - 1:] == 0.0)
    assert usage.horizon == k == effective_horizon(sensitivity)


def test_a_whole_map_head_reads_its_own_neighbourhood_too(chains: list[ProteinChain]) -> None:
    """With the resnet2d head a pair's logit also depends on neighbouring pairs (receptive field 2 x dilation per
    conv), so even a context-free encoder reads that far: 2 convolutions x dilation 1 = distance 2, so the first
    distance not read, the usage horizon, is 3."""
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=16, hidden_size=8, num_layers=1, head="resnet2d", pair_dim=8,
                                     head_blocks=1, head_dilations=[1], dropout=0.0))
    model.encoder = WindowEncoder(0)  # type: ignore[assignment]
    profile = usage_profile(model.eval(), chains[:2], distances=[0, 1, 2, 3, 5], draws=2, pairs_per_chain=4)
    assert profile.horizon == 3


def test_pair_scorer_shortcut_equals_the_whole_map(chains: list[ProteinChain]) -> None:
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=2, head="pairwise", pair_dim=8,
                                     max_separation=16, dropout=0.0)).eval()
    from protrnn.alphabet import DEFAULT_ALPHABET

    tokens = np.asarray(DEFAULT_ALPHABET.encode(chains[1].sequence))
    scorer = PairScorer(model)
    assert scorer.pairwise
    full = scorer.full_map(tokens)
    ii = np.array([0, 3, 10, 5, 40, 0])
    jj = np.array([7, 19, 11, 80, 89, 89])  # separations below, at and above max_separation
    got = scorer(np.broadcast_to(tokens, (len(ii), len(tokens))), ii, jj)
    np.testing.assert_allclose(got, full[ii, jj], atol=1e-5)


def test_usage_horizon_rule() -> None:
    def profile(values: list[float], halves_gap: float = 0.0, counts: list[int] | None = None) -> UsageProfile:
        u = np.asarray(values, dtype=float)
        return UsageProfile(distances=np.array([0, 2, 4, 8, 16]), mean_abs_delta=u,
                            halves=np.stack([u - halves_gap / 2, u + halves_gap / 2]), mean_delta=u, relative=u,
                            count=np.asarray(counts or [5] * 5), mean_abs_logit=1.0, n_pairs=5, n_chains=1, draws=2,
                            seed=0, background="chain", fraction=0.05, horizon=None)

    # 5 % of U(0) = 0.05: 0.06 at d = 4 is used, 0.01 at d = 8 is not: nothing from distance 9 on is read
    assert usage_horizon(profile([1.0, 0.2, 0.06, 0.01, 0.0])) == 9
    # ... unless the two halves of the draws disagree by more than the remaining margin (0.04 + 0.02 >= 0.05)
    assert usage_horizon(profile([1.0, 0.2, 0.06, 0.04, 0.0], halves_gap=0.02)) == 17
    # a rise after a dip counts: the first unused radius after the last used one, + 1
    assert usage_horizon(profile([1.0, 0.01, 0.2, 0.01, 0.01])) == 9
    # still used at the largest radius: beyond the range
    assert usage_horizon(profile([1.0, 0.5, 0.4, 0.3, 0.2])) is None
    # radii without any pair to ablate are not measured: the horizon is judged on the others
    assert usage_horizon(profile([1.0, 0.5, 0.4, 0.3, math.nan], counts=[5, 5, 5, 5, 0])) is None
    # no logit change at all: nothing beyond the smallest radius (0: the pair itself) is read
    assert usage_horizon(profile([0.0, 0.0, 0.0, 0.0, 0.0])) == 1
    with pytest.raises(InputError):
        usage_horizon(profile([1.0] * 5), fraction=1.5)
    # nothing measured (every change NaN, or no pair with context to replace at any radius): no horizon at all,
    # not 0 ("reads no context") - that used to be the answer
    with pytest.raises(InputError, match="no measured radius"):
        usage_horizon(profile([math.nan] * 5))
    with pytest.raises(InputError, match="no measured radius"):
        usage_horizon(profile([0.0] * 5, counts=[0] * 5))


def _rule_profile(radii: list[int], values: list[float], halves: list[list[float]], draws: int) -> UsageProfile:
    u = np.asarray(values, dtype=float)
    return UsageProfile(distances=np.asarray(radii), mean_abs_delta=u, halves=np.asarray(halves, dtype=float),
                        mean_delta=u, relative=u / u[0], count=np.full(len(radii), 5), mean_abs_logit=1.0, n_pairs=5,
                        n_chains=1, draws=draws, seed=0, background="chain", fraction=0.05, horizon=None)


def test_an_odd_number_of_draws_gets_the_noise_floor_of_equal_halves(chains: list[ProteinChain]) -> None:
    """3 draws split 1 + 2: the halves' difference has variance sigma^2 (1/1 + 1/2) = 1.5 sigma^2, where equal
    halves of 3 would have 4 sigma^2 / 3 (4 x Var U, as for every even count), so the floor is |U_A - U_B| x
    sqrt((4/3) / 1.5) = sqrt(8/9) x |U_A - U_B|. At radius 2, U_A = 0.039 (1 draw) and U_B = 0 (2 draws), so
    U = 0.039 / 3 = 0.013: with the raw difference 0.013 + 0.039 = 0.052 >= 0.05 x U(0) (still used), with the
    scaled one 0.013 + 0.0368 = 0.0498 < 0.05 (unused), the verdict of a model whose change vanishes from radius 2
    on; nothing from distance 3 on is read."""
    odd = _rule_profile([0, 2, 4], [1.0, 0.013, 0.0], [[1.0, 0.039, 0.0], [1.0, 0.0, 0.0]], draws=3)
    silent = _rule_profile([0, 2, 4], [1.0, 0.0, 0.0], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], draws=3)
    assert usage_horizon(odd) == usage_horizon(silent) == 3
    np.testing.assert_allclose(usage_noise_floor(odd), [0.0, math.sqrt(8 / 9) * 0.039, 0.0])
    # an even count keeps the raw difference: 2 + 2 draws, 0.013 + 0.03 = 0.043 < 0.05; 0.013 + 0.04 = 0.053 is used
    even = _rule_profile([0, 2, 4], [1.0, 0.013, 0.0], [[1.0, 0.028, 0.0], [1.0, -0.002, 0.0]], draws=4)
    assert usage_noise_floor(even)[1] == pytest.approx(0.03) and usage_horizon(even) == 3
    loud = _rule_profile([0, 2, 4], [1.0, 0.013, 0.0], [[1.0, 0.033, 0.0], [1.0, -0.007, 0.0]], draws=4)
    assert usage_horizon(loud) == 5
    # the measurement splits an odd count as the floor assumes: the first draws // 2 draws, then the rest, so
    # U = (1 x U_A + 2 x U_B) / 3 at every radius
    measured = usage_profile(window_model(2), chains[:2], distances=[0, 1, 2, 3], draws=3, pairs_per_chain=4)
    np.testing.assert_allclose((measured.halves[0] + 2 * measured.halves[1]) / 3, measured.mean_abs_delta,
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("draws", [2, 3, 4, 5])
def test_the_noise_floor_has_the_spread_of_equal_halves_whatever_the_count(draws: int) -> None:
    """Monte Carlo over 40,000 simulated radii, one draw's mean change ~ N(0.5, 0.1^2), split as the measurement
    splits (first draws // 2, then the rest): the floor's mean square is 4 sigma^2 / n = 4 Var(U), what equal halves
    give (Var(U_A - U_B) = sigma^2 (2/n + 2/n)). Unscaled, 3 draws (1 + 2) gave 1.5 sigma^2, 12.5 % above 4/3
    sigma^2; the tolerance, 4 %, is 5.7 standard errors of a mean square of 40,000 normal values (sqrt(2/40000))."""
    rng = np.random.default_rng(draws)
    reps, sigma = 40_000, 0.1
    per_draw = rng.normal(0.5, sigma, size=(draws, reps))
    half = draws // 2
    halves = np.stack([per_draw[:half].mean(axis=0), per_draw[half:].mean(axis=0)])
    profile = UsageProfile(distances=np.arange(reps), mean_abs_delta=per_draw.mean(axis=0), halves=halves,
                           mean_delta=per_draw.mean(axis=0), relative=np.ones(reps), count=np.ones(reps, dtype=int),
                           mean_abs_logit=1.0, n_pairs=1, n_chains=1, draws=draws, seed=0, background="chain",
                           fraction=0.05, horizon=None)
    floor = usage_noise_floor(profile)
    assert np.mean(floor**2) == pytest.approx(4 * sigma**2 / draws, rel=0.04)
    assert np.mean(floor**2) == pytest.approx(4 * np.var(profile.mean_abs_delta), rel=0.04)


def test_usage_horizons_stored_by_the_old_rule_are_read_in_the_new_one() -> None:
    """An entry without ``horizon_rule`` (written before the usage horizon counted the first distance not read)
    holds the radius beyond which nothing was read: reading it adds 1, so old and new files compare; None stays
    None. The range a None exceeds is the largest horizon the radii can give, the largest measured radius + 1."""
    profile = _rule_profile([0, 2, 4, 8], [1.0, 0.2, 0.0, 0.0], [[1.0, 0.2, 0.0, 0.0]] * 2, draws=2)
    profile.horizon = usage_horizon(profile)  # radius 2 used, 4 and 8 not: distances >= 5 are not read
    assert profile.horizon == 5 and profile.range_end == 9
    written = profile.to_dict()
    assert written["horizon_rule"] == "first-unused-distance"
    assert UsageProfile.from_dict(written).horizon == 5
    old = {k: v for k, v in written.items() if k != "horizon_rule"}
    assert UsageProfile.from_dict({**old, "horizon": 4}).horizon == 5  # the old rule's radius 4
    assert UsageProfile.from_dict({**old, "horizon": None}).horizon is None
    with pytest.raises(InputError, match="horizon_rule"):
        UsageProfile.from_dict({**written, "horizon_rule": "something-else"})
    # quantisation on the grid: a horizon of 9 (radius 8 the first unused) lies in (4 + 1, 8 + 1]
    assert usage_horizon_noise(9, [0, 2, 4, 8]) == pytest.approx(4 / math.sqrt(12))
    assert usage_horizon_noise(1, [0, 2, 4, 8]) == 0.0 and usage_horizon_noise(None, [0, 2, 4, 8]) == 0.0


@pytest.mark.parametrize("factor", [1.0, 0.5, -1.0, math.inf, math.nan])
def test_a_precision_pool_of_the_top_l5_alone_is_refused(chains: list[ProteinChain], factor: float) -> None:
    """Re-ranking within a pool of L/5 or fewer (factor <= 1) leaves the top L/5 the pool itself: precision under
    ablation would equal the intact precision whatever the model reads."""
    with pytest.raises(InputError, match="pool_factor"):
        usage_profile(window_model(2), chains[:1], distances=[0], draws=2, pairs_per_chain=1, precision_chains=1,
                      pool_factor=factor)


def test_usage_radii_beyond_every_chain_are_an_error_not_a_horizon(chains: list[ProteinChain]) -> None:
    """Radii no chain reaches leave every U(d) unmeasured: the measurement says so instead of reporting horizon 0."""
    longest = max(len(c) for c in chains)
    with pytest.raises(InputError, match="no measured radius"):
        usage_profile(window_model(2), chains, distances=[longest, 2 * longest], draws=2, pairs_per_chain=2)


def test_background_composition_counts_standard_residues() -> None:
    chain = random_chain("x", 10, 0)
    chain.sequence = "AAAACCXXWW"
    composition = background_composition([chain])
    expected = np.zeros(20)
    expected[STANDARD_AMINO_ACIDS.index("A")] = 4 / 8
    expected[STANDARD_AMINO_ACIDS.index("C")] = 2 / 8
    expected[STANDARD_AMINO_ACIDS.index("W")] = 2 / 8
    np.testing.assert_allclose(composition, expected)


def test_ablation_draws_follow_the_background() -> None:
    """A chain of tryptophans ablated with a tryptophan-only background is unchanged (no logit moves); with an
    alanine-only background the radius-1 window model sees the change up to radius 1."""
    chain = random_chain("w", 60, 3)
    chain.sequence = "W" * 60

    def composition(letter: str) -> np.ndarray:
        out = np.zeros(20)
        out[STANDARD_AMINO_ACIDS.index(letter)] = 1.0
        return out

    model = window_model(1)
    same = usage_profile(model, [chain], distances=[0, 1, 4], draws=2, pairs_per_chain=4,
                         composition=composition("W"), background="train")
    assert np.all(same.mean_abs_delta == 0.0) and same.horizon == 1
    other = usage_profile(model, [chain], distances=[0, 1, 4], draws=2, pairs_per_chain=4,
                          composition=composition("A"), background="train")
    assert other.mean_abs_delta[0] > 0 and other.horizon == 2  # reads distances 0 and 1
    with pytest.raises(InputError, match="at least 2 draws"):
        usage_profile(model, [chain], draws=1)
    with pytest.raises(InputError, match="training composition"):
        usage_profile(model, [chain], background="train")


def test_diagnose_writes_the_usage_profile(chains: list[ProteinChain], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                     dropout=0.0))
    save_model(model, tmp_path / "model", extra={"training_config": {"seed_everything": 3, "trainer": {
        "gradient_clip_val": 0.5, "max_steps": 40}}, "global_step": 40})
    save_dataset(chains, tmp_path / "val.npz")
    save_dataset(chains[:2], tmp_path / "train.npz")
    out = tmp_path / "diag.json"
    assert main(["diagnose", f"m={tmp_path / 'model'}", "--data", str(tmp_path / "val.npz"), "--train-data",
                 str(tmp_path / "train.npz"), "--n-chains", "2", "--pairs-per-chain", "2", "--max-distance", "32",
                 "--usage-distances", "0,4,16", "--usage-draws", "2", "--usage-chains", "3",
                 "--usage-precision-chains", "1", "--device", "cpu", "-o", str(out)]) == 0
    [result] = load_diagnostics(out)
    assert result.usage is not None and result.usage.background == "train"
    np.testing.assert_allclose(result.usage.composition, background_composition(chains[:2]), atol=1e-12)
    assert list(result.usage.distances) == [0, 4, 16] and result.usage.n_chains == 3
    assert result.usage.precision is not None and result.usage.precision.n_chains == 1
    assert result.training == {"seed": 3, "gradient_clip_val": 0.5, "max_steps": 40, "global_step": 40,
                               "pretrained_encoder": False}
    document = json.loads(out.read_text())
    # the written horizon is the documented rule applied to the written profile (not a field read back as itself)
    assert document["models"][0]["usage"]["horizon"] == usage_horizon(result.usage)
    assert len(document["models"][0]["usage"]["mean_abs_delta"]) == 3
    assert main(["diagnose", str(tmp_path / "model"), "--data", str(tmp_path / "val.npz"), "--n-chains", "1",
                 "--no-usage", "--no-hidden", "--device", "cpu", "-o", str(tmp_path / "plain.json")]) == 0
    assert load_diagnostics(tmp_path / "plain.json")[0].usage is None


def two_cluster_chain(name: str, seed: int = 0) -> ProteinChain:
    """30 residues: 0-5 at one point, 24-29 at another 7 Å away, 6-23 far off on a line (24 Å and more apart). The
    long-range pairs (|i - j| >= 24) are exactly residues 0-5 x 24-29, each 7 Å apart: all contacts below 8 Å, none
    below 6 Å, so a long-range top-L/5 precision is 1 at 8 Å and 0 at 6 Å whatever the model ranks first."""
    coords = np.zeros((30, 4, 3), dtype=np.float32)
    coords[24:, :, 0] = 7.0
    coords[6:24, :, 1] = (100.0 + 4.0 * np.arange(18))[:, None]
    sequence = "".join(np.random.default_rng(seed).choice(list(STANDARD_AMINO_ACIDS), size=30))
    return ProteinChain(id=name, sequence=sequence, observed=np.ones(30, dtype=bool), coords=coords)


@pytest.mark.parametrize("cutoff, precision", [(6.0, 0.0), (8.0, 1.0)])
def test_usage_precision_counts_contacts_at_the_datas_stored_cutoff(tmp_path: Path, cutoff: float,
                                                                    precision: float) -> None:
    """`protrnn diagnose --data X.npz` counted the usage precision's true contacts at 8 Å whatever cutoff X was
    prepared at: on data prepared at 6 Å, where no long-range pair of :func:`two_cluster_chain` touches, it read 1.
    The cutoff is recorded as metrics.contact_cutoff. (The model records that it was trained at the data's cutoff:
    diagnose refuses a model on data at another.)"""
    torch.manual_seed(0)
    save_model(ContactModel(ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="pairwise", pair_dim=8,
                                        dropout=0.0)), tmp_path / "model",
               extra={"training_config": {"data": {"contact_cutoff": cutoff}}})
    data = save_dataset([two_cluster_chain("a")], tmp_path / "val.npz", contact_cutoff=cutoff)
    out = tmp_path / "diag.json"
    assert main(["diagnose", str(tmp_path / "model"), "--data", str(data), "--n-chains", "1", "--pairs-per-chain",
                 "2", "--max-distance", "16", "--no-hidden", "--usage-distances", "0,4", "--usage-draws", "2",
                 "--usage-chains", "1", "--usage-precision-chains", "1", "--device", "cpu", "-o", str(out)]) == 0
    [result] = load_diagnostics(out)
    assert result.usage is not None and result.usage.precision is not None
    assert result.usage.precision.original == precision
    np.testing.assert_array_equal(result.usage.precision.ablated, [precision, precision])
    assert result.metrics["contact_cutoff"] == cutoff
