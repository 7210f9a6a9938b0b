"""The single place that maps residue letters to model tokens.

Conventions (documented in docs/conventions.md, enforced here):

* 20 standard amino acids ``ACDEFGHIKLMNPQRSTVWY`` get their own token.
* Lowercase letters are accepted and upper-cased (a3m/soft-masked FASTA marks residues in lowercase).
* ``X`` and the ambiguity codes ``B`` (D/N), ``Z`` (E/Q), ``J`` (I/L) map to the unknown token.
* ``U`` (selenocysteine) maps to ``C`` and ``O`` (pyrrolysine) to ``K``, their parent amino acids, as in structures.
* Alignment gaps ``-`` and ``.`` are removed: a record is read as the ungapped sequence it describes.
* One trailing ``*`` (a stop codon in translated FASTA) is removed; a ``*`` anywhere else is an error.
* Anything else is an :class:`~protrnn.errors.InputError` naming the record and the 1-based position (a byte that was
  not UTF-8, read by the FASTA reader as a lone surrogate U+DC80..U+DCFF, is named as that byte).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protrnn.errors import InputError
from protrnn.utils.io import escape_code_point, undecoded_byte

STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
PAD_TOKEN = 0
UNK_TOKEN = 1
_FIRST_RESIDUE_TOKEN = 2

#: Letters mapped to a parent residue before tokenising.
PARENT_LETTER = {"U": "C", "O": "K"}
#: Letters read as "unknown residue".
UNKNOWN_LETTERS = frozenset("XBZJ")
GAP_LETTERS = frozenset("-.")


@dataclass(frozen=True)
class Alphabet:
    """Token vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, then the 20 standard amino acids."""

    residues: str = STANDARD_AMINO_ACIDS

    @property
    def size(self) -> int:
        return _FIRST_RESIDUE_TOKEN + len(self.residues)

    @property
    def padding_idx(self) -> int:
        return PAD_TOKEN

    @property
    def unknown_idx(self) -> int:
        return UNK_TOKEN

    def to_dict(self) -> dict[str, object]:
        """JSON description stored beside exported weights so a model can check what it was trained with."""
        return {"residues": self.residues, "pad": PAD_TOKEN, "unk": UNK_TOKEN, "first_residue": _FIRST_RESIDUE_TOKEN}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Alphabet:
        if (data.get("pad"), data.get("unk"), data.get("first_residue")) != (PAD_TOKEN, UNK_TOKEN, _FIRST_RESIDUE_TOKEN):
            raise InputError(f"unsupported alphabet layout {data!r}")
        return cls(residues=str(data["residues"]))

    def clean(self, sequence: str, *, record: str | None = None, path: object | None = None) -> str:
        """Return the canonical upper-case sequence (gaps and a trailing stop removed, U/O mapped).

        Raises :class:`InputError` at the first letter that is not a residue, naming its 1-based position
        in the record as given: leading and trailing whitespace is removed, but counted (``"  AC#"`` names
        position 5, the ``#`` of the string passed in).
        """
        leading = len(sequence) - len(sequence.lstrip())
        text = sequence[leading:].rstrip()
        if text.endswith("*"):
            text = text[:-1]
        out = []
        valid = set(self.residues) | UNKNOWN_LETTERS | set(PARENT_LETTER)
        for index, letter in enumerate(text, start=leading + 1):
            upper = letter.upper() if letter.isascii() else letter  # 'ı'.upper() == 'I': no Unicode folding
            if upper in valid:
                out.append(PARENT_LETTER.get(upper, upper))
            elif letter in GAP_LETTERS:
                continue
            else:
                raise InputError(f"invalid residue letter {shown_letter(letter)}", path=path, record=record,
                                 position=index)
        return "".join(out)

    def encode(self, sequence: str) -> np.ndarray:
        """Tokens (uint8) for a cleaned sequence; letters outside the 20 standard ones become ``<unk>``."""
        table = np.full(256, UNK_TOKEN, dtype=np.uint8)
        for offset, letter in enumerate(self.residues):
            table[ord(letter)] = _FIRST_RESIDUE_TOKEN + offset
        raw = np.frombuffer(sequence.upper().encode("ascii", errors="replace"), dtype=np.uint8)
        return table[raw]

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        letters = []
        for token in np.asarray(tokens).tolist():
            if token == PAD_TOKEN:
                continue
            letters.append("X" if token == UNK_TOKEN else self.residues[token - _FIRST_RESIDUE_TOKEN])
        return "".join(letters)


def shown_letter(letter: str) -> str:
    """A letter as an error message shows it: quoted when printable (``'7'``, ``'é'``), else as an escape
    (``\\x01``, ``\\ufeff``, ``\\U000e0001``); a byte that was not UTF-8 (a lone surrogate left by
    ``errors="surrogateescape"``) as that byte (``(byte 0xff, not UTF-8)``)."""
    if letter.isprintable():
        return repr(letter)
    byte = undecoded_byte(letter)
    if byte is not None:
        return f"(byte 0x{byte:02x}, not UTF-8)"
    return escape_code_point(letter)


DEFAULT_ALPHABET = Alphabet()
