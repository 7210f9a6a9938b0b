"""Whole model: contract shapes, padding invariance of logits, chunked probabilities, and the pickle-free export
(round trip exact; anything that is not a protrnn model refused with a clear one-line error)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import load_network, read_model_metadata, save_model

SEQUENCES = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ", "GSHMLEDPVDAFQ"]


def _model(**overrides: object) -> ContactModel:
    base: dict[str, object] = {"embed_dim": 8, "hidden_size": 8, "num_layers": 2, "pair_dim": 8, "head_blocks": 2,
                               "head_dilations": [1, 2], "pair_chunk_size": 24, "dropout": 0.2}
    base.update(overrides)
    torch.manual_seed(0)
    return ContactModel(ModelConfig(**base))  # type: ignore[arg-type]


def _tokens(sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    steps = max(map(len, sequences))
    tokens = torch.zeros(len(sequences), steps, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, :len(seq)] = torch.from_numpy(DEFAULT_ALPHABET.encode(seq).astype("int64"))
    return tokens, tokens != 0


@pytest.mark.parametrize("head", ["pairwise", "resnet2d"])
def test_logits_symmetric_and_independent_of_padding(head: str) -> None:
    model = _model(head=head, gradient_horizon=5).eval()
    tokens, mask = _tokens(SEQUENCES)
    logits = model(tokens, mask)
    assert logits.shape == (2, len(SEQUENCES[0]), len(SEQUENCES[0]))
    assert torch.equal(logits, logits.transpose(1, 2)) and torch.isfinite(logits).all()
    short = len(SEQUENCES[1])
    alone = model(tokens[1:, :short], mask[1:, :short])
    torch.testing.assert_close(logits[1, :short, :short], alone[0], atol=1e-5, rtol=0)


def test_forward_embedded_exposes_layers_and_input_gradients() -> None:
    model = _model(gradient_horizon=8, head="pairwise").eval()  # per-pair head: no spatial reach of its own
    tokens, mask = _tokens(SEQUENCES[:1])
    x = model.embed(tokens).detach().requires_grad_()
    logits, layers = model.forward_embedded(x, mask, return_layers=True)
    assert len(layers) == 2 and layers[0].shape == (1, tokens.size(1), 16)
    torch.testing.assert_close(logits, model(tokens, mask))
    (grad_x, grad_h) = torch.autograd.grad(logits[0, 2, 3], [x, layers[0]])
    assert torch.all(grad_x[0, :8].abs().sum(-1) > 0), "every residue in the horizon block of i and j is seen"
    assert torch.all(grad_x[0, 8:] == 0), "nothing beyond the cut at k = 8"
    assert torch.all(grad_h[0, :8].abs().sum(-1) > 0) and torch.all(grad_h[0, 8:] == 0)


def test_predict_proba_is_chunked_sigmoid_and_restores_mode() -> None:
    model = _model(pair_chunk_size=16)  # T = 66 -> 5 x 5 tiles with a halo
    model.train()
    tokens, mask = _tokens(SEQUENCES)
    probs = model.predict_proba(tokens, mask)
    assert model.training, "the caller's mode is restored"
    model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model(tokens, mask))
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    assert not probs.requires_grad
    with pytest.raises(InputError, match="tokens must lie in"):
        model.predict_proba(tokens + 30, mask)


def test_export_round_trip_is_exact(tmp_path: Path) -> None:
    model = _model(cell="gru", head="pairwise").eval()
    json_path = save_model(model, tmp_path / "m", extra={"trained_steps": 12, "metrics": {"p_l5": 0.3}})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads(json_path.read_text())
    assert meta["format"] == "protrnn-model" and meta["format_version"] == 1
    assert meta["config"] == model.config.to_dict() and meta["alphabet"] == DEFAULT_ALPHABET.to_dict()
    assert meta["trained_steps"] == 12
    for path in (tmp_path / "m", json_path, tmp_path / "m" / "model.safetensors"):
        loaded = load_network(path).network
        assert not loaded.training and loaded.export_metadata["metrics"] == {"p_l5": 0.3}
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
        tokens, mask = _tokens(SEQUENCES)
        assert torch.equal(loaded(tokens, mask), model(tokens, mask))


@pytest.mark.parametrize(("change", "message"), [
    (("config", "dropout_rate", 0.1), "invalid model description: model config: unknown key(s) 'dropout_rate'"),
    (("config", "cell", "transformer"), "invalid model description: model config key 'cell': unknown cell 'transformer'"),
    (("config", "hidden_size", "wide"), "invalid model description: model config key 'hidden_size': must be a "
                                        "positive integer, got 'wide'"),
    (("alphabet", "pad", 5), "invalid model description: unsupported alphabet layout"),
])
def test_an_export_with_an_invalid_description_is_one_line_naming_its_json(change: tuple[str, str, object],
                                                                           message: str, tmp_path: Path) -> None:
    json_path = save_model(_model(), tmp_path / "m")
    meta = json.loads(json_path.read_text())
    section, key, value = change
    meta[section][key] = value
    json_path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        load_network(tmp_path / "m")
    assert str(err.value).startswith(f"{json_path}: {message}") and "\n" not in str(err.value)


def test_save_refuses_reserved_extra_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_model(_model(), tmp_path, extra={"config": {}})
    assert not (tmp_path / "model.json").exists()


class _Exploit:
    """Unpickling this would run code; weights_only loading must refuse it."""

    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled')",))


def test_refuses_pickles_and_random_files(tmp_path: Path) -> None:
    model = _model()
    pickled = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict()}, pickled)
    with pytest.raises(InputError, match="not a protrnn model"):
        load_network(pickled)
    # A .ckpt is read with weights_only=True and must carry the architecture protrnn train records.
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, checkpoint)
    with pytest.raises(InputError, match="no model architecture"):
        load_network(checkpoint)
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(InputError, match="not a readable checkpoint"):
        load_network(evil)
    raw_pickle = tmp_path / "weights.pkl"
    raw_pickle.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputError, match="not a protrnn model.*pickle"):
        load_network(raw_pickle)
    noise = tmp_path / "noise.json"
    noise.write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match="not a protrnn model"):
        load_network(noise)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match=r"not a protrnn model \(format 'something-else', expected 'protrnn-model'\)"):
        read_model_metadata(other)
    with pytest.raises(InputError, match="not a protrnn model"):
        load_network(tmp_path)  # a directory without model.json


def test_refuses_weights_that_do_not_match_the_config(tmp_path: Path) -> None:
    save_model(_model(), tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["pair_dim"] = 12
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"parameter 'head\.[a-z_.0-9]+' has shape") as err:
        load_network(tmp_path / "m")
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)

    meta["config"]["pair_dim"] = 8
    meta["config"]["num_layers"] = 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"unexpected parameter 'encoder\.layers\.1\."):
        load_network(tmp_path / "m")

    meta["config"]["num_layers"] = 2
    meta["config"]["cell"] = "transformer"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="'cell'"):
        load_network(tmp_path / "m")

    meta["config"]["cell"] = "lstm"
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="format_version 99"):
        load_network(tmp_path / "m")


def test_refuses_non_finite_weights(tmp_path: Path) -> None:
    save_model(_model(), tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    state["head.out.bias"] = torch.tensor([float("nan")])
    save_file(state, str(weights))
    with pytest.raises(InputError, match="'head.out.bias' contains NaN"):
        load_network(tmp_path)


@pytest.mark.parametrize(("key", "value"), [("dropout", "0.5"), ("dropout", "x"), ("forget_bias", "x"),
                                            ("forget_bias", True)])
def test_refuses_non_numeric_config_values(tmp_path: Path, key: str, value: object) -> None:
    # A hand-edited model.json must give one InputError line, not a ValueError/TypeError traceback.
    save_model(_model(), tmp_path)
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"][key] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"'{key}'"):
        load_network(tmp_path)
