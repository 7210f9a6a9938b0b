"""Issue 11, model side: full-range separation bins, distogram outputs, and pair heads scored on sampled blocks."""

from __future__ import annotations

import math

import pytest
import torch

from protrnn.errors import InputError
from protrnn.model.config import DEFAULT_DISTOGRAM_BINS, ModelConfig, separation_bin
from protrnn.model.contact_model import ContactModel
from protrnn.model.heads import build_head, separation_index, to_contact_logits
from protrnn.training.loss import LossSettings, distance_classes, distogram_loss, pair_loss

HEADS = ("pairwise", "resnet2d")


def _config(**overrides: object) -> ModelConfig:
    base: dict[str, object] = {"hidden_size": 8, "embed_dim": 8, "pair_dim": 8, "head_blocks": 2,
                               "head_dilations": [1, 2], "max_separation": 384, "separation": "log",
                               "dropout": 0.0}
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


def test_log_separation_bins_by_hand() -> None:
    # exact below 16, then floor(16 + 4 log2(s / 16)): 32 -> 20, 64 -> 24, 128 -> 28, 640 -> 16 + floor(21.29) = 37
    expected = {0: 0, 6: 6, 15: 15, 16: 16, 19: 16, 20: 17, 32: 20, 64: 24, 128: 28, 640: 37, 1000: 39, 5000: 39}
    for s, row in expected.items():
        assert separation_bin(s, "log", 1000) == row, s
    assert separation_bin(640, "log", 1000) != separation_bin(64, "log", 1000)
    assert separation_bin(640, "capped", 64) == separation_bin(64, "capped", 64) == 64
    assert _config(max_separation=1000).separation_bins == 40
    assert _config(separation="capped", max_separation=64).separation_bins == 65


@pytest.mark.parametrize("scheme", ["log", "capped"])
def test_tensor_separation_index_matches_the_scalar_rule(scheme: str) -> None:
    config = _config(separation=scheme, max_separation=700)
    s = torch.arange(0, 3000)
    got = separation_index(s, config).tolist()
    assert got == [separation_bin(v, scheme, 700) for v in range(3000)]
    assert max(got) == config.separation_bins - 1


def test_config_refuses_bad_distogram_and_separation_settings() -> None:
    with pytest.raises(InputError, match="distogram_bins.*contact cutoff"):
        _config(distogram_bins=[4.0, 6.0, 10.0])
    with pytest.raises(InputError, match="distogram_bins.*increasing"):
        _config(distogram_bins=[4.0, 8.0, 8.0])
    with pytest.raises(InputError, match="separation"):
        _config(separation="linear")
    config = _config(distogram_bins=DEFAULT_DISTOGRAM_BINS)
    assert config.pair_outputs == 18 and config.contact_classes == 5  # < 4, 4-5, 5-6, 6-7, 7-8
    # a model.json written before these keys existed rebuilds the original model
    old = ModelConfig.from_dict({"cell": "lstm", "max_separation": 64})
    assert old.separation == "capped" and old.distogram_bins is None and old.pair_outputs == 1


def test_distance_classes_and_contact_mass() -> None:
    d = torch.tensor([0.5, 3.99, 4.0, 7.99, 8.0, 19.99, 20.0, 55.0])
    assert distance_classes(d, DEFAULT_DISTOGRAM_BINS).tolist() == [0, 0, 1, 4, 5, 16, 17, 17]
    z = torch.randn(7, 18, dtype=torch.float64)
    p_contact = torch.softmax(z, -1)[:, :5].sum(-1)
    torch.testing.assert_close(to_contact_logits(z, 5), torch.log(p_contact / (1 - p_contact)))
    # cross-entropy written out: -log softmax at the target class
    dist = torch.tensor([3.0, 7.5, 12.2, 30.0, 8.0, 4.5, 19.0])
    target = [0, 4, 9, 17, 5, 1, 16]
    expected = -torch.stack([torch.log_softmax(z[k].float(), -1)[t] for k, t in enumerate(target)]).mean()
    torch.testing.assert_close(distogram_loss(z.float(), dist, DEFAULT_DISTOGRAM_BINS), expected)
    # binary head: the weighted BCE, written out
    x, y = torch.tensor([[0.3], [-1.2]]), torch.tensor([1.0, 0.0])
    bce = (-4.0 * math.log(1 / (1 + math.exp(-0.3))) - math.log(1 - 1 / (1 + math.exp(1.2)))) / 2
    got = pair_loss(x, y, None, settings=LossSettings(pos_weight=4.0), edges=None)
    assert abs(float(got) - bce) < 1e-6


def test_distogram_loss_with_an_added_contact_term_written_out() -> None:
    """``contact_weight``: distance cross-entropy + w x the weighted BCE of the mass below 8 Å, both by hand."""
    z = torch.tensor([[2.0, 0.5, 0.0, -1.0, 0.3, -0.2] + [0.1] * 12,
                      [-1.0, -1.0, -0.5, 0.0, 0.2, 1.5] + [0.4] * 12,
                      [0.0] * 18], dtype=torch.float32)
    dist = torch.tensor([3.0, 9.5, 25.0])
    contacts = torch.tensor([1.0, 0.0, 0.0])
    targets = [0, 6, 17]  # < 4 Å, [9, 10) Å (class 5 is [8, 9)), >= 20 Å
    ce = []
    bce = []
    for k in range(3):
        e = [math.exp(v) for v in z[k].tolist()]
        ce.append(-math.log(e[targets[k]] / sum(e)))
        p = sum(e[:5]) / sum(e)  # the five classes below 8 Å
        bce.append(-4.0 * math.log(p) if contacts[k] else -math.log(1.0 - p))
    expected_ce, expected_bce = sum(ce) / 3, sum(bce) / 3
    plain = pair_loss(z, contacts, dist, settings=LossSettings(pos_weight=4.0), edges=DEFAULT_DISTOGRAM_BINS,
                      contact_classes=5)
    assert abs(float(plain) - expected_ce) < 1e-5  # contact_weight 0 (the default): cross-entropy only
    for weight in (0.5, 2.0):
        settings = LossSettings(pos_weight=4.0, contact_weight=weight)
        got = pair_loss(z, contacts, dist, settings=settings, edges=DEFAULT_DISTOGRAM_BINS, contact_classes=5)
        assert abs(float(got) - (expected_ce + weight * expected_bce)) < 1e-5
    with pytest.raises(ValueError, match="contact_weight"):  # the caller must say which classes are contacts
        pair_loss(z, contacts, dist, settings=LossSettings(contact_weight=1.0), edges=DEFAULT_DISTOGRAM_BINS)
    assert LossSettings.from_hparams({"pos_weight": 4.0, "contact_weight": 0.5}).contact_weight == 0.5
    assert LossSettings.from_hparams({"pos_weight": 4.0}).contact_weight == 0.0  # models trained before the option


def test_training_module_adds_the_contact_term_for_distogram_heads_only() -> None:
    from protrnn.training.module import ContactLightningModule

    batch_size, length = 2, 40
    torch.manual_seed(3)
    coords = torch.randn(batch_size, length, 3) * 6.0
    distances = torch.cdist(coords, coords)
    observed = torch.ones(batch_size, length, dtype=torch.bool)
    separation = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs()
    batch = {"tokens": torch.randint(2, 22, (batch_size, length)), "mask": observed,
             "pair_mask": (separation >= 6).expand(batch_size, -1, -1).clone(),
             "contacts": (distances < 8.0).float(), "distances": distances}
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(4)
        module = ContactLightningModule(_config(distogram_bins=DEFAULT_DISTOGRAM_BINS), contact_weight=weight).eval()
        with torch.no_grad():
            losses[weight], scored = module._training_loss(batch)
            outputs = module.net.pair_outputs(batch["tokens"], batch["mask"])
    upper = batch["pair_mask"] & torch.ones(length, length, dtype=torch.bool).triu(1)
    p = torch.softmax(outputs[upper].double(), -1)[:, :5].sum(-1)
    y = batch["contacts"][upper].double()
    expected_bce = -(4.0 * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert int(scored) == int(upper.sum())
    assert abs(float(losses[1.0] - losses[0.0]) - float(expected_bce)) < 1e-4
    torch.manual_seed(4)
    binary = ContactLightningModule(_config(), contact_weight=1.0).eval()  # a binary head's loss is the BCE itself
    torch.manual_seed(4)
    reference = ContactLightningModule(_config(), contact_weight=0.0).eval()
    assert torch.equal(binary._training_loss(batch)[0], reference._training_loss(batch)[0])
    with pytest.raises(InputError, match="model.contact_weight"):
        ContactLightningModule(_config(distogram_bins=DEFAULT_DISTOGRAM_BINS), contact_weight=-1.0)


@pytest.mark.parametrize("kind", HEADS)
@pytest.mark.parametrize("distogram", [False, True])
def test_whole_map_and_tiles_agree_with_distogram_outputs(kind: str, distogram: bool) -> None:
    config = _config(head=kind, distogram_bins=DEFAULT_DISTOGRAM_BINS if distogram else None, pair_chunk_size=16)
    torch.manual_seed(0)
    model = ContactModel(config).double().eval()
    tokens = torch.randint(2, 22, (2, 70))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[1, 50:] = False
    tokens[1, 50:] = 0
    with torch.no_grad():
        outputs = model.pair_outputs(tokens, mask)
        assert outputs.shape == (2, 70, 70, config.pair_outputs)
        full = model(tokens, mask)
        h = model.encoder(model.embed(tokens), mask)
        tiled = model.head.predict_logits(h, mask, chunk_size=16)
    torch.testing.assert_close(full, model.contact_logits(outputs))
    assert torch.equal(tiled, tiled.transpose(1, 2))
    real = mask[:, :, None] & mask[:, None, :]
    torch.testing.assert_close(tiled[real], full[real], atol=1e-9, rtol=0)


def test_pairwise_blocks_equal_the_whole_map_at_the_same_pairs() -> None:
    """The pairwise head is per pair (and its raw output symmetric), so a block is the whole map's sub-block."""
    config = _config(head="pairwise", distogram_bins=DEFAULT_DISTOGRAM_BINS)
    torch.manual_seed(1)
    head = build_head(config).double()
    h = torch.randn(2, 300, 16, dtype=torch.float64)
    mask = torch.ones(2, 300, dtype=torch.bool)
    blocks = torch.tensor([[[10, 10], [0, 200], [250, 40]], [[100, 100], [-1, -1], [-1, -1]]])
    out = head.block_outputs(h, mask, blocks, 32)
    assert out.outputs.shape == (4, 32, 32, 18)
    full = head.pair_outputs(h, mask)
    for n, (b, r, c) in enumerate([(0, 10, 10), (0, 0, 200), (0, 250, 40), (1, 100, 100)]):
        torch.testing.assert_close(out.outputs[n], full[b, r:r + 32, c:c + 32], atol=1e-10, rtol=0)


def test_resnet_blocks_see_only_their_rows_and_columns_and_their_true_separation() -> None:
    config = _config(head="resnet2d", max_separation=1000)
    torch.manual_seed(2)
    head = build_head(config).double()
    h = torch.randn(1, 600, 16, dtype=torch.float64)
    mask = torch.ones(1, 600, dtype=torch.bool)
    blocks = torch.tensor([[[20, 500]]])
    base = head.block_outputs(h, mask, blocks, 24).outputs
    h2 = h.clone()
    h2[0, 100:400] += torch.randn(300, 16, dtype=torch.float64)  # outside rows 20..43 and columns 500..523
    torch.testing.assert_close(head.block_outputs(h2, mask, blocks, 24).outputs, base, atol=0, rtol=0)
    h3 = h.clone()
    h3[0, 510] += 1.0  # inside the columns: changes the block
    assert not torch.allclose(head.block_outputs(h3, mask, blocks, 24).outputs, base)
    # the same residues placed 480 apart vs 40 apart fall in different separation bins: different outputs
    near = h.clone()
    near[0, 60:84] = h[0, 500:524]
    moved = head.block_outputs(near, mask, torch.tensor([[[20, 60]]]), 24).outputs
    assert not torch.allclose(moved, base)
    # a diagonal block spanning a whole short chain is the whole map
    short = h[:, :24]
    whole = head.pair_outputs(short, mask[:, :24])
    torch.testing.assert_close(head.block_outputs(short, mask[:, :24], torch.tensor([[[0, 0]]]), 24).outputs[0],
                               whole[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "streamed"])
def test_blocks_with_their_context_equal_the_whole_map_at_the_same_pairs(grad: bool) -> None:
    """With ``context`` >= the head's halo a block's outputs are the whole map's at its pairs, at chain ends and next
    to padding too (a resnet2d head mixes neighbouring pairs); without context its convolutions see zeros beyond
    the block, so an interior block differs from the map. The whole map is symmetrised (the mean of both
    orientations); an off-diagonal block is scored in one orientation, so a block and its mirror are averaged."""
    config = _config(head="resnet2d", distogram_bins=DEFAULT_DISTOGRAM_BINS, max_separation=1000)
    torch.manual_seed(3)
    head = build_head(config).double()
    assert head.halo == 6  # dilations 1, 2: two convolutions each
    h = torch.randn(2, 300, 16, dtype=torch.float64)
    mask = torch.ones(2, 300, dtype=torch.bool)
    mask[1, 200:] = False  # the second chain has 200 residues
    starts = [[(100, 100), (0, 276), (276, 0), (120, 180), (180, 120)], [(176, 176), (2, 170), (170, 2)]]
    blocks = torch.full((2, 5, 2), -1)
    for b, rows in enumerate(starts):
        blocks[b, :len(rows)] = torch.tensor(rows)
    index = {(b, r, c): n for n, (b, r, c) in enumerate((b, r, c) for b, rows in enumerate(starts) for r, c in rows)}
    with torch.set_grad_enabled(grad):
        full = head.pair_outputs(h, mask)
        for context in (6, 40):
            out = head.block_outputs(h, mask, blocks, 24, context=context)
            assert out.outputs.shape == (8, 24, 24, 18)
            for (b, r, c), n in index.items():
                assert out.rows[n].tolist() == list(range(r, r + 24)) and out.cols[n].tolist() == list(range(c, c + 24))
                mean = (out.outputs[n] + out.outputs[index[b, c, r]].transpose(0, 1)) / 2
                real = mask[b, r:r + 24, None] & mask[b, None, c:c + 24]
                torch.testing.assert_close(mean[real], full[b, r:r + 24, c:c + 24][real], atol=1e-9, rtol=0)
        bare = head.block_outputs(h, mask, blocks, 24).outputs
        assert not torch.allclose(bare[0], full[0, 100:124, 100:124], atol=1e-3)
    with pytest.raises(ValueError, match="context"):
        head.block_outputs(h, mask, blocks, 24, context=-1)


def test_pairwise_head_ignores_block_context() -> None:
    config = _config(head="pairwise")
    head = build_head(config).double()
    h = torch.randn(1, 100, 16, dtype=torch.float64)
    mask = torch.ones(1, 100, dtype=torch.bool)
    blocks = torch.tensor([[[0, 50], [40, 40]]])
    torch.testing.assert_close(head.block_outputs(h, mask, blocks, 20, context=30).outputs,
                               head.block_outputs(h, mask, blocks, 20).outputs, atol=0, rtol=0)


@pytest.mark.parametrize("context", [0, 6])
def test_training_loss_of_a_block_with_its_context_is_the_whole_maps_loss_at_its_pairs(context: int) -> None:
    """The Lightning module hands the batch's ``block_context`` to the head: with the full halo, a diagonal block's
    loss is the cross-entropy of the whole map's outputs at its pairs; without it, not."""
    import torch.nn.functional as F

    from protrnn.training.module import ContactLightningModule

    config = _config(head="resnet2d", distogram_bins=DEFAULT_DISTOGRAM_BINS, max_separation=1000)
    torch.manual_seed(4)
    module = ContactLightningModule(config).eval()
    length, start, size = 100, 40, 20
    tokens = torch.randint(1, 21, (1, length))
    mask = torch.ones(1, length, dtype=torch.bool)
    distances = torch.rand(1, length, length) * 25 + 2
    distances = (distances + distances.transpose(1, 2)) / 2
    i = torch.arange(length)
    pair_mask = ((i[:, None] - i[None, :]).abs() >= 6)[None]
    batch = {"tokens": tokens, "mask": mask, "pair_mask": pair_mask, "distances": distances,
             "contacts": (distances < 8).float(), "blocks": torch.tensor([[[start, start]]]), "block_size": size,
             "block_context": context}
    with torch.no_grad():
        loss, n_pairs = module._training_loss(batch)
        whole = module.net.pair_outputs(tokens, mask)[0, start:start + size, start:start + size]
    upper = pair_mask[0, start:start + size, start:start + size].triu(1)
    assert int(n_pairs) == int(upper.sum()) == sum(size - g for g in range(6, size))
    block_d = distances[0, start:start + size, start:start + size][upper]
    expected = F.cross_entropy(whole[upper], distance_classes(block_d, list(DEFAULT_DISTOGRAM_BINS)))
    if context:
        torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    else:
        assert abs(float(loss) - float(expected)) > 1e-4


def test_inference_with_a_cut_halo_scores_each_tile_as_a_map_of_its_own() -> None:
    """``predict_maps(..., halo=0)`` (benchmarks/head_context.py): a diagonal tile is the whole map of that stretch of
    the chain alone; an off-diagonal tile is the mean of its two orientations scored as context-free blocks; the
    default halo is exact."""
    config = _config(head="resnet2d", max_separation=1000)
    torch.manual_seed(6)
    head = build_head(config).double().eval()
    h = torch.randn(1, 100, 16, dtype=torch.float64)
    mask = torch.ones(1, 100, dtype=torch.bool)
    with torch.no_grad():
        whole = head.forward(h, mask)
        torch.testing.assert_close(head.predict_maps(h, mask, 32)[0], whole, atol=1e-9, rtol=0)
        torch.testing.assert_close(head.predict_maps(h, mask, 32, halo=head.halo)[0], whole, atol=1e-9, rtol=0)
        cut = head.predict_maps(h, mask, 32, halo=0)[0]  # tiles 0-31, 32-63, 64-95, 96-99
        torch.testing.assert_close(cut[:, 32:64, 32:64], head.forward(h[:, 32:64], mask[:, 32:64]), atol=1e-9, rtol=0)
        torch.testing.assert_close(cut[:, 96:, 96:], head.forward(h[:, 96:], mask[:, 96:]), atol=1e-9, rtol=0)
        blocks = head.block_outputs(h, mask, torch.tensor([[[0, 64], [64, 0]]]), 32).outputs
        mean = to_contact_logits((blocks[0] + blocks[1].transpose(0, 1)) / 2, head.contact_classes)
        torch.testing.assert_close(cut[0, 0:32, 64:96], mean, atol=1e-9, rtol=0)
        assert not torch.allclose(cut, whole, atol=1e-3)
        torch.testing.assert_close(head.predict_maps(h, mask, 100, halo=0)[0], whole, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="halo"):
        head.predict_maps(h, mask, 32, halo=-1)


def test_block_scored_pairs_count_each_pair_once() -> None:
    config = _config(head="pairwise")
    head = build_head(config).double()
    length, size = 200, 20
    h = torch.randn(1, length, 16, dtype=torch.float64)
    mask = torch.ones(1, length, dtype=torch.bool)
    out = head.block_outputs(h, mask, torch.tensor([[[50, 50], [120, 10]]]), size)
    i = torch.arange(length)
    pair_mask = ((i[:, None] - i[None, :]).abs() >= 6)[None]
    scored = out.scored(pair_mask)
    # diagonal block: pairs a < b with b - a >= 6 -> sum over gaps 6..19 of (20 - gap); off-diagonal: all 400
    assert int(scored[0].sum()) == sum(size - g for g in range(6, size))
    assert int(scored[1].sum()) == size * size


@pytest.mark.parametrize("kind", HEADS)
def test_predicted_distogram_is_the_softmax_of_the_whole_map_and_carries_the_contact_mass(kind: str) -> None:
    config = _config(head=kind, distogram_bins=DEFAULT_DISTOGRAM_BINS, pair_chunk_size=16)
    torch.manual_seed(1)
    model = ContactModel(config).eval()
    tokens = torch.randint(2, 22, (2, 70))
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[1, 50:] = False
    tokens[1, 50:] = 0
    probs, dist = model.predict_maps(tokens, mask, chunk_size=16, distogram=True)  # tiled: 5 x 5 tiles with halo
    assert dist is not None and dist.shape == (2, 70, 70, 18) and dist.dtype == torch.float32
    # the probabilities are predict_proba's, bit for bit, and the map is exactly symmetric
    assert torch.equal(probs, model.predict_proba(tokens, mask, chunk_size=16))
    assert torch.equal(dist, dist.transpose(1, 2))
    # against the whole map's outputs (another code path: no tiles), softmax written out with exp
    with torch.no_grad():
        z = model.pair_outputs(tokens, mask).double()
    e = (z - z.amax(-1, keepdim=True)).exp()
    expected = e / e.sum(-1, keepdim=True)
    real = mask[:, :, None] & mask[:, None, :]
    torch.testing.assert_close(dist[real].double(), expected[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(dist[real].sum(-1).double(), torch.ones(int(real.sum()), dtype=torch.float64),
                               atol=1e-5, rtol=0)
    # classes < 4, [4, 5), ..., [7, 8) hold the contact probability
    torch.testing.assert_close(dist[..., :5].sum(-1)[real], probs[real], atol=1e-5, rtol=0)


def test_a_binary_head_predicts_no_distogram() -> None:
    model = ContactModel(_config()).eval()
    tokens = torch.randint(2, 22, (1, 20))
    probs, dist = model.predict_maps(tokens, tokens > 0)
    assert dist is None and probs.shape == (1, 20, 20)
    with pytest.raises(InputError, match="binary contact head"):
        model.predict_maps(tokens, tokens > 0, distogram=True)


def _bce(x: torch.Tensor, y: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Per-pair BCE with a positive-class weight, written out (float64)."""
    x, y = x.double(), y.double()
    return -(pos_weight * y * torch.nn.functional.logsigmoid(x) + (1 - y) * torch.nn.functional.logsigmoid(-x))


def test_far_weight_is_a_weighted_mean_over_pairs_in_both_losses() -> None:
    torch.manual_seed(7)
    n = 300
    x, y = torch.randn(n), (torch.rand(n) < 0.2).float()
    sep = torch.randint(6, 200, (n,))
    w = torch.where(sep >= 50, 5.0, 1.0).double()
    per_pair = _bce(x, y, 3.0)
    settings = LossSettings(pos_weight=3.0, far_weight=5.0, far_separation=50)
    got = pair_loss(x[:, None], y, None, settings=settings, edges=None, separations=sep)
    assert abs(float(got) - float((w * per_pair).sum() / w.sum())) < 1e-5
    got_sum = pair_loss(x[:, None], y, None, settings=settings, edges=None, separations=sep, reduction="sum")
    assert abs(float(got_sum) - float((w * per_pair).sum())) < 1e-3
    # far_weight 1 is the plain mean, and far pairs weigh more only when they exist
    plain = pair_loss(x[:, None], y, None, settings=LossSettings(pos_weight=3.0), edges=None, separations=sep)
    assert abs(float(plain) - float(per_pair.mean())) < 1e-5
    near = torch.full((n,), 10)
    assert abs(float(pair_loss(x[:, None], y, None, settings=settings, edges=None, separations=near))
               - float(plain)) < 1e-6
    # distogram cross-entropy: each pair's term weighted the same way
    z, dist = torch.randn(n, len(DEFAULT_DISTOGRAM_BINS) + 1), torch.rand(n) * 25 + 1
    target = torch.tensor([sum(d >= e for e in DEFAULT_DISTOGRAM_BINS) for d in dist.tolist()])
    ce = -torch.log_softmax(z.double(), -1)[torch.arange(n), target]
    got = pair_loss(z, y, dist, settings=settings, edges=DEFAULT_DISTOGRAM_BINS, separations=sep)
    assert abs(float(got) - float((w * ce).sum() / w.sum())) < 1e-5
    with pytest.raises(ValueError, match="separations"):
        pair_loss(x[:, None], y, None, settings=settings, edges=None)
    assert LossSettings.from_hparams({"far_weight": 4.0}) == LossSettings(far_weight=4.0, far_separation=96)
    assert LossSettings.from_hparams({}).far_weight == 1.0  # models trained before the option


def test_near_miss_weight_weights_non_contacts_closer_than_its_bound() -> None:
    """Non-contacts with a distance below near_miss_max weigh near_miss_weight (contacts and farther pairs 1), as a
    weighted mean, combined with far_weight by product; a distogram's cross-entropy is not weighted."""
    torch.manual_seed(11)
    n = 400
    x = torch.randn(n)
    dist = torch.rand(n) * 30 + 2  # 2-32 A
    y = (dist < 8.0).float()
    sep = torch.randint(6, 200, (n,))
    near = [(d >= 8.0 and d < 14.0) for d in dist.tolist()]  # the shell, by hand
    w_near = torch.tensor([3.0 if k else 1.0 for k in near], dtype=torch.float64)
    per_pair = _bce(x, y, 2.0)
    settings = LossSettings(pos_weight=2.0, near_miss_weight=3.0, near_miss_max=14.0)
    got = pair_loss(x[:, None], y, dist, settings=settings, edges=None)
    assert abs(float(got) - float((w_near * per_pair).sum() / w_near.sum())) < 1e-5
    assert abs(float(got) - float(per_pair.mean())) > 1e-3  # the weights matter here
    both = LossSettings(pos_weight=2.0, near_miss_weight=3.0, near_miss_max=14.0, far_weight=5.0, far_separation=50)
    w = w_near * torch.where(sep >= 50, 5.0, 1.0).double()
    got = pair_loss(x[:, None], y, dist, settings=both, edges=None, separations=sep, reduction="sum")
    assert abs(float(got) - float((w * per_pair).sum())) < 1e-3
    with pytest.raises(ValueError, match="distances"):
        pair_loss(x[:, None], y, None, settings=settings, edges=None)
    z = torch.randn(n, len(DEFAULT_DISTOGRAM_BINS) + 1)
    plain = pair_loss(z, y, dist, settings=LossSettings(), edges=DEFAULT_DISTOGRAM_BINS)
    assert float(pair_loss(z, y, dist, settings=settings, edges=DEFAULT_DISTOGRAM_BINS)) == float(plain)
    assert LossSettings.from_hparams({"near_miss_weight": 3.0}) == LossSettings(near_miss_weight=3.0,
                                                                               near_miss_max=16.0)
    assert LossSettings.from_hparams({}).near_miss_weight == 1.0  # models trained before the option


def test_training_module_weights_near_misses_by_the_batch_distances() -> None:
    """The module's training loss takes each pair's distance from the batch (whole maps here)."""
    from protrnn.training.module import ContactLightningModule

    length = 60
    torch.manual_seed(3)
    module = ContactLightningModule(_config(head="resnet2d", max_separation=1000), pos_weight=2.0,
                                    near_miss_weight=4.0, near_miss_max=12.0).eval()
    tokens = torch.randint(1, 21, (1, length))
    mask = torch.ones(1, length, dtype=torch.bool)
    i = torch.arange(length)
    pair_mask = ((i[:, None] - i[None, :]).abs() >= 6)[None]
    dist = torch.rand(1, length, length) * 20 + 3
    dist = (dist + dist.transpose(1, 2)) / 2
    contacts = (dist < 8.0).float()
    batch = {"tokens": tokens, "mask": mask, "pair_mask": pair_mask, "contacts": contacts, "distances": dist}
    with torch.no_grad():
        loss, _ = module._training_loss(batch)
        logits = module.net.pair_outputs(tokens, mask)[0, ..., 0]
    pairs = [(a, b) for a in range(length) for b in range(a + 6, length)]
    x = torch.stack([logits[a, b] for a, b in pairs])
    y = torch.tensor([float(contacts[0, a, b]) for a, b in pairs])
    w = torch.tensor([4.0 if 8.0 <= float(dist[0, a, b]) < 12.0 else 1.0 for a, b in pairs], dtype=torch.float64)
    assert 0 < int((w > 1).sum()) < len(pairs)
    assert abs(float(loss) - float((w * _bce(x, y, 2.0)).sum() / w.sum())) < 1e-5
    with pytest.raises(InputError, match="model.near_miss_weight"):
        ContactLightningModule(_config(), near_miss_weight=0.0)
    with pytest.raises(InputError, match="model.near_miss_max"):
        ContactLightningModule(_config(), near_miss_max=float("nan"))
    # a setting that would weight nothing is refused: a distogram head's loss, a bound not beyond the cutoff
    with pytest.raises(InputError, match="model.near_miss_weight': weights the binary contact loss"):
        ContactLightningModule(_config(distogram_bins=[6.0, 8.0, 12.0]), near_miss_weight=2.0)
    from types import SimpleNamespace

    for bound, refused in ((8.0, True), (8.5, False)):
        module = ContactLightningModule(_config(), near_miss_weight=2.0, near_miss_max=bound)
        module._trainer = SimpleNamespace(datamodule=SimpleNamespace(contact_cutoff=8.0))  # type: ignore[assignment]
        if refused:
            with pytest.raises(InputError, match="model.near_miss_max': 8 Å is not beyond the contact cutoff"):
                module.setup("fit")
        else:
            module.setup("fit")


@pytest.mark.parametrize("blocks", [False, True])
def test_training_module_weights_far_pairs_by_their_true_separation(blocks: bool) -> None:
    """On whole maps and on an off-diagonal block alike, a pair's weight follows its separation in the chain (not
    its position inside the block)."""
    from protrnn.training.module import ContactLightningModule

    length, far = 90, 30
    torch.manual_seed(5)
    module = ContactLightningModule(_config(head="resnet2d", max_separation=1000), pos_weight=2.0, far_weight=3.0,
                                    far_separation=far).eval()
    tokens = torch.randint(1, 21, (1, length))
    mask = torch.ones(1, length, dtype=torch.bool)
    i = torch.arange(length)
    pair_mask = ((i[:, None] - i[None, :]).abs() >= 6)[None]
    contacts = (torch.rand(1, length, length) < 0.1).float()
    contacts = ((contacts + contacts.transpose(1, 2)) > 0).float()
    batch = {"tokens": tokens, "mask": mask, "pair_mask": pair_mask, "contacts": contacts}
    row0, col0, size = 10, 25, 20
    if blocks:
        batch.update({"blocks": torch.tensor([[[row0, col0]]]), "block_size": size, "block_context": 0})
    with torch.no_grad():
        loss, n_pairs = module._training_loss(batch)
        if blocks:
            logits = module.net.block_outputs(tokens, mask, batch["blocks"], size, 0).outputs[0, ..., 0]
            pairs = [(a, b, logits[a, b]) for a in range(size) for b in range(size)
                     if abs((row0 + a) - (col0 + b)) >= 6]
            pairs = [(row0 + a, col0 + b, v) for a, b, v in pairs]
        else:
            logits = module.net.pair_outputs(tokens, mask)[0, ..., 0]
            pairs = [(a, b, logits[a, b]) for a in range(length) for b in range(a + 6, length)]
    x = torch.stack([v for _, _, v in pairs])
    y = torch.tensor([float(contacts[0, a, b]) for a, b, _ in pairs])
    w = torch.tensor([3.0 if abs(a - b) >= far else 1.0 for a, b, _ in pairs], dtype=torch.float64)
    assert int(n_pairs) == len(pairs)
    assert 0 < int((w > 1).sum()) < len(pairs)  # both kinds of pair are present
    per_pair = _bce(x, y, 2.0)
    assert abs(float(loss) - float((w * per_pair).sum() / w.sum())) < 1e-5
    assert abs(float(loss) - float(per_pair.mean())) > 1e-4  # the weights matter here
    with pytest.raises(InputError, match="model.far_weight"):
        ContactLightningModule(_config(), far_weight=0.0)
