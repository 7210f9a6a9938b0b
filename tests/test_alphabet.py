"""The one residue -> token mapping, and the documented cleaning rules (issue #2 item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from protrnn.alphabet import DEFAULT_ALPHABET, PAD_TOKEN, STANDARD_AMINO_ACIDS, UNK_TOKEN, Alphabet
from protrnn.errors import InputError


def test_tokens_are_pad_unk_then_twenty_amino_acids() -> None:
    assert DEFAULT_ALPHABET.size == 22 and DEFAULT_ALPHABET.padding_idx == PAD_TOKEN == 0
    tokens = DEFAULT_ALPHABET.encode(STANDARD_AMINO_ACIDS)
    assert tokens.dtype == np.uint8
    assert tokens.tolist() == list(range(2, 22))
    assert DEFAULT_ALPHABET.decode(tokens) == STANDARD_AMINO_ACIDS
    assert DEFAULT_ALPHABET.encode("XBZJ").tolist() == [UNK_TOKEN] * 4
    assert DEFAULT_ALPHABET.decode([0, 2, 1, 0]) == "AX", "padding is dropped, unknown decodes as X"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("acdef", "ACDEF"),  # lowercase (a3m insertions, soft-masking) is upper-cased
        ("AC-D.E", "ACDE"),  # alignment gaps are removed
        ("MKV*", "MKV"),  # one trailing stop is removed
        ("AUO", "ACK"),  # selenocysteine / pyrrolysine -> parent residues
        ("XBZJ", "XBZJ"),  # unknown / ambiguous letters are kept (and tokenised as <unk>)
        ("  MKV\n", "MKV"),
    ],
)
def test_clean_rules(raw: str, clean: str) -> None:
    assert DEFAULT_ALPHABET.clean(raw) == clean


@pytest.mark.parametrize(("raw", "position", "shown"), [("AC*D", 3, "'*'"), ("MK1V", 3, "'1'"),
                                                          ("AB\x01", 3, "\\x01"), ("A**", 2, "'*'"),
                                                          # Unicode letters whose upper case is ASCII ('ı' -> 'I')
                                                          ("A\u0131V", 2, "'\u0131'"), ("M\u017f", 2, "'\u017f'")])
def test_clean_error_names_record_and_position(raw: str, position: int, shown: str) -> None:
    with pytest.raises(InputError) as info:
        DEFAULT_ALPHABET.clean(raw, record="seq1", path="in.fasta")
    message = str(info.value)
    assert message.startswith("in.fasta, record 'seq1', position ")
    assert info.value.position == position and shown in message and "\n" not in message


def test_alphabet_round_trips_through_its_json_description() -> None:
    assert Alphabet.from_dict(DEFAULT_ALPHABET.to_dict()) == DEFAULT_ALPHABET
    with pytest.raises(InputError, match="unsupported alphabet layout"):
        Alphabet.from_dict({**DEFAULT_ALPHABET.to_dict(), "pad": 5})


@pytest.mark.parametrize(("letter", "shown"), [("\x07", "\\x07"), ("\x9b", "\\x9b"), ("\ufeff", "\\ufeff"),
                                               ("\u202e", "\\u202e"), ("\U000e0001", "\\U000e0001"),
                                               ("\udcff", "(byte 0xff, not UTF-8)")])
def test_a_letter_that_cannot_be_shown_is_escaped_by_its_code_point(letter: str, shown: str) -> None:
    """Escapes as Python writes them (``\\xNN``, ``\\uNNNN``, ``\\UNNNNNNNN``); U+FEFF was shown as ``\\xfeff``."""
    with pytest.raises(InputError) as info:
        DEFAULT_ALPHABET.clean("MK" + letter, record="r")
    assert str(info.value) == f"record 'r', position 3: invalid residue letter {shown}"


@pytest.mark.parametrize(("raw", "position"), [("  AC#DE", 5), ("\tMK1", 4), ("\n \r\nAB!", 7), ("AC#  ", 3),
                                               ("   MKV**", 7)])  # the trailing * goes, the one before it not
def test_positions_count_the_leading_whitespace_that_clean_removes(raw: str, position: int) -> None:
    """The 1-based position in the record as given (the docstring's promise): whitespace that is stripped still
    counts, so ``raw[position - 1]`` is the letter named (positions used to count from the first non-blank)."""
    with pytest.raises(InputError) as info:
        DEFAULT_ALPHABET.clean(raw, record="r")
    assert info.value.position == position
    assert str(info.value) == f"record 'r', position {position}: invalid residue letter {raw[position - 1]!r}"
