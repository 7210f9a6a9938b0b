"""Architecture hyper-parameters of a contact model, validated before anything is built or trained.

The same dataclass is written to ``model.json`` on export, so a saved model rebuilds without pickles.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

from protrnn.errors import InputError

CELLS = ("lstm", "gru", "rnn")
HEADS = ("pairwise", "resnet2d")


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
    max_separation: int = 64
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
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(key, f"must be a positive integer, got {value!r}")
        if not isinstance(self.head_blocks, int) or self.head_blocks < 0:
            raise bad("head_blocks", f"must be a non-negative integer, got {self.head_blocks!r}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if self.gradient_horizon is not None and (
            not isinstance(self.gradient_horizon, int) or isinstance(self.gradient_horizon, bool)
            or self.gradient_horizon < 1
        ):
            raise bad("gradient_horizon", f"must be a positive integer or null, got {self.gradient_horizon!r}")
        if self.forget_bias is not None and not (_is_number(self.forget_bias) and math.isfinite(self.forget_bias)):
            raise bad("forget_bias", f"must be a finite number or null, got {self.forget_bias!r}")
        if self.chrono_init and self.cell != "lstm":
            raise bad("chrono_init", f"applies to LSTM cells only, not {self.cell!r}")
        if self.chrono_init and self.chrono_tmax < 3:
            raise bad("chrono_tmax", "must be at least 3")
        if not self.head_dilations or any((not isinstance(d, int)) or d < 1 for d in self.head_dilations):
            raise bad("head_dilations", f"must be a non-empty list of positive integers, got {self.head_dilations!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model config: unknown key(s) {', '.join(map(repr, unknown))}")
        return cls(**data)  # type: ignore[arg-type]
