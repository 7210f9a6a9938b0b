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
from protrnn.diagnostics.fit import usage_horizon
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


def test_a_model_without_context_has_usage_horizon_zero(chains: list[ProteinChain]) -> None:
    profile = usage_profile(window_model(0), chains, distances=[0, 1, 2, 4, 8], draws=2, pairs_per_chain=6,
                            precision_chains=2)
    assert profile.horizon == 0
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
    assert profile.horizon == radius


def test_a_whole_map_head_reads_its_own_neighbourhood_too(chains: list[ProteinChain]) -> None:
    """With the resnet2d head a pair's logit also depends on neighbouring pairs (receptive field 2 x dilation per
    conv), so even a context-free encoder gets a usage horizon of that reach: 2 convolutions x dilation 1 = 2."""
    torch.manual_seed(0)
    model = ContactModel(ModelConfig(embed_dim=16, hidden_size=8, num_layers=1, head="resnet2d", pair_dim=8,
                                     head_blocks=1, head_dilations=[1], dropout=0.0))
    model.encoder = WindowEncoder(0)  # type: ignore[assignment]
    profile = usage_profile(model.eval(), chains[:2], distances=[0, 1, 2, 3, 5], draws=2, pairs_per_chain=4)
    assert profile.horizon == 2


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

    # 5 % of U(0) = 0.05: 0.06 at d = 4 is used, 0.01 at d = 8 is not
    assert usage_horizon(profile([1.0, 0.2, 0.06, 0.01, 0.0])) == 8
    # ... unless the two halves of the draws disagree by more than the remaining margin (0.04 + 0.02 >= 0.05)
    assert usage_horizon(profile([1.0, 0.2, 0.06, 0.04, 0.0], halves_gap=0.02)) == 16
    # a rise after a dip counts: the horizon is the last used radius + 1 step
    assert usage_horizon(profile([1.0, 0.01, 0.2, 0.01, 0.01])) == 8
    # still used at the largest radius: beyond the range
    assert usage_horizon(profile([1.0, 0.5, 0.4, 0.3, 0.2])) is None
    # radii without any pair to ablate are not measured: the horizon is judged on the others
    assert usage_horizon(profile([1.0, 0.5, 0.4, 0.3, math.nan], counts=[5, 5, 5, 5, 0])) is None
    # no logit change at all: the smallest radius
    assert usage_horizon(profile([0.0, 0.0, 0.0, 0.0, 0.0])) == 0
    with pytest.raises(InputError):
        usage_horizon(profile([1.0] * 5), fraction=1.5)
    # nothing measured (every change NaN, or no pair with context to replace at any radius): no horizon at all,
    # not 0 ("reads no context") - that used to be the answer
    with pytest.raises(InputError, match="no measured radius"):
        usage_horizon(profile([math.nan] * 5))
    with pytest.raises(InputError, match="no measured radius"):
        usage_horizon(profile([0.0] * 5, counts=[0] * 5))


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
    assert np.all(same.mean_abs_delta == 0.0) and same.horizon == 0
    other = usage_profile(model, [chain], distances=[0, 1, 4], draws=2, pairs_per_chain=4,
                          composition=composition("A"), background="train")
    assert other.mean_abs_delta[0] > 0 and other.horizon == 1
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
