"""Whole model: contract shapes, padding invariance of logits, chunked probabilities, and the pickle-free export
(round trip exact; anything that is not a protrnn model refused with a clear one-line error)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from protrnn.alphabet import DEFAULT_ALPHABET
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.io import load_network, read_model_metadata, save_model
from protrnn.model.predictor import Predictor, load_model

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
    # the logits are a function of the embedding given, not of the tokens: moving residue 5's input moves them
    moved = x.detach().clone()
    moved[0, 5] += 0.5
    assert not torch.allclose(model.forward_embedded(moved, mask), logits.detach())
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


def _checkpoint(path: Path, model: ContactModel, **fields: object) -> Path:
    """A checkpoint as ``protrnn train`` writes one (the network under ``net.``, its config in the hyper-parameters),
    with ``fields`` set or replaced."""
    checkpoint: dict[str, object] = {
        "state_dict": {f"net.{name}": tensor for name, tensor in model.state_dict().items()},
        "hyper_parameters": {"model": model.config.to_dict(), "lr": 0.01},
        "epoch": 3, "global_step": 40, "protrnn_val_metrics": {"val/loss": 0.5}}
    checkpoint.update(fields)
    torch.save(checkpoint, path)
    return path


def _set_config(json_path: Path, key: str, value: object) -> None:
    meta = json.loads(json_path.read_text())
    meta["config"][key] = value
    json_path.write_text(json.dumps(meta))


# 2**28 wide: an LSTM layer of it wants more memory than any machine has (the old loader's allocation failed at
# once), while its shapes still fit an index: the loader must name the first parameter the weights file holds smaller.
HUGE = 2**28


def test_a_config_larger_than_its_weights_is_refused_naming_the_parameter_before_allocating(tmp_path: Path) -> None:
    model = _model()  # LSTM, hidden 8, embed 8: weight_ih_l0 is (4 gates x 8, 8)
    json_path = save_model(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    _set_config(json_path, "hidden_size", HUGE)
    with pytest.raises(InputError) as err:
        load_network(tmp_path / "m")
    assert str(err.value) == (f"{weights}: weights do not match the config: parameter "
                              f"'encoder.layers.0.fwd.weight_ih_l0' has shape (32, 8), config implies ({4 * HUGE}, 8)")

    _set_config(json_path, "hidden_size", 8)
    _set_config(json_path, "pair_dim", 2**40)  # a pair_dim x pair_dim layer: more elements than an index holds
    with pytest.raises(InputError) as err:
        load_network(tmp_path / "m")
    assert str(err.value).startswith(f"{json_path}: invalid model description: its parameters are too large to exist")
    assert "\n" not in str(err.value)

    checkpoint = _checkpoint(tmp_path / "huge.ckpt", model,
                             hyper_parameters={"model": {**model.config.to_dict(), "hidden_size": HUGE}})
    with pytest.raises(InputError) as err:
        load_network(checkpoint)
    assert str(err.value) == (f"{checkpoint}: weights do not match the architecture lstm/resnet2d recorded in the "
                              f"checkpoint: parameter 'encoder.layers.0.fwd.weight_ih_l0' has shape (32, 8), config "
                              f"implies ({4 * HUGE}, 8)")


#: A hand-edited ``head_dilations`` entry: the old streamed inference padded each tile's maps by it (petabytes).
HUGE_DILATION = 10**12


def test_a_hand_edited_huge_dilation_predicts_as_a_dilation_of_the_map_size(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``head_dilations: [1, 10**12]`` in model.json loads (a dilation changes no weight shape) and predicts what the
    same weights with a dilation of the padded map's size (66) predict, bit for bit: the convolutions clamp their
    dilation to the map. Its halo spans any map, so tiling and batch planning score each map at once, as they do a
    chain shorter than one haloed tile, and plan no memory for the halo itself."""
    model = _model().eval()
    json_path = save_model(model, tmp_path / "m")
    _set_config(json_path, "head_dilations", [1, HUGE_DILATION])
    huge = load_model(tmp_path / "m", device="cpu")
    at_map = _model(head_dilations=[1, 66])
    at_map.load_state_dict(model.state_dict())
    expected = Predictor(at_map, device="cpu")
    assert huge.model.head.halo == 2 * (1 + HUGE_DILATION)
    for got, want in zip(huge.predict(SEQUENCES), expected.predict(SEQUENCES), strict=True):
        assert np.array_equal(got, want)

    tokens, mask = _tokens(SEQUENCES)
    assert huge.model.chunk_size_for(1, 5000, 1 << 25) == 5000  # the whole map: no tile of halo size planned
    tiles: list[tuple[range, range]] = []
    real_tile = huge.model.head._tile

    def spy_tile(feats: tuple[torch.Tensor, ...], m: torch.Tensor, rows: range, cols: range,
                 dtype: torch.dtype) -> torch.Tensor:
        tiles.append((rows, cols))
        return real_tile(feats, m, rows, cols, dtype)

    monkeypatch.setattr(huge.model.head, "_tile", spy_tile)
    probs = huge.model.predict_proba(tokens, mask, chunk_size=8)
    assert tiles == [(range(66), range(66))]
    torch.testing.assert_close(probs, at_map.predict_proba(tokens, mask, chunk_size=8), atol=1e-6, rtol=0)
    lengths = [150, 100, 60, 13]  # all below the 66-dilation model's haloed tile (24 + 2 x 67): whole maps too
    assert huge.plan(lengths) == expected.plan(lengths)


def test_config_integers_refuse_bools_and_switches_refuse_anything_but_bools(tmp_path: Path) -> None:
    from dataclasses import fields

    from protrnn.model.config import MAX_MODULE_COUNT

    # the integer and switch fields by their declared types, so a field added later is covered too
    integers = [f.name for f in fields(ModelConfig) if f.type in ("int", "int | None")]
    switches = [f.name for f in fields(ModelConfig) if f.type == "bool"]
    assert {"head_blocks", "hidden_size", "gradient_horizon"} <= set(integers) and "residual" in switches
    cases: list[tuple[str, object]] = [(key, flag) for key in integers for flag in (True, False)]
    cases += [("head_dilations", [True]), ("head_dilations", [1, False]), ("head_dilations", "12")]
    cases += [(key, value) for key in switches for value in (1, 0, "no", None)]
    cases += [("num_layers", MAX_MODULE_COUNT + 1), ("head_blocks", 10**8)]
    for key, value in cases:
        with pytest.raises(InputError, match=f"^model config key '{key}': must be"):
            ModelConfig(**{key: value})  # type: ignore[arg-type]
    ModelConfig(num_layers=MAX_MODULE_COUNT, head_blocks=MAX_MODULE_COUNT, head_dilations=[1, 3])

    json_path = save_model(_model(), tmp_path / "m")
    _set_config(json_path, "head_dilations", [True, 2])
    with pytest.raises(InputError) as err:
        load_network(tmp_path / "m")
    assert str(err.value) == (f"{json_path}: invalid model description: model config key 'head_dilations': must be a "
                              "non-empty list of positive integers, got [True, 2]")


@pytest.mark.parametrize(("dtype", "name"), [(torch.float8_e4m3fn, "F8_E4M3"), (torch.float8_e5m2, "F8_E5M2"),
                                             (torch.int64, "I64"), (torch.bool, "BOOL")])
def test_weights_of_a_dtype_other_than_the_four_floats_are_refused_naming_the_parameter(
        dtype: torch.dtype, name: str, tmp_path: Path) -> None:
    model = _model()
    save_model(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    for accepted in (torch.float16, torch.bfloat16, torch.float64):  # loaded, as the network's float32
        save_file({**state, "head.out.weight": state["head.out.weight"].to(accepted)}, str(weights))
        loaded = load_network(tmp_path).network.state_dict()["head.out.weight"]
        assert loaded.dtype == torch.float32
        assert torch.equal(loaded, model.state_dict()["head.out.weight"].to(accepted).float())
    save_file({**state, "head.out.weight": state["head.out.weight"].to(dtype)}, str(weights))
    with pytest.raises(InputError) as err:
        load_network(tmp_path)
    assert str(err.value) == (f"{weights}: parameter 'head.out.weight' has dtype {name}; weights must be one of "
                              "float16, bfloat16, float32, float64")
    checkpoint = _checkpoint(tmp_path / "odd.ckpt", model)
    saved = torch.load(checkpoint, weights_only=True)
    saved["state_dict"]["net.head.out.weight"] = saved["state_dict"]["net.head.out.weight"].to(dtype)
    torch.save(saved, checkpoint)
    with pytest.raises(InputError) as err:
        load_network(checkpoint)
    assert str(err.value) == (f"{checkpoint}: parameter 'head.out.weight' has dtype {str(dtype)[6:]}; weights must be "
                              "one of float16, bfloat16, float32, float64")


def _strict_json(path: Path) -> dict:
    """``path`` parsed as strict JSON (RFC 8259 has no NaN or Infinity)."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_exported_descriptions_are_strict_json_with_null_for_non_finite_numbers(tmp_path: Path) -> None:
    from protrnn.cli import main as cli_main

    model = _model()
    checkpoint = _checkpoint(tmp_path / "nan.ckpt", model, protrnn_val_metrics={
        "val/loss": float("nan"), "val/P@L5_long": float("inf"), "val/P@L5_short": 0.25, "val/count": 3})
    assert cli_main(["export", str(checkpoint), "-o", str(tmp_path / "out")]) == 0
    meta = _strict_json(tmp_path / "out" / "model.json")
    assert meta["val_metrics"] == {"val/loss": None, "val/P@L5_long": None, "val/P@L5_short": 0.25, "val/count": 3.0}
    assert meta["epoch"] == 3 and meta["global_step"] == 40
    assert load_network(tmp_path / "out").metadata["val_metrics"]["val/loss"] is None

    save_model(model, tmp_path / "direct", extra={"trained": {"loss": float("-inf"), "p": [float("nan"), 0.5]}})
    assert _strict_json(tmp_path / "direct" / "model.json")["trained"] == {"loss": None, "p": [None, 0.5]}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("epoch", torch.tensor(3), "checkpoint field 'epoch' is a Tensor, not a non-negative integer"),
    ("global_step", "40", "checkpoint field 'global_step' is '40', not a non-negative integer"),
    ("protrnn_val_metrics", [1, 2], "checkpoint field 'protrnn_val_metrics' is a list, not a dict of metric values"),
    ("protrnn_val_metrics", {"val/loss": "low"}, "checkpoint field 'protrnn_val_metrics': metric 'val/loss' is "
                                                 "'low', not a number"),
])
def test_export_of_a_checkpoint_with_an_odd_field_names_the_checkpoint_and_writes_nothing(
        field: str, value: object, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protrnn.cli import main as cli_main

    checkpoint = _checkpoint(tmp_path / "odd.ckpt", _model(), **{field: value})
    out = tmp_path / "new" / "out"
    assert cli_main(["export", str(checkpoint), "-o", str(out)]) == 2
    assert capsys.readouterr().err == f"protrnn: error: {checkpoint}: {message}\n"
    assert not (tmp_path / "new").exists()


def test_an_interrupted_re_export_looks_incomplete_and_a_failed_one_keeps_the_old_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import protrnn.model.io as model_io

    old, new = _model(), _model()
    with torch.no_grad():
        new.head.out.bias.fill_(7.0)
    save_model(old, tmp_path / "m", extra={"which": "old"})

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:  # the weights cannot be written: the old export stays whole
        patch.setattr(model_io, "save_file", fail)
        with pytest.raises(OSError):
            save_model(new, tmp_path / "m", extra={"which": "new"})
    loaded = load_network(tmp_path / "m")
    assert loaded.metadata["which"] == "old" and torch.equal(loaded.network.head.out.bias, old.head.out.bias)

    with monkeypatch.context() as patch:  # killed once the new weights are in place, before the new description
        patch.setattr(model_io, "atomic_write", lambda *args, **kwargs: fail())
        with pytest.raises(OSError):
            save_model(new, tmp_path / "m", extra={"which": "new"})
    with pytest.raises(InputError, match="not a protrnn model: no model.json in the directory"):
        load_network(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.safetensors"]

    save_model(new, tmp_path / "m", extra={"which": "new"})  # a rerun completes it
    loaded = load_network(tmp_path / "m")
    assert loaded.metadata["which"] == "new" and torch.equal(loaded.network.head.out.bias, new.head.out.bias)


def test_exported_weights_get_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    import os
    import stat

    previous = os.umask(0o022)
    try:
        save_model(_model(), tmp_path / "m")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert modes == {"model.json": 0o644, "model.safetensors": 0o644}
