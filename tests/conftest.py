"""Shared fixtures: the real data in ../shared/data (read in place, never copied into the repo) and the PyPI wheels."""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

# One torch thread per process unless the caller chose otherwise: on the 2-core CI machine, tests that start
# subprocesses (DDP, Snakemake) would otherwise oversubscribe the cores; set before any test imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO / ".." / "shared" / "data"
#: Where already-downloaded wheels may lie (tests never download): env override, the pipeline cache, a scratch dir.
WHEEL_DIRS = [Path(p) for p in os.environ.get("PROTRNN_WHEEL_DIR", "").split(os.pathsep) if p] + [
    REPO / ".cache" / "protrnn" / "wheels",
    Path("/tmp/wheels"),
]


#: System tools the suite runs (Debian packages, installed by .ci/run): a test that needs a missing one fails, it does
#: not skip, so a machine without them cannot pass the suite quietly.
SYSTEM_TOOLS = {"mmseqs": "mmseqs2", "freecontact": "freecontact"}


def require_tool(name: str) -> str:
    """The path of system tool ``name``; fails the calling test (with the install command) when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; the test suite needs it: apt-get install {SYSTEM_TOOLS[name]} "
                    "(.ci/run installs it)")
    return path


@pytest.fixture
def mmseqs() -> str:
    """mmseqs2 (see :func:`require_tool`)."""
    return require_tool("mmseqs")


@pytest.fixture
def freecontact() -> str:
    """Debian's freecontact (see :func:`require_tool`)."""
    return require_tool("freecontact")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests that need it skip when it is absent (e.g. a bare checkout)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA.resolve()}")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def extracted(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``extracted("psicov150_gremlin_rf/psicov150_org_pdb.tar.gz")`` -> folder with that tarball unpacked (once per
    session, shared by all tests)."""
    cache: dict[str, Path] = {}

    def get(relative: str) -> Path:
        if relative not in cache:
            archive = shared_data / relative
            if not archive.is_file():
                pytest.skip(f"{relative} not in shared data")
            target = tmp_path_factory.mktemp(Path(relative).name.split(".")[0])
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
            cache[relative] = target
        return cache[relative]

    return get


@pytest.fixture(scope="session")
def cgdms_chains(shared_data: Path) -> Callable[[int], list]:
    """``read(count)``: the first ``count`` real cgdms chains in member-name order (one pass over the tarball)."""
    from protrnn.data.formats import parse_cgdms_text

    archive = shared_data / "cgdms" / "cgdms_train_val.tar.gz"
    if not archive.is_file():
        pytest.skip("cgdms tarball not in shared data")

    def read(count: int) -> list:
        chains = []
        with tarfile.open(archive) as tar:
            members = sorted((m for m in tar.getmembers() if m.name.startswith("protein_data/train_val/")
                              and m.name.endswith(".txt")), key=lambda m: m.name)
            for member in members[:count]:
                text = tar.extractfile(member).read().decode("ascii")
                chains.append(parse_cgdms_text(text, Path(member.name).stem, source=member.name))
        return chains

    return read


def _find_wheel(prefix: str) -> Path | None:
    for directory in WHEEL_DIRS:
        hits = sorted(directory.glob(f"{prefix}*.whl")) if directory.is_dir() else []
        if hits:
            return hits[0]
    return None


@pytest.fixture(scope="session")
def cgdms_wheel() -> Path:
    """The cgdms==1.0 wheel if already on disk (see :data:`WHEEL_DIRS`), else skip."""
    wheel = _find_wheel("cgdms-1.0-")
    if wheel is None:
        pytest.skip("cgdms-1.0 wheel not downloaded (set PROTRNN_WHEEL_DIR)")
    return wheel


@pytest.fixture(scope="session")
def bioemu_wheel() -> Path:
    """The bioemu-benchmarks==0.0.2.post1 wheel if already on disk, else skip."""
    wheel = _find_wheel("bioemu_benchmarks-0.0.2.post1-")
    if wheel is None:
        pytest.skip("bioemu-benchmarks 0.0.2.post1 wheel not downloaded (set PROTRNN_WHEEL_DIR)")
    return wheel


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a busy 2-core CI box, OpenMP workers spinning for a core make tiny batches 30x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_on_two_ts50_chains(shared_data: Path, tmp_path: Path) -> Callable[..., list[str]]:
    """``run(script, *options)``: ``benchmarks/<script>`` run with ``--test-set two=<the first two TS50 chains as a
    prepared dataset>`` and ``options``, as a user would; asserts it succeeds and returns its stdout lines."""
    import itertools
    import subprocess
    import sys

    from protrnn.data.dataset import save_dataset
    from protrnn.data.formats import iter_json_chains

    dataset = tmp_path / "two.npz"
    save_dataset(list(itertools.islice(iter_json_chains(shared_data / "ts50_gvp" / "ts50.json.gz"), 2)), dataset)

    def run(script: str, *options: str) -> list[str]:
        result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--test-set", f"two={dataset}",
                                 *options], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.splitlines()

    return run


@pytest.fixture(scope="session")
def random_walk_chain() -> Callable[..., object]:
    """``make(rng, chain_id, length)``: a ProteinChain of random residues on a 3.8 Å random walk (backbone atoms and
    Cβ offset from each Cα), every residue observed: training data for tiny runs."""
    import numpy as np

    from protrnn.alphabet import DEFAULT_ALPHABET
    from protrnn.data.chain import ProteinChain

    def make(rng: np.random.Generator, chain_id: str, length: int) -> ProteinChain:
        steps = rng.normal(size=(length, 3))
        ca = np.cumsum(3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
        coords = np.stack([ca - 1.0, ca, ca + 1.0, ca + 0.7], axis=1).astype(np.float32)
        sequence = "".join(rng.choice(list(DEFAULT_ALPHABET.residues), size=length))
        return ProteinChain(chain_id, sequence, np.ones(length, dtype=bool), coords)

    return make
