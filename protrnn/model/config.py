"""Architecture hyper-parameters of a contact model, validated before anything is built or trained.

The same dataclass is written to ``model.json`` on export, so a saved model rebuilds without pickles.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from protrnn.conventions import DEFAULT_CONTACT_CUTOFF
from protrnn.errors import InputError

#: The recurrent encoder's initialisation settings: they decide the weights a run starts from and nothing a network
#: computes from given weights (a pretrained encoder's replace a contact model's: protrnn.report.findings).
INIT_SETTINGS = ("orthogonal_init", "forget_bias", "chrono_init", "chrono_tmax")

CELLS = ("lstm", "gru", "rnn")
HEADS = ("pairwise", "resnet2d")
#: How the heads embed the separation |i - j|: ``capped`` (one bin per separation up to ``max_separation``) or
#: ``log`` (exact below :data:`LOG_SEPARATION_EXACT`, then :data:`LOG_SEPARATION_PER_OCTAVE` bins per doubling).
SEPARATIONS = ("capped", "log")
#: Below this separation the ``log`` scheme keeps one bin per separation.
LOG_SEPARATION_EXACT = 16
#: Bins per doubling of the separation beyond :data:`LOG_SEPARATION_EXACT` in the ``log`` scheme.
LOG_SEPARATION_PER_OCTAVE = 4
#: Distogram bin edges (Å) of the ``distogram`` recipes: 4-20 Å in 1 Å steps, so classes are ``< 4``,
#: ``[4, 5)`` ... ``[19, 20)`` and ``>= 20`` (18 classes); the contact cutoff 8 Å is an edge.
DEFAULT_DISTOGRAM_BINS = [float(edge) for edge in range(4, 21)]
#: Largest finite float32 (``torch.finfo(torch.float32).max``): a value written into float32 weights must not exceed it.
FLOAT32_MAX = 3.4028234663852886e38
#: Most recurrent layers (``num_layers``) and residual blocks (``head_blocks``) a config may ask for. Far beyond any
#: trainable network, it bounds the modules a hand-edited config makes a loader build (each one a Python object, even
#: on the ``meta`` device where :mod:`protrnn.model.io` checks the weights' shapes before allocating any memory).
MAX_MODULE_COUNT = 1024


def separation_bin(separation: int, scheme: str, max_separation: int) -> int:
    """The embedding row of a separation ``|i - j|`` (pure-Python twin of the heads' tensor version, for documentation
    and tests). Separations at or beyond ``max_separation`` share the last row."""
    s = min(int(separation), max_separation)
    if scheme == "capped" or s < LOG_SEPARATION_EXACT:
        return s
    return LOG_SEPARATION_EXACT + int(math.floor(LOG_SEPARATION_PER_OCTAVE * math.log2(s / LOG_SEPARATION_EXACT)))


def _is_int(value: object) -> bool:
    """An integer from a config file or JSON, not a bool (``True`` is an ``int`` to Python, never a size here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """A real number from a config file or JSON (int or float), not a string or a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class ModelConfig:
    """Encoder + head configuration.

    Encoder (bidirectional, ``hidden_size`` per direction):
        cell: ``lstm``, ``gru`` or ``rnn`` (tanh).
        gradient_horizon: truncated BPTT window k. The forward state runs over the whole chain, but its gradient
            is cut every k steps in both directions, so ∂output_t/∂input_s = 0 when a cut lies between t and s.
            ``None`` (default) means no cut.
        forget_bias: LSTM forget-gate bias at init (e.g. 1.0; Jozefowicz et al. 2015). ``None`` keeps PyTorch's;
            ignored by GRU and tanh cells.
        chrono_init / chrono_tmax: LSTM chrono init (Tallec & Ollivier 2018): b_f ~ log U(1, T_max − 1), b_i = −b_f.
        orthogonal_init: orthogonal recurrent weight matrices (norm preserving).
        residual / layer_norm: residual connections and layer norm between recurrent layers.
    Head:
        head: ``pairwise`` (per-pair MLP over h_i, h_j and a separation embedding: all context comes from the
            recurrent encoder) or ``resnet2d`` (outer features → dilated residual 2D convolutions).
        head_dropout: ``resnet2d`` only: dropout rate on each residual block's branch, applied to the branch output
            (elementwise) before it is added to the identity, in training mode with autograd only (evaluation,
            validation and prediction never drop anything). 0 (default) = none, as in every model before it.
        max_separation / separation: the separation embedding. ``capped`` (default; the original models): one
            learned vector per separation 0..max_separation, every farther pair sharing the last. ``log``: one per
            separation below 16, then 4 per doubling (bins start at 16, 20, 23, 27, 32, ... 64 ... 512 ...) up to
            ``max_separation``, so 64 and 640 differ with few parameters. Pairs farther than ``max_separation``
            share its bin: set it no farther than the longest separation training shows the model (the training
            window), so that bin has been trained; a chain longer than anything seen in training then treats its
            farthest pairs like the farthest it was trained on.
        distogram_bins: ``None`` (default): one output per pair, the contact logit, trained with binary
            cross-entropy. A list of increasing distance edges in Å (e.g. :data:`DEFAULT_DISTOGRAM_BINS`): the head
            outputs ``len(edges) + 1`` distance-class logits per pair (Cβ-Cβ ``< e0``, ``[e0, e1)``, ... ``>= e_last``),
            trained with cross-entropy, and the contact probability is the probability mass below the contact cutoff
            (8 Å, which must be one of the edges; training refuses data at another ``data.contact_cutoff``:
            :meth:`protrnn.training.module.ContactLightningModule.check_data_settings`).
        pair_chunk_size: at inference, pairs are scored in tiles of this many rows/columns to bound memory.
    """

    vocab_size: int = 22
    cell: str = "lstm"
    embed_dim: int = 32
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    residual: bool = True
    layer_norm: bool = True
    orthogonal_init: bool = True
    forget_bias: float | None = 1.0
    chrono_init: bool = False
    chrono_tmax: int = 200
    gradient_horizon: int | None = None
    head: str = "resnet2d"
    pair_dim: int = 64
    head_blocks: int = 6
    head_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    head_dropout: float = 0.0
    max_separation: int = 64
    separation: str = "capped"
    distogram_bins: list[float] | None = None
    pair_chunk_size: int = 256

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(key: str, why: str) -> InputError:
            return InputError(f"model config key {key!r}: {why}")

        if self.cell not in CELLS:
            raise bad("cell", f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.head not in HEADS:
            raise bad("head", f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        for key in ("vocab_size", "embed_dim", "hidden_size", "num_layers", "pair_dim", "max_separation",
                    "pair_chunk_size", "chrono_tmax"):
            value = getattr(self, key)
            if not _is_int(value) or value < 1:
                raise bad(key, f"must be a positive integer, got {value!r}")
        if not _is_int(self.head_blocks) or self.head_blocks < 0:
            raise bad("head_blocks", f"must be a non-negative integer, got {self.head_blocks!r}")
        for key in ("num_layers", "head_blocks"):
            if getattr(self, key) > MAX_MODULE_COUNT:
                raise bad(key, f"must be at most {MAX_MODULE_COUNT}, got {getattr(self, key)!r}")
        for key in ("residual", "layer_norm", "orthogonal_init", "chrono_init"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if not _is_number(self.head_dropout) or not 0.0 <= self.head_dropout < 1.0:
            raise bad("head_dropout", f"must be in [0, 1), got {self.head_dropout!r}")
        if self.head_dropout and (self.head != "resnet2d" or self.head_blocks == 0):
            raise bad("head_dropout", "applies to the residual blocks of the resnet2d head, and this model has none")
        if self.gradient_horizon is not None and (not _is_int(self.gradient_horizon) or self.gradient_horizon < 1):
            raise bad("gradient_horizon", f"must be a positive integer or null, got {self.gradient_horizon!r}")
        if self.forget_bias is not None and not (_is_number(self.forget_bias)
                                                 and abs(self.forget_bias) <= FLOAT32_MAX):
            raise bad("forget_bias", f"must be a finite number within float32's range (|b| <= {FLOAT32_MAX:.4g}) or "
                                     f"null, got {self.forget_bias!r}")
        if self.chrono_init and self.cell != "lstm":
            raise bad("chrono_init", f"applies to LSTM cells only, not {self.cell!r}")
        if self.chrono_init and self.chrono_tmax < 3:
            raise bad("chrono_tmax", "must be at least 3")
        if self.separation not in SEPARATIONS:
            raise bad("separation", f"unknown scheme {self.separation!r}; choose one of {', '.join(SEPARATIONS)}")
        if self.distogram_bins is not None:
            edges = self.distogram_bins
            if (not isinstance(edges, list) or len(edges) < 2 or not all(_is_number(e) and math.isfinite(e)
                                                                         and e > 0 for e in edges)
                    or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True))):
                raise bad("distogram_bins", f"must be null or a list of >= 2 increasing positive distances, "
                                            f"got {edges!r}")
            if DEFAULT_CONTACT_CUTOFF not in [float(e) for e in edges]:
                raise bad("distogram_bins", f"must include the contact cutoff {DEFAULT_CONTACT_CUTOFF:g} Å as an "
                                            f"edge (contact probability is the mass below it), got {edges!r}")
            self.distogram_bins = [float(e) for e in edges]
        if (not isinstance(self.head_dilations, (list, tuple)) or not self.head_dilations
                or any(not _is_int(d) or d < 1 for d in self.head_dilations)):
            raise bad("head_dilations", f"must be a non-empty list of positive integers, got {self.head_dilations!r}")
        self.head_dilations = list(self.head_dilations)

    @property
    def separation_bins(self) -> int:
        """Rows of the heads' separation embedding."""
        return separation_bin(self.max_separation, self.separation, self.max_separation) + 1

    @property
    def pair_outputs(self) -> int:
        """Outputs per pair: 1 (contact logit) or the number of distance classes."""
        return 1 if self.distogram_bins is None else len(self.distogram_bins) + 1

    @property
    def contact_classes(self) -> int:
        """Distance classes below the contact cutoff (0 for a binary head)."""
        if self.distogram_bins is None:
            return 0
        return self.distogram_bins.index(DEFAULT_CONTACT_CUTOFF) + 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(repr(key) for key in set(data) - known)  # repr: a key may be no str (a checkpoint's)
        if unknown:
            raise InputError(f"model config: unknown key(s) {', '.join(unknown)}")
        return cls(**data)  # type: ignore[arg-type]
