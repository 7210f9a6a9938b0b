"""The Predictor's speed paths (issue #13): precision option, budget-sized tiles and the batches planned for them,
per-device batch size, exact symmetry without post-processing, and the memory-light summary figure."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import protrnn.model.predictor as predictor_mod
from protrnn.cli import main
from protrnn.errors import InputError
from protrnn.model.config import ModelConfig
from protrnn.model.contact_model import ContactModel
from protrnn.model.hardware import bf16_is_native
from protrnn.model.heads import STREAMED_TILE_FLOATS
from protrnn.model.io import save_model
from protrnn.model.predictor import PAIR_FEATURE_BUDGET, Predictor, default_batch_tokens, load_model
from protrnn.predict import predict_fasta
from protrnn.predict.writers import mean_top_probability
from protrnn.rr import read_rr_document

LETTERS = list("ACDEFGHIKLMNPQRSTVWY")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save(directory: Path, **overrides) -> Path:
    torch.manual_seed(0)
    base = {"embed_dim": 8, "hidden_size": 8, "num_layers": 1, "pair_dim": 8, "dropout": 0.0}
    save_model(ContactModel(ModelConfig(**{**base, **overrides})), directory)
    return directory


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight models, one per head; small model tiles so a 120-residue chain is scored in tiles."""
    return {"pairwise": _save(tmp_path_factory.mktemp("pairwise"), head="pairwise", pair_chunk_size=16),
            "resnet2d": _save(tmp_path_factory.mktemp("resnet2d"), head="resnet2d", head_blocks=2,
                              head_dilations=[1, 2], pair_chunk_size=16)}


def _sequence(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(LETTERS, size=length))


def _spy_predict_maps(predictor: Predictor) -> list[dict]:
    """Record the keyword arguments of every ``predict_maps`` call the predictor makes (its one entry into the
    model), less ``distogram`` (False for a contact prediction)."""
    calls: list[dict] = []
    real = predictor.model.predict_maps

    def spy(tokens, mask, **kwargs):
        calls.append({key: value for key, value in kwargs.items() if key != "distogram"})
        assert kwargs.get("distogram") is False
        return real(tokens, mask, **kwargs)

    predictor.model.predict_maps = spy
    return calls


@pytest.mark.parametrize("head", ["pairwise", "resnet2d"])
def test_tiled_chain_and_padded_batch_are_exactly_symmetric(model_dirs, head) -> None:
    """No symmetrisation in the Predictor: what the model returns must already be exactly symmetric, for a chain
    scored in several haloed tiles and for every chain of a padded batch."""
    rng = np.random.default_rng(0)
    long_seq, mid_seq, short_seq = _sequence(rng, 120), _sequence(rng, 77), _sequence(rng, 33)
    tiled = load_model(model_dirs[head], device="cpu")
    tiled.pair_floats = 1  # the smallest budget: the model's own 16-residue tiles
    halo = int(getattr(tiled.model.head, "halo", 0))
    assert tiled.model.chunk_size_for(1, 120, 1) == 16 and 16 + 2 * halo < 120  # so 120 residues are tiled
    calls = _spy_predict_maps(tiled)
    (probs,) = tiled.predict([long_seq])
    assert calls == [{"precision": "32", "max_pair_floats": 1}]
    assert probs.shape == (120, 120) and probs.dtype == np.float32
    assert np.array_equal(probs, probs.T)

    whole = load_model(model_dirs[head], device="cpu")  # default budget: 120 residues fit one block
    (reference,) = whole.predict([long_seq])
    np.testing.assert_allclose(probs, reference, atol=1e-5)  # tiling changes rounding only

    for predictor in (tiled, whole):
        batch = predictor.predict_batch([long_seq, mid_seq, short_seq])
        assert [p.shape for p in batch] == [(120, 120), (77, 77), (33, 33)]
        for matrix, sequence in zip(batch, (long_seq, mid_seq, short_seq), strict=True):
            assert matrix.dtype == np.float32 and matrix.flags.c_contiguous
            assert np.array_equal(matrix, matrix.T)
            np.testing.assert_allclose(matrix, whole.predict([sequence])[0], atol=1e-5)  # padding changes nothing


def test_a_cut_view_reaches_the_head_only_when_asked(model_dirs) -> None:
    """``predict_batch(tile=t)`` hands the pair head t-residue tiles without context; a tile spanning the chain is
    the exact map, a small one is not (the resnet2d head sees 2D context), and the default call is unchanged."""
    predictor = load_model(model_dirs["resnet2d"], device="cpu")
    sequence = _sequence(np.random.default_rng(8), 90)
    calls = _spy_predict_maps(predictor)
    (exact,) = predictor.predict_batch([sequence])
    (spanning,) = predictor.predict_batch([sequence], tile=90)
    (cut,) = predictor.predict_batch([sequence], tile=16)
    assert calls[0] == {"precision": "32", "max_pair_floats": predictor.pair_floats}
    assert calls[2] == {**calls[0], "chunk_size": 16, "head_halo": 0}
    np.testing.assert_allclose(spanning, exact, atol=1e-6, rtol=0)
    assert np.abs(cut - exact).max() > 1e-3 and np.array_equal(cut, cut.T)
    with pytest.raises(InputError, match="tile"):
        predictor.predict_batch([sequence], tile=0)


def test_precision_option(model_dirs, tmp_path) -> None:
    directory = model_dirs["resnet2d"]
    fp32 = load_model(directory, device="cpu")
    bf16 = load_model(directory, device="cpu", precision="bf16")
    assert fp32.precision == "32" and bf16.precision == "bf16"
    assert load_model(directory, device="cpu", precision="auto").precision == (
        "bf16" if bf16_is_native("cpu") else "32")
    with pytest.raises(InputError, match="precision"):
        load_model(directory, device="cpu", precision="16")

    # float32 keeps the METHOD lines of before (so its files are unchanged); bf16 adds one, which also keeps a rerun
    # in another precision from resuming the other's records.
    assert not any("bfloat16" in line for line in fp32.method_lines())
    assert bf16.method_lines()[:-1] == fp32.method_lines() and "bfloat16" in bf16.method_lines()[-1]

    sequence = _sequence(np.random.default_rng(1), 90)
    calls = _spy_predict_maps(bf16)
    (low,) = bf16.predict([sequence])
    (high,) = fp32.predict([sequence])
    assert calls[0]["precision"] == "bf16"
    assert np.array_equal(low, low.T)
    np.testing.assert_allclose(low, high, atol=0.05)

    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">a\n{sequence}\n")
    out = tmp_path / "out"
    assert predict_fasta(fasta, out, fp32, progress=False).predicted == 1
    assert predict_fasta(fasta, out, bf16, progress=False).predicted == 1  # recomputed, not resumed
    assert "bfloat16" in read_rr_document(out / "a.rr").methods[-1]
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(directory), "--no-progress"]) == 0
    assert not any("bfloat16" in line for line in read_rr_document(out / "a.rr").methods)  # CLI default: 32
    assert main(["predict", str(fasta), "-o", str(out), "--model", str(directory), "--no-progress",
                 "--precision", "bf16"]) == 0
    assert "bfloat16" in read_rr_document(out / "a.rr").methods[-1]
    with pytest.raises(SystemExit):
        main(["predict", str(fasta), "-o", str(out), "--precision", "16"])


def test_planned_batches_fit_the_tile_the_model_chooses() -> None:
    """Predictor.plan and ContactModel.chunk_size_for use one budget: on a CPU, pair-feature tensors of at most the
    head's cpu_tile_floats; a planned batch's haloed block, B x min(T, tile + 2 halo)^2 x pair_dim, stays within it."""
    config = ModelConfig(embed_dim=8, hidden_size=8, num_layers=1, head="resnet2d", pair_dim=24, head_blocks=4,
                         head_dilations=[1, 2, 4, 8], pair_chunk_size=256)
    predictor = Predictor(ContactModel(config), device="cpu")
    halo = predictor.model.head.halo
    cap = min(PAIR_FEATURE_BUDGET, predictor.model.head.cpu_tile_floats)
    rng = np.random.default_rng(2)
    for lengths in ([300] * 20, rng.integers(20, 900, size=200).tolist(), [40] * 30 + [5000, 1200]):
        batches = predictor.plan(lengths)
        assert sorted(k for batch in batches for k in batch) == list(range(len(lengths)))
        for batch in batches:
            n, width = len(batch), max(lengths[k] for k in batch)
            chunk = predictor.model.chunk_size_for(n, width, predictor.pair_floats, "cpu")
            extent = min(width, chunk + 2 * halo)
            assert n * extent**2 * config.pair_dim <= cap, (n, width, chunk)
    # 300-residue chains are scored whole (300 < 256 + 2 halo). At the CPU default of 1,024 tokens 3 fit a batch;
    # with tokens to spare, the streamed head's cap decides: 15 x 300^2 x 24 floats fit 2^25, 16 do not.
    assert [len(b) for b in predictor.plan([300] * 20)] == [3] * 6 + [2]
    assert [len(b) for b in predictor.plan([300] * 20, batch_tokens=100_000)] == [15, 5]
    # an ensemble plans under its smallest member cap: with a pairwise member, 2^23 (3 x 300^2 x 24 fit, 4 do not)
    pairwise = ContactModel(ModelConfig(**{**config.__dict__, "head": "pairwise"}))
    ensemble = Predictor([predictor.model, pairwise], device="cpu")
    assert [len(b) for b in ensemble.plan([300] * 20, batch_tokens=100_000)] == [3] * 6 + [2]
    # the reference implementation does not stream, so it keeps the 2^23 cap
    assert ContactModel(config, head_impl="reference").head.cpu_tile_floats == 1 << 23


def test_batch_size_defaults_per_device_and_explicit_values_win(model_dirs, tmp_path, monkeypatch) -> None:
    predictor = load_model(model_dirs["pairwise"], device="cpu")
    assert predictor.batch_tokens == 1024 == default_batch_tokens("cpu")
    assert default_batch_tokens("cuda") == 8192  # a GPU keeps the large batches
    assert Predictor(predictor.model, device="cpu", batch_tokens=64).batch_tokens == 64
    with pytest.raises(InputError, match="batch_tokens"):
        Predictor(predictor.model, device="cpu", batch_tokens=0)

    sizes: list[int] = []
    real = predictor_mod.Predictor.predict_batch
    monkeypatch.setattr(predictor_mod.Predictor, "predict_batch",
                        lambda self, seqs: sizes.append(len(seqs)) or real(self, seqs))
    rng = np.random.default_rng(3)
    sequences = [_sequence(rng, 50) for _ in range(40)]
    predictor.predict(sequences)
    assert sizes == [20, 20]  # 20 x 50 = 1,000 padded residues <= 1,024
    sizes.clear()
    predictor.predict(sequences, batch_tokens=8192)
    assert sizes == [40]
    sizes.clear()
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">r{k}\n{s}\n" for k, s in enumerate(sequences)))
    predict_fasta(fasta, tmp_path / "a", predictor, progress=False)
    assert sizes == [20, 20]
    sizes.clear()
    assert main(["predict", str(fasta), "-o", str(tmp_path / "b"), "--model", str(model_dirs["pairwise"]),
                 "--device", "cpu", "--no-progress", "--max-tokens", "100"]) == 0
    assert sizes == [2] * 20


def _mean_top_whole_triangle(probs: np.ndarray, k: int, min_separation: int) -> float:
    """The definition, written out over the whole upper triangle at once."""
    length = probs.shape[0]
    rows, cols = np.triu_indices(length, k=min_separation)
    if rows.size == 0:
        return math.nan
    values = np.sort(probs[rows, cols].astype(np.float64))[::-1]
    return float(values[:min(values.size, max(1, length // k))].mean())


def test_mean_top_probability_equals_the_whole_triangle_definition() -> None:
    rng = np.random.default_rng(4)
    for length in (1, 6, 7, 12, 61, 400, 3000):  # 3,000 rows are read in several blocks
        for dtype in (np.float16, np.float32):
            matrix = rng.random((length, length))
            matrix = ((matrix + matrix.T) / 2).astype(dtype)
            matrix[::5] = matrix[::5].round(1)  # many ties at the cut
            for k, separation in ((5, 6), (1, 1), (2, 12), (10, 24)):
                got = mean_top_probability(matrix, k, separation)
                expected = _mean_top_whole_triangle(matrix, k, separation)
                assert (math.isnan(got) and math.isnan(expected)) or got == expected, (length, dtype, k)


def test_npz_bytes_are_those_of_an_in_memory_writestr(tmp_path) -> None:
    """write_npz streams each array into its zip entry; the file must equal the one built in memory with
    ZipFile.writestr (the construction before streaming), so outputs stay byte-identical across versions."""
    import hashlib
    import io
    import zipfile

    from protrnn.predict.writers import read_npz, write_npz

    def in_memory(path: Path, probs: np.ndarray, sequence: str, record_id: str) -> None:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, value in (("probs", probs), ("sequence", np.str_(sequence)), ("id", np.str_(record_id))):
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(value), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, buffer.getvalue())

    rng = np.random.default_rng(5)
    for length in (1, 9, 700):
        matrix = rng.random((length, length)).astype(np.float16)
        matrix = ((matrix + matrix.T) / 2).astype(np.float16)
        sequence, record_id = _sequence(rng, length), "r\u00e9c/1"
        write_npz(tmp_path / "streamed.npz", matrix, sequence, record_id)
        in_memory(tmp_path / "reference.npz", matrix, sequence, record_id)
        digests = {hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
                   for name in ("streamed.npz", "reference.npz")}
        assert len(digests) == 1, length
        probs, got_sequence, got_id = read_npz(tmp_path / "streamed.npz")
        assert np.array_equal(probs, matrix) and (got_sequence, got_id) == (sequence, record_id)


def test_malloc_tuning_respects_the_opt_out_and_user_settings(monkeypatch) -> None:
    import platform
    import sys

    from protrnn.predict.memory import release_free_memory, tune_malloc

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    for key in ("PROTRNN_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_",
                "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PROTRNN_MALLOC_TUNING", "0")
    assert tune_malloc() is False
    monkeypatch.delenv("PROTRNN_MALLOC_TUNING")
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")  # the user's own choice wins
    assert tune_malloc() is False
    monkeypatch.delenv("MALLOC_MMAP_MAX_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert tune_malloc() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert tune_malloc() is glibc
    release_free_memory()  # harmless anywhere


@pytest.mark.slow
def test_streamed_resnet_tiles_bound_a_long_chains_memory(model_dirs) -> None:
    """A 3,000-residue chain through the tiny resnet2d model (pair_dim 8), in a fresh process. Streamed inference
    holds per tile three maps of at most the head's cap (``cpu_tile_floats`` = 2^25 floats = 128 MiB each: 2,048^2
    pairs, so 3,000 residues take 2 x 2 tiles) plus the L^2 logits and probabilities; scoring the whole map at once
    would hold three maps of 3,000^2 x 8 floats (824 MiB)."""
    length = 3000
    script = textwrap.dedent(f"""
        import numpy as np
        from protrnn.model.predictor import load_model
        from protrnn.utils.resources import peak_rss_mib
        model = load_model({str(model_dirs["resnet2d"])!r}, device="cpu")
        assert model.model.chunk_size_for(1, {length}, model.pair_floats) < {length}  # tiled
        rng = np.random.default_rng(0)
        model.predict(["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=50))])
        before = peak_rss_mib()
        (probs,) = model.predict(["".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size={length}))])
        assert probs.shape == ({length}, {length}) and np.isfinite(probs).all()
        print(before, peak_rss_mib())
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    before_mb, peak_mb = map(float, result.stdout.split())
    maps_mb = 3 * STREAMED_TILE_FLOATS * 4 / 2**20
    outputs_mb = 3 * length**2 * 4 / 2**20
    whole_map_mb = 3 * length**2 * 8 * 4 / 2**20
    bound = maps_mb + outputs_mb + 160  # + what the heap keeps (measured 437 MB growth, 514 MB with MALLOC_MMAP_MAX_=0)
    assert bound < whole_map_mb
    assert peak_mb - before_mb < bound, f"{length:,} residues added {peak_mb - before_mb:.0f} MiB"
