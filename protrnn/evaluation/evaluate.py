"""Run models and baselines over prepared test sets and score every protein with the same metric code.

``protrnn evaluate`` parses its arguments and calls :func:`run_evaluation` (paths -> test sets, models, baselines),
which calls :func:`evaluate`. Outputs in ``OUTDIR`` (written and read back by :mod:`protrnn.evaluation.results`):

* ``per_protein.csv``: one row per (method, test set, protein): ``method, test_set, protein`` then every key of
  :func:`protrnn.evaluation.metrics.metric_keys` (``L`` first; NaN written as ``nan``).
* ``summary.json``: per method x test set, the mean of each metric over proteins, the number of proteins with a
  value and a percentile bootstrap interval over proteins (``low``/``high``); per test set its chance level
  (``chance``: the expected top-L/k precision of a random ranking, :func:`chance_level`); plus the command, the
  models' ``model.json`` paths, configs and the contact cutoff they were trained at (``contact_cutoff``, which
  must be every test set's), the learned baselines' training set and the contact cutoff they were
  learnt at (``contact_cutoff``: the training set's stored one, which must be every test set's), the test sets
  (with the cutoff they are scored at) with any leakage removed by ``prepare``, and skipped work.
* ``predictions/<method>/<test set>/<protein>.npz`` (optional, first N proteins of each set): ``probs``,
  ``contacts``, ``observed``, ``sequence``, ``id``, for contact-map figures in the report.

Every file is written atomically; the predictions folder is built beside the old one and swapped in, so a rerun
never mixes proteins from two runs. Methods see a test set chain by chain through groups bounded by
:func:`protrnn.data.packing.pack` (sum of L^2), so no more than a few L x L matrices are alive at once, and models
score long chains through their chunked pair scoring.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from protrnn.conventions import (
    DEFAULT_BINS,
    DEFAULT_CONTACT_CUTOFF,
    MIN_SEPARATION,
    named_test_set,
    split_of_test_set,
)
from protrnn.data.chain import ProteinChain
from protrnn.data.dataset import ChainDataset, load_dataset
from protrnn.data.packing import pack
from protrnn.errors import InputError, reading
from protrnn.evaluation.metrics import (
    BOOTSTRAP_RESAMPLES,
    INTERVAL_ALPHA,
    chance_precision,
    evaluate_contacts,
    metric_keys,
    summarize,
)
from protrnn.evaluation.results import (
    BASELINE_NAMES,
    PER_PROTEIN_FILE,
    PREDICTIONS_DIR,
    SUMMARY_FILE,
    SUMMARY_FORMAT,
    SUMMARY_FORMAT_VERSION,
    save_prediction,
    write_per_protein_csv,
    write_summary,
)
from protrnn.utils.io import SafeNamer, swapped_directory

#: Upper bound on sum(L^2) of the matrices one prediction call may return (float32: 4 bytes each -> 128 MB).
MAX_GROUP_PAIRS = 32_000_000
#: Leakage rows copied into summary.json per test set (the full table stays in prepare's leakage.tsv).
MAX_LEAKAGE_ROWS = 500


class Method(Protocol):
    """Anything that turns chains into L x L contact probabilities.

    ``predict`` returns one matrix per chain, or ``None`` for a chain the method cannot score (e.g. FreeContact on a
    protein without an alignment); ``kind`` is ``"model"`` or ``"baseline"``; ``info`` goes into summary.json.
    """

    name: str
    kind: str
    info: dict[str, Any]

    def predict(self, chains: Sequence[ProteinChain]) -> list[np.ndarray | None]: ...


@dataclass
class TestSet:
    """A named prepared test set (a ``ChainDataset``) and what ``prepare`` reported about it."""

    name: str
    path: Path
    chains: Sequence[ProteinChain]
    leakage: dict[str, Any] = field(default_factory=dict)
    contact_cutoff: float = DEFAULT_CONTACT_CUTOFF


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate` wrote, for callers that continue in Python."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    outdir: Path


# --------------------------------------------------------------------------------------------------------- parsing
def parse_baselines(value: str | None) -> list[str]:
    """``"random,separation"`` -> ``["random", "separation"]``; unknown names are an error listing the valid ones."""
    if not value:
        return []
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in BASELINE_NAMES]
    if unknown:
        raise InputError(f"--baselines: unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINE_NAMES)}")
    return list(dict.fromkeys(names))


def parse_bins(value: str | None) -> list[tuple[int, int | None]]:
    """``"6-11,12-23,24+"`` -> ``[(6, 11), (12, 23), (24, None)]``; None or empty gives :data:`DEFAULT_BINS`."""
    if not value or not value.strip():
        return list(DEFAULT_BINS)
    bins: list[tuple[int, int | None]] = []
    for part in (p.strip() for p in value.split(",")):
        match = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+)|(\+))", part)
        if match is None:
            raise InputError(f"--bins: {part!r} is not a separation bin LOW-HIGH or LOW+ (e.g. 6-11,12-23,24+)")
        low, high = int(match.group(1)), (None if match.group(3) else int(match.group(2)))
        if low < MIN_SEPARATION or (high is not None and high < low):
            raise InputError(f"--bins: {part!r} needs {MIN_SEPARATION} <= LOW <= HIGH (pairs closer than "
                             f"{MIN_SEPARATION} are never scored)")
        bins.append((low, high))
    if len(set(bins)) != len(bins):
        raise InputError(f"--bins: a bin is given twice in {value!r}")
    return bins


# ------------------------------------------------------------------------------------------------------- test sets
def load_test_set(name: str, path: str | Path) -> TestSet:
    """Load a prepared ``.npz`` test set; an empty set is an error (a mean over no proteins means nothing)."""
    path = Path(path)
    if not path.exists():
        raise InputError("test set file not found", path=path)
    chains = load_dataset(path)
    if len(chains) == 0:
        raise InputError(f"test set {name!r} is empty: no chains to evaluate", path=path)
    chains.check_meta()  # parsed on first use otherwise: a bad file would stop the run midway
    return TestSet(name=name, path=path, chains=chains, leakage=find_leakage(path, name),
                   contact_cutoff=chains.contact_cutoff)


def _mentions(row: Mapping[str, str], name: str) -> bool:
    """True when a leakage row concerns test set ``name``: its ``test_set`` column (prepare's leakage.tsv), or for
    other tables any cell equal to the name or an ID of the form ``name|id``."""
    if "test_set" in row:
        return (row.get("test_set") or "").strip() == name
    return any(isinstance(value, str) and (value.strip() == name or value.strip().startswith(f"{name}|"))
               for value in row.values())


def find_leakage(test_path: Path, name: str) -> dict[str, Any]:
    """What ``prepare`` removed because of this test set, read from ``leakage.tsv`` (and ``manifest.tsv``) beside
    the test set file; ``{}`` when neither is there. Overlaps are recorded, never silent.

    prepare names the file ``test_<NAME>.npz`` and writes ``NAME`` in leakage.tsv's ``test_set`` column; that name
    is used, so ``--test-set anything=data/test_ts50.npz`` still finds the rows of ``ts50``.
    """
    from protrnn.data.prepare import LEAKAGE_FILE, MANIFEST_FILE
    from protrnn.utils.io import read_tsv

    prepared = named_test_set(test_path.name.removesuffix(".npz")) or name
    info: dict[str, Any] = {}
    leakage_path = test_path.parent / LEAKAGE_FILE
    if leakage_path.is_file():
        with reading(leakage_path):
            rows = read_tsv(leakage_path)
        mine = [row for row in rows if _mentions(row, prepared)]
        info.update(leakage_tsv=str(leakage_path), prepared_name=prepared, leakage_rows_total=len(rows),
                    leakage_rows=len(mine), leakage=mine[:MAX_LEAKAGE_ROWS])
    manifest_path = test_path.parent / MANIFEST_FILE
    if manifest_path.is_file():
        with reading(manifest_path):
            rows = read_tsv(manifest_path)
        # absolute: protrnn compare reads it later, from wherever it runs (a relative path held only there)
        info.update(manifest_tsv=str(manifest_path.resolve()),
                    manifest_test_chains=sum(1 for row in rows if row.get("split") == split_of_test_set(prepared)))
    return info


# --------------------------------------------------------------------------------------------------------- methods
class ModelMethod:
    """An exported model directory (``model.json`` + ``model.safetensors``), an ensemble directory (the mean of its
    members, :func:`protrnn.model.io.save_ensemble`) or a Lightning ``.ckpt``."""

    kind = "model"

    def __init__(self, name: str, path: str | Path, *, device: str | None = None) -> None:
        self.name = name
        self.path = Path(path)
        if not self.path.exists():
            raise InputError("model not found", path=self.path)
        from protrnn.model.io import JSON_NAME, is_checkpoint
        from protrnn.model.predictor import load_model

        self.predictor = load_model(self.path, device=device)
        self.info: dict[str, Any] = {"kind": self.kind, "path": str(self.path)}
        if self.path.is_dir() and (self.path / JSON_NAME).is_file():
            self.info["model_json"] = str(self.path / JSON_NAME)
        elif is_checkpoint(self.path):
            self.info["checkpoint"] = str(self.path)
        self.info["config"] = self.predictor.metadata.get("config")
        self.info["contact_cutoff"] = self.predictor.contact_cutoff
        if len(self.predictor.models) > 1:  # an ensemble: config is its first member's
            self.info["ensemble_members"] = len(self.predictor.models)

    def check_cutoff(self, test_sets: Sequence[TestSet]) -> None:
        """The model's probabilities are for contacts at the cutoff it was trained at: a test set prepared at another
        one is a one-line :class:`InputError` naming the model, the test set and both cutoffs (as
        :func:`check_learned_cutoff` for the learned baselines, and ``protrnn predict --structures``)."""
        cutoff = self.predictor.contact_cutoff
        for test_set in test_sets:
            if test_set.contact_cutoff != cutoff:
                raise InputError(f"--model {self.name}: the model was trained at contact cutoff {cutoff:g} Å, but "
                                 f"test set {test_set.name!r} ({test_set.path}) was prepared at "
                                 f"{test_set.contact_cutoff:g} Å; its probabilities are not for these contacts: "
                                 f"prepare the test set at --contact-cutoff {cutoff:g}", path=self.path)

    def predict(self, chains: Sequence[ProteinChain]) -> list[np.ndarray | None]:
        return list(self.predictor.predict([chain.sequence for chain in chains]))


class BaselineMethod:
    """A baseline with ``predict(sequence) -> L x L`` (fitted beforehand where it needs training data)."""

    kind = "baseline"

    def __init__(self, name: str, baseline: Any, info: dict[str, Any] | None = None) -> None:
        self.name = name
        self.baseline = baseline
        self.info = {"kind": self.kind, **(info or {})}

    def predict(self, chains: Sequence[ProteinChain]) -> list[np.ndarray | None]:
        return [self.baseline.predict(chain.sequence) for chain in chains]


_PDB_CODE = re.compile(r"(?:^|[|/:])([0-9][A-Za-z0-9]{3})(?=_|$)")


class FreeContactMethod:
    """FreeContact on the proteins that come with a Pfam alignment (the Ollikainen-40 domains).

    A chain is matched to a domain by the PDB code in its ID (``1CTF_A_A``, ``ollikainen40|1ctf_A``) and mapped to
    alignment columns by :func:`protrnn.evaluation.baselines.ollikainen_columns`; chains without a domain, or whose
    residues do not map, are returned as ``None`` with the reason in :attr:`reasons` (reported, never silent).
    """

    kind = "baseline"

    def __init__(self, root: str | Path, threads: int = 2) -> None:
        from protrnn.evaluation import baselines as bl

        self._bl = bl
        self.name = "freecontact"
        self.root = Path(root)
        self.domains = bl.ollikainen_domains(self.root)
        self.baseline = bl.FreeContactBaseline(threads=threads)
        self.reasons: dict[str, str] = {}
        self.info = {"kind": self.kind, "ollikainen_root": str(self.root), "alignments": len(self.domains),
                     "parprof": self.baseline.parprof}

    def case_for(self, chain: ProteinChain) -> Any | None:
        """The Ollikainen-40 case whose PDB entry this chain comes from, or None."""
        for match in _PDB_CODE.finditer(chain.id):
            code = match.group(1).upper()
            if code in self.domains:
                return self._bl.load_ollikainen_case(self.root, code)
        return None

    def predict(self, chains: Sequence[ProteinChain]) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for chain in chains:
            case = self.case_for(chain)
            if case is None:
                self.reasons[chain.id] = "no Ollikainen-40 alignment for this protein"
                out.append(None)
                continue
            try:
                probs, _ = self._bl.freecontact_ollikainen(case, chain, self.baseline)
            except InputError as exc:
                self.reasons[chain.id] = f"residues do not map onto the {case.pfam} alignment: {exc}"
                out.append(None)
                continue
            except self._bl.FreeContactError as exc:  # one failed alignment is reported, not fatal for the set
                self.reasons[chain.id] = f"freecontact failed: {exc}"
                out.append(None)
                continue
            out.append(probs)
        return out


def check_learned_cutoff(train_path: Path, train_cutoff: float, test_sets: Sequence[TestSet]) -> None:
    """The learned baselines' contact rates are learnt at the training set's stored cutoff (``train_cutoff``) and
    scored at each test set's: a test set prepared at another cutoff is a one-line :class:`InputError` naming both
    files and both cutoffs (a rate of contacts below 8 Å ranks pairs for contacts below 6 Å by the wrong rate, and
    its precision would read as the baseline's)."""
    for test_set in test_sets:
        if test_set.contact_cutoff != train_cutoff:
            raise InputError(f"--baselines separation/propensity: the training set {train_path} was prepared at "
                             f"contact cutoff {train_cutoff:g} Å, but test set {test_set.name!r} ({test_set.path}) at "
                             f"{test_set.contact_cutoff:g} Å; a contact rate learnt at one cutoff does not score "
                             "contacts at another: prepare both at one --contact-cutoff")


def build_baselines(names: Sequence[str], *, train_path: str | Path | None = None,
                    ollikainen_root: str | Path | None = None, seed: int = 0, test_sets: Sequence[TestSet] = (),
                    log: Callable[[str], None] = print) -> tuple[list[Method], list[dict[str, str]]]:
    """Instantiate (and fit) the requested baselines; returns them and the baselines skipped, with reasons.

    ``separation`` and ``propensity`` learn from the training split (``train_path``, required for them), at its
    stored contact cutoff (recorded as the method's ``contact_cutoff``), which must be that of every one of
    ``test_sets`` (:func:`check_learned_cutoff`);
    ``freecontact`` needs the ``freecontact`` binary and the Ollikainen-40 alignments (``ollikainen_root``) and is
    skipped with a message when either is missing: it is a reference point, not the thing being measured.
    """
    from protrnn.evaluation import baselines as bl

    methods: list[Method] = []
    skipped: list[dict[str, str]] = []
    train_chains: Sequence[ProteinChain] = ()
    if any(name in ("separation", "propensity") for name in names):
        if train_path is None:
            raise InputError("--baselines separation/propensity are fitted on the training split: pass --train")
        train_path = Path(train_path)
        if not train_path.exists():
            raise InputError("training set file not found", path=train_path)
        train_chains = load_dataset(train_path)
        if len(train_chains) == 0:
            raise InputError("training set is empty: cannot fit the baselines", path=train_path)
        check_learned_cutoff(train_path, train_chains.contact_cutoff, test_sets)
    for name in names:
        if name == "random":
            methods.append(BaselineMethod(name, bl.RandomBaseline(seed=seed), {"seed": seed}))
        elif name in ("separation", "propensity"):
            model = bl.SeparationPrior() if name == "separation" else bl.PairPropensityBaseline()
            model.fit(train_chains)  # at the training set's stored cutoff (baselines.training_cutoff)
            methods.append(BaselineMethod(name, model, {"train": str(train_path),
                                                        "train_chains": len(train_chains),
                                                        "contact_cutoff": model.contact_cutoff}))
        elif name == "freecontact":
            reason = None
            if ollikainen_root is None:
                reason = ("it needs alignments: pass --ollikainen-root (the extracted ollikainen40 folder of "
                          "ollikainen40_pdb_msa_indices.tar.gz)")
            elif not bl.FreeContactBaseline.available():
                reason = "the `freecontact` binary is not on PATH (Debian package freecontact)"
            if reason is not None:
                log(f"protrnn evaluate: skipping baseline freecontact: {reason}")
                skipped.append({"method": name, "reason": reason})
            else:
                methods.append(FreeContactMethod(ollikainen_root))
    return methods, skipped


# ------------------------------------------------------------------------------------------------------ evaluation
def _groups(chains: Sequence[ProteinChain], max_pairs: int) -> Iterator[list[ProteinChain]]:
    """Consecutive groups of chains whose sum(L^2) stays under ``max_pairs`` (a chain alone may exceed it): the
    matrices one prediction call returns are held in memory together."""
    lengths = chains.lengths if isinstance(chains, ChainDataset) else [len(chain) for chain in chains]
    for group in pack(lengths, "given", max_pairs=max_pairs, pair_cost="sum"):
        yield [chains[index] for index in group]


def _check_prediction(probs: object, chain: ProteinChain, method: str, test_set: str) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float32)
    length = len(chain)
    if array.shape != (length, length):
        raise InputError(f"method {method!r}, test set {test_set!r}: prediction has shape {array.shape}, but the "
                         f"chain has {length} residues (expected ({length}, {length}))", record=chain.id)
    return array


def score_method(method: Method, test_set: TestSet, *, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
                 save_predictions: int = 0, predictions_dir: Path | None = None,
                 max_group_pairs: int = MAX_GROUP_PAIRS) -> tuple[list[dict[str, Any]], list[str]]:
    """Predict and score every chain of ``test_set`` with ``method``.

    Returns the per-protein rows (``method``, ``test_set``, ``protein`` + metrics) and the IDs of chains the
    method could not score. Saves the first ``save_predictions`` scored proteins under ``predictions_dir``.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    saved = 0
    namer = SafeNamer()
    for chains in _groups(test_set.chains, max_group_pairs):
        predictions = method.predict(chains)
        if len(predictions) != len(chains):
            raise InputError(f"method {method.name!r} returned {len(predictions)} predictions for "
                             f"{len(chains)} chains of test set {test_set.name!r}")
        for chain, probs in zip(chains, predictions, strict=True):
            if probs is None:
                skipped.append(chain.id)
                continue
            array = _check_prediction(probs, chain, method.name, test_set.name)
            contacts = chain.contact_map(test_set.contact_cutoff)
            metrics = evaluate_contacts(array, contacts, chain.observed, bins=bins, name=chain.id)
            rows.append({"method": method.name, "test_set": test_set.name, "protein": chain.id, **metrics})
            if predictions_dir is not None and saved < save_predictions:
                target = predictions_dir / method.name / test_set.name / f"{namer(chain.id)}.npz"
                save_prediction(target, chain, array, contacts)
                saved += 1
    return rows, skipped


def chance_level(test_set: TestSet, *, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
                 n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0, alpha: float = INTERVAL_ALPHA) -> dict[str, Any]:
    """The test set's chance level: the mean over its chains of :func:`~protrnn.evaluation.metrics.chance_precision`
    (the expected top-L/k precision of a random ranking), with bootstrap intervals like a method's, as summary.json's
    ``chance[<test set>]``: ``{"n_proteins": ..., "metrics": {key: {"mean", "n", "low", "high"}}}``. Every chain of
    the set counts, so it is the level of a method that scores them all."""
    rows = [chance_precision(chain.contact_map(test_set.contact_cutoff), chain.observed, bins=bins, name=chain.id)
            for chain in test_set.chains]
    return {"n_proteins": len(rows), "metrics": summarize(rows, n_boot=n_boot, seed=seed, alpha=alpha)}


@contextlib.contextmanager
def _removed_if_left_empty(directory: Path) -> Iterator[None]:
    """If the block fails, remove again the folders it created for ``directory`` (it and missing parents) that it
    left empty: a failed run leaves no empty OUTDIR behind (anything in them is kept)."""
    missing = [folder for folder in (directory, *directory.parents) if not folder.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def evaluate(methods: Sequence[Method], test_sets: Sequence[TestSet], outdir: str | Path, *,
             n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0, alpha: float = INTERVAL_ALPHA, save_predictions: int = 0,
             bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS, command: str | None = None,
             skipped_methods: Sequence[dict[str, str]] = (),
             log: Callable[[str], None] = print) -> EvaluationResult:
    """Score every method on every test set; write ``per_protein.csv``, ``summary.json`` and predictions.

    Raises:
        InputError: no method or test set, a prediction whose shape does not match its chain (naming the
            protein), an invalid score, or bootstrap settings out of range.
    """
    if not methods:
        raise InputError("nothing to evaluate: give at least one --model or --baselines")
    if not test_sets:
        raise InputError("nothing to evaluate on: give at least one --test-set NAME=PATH.npz")
    if n_boot < 1 or save_predictions < 0:
        raise InputError(f"need --bootstrap >= 1 and --save-predictions >= 0 (got {n_boot}, {save_predictions})")
    outdir = Path(outdir)
    keys = metric_keys(bins=bins)
    all_rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    skipped: list[dict[str, Any]] = list(skipped_methods)
    started = time.time()
    with _removed_if_left_empty(outdir), swapped_directory(outdir / PREDICTIONS_DIR) as staging:
        for method in methods:
            results[method.name] = {}
            for test_set in test_sets:
                tick = time.time()
                rows, unscored = score_method(method, test_set, bins=bins, save_predictions=save_predictions,
                                              predictions_dir=staging)
                if unscored:
                    reasons = getattr(method, "reasons", {})
                    skipped.append({"method": method.name, "test_set": test_set.name, "n_proteins": len(unscored),
                                    "proteins": {pid: reasons.get(pid, "not scored") for pid in unscored}})
                    log(f"protrnn evaluate: {method.name} skipped {len(unscored)} of {len(test_set.chains)} "
                        f"proteins of {test_set.name} (no input for them; listed in summary.json)")
                if not rows:
                    continue
                metrics = summarize([{k: r[k] for k in keys if k in r} for r in rows], n_boot=n_boot,
                                    seed=seed, alpha=alpha)
                results[method.name][test_set.name] = {"n_proteins": len(rows), "n_skipped": len(unscored),
                                                       "metrics": metrics}
                all_rows.extend(rows)
                main = metrics.get("medium_long/P@L/5", {})
                log(f"protrnn evaluate: {method.name} on {test_set.name}: {len(rows)} proteins, "
                    f"medium+long P@L/5 = {main.get('mean', math.nan):.3f} "
                    f"[{main.get('low', math.nan):.3f}, {main.get('high', math.nan):.3f}] "
                    f"({time.time() - tick:.1f} s)")
            if not results[method.name]:
                del results[method.name]
        if not all_rows:
            raise InputError("no protein was scored by any method (see the skipped messages above)")
        chance = {test_set.name: chance_level(test_set, bins=bins, n_boot=n_boot, seed=seed, alpha=alpha)
                  for test_set in test_sets}
        summary = {
            "format": SUMMARY_FORMAT,
            "format_version": SUMMARY_FORMAT_VERSION,
            "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seconds": round(time.time() - started, 2),
            "bootstrap": {"n_boot": n_boot, "seed": seed, "alpha": alpha, "level": 1 - alpha,
                          "method": "percentile, proteins resampled with replacement"},
            "bins": [list(b) for b in bins],
            "metric_keys": keys,
            "methods": {m.name: m.info for m in methods},
            "test_sets": {t.name: {"path": str(t.path), "n_chains": len(t.chains), "contact_cutoff": t.contact_cutoff,
                                   **t.leakage} for t in test_sets},
            "results": results,
            "chance": chance,
            "skipped": skipped,
            "predictions": {"per_test_set": save_predictions, "dir": PREDICTIONS_DIR} if save_predictions else None,
        }
        # written once everything they hold is computed: a failure before leaves an earlier run's files as they were
        write_per_protein_csv(outdir / PER_PROTEIN_FILE, all_rows, keys)
        write_summary(outdir / SUMMARY_FILE, summary)
    if not save_predictions:
        shutil.rmtree(outdir / PREDICTIONS_DIR, ignore_errors=True)
    return EvaluationResult(rows=all_rows, summary=summary, outdir=outdir)


def run_evaluation(models: Mapping[str, Path], test_sets: Mapping[str, Path], outdir: str | Path, *,
                   baselines: Sequence[str] = (), train_path: str | Path | None = None,
                   ollikainen_root: str | Path | None = None, device: str | None = None,
                   n_boot: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0, save_predictions: int = 0, bins: Sequence[tuple[int, int | None]] = DEFAULT_BINS,
                   command: str | None = None, log: Callable[[str], None] = print) -> EvaluationResult:
    """``protrnn evaluate`` from paths: load the test sets and models (``{name: path}``), build the baselines, and
    :func:`evaluate`. ``ollikainen_root`` may be the Ollikainen-40 folder or the tarball it ships in (unpacked for
    this run only)."""
    from protrnn.evaluation.baselines import ollikainen_folder

    if not models and not baselines:
        raise InputError("nothing to evaluate: give --model NAME=PATH and/or --baselines LIST")
    if not test_sets:
        raise InputError("no test set: give --test-set NAME=PATH.npz")
    clash = set(models) & set(baselines)
    if clash:
        raise InputError(f"--model name {sorted(clash)[0]!r} is also a baseline name; rename the model")
    loaded = [load_test_set(name, path) for name, path in test_sets.items()]
    model_methods = [ModelMethod(name, path, device=device) for name, path in models.items()]
    for method in model_methods:
        method.check_cutoff(loaded)
    methods: list[Method] = list(model_methods)
    with ollikainen_folder(ollikainen_root) as root:
        baseline_methods, skipped = build_baselines(baselines, train_path=train_path, ollikainen_root=root,
                                                    seed=seed, test_sets=loaded, log=log)
        methods += baseline_methods
        if not methods:
            raise InputError("every requested method was skipped (see the messages above)")
        return evaluate(methods, loaded, outdir, n_boot=n_boot, seed=seed, save_predictions=save_predictions,
                        bins=bins, command=command, skipped_methods=skipped, log=log)


