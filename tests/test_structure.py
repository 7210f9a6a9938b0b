"""read_structure on real PDB entries (PSICOV150 originals) and on small synthetic files for the edge cases."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from Bio import SeqIO

from protrnn.data.chain import virtual_cb
from protrnn.data.structure import MAX_NUMBERING_GAP, parse_structure_text, read_structure
from protrnn.errors import InputError

ORG = "psicov150_gremlin_rf/psicov150_org_pdb.tar.gz"
CLEAN = "psicov150_gremlin_rf/psicov150_clean_chainA_pdb_fasta.tar.gz"


@pytest.fixture(scope="module")
def org(extracted: Callable[[str], Path]) -> Path:
    return extracted(ORG) / "psicov150" / "org_pdb"


@pytest.fixture(scope="module")
def clean(extracted: Callable[[str], Path]) -> Path:
    return extracted(CLEAN) / "psicov150"


def _seqres(path: Path, chain: str) -> str:
    return next(str(r.seq) for r in SeqIO.parse(path, "pdb-seqres") if r.annotations["chain"] == chain)


# ------------------------------------------------------------------------------------------------------ real entries
def test_psicov150_chain_a_sequence_is_the_deposited_seqres(org: Path, clean: Path) -> None:
    files = sorted(org.glob("*.pdb"))
    assert len(files) == 150
    for path in files:
        chain = read_structure(path, "A")
        assert chain.meta["sequence_source"] == "seqres", path.name
        assert chain.sequence == _seqres(path, "A"), path.name
        assert chain.id == f"{path.stem}_A"
        # Observed residues are the residues of the cleaned chain-A file, up to residues clean_pdb trimmed at the ends.
        observed = "".join(np.array(list(chain.sequence))[chain.observed])
        cleaned = str(next(SeqIO.parse(clean / "fasta" / f"{path.stem}.fasta", "fasta")).seq)
        assert cleaned in observed or observed in cleaned, path.name
        assert np.isnan(chain.coords[~chain.observed]).all() and not np.isnan(chain.coords[chain.observed]).any()


def test_missing_residues_are_masked_so_separation_is_true(org: Path, clean: Path) -> None:
    """1dmg chain A lacks residues 43-95 (REMARK 465), and 186-191 are modelled with occupancy 0 (not observed).
    The renumbered clean file shifts every contact across these gaps; ours keeps author spacing."""
    ours = read_structure(org / "1dmg.pdb", "A")
    renumbered = read_structure(clean / "pdb" / "1dmg.pdb")
    assert renumbered.meta["sequence_source"] == "numbering" and renumbered.observed.all()
    index = np.flatnonzero(ours.observed)
    assert len(index) == len(renumbered)
    jumps = np.flatnonzero(np.diff(index) > 1)
    assert len(jumps) == 2
    assert [(ours.meta["numbering"][index[k]], ours.meta["numbering"][index[k + 1]]) for k in jumps] == [
        ("42", "96"), ("185", "192")]
    before, after = index[jumps[0]], index[jumps[0] + 1]
    numbering = ours.meta["numbering"]
    gap = after - before - 1
    assert gap == 53 and int(numbering[after]) - int(numbering[before]) == gap + 1
    assert not ours.observed[before + 1: after].any()
    # Same geometry, so the same contacts, but at shifted (renumbered) vs true (ours) separations.
    sub = ours.contact_map()[np.ix_(index, index)]
    assert np.array_equal(sub, renumbered.contact_map())
    i, j = np.nonzero(np.triu(renumbered.contact_map(), 6))
    across = (i <= jumps[0]) & (j > jumps[0])
    assert across.any(), "1dmg has contacts across the gap"
    author = np.array([int(numbering[k]) for k in index])  # 1dmg chain A has no insertion codes
    ours_sep, renumbered_sep = index[j] - index[i], j - i
    assert np.array_equal(ours_sep, author[j] - author[i]), "our separation is the author-numbering separation"
    assert np.all(renumbered_sep[across] <= ours_sep[across] - gap), "the renumbered file understates it"
    # pair_mask and contact_map agree that unobserved rows are never scored
    assert not ours.pair_mask()[before + 1].any() and not ours.contact_map()[before + 1].any()


def test_every_internal_gap_matches_author_numbering(org: Path) -> None:
    checked = 0
    for stem in ("1cke", "1dbx", "1f6b", "1j3a", "1ne2", "1qjp", "3bor", "1wkc"):
        chain = read_structure(org / f"{stem}.pdb", "A")
        index = np.flatnonzero(chain.observed)
        numbering = chain.meta["numbering"]
        for a, b in zip(index[:-1], index[1:], strict=True):
            if b - a > 1:
                assert int(numbering[b]) - int(numbering[a]) == b - a, (stem, numbering[a], numbering[b])
                checked += 1
    assert checked >= 10


def test_virtual_cb_within_0_2_angstrom_of_real_cb(org: Path) -> None:
    """Virtual Cβ (ideal geometry from N, Cα, C) vs the deposited Cβ over 20 PSICOV150 chains, non-Gly residues."""
    from Bio.PDB import PDBParser

    parser = PDBParser(QUIET=True)
    deviations = []
    for path in sorted(org.glob("*.pdb"))[:20]:
        for residue in parser.get_structure(path.stem, path)[0]["A"]:
            if residue.id[0] == " " and residue.get_resname() != "GLY" and all(
                    a in residue for a in ("N", "CA", "C", "CB")):
                built = virtual_cb(*(residue[a].coord.astype(np.float64) for a in ("N", "CA", "C")))
                deviations.append(float(np.linalg.norm(built - residue["CB"].coord)))
    deviations_arr = np.array(deviations)
    assert len(deviations_arr) > 2000
    # measured on this set: mean 0.099 A, median 0.081 A, max 2.52 A (a strained or mis-modelled side chain)
    assert deviations_arr.mean() < 0.2
    assert np.median(deviations_arr) < 0.1


def test_real_cb_kept_and_glycine_uses_ca(org: Path) -> None:
    chain = read_structure(org / "1a3a.pdb", "A")
    from Bio.PDB import PDBParser

    residues = {f"{r.id[1]}{r.id[2].strip()}": r for r in PDBParser(QUIET=True).get_structure("x", org / "1a3a.pdb")[0]["A"]}
    for k, label in enumerate(chain.meta["numbering"]):
        if not chain.observed[k]:
            continue
        residue = residues[label]
        expected = residue["CA"].coord if residue.get_resname() == "GLY" else residue["CB"].coord
        np.testing.assert_allclose(chain.coords[k, 3], expected, atol=1e-3)


def test_selenomethionine_is_methionine(org: Path) -> None:
    path = org / "1dbx.pdb"
    mse = sorted({int(line[22:26]) for line in path.read_text().splitlines()
                  if line.startswith("HETATM") and line[17:20] == "MSE" and line[21] == "A"})
    assert mse
    chain = read_structure(path, "A")
    numbering = chain.meta["numbering"]
    for number in mse:
        k = numbering.index(str(number))
        assert chain.sequence[k] == "M" and chain.observed[k]


def test_highest_occupancy_altloc_is_used(org: Path) -> None:
    """1a6m chain A has Cβ altlocs where B (occupancy 0.5x) outweighs A (0.4x)."""
    path = org / "1a6m.pdb"
    best: dict[str, tuple[float, np.ndarray]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("ATOM") and line[12:16] == " CB " and line[16] != " " and line[21] == "A":
            label = f"{int(line[22:26])}{line[26].strip()}"
            occupancy = float(line[54:60])
            xyz = np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])
            if label not in best or occupancy > best[label][0]:
                best[label] = (occupancy, xyz)
    chain = read_structure(path, "A")
    numbering = chain.meta["numbering"]
    assert "31" in best and best["31"][0] == pytest.approx(0.58)
    for label, (_, xyz) in best.items():
        np.testing.assert_allclose(chain.coords[numbering.index(label), 3], xyz, atol=1e-3)


def test_insertion_codes_kept_in_file_order(org: Path) -> None:
    path = org / "5ptp.pdb"
    file_order = []
    for line in path.read_text().splitlines():
        if line.startswith(("ATOM", "HETATM")) and line[12:16] == " CA " and line[21] == "A":
            label = f"{int(line[22:26])}{line[26].strip()}"
            if label not in file_order:
                file_order.append(label)
    chain = read_structure(path, "A")
    labels = [n for n in chain.meta["numbering"] if n]
    assert "184A" in labels and labels.index("184A") == labels.index("184") + 1
    assert labels == [n for n in file_order if n in labels]
    assert chain.sequence == _seqres(path, "A")


def test_gzip_and_default_chain(org: Path, tmp_path: Path) -> None:
    source = org / "1a3a.pdb"
    packed = tmp_path / "1a3a.pdb.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    plain, zipped = read_structure(source), read_structure(packed)
    assert plain.meta["chain"] == "A" and zipped.sequence == plain.sequence
    np.testing.assert_array_equal(zipped.coords, plain.coords)
    assert read_structure(source, "B").sequence == _seqres(source, "B")


# ------------------------------------------------------------------------------------------------------ mmCIF
def _to_mmcif(pdb_path: Path, chain_id: str, with_entity_poly: bool = True) -> str:
    """A realistic mmCIF of one real entry: atom_site from Bio.PDB's writer, entity_poly(_seq) from SEQRES."""
    from Bio.PDB import PDBParser
    from Bio.PDB.mmcifio import MMCIFIO

    structure = PDBParser(QUIET=True).get_structure(pdb_path.stem, pdb_path)
    out = io.StringIO()
    writer = MMCIFIO()
    writer.set_structure(structure)
    writer.save(out)
    text = out.getvalue()
    if not with_entity_poly:
        return text
    names: list[str] = []
    for line in pdb_path.read_text().splitlines():
        if line.startswith("SEQRES") and line[11] == chain_id:
            names.extend(line[19:].split())
    canonical = str(next(r.seq for r in SeqIO.parse(pdb_path, "pdb-seqres") if r.annotations["chain"] == chain_id))
    block = ["#", "loop_", "_entity_poly.entity_id", "_entity_poly.type", "_entity_poly.pdbx_strand_id",
             "_entity_poly.pdbx_seq_one_letter_code_can", f"1 'polypeptide(L)' {chain_id}", ";" + canonical, ";", "#",
             "loop_", "_entity_poly_seq.entity_id", "_entity_poly_seq.num", "_entity_poly_seq.mon_id",
             "_entity_poly_seq.hetero"]
    block += [f"1 {k} {name} n" for k, name in enumerate(names, start=1)]
    return text.rstrip("\n") + "\n" + "\n".join(block) + "\n#\n"


def test_mmcif_with_entity_poly_matches_pdb(org: Path, tmp_path: Path) -> None:
    pdb = org / "1dbx.pdb"  # has a missing loop and selenomethionines
    cif = tmp_path / "1dbx.cif.gz"
    cif.write_bytes(gzip.compress(_to_mmcif(pdb, "A").encode()))
    from_pdb, from_cif = read_structure(pdb, "A"), read_structure(cif, "A")
    assert from_cif.meta["format"] == "mmcif" and from_cif.meta["sequence_source"] == "entity_poly"
    assert from_cif.sequence == from_pdb.sequence
    np.testing.assert_array_equal(from_cif.observed, from_pdb.observed)
    np.testing.assert_allclose(from_cif.coords, from_pdb.coords, atol=1e-3, equal_nan=True)
    # content detection: no suffix at all
    anonymous = tmp_path / "entry"
    anonymous.write_text(_to_mmcif(pdb, "A"))
    assert read_structure(anonymous, "A").sequence == from_pdb.sequence


def test_mmcif_without_entity_poly_is_an_error_unless_allowed(org: Path, tmp_path: Path) -> None:
    cif = tmp_path / "1dbx.cif"
    cif.write_text(_to_mmcif(org / "1dbx.pdb", "A", with_entity_poly=False))
    with pytest.raises(InputError, match=r"1dbx\.cif, record '1dbx_A': no entity_poly sequence for chain 'A'"):
        read_structure(cif, "A")
    chain = read_structure(cif, "A", require_sequence=False)
    assert chain.meta["sequence_source"] == "numbering"
    assert chain.sequence.replace("X", "") != chain.sequence, "the missing loop is masked X residues"


# ------------------------------------------------------------------------------------------------------ synthetic
def _atom(serial: int, name: str, resname: str, chain: str, resseq: int, icode: str, xyz: np.ndarray,
          record: str = "ATOM", altloc: str = " ", occupancy: float = 1.0) -> str:
    padded = f" {name:<3}" if len(name) < 4 else name
    return (f"{record:<6}{serial:5d} {padded}{altloc}{resname:>3} {chain}{resseq:4d}{icode:1}   "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{occupancy:6.2f}{20.0:6.2f}          {name[0]:>2}")


def _backbone(residues: list[tuple], chain: str = "A", start: float = 0.0) -> list[str]:
    """``residues``: (resname, resseq, icode, x_offset, record, atoms) -> ideal-ish backbone along x, 3.8 A apart.

    A larger ``x_offset`` jump than 3.8 A breaks the chain physically."""
    lines = []
    serial = 1
    for resname, resseq, icode, x, record, atoms in residues:
        ca = np.array([start + x, 0.0, 0.0])
        positions = {"N": ca + [-1.2, 0.5, 0.0], "CA": ca, "C": ca + [1.2, -0.5, 0.0], "O": ca + [1.4, -1.6, 0.0],
                     "CB": ca + [-0.5, -0.8, 1.2]}
        for name in atoms:
            lines.append(_atom(serial, name, resname, chain, resseq, icode, positions[name], record=record))
            serial += 1
    return lines


FULL = ("N", "CA", "C", "O", "CB")


def _chain(spec: list[tuple[str, int, str, float]], **kw: object) -> list[tuple]:
    return [(name, num, icode, x, kw.get("record", "ATOM"), kw.get("atoms", FULL)) for name, num, icode, x in spec]


def test_numbering_gap_without_seqres_becomes_masked_residues() -> None:
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 6, "", 20.0), ("LYS", 7, "", 23.8)]
    chain = parse_structure_text("\n".join(_backbone(_chain(spec))) + "\nEND\n", source="mem.pdb")
    assert chain.sequence == "AGXXXLK" and chain.observed.tolist() == [1, 1, 0, 0, 0, 1, 1]
    assert chain.meta["sequence_source"] == "numbering"


def test_blank_chain_id_gives_an_id_without_whitespace() -> None:
    """Old PDB files leave the chain column blank; the ID must not end in a space (lost in TSV/FASTA; regression)."""
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 3, "", 7.6)]
    chain = parse_structure_text("\n".join(_backbone(_chain(spec), chain=" ")) + "\nEND\n", source="x/1abc.pdb")
    assert chain.id == "1abc" and chain.meta["chain"] == " " and chain.sequence == "AGL"


def test_numbering_skip_between_bonded_residues_inserts_nothing() -> None:
    """Chymotrypsin-style numbering skips numbers where nothing is missing; the backbone is continuous."""
    spec = [("ALA", 1, "", 0.0), ("SER", 5, "", 3.8), ("SER", 5, "A", 7.6), ("THR", 6, "", 11.4)]
    chain = parse_structure_text("\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "ASST" and chain.meta["numbering"] == ["1", "5", "5A", "6"]


def test_huge_numbering_gap_is_an_unknown_break() -> None:
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 3 + MAX_NUMBERING_GAP + 5, "", 40.0)]
    chain = parse_structure_text("\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "AGL" and chain.meta["unknown_gaps"] == [f"2-{3 + MAX_NUMBERING_GAP + 5}"]


def test_observed_rule_glycine_ca_only_and_virtual_cb() -> None:
    residues = [("GLY", 1, "", 0.0, "ATOM", ("CA",)), ("ALA", 2, "", 3.8, "ATOM", ("CA",)),
                ("ALA", 3, "", 7.6, "ATOM", ("N", "CA", "C")), ("ALA", 4, "", 11.4, "ATOM", ("N", "C", "O"))]
    chain = parse_structure_text("\n".join(_backbone(residues)) + "\n", source="mem.pdb")
    assert chain.observed.tolist() == [True, False, True, False]
    np.testing.assert_allclose(chain.coords[0, 3], chain.coords[0, 1])
    n, ca, c = (chain.coords[2, k].astype(np.float64) for k in range(3))
    np.testing.assert_allclose(chain.coords[2, 3], virtual_cb(n, ca, c), atol=1e-4)


def test_modified_residue_and_free_amino_acid_ligand() -> None:
    """An N-terminal MSE and an internal SEP are part of the chain; a free TYR ligand (HETATM, far away) is not."""
    residues = _chain([("MSE", 1, "", 0.0)], record="HETATM") + _chain([("ALA", 2, "", 3.8)]) + _chain(
        [("SEP", 3, "", 7.6)], record="HETATM") + _chain([("LYS", 4, "", 11.4)]) + _chain(
        [("TYR", 401, "", 60.0)], record="HETATM")
    chain = parse_structure_text("\n".join(_backbone(residues)) + "\n", source="mem.pdb")
    assert chain.sequence == "MASK" and chain.observed.all()


def test_seqres_gap_is_placed_at_the_physical_break() -> None:
    """SEQRES AGGGK with one G missing: an alignment alone cannot tell which G; the broken C-N bond can."""
    seqres = "SEQRES   1 A    5  ALA GLY GLY GLY LYS"
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("GLY", 4, "", 11.0), ("LYS", 5, "", 14.8)]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "AGGGK" and chain.meta["sequence_source"] == "seqres"
    assert chain.observed.tolist() == [True, True, False, True, True]
    assert chain.meta["numbering"] == ["1", "2", "", "4", "5"]


def test_terminal_caps_in_seqres_are_not_residues() -> None:
    """ACE and NH2 are listed in SEQRES but have no CA: they were masked X residues that lengthened L by 2."""
    seqres = "SEQRES   1 A    6  ACE ALA GLY LEU LYS NH2"
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 3, "", 7.6), ("LYS", 4, "", 11.4)]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "AGLK" and chain.observed.all() and chain.meta["sequence_source"] == "seqres"


def test_wrong_seqres_falls_back_to_numbering() -> None:
    seqres = "SEQRES   1 A    4  TRP TRP TRP TRP"
    spec = [("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 3, "", 7.6), ("LYS", 4, "", 11.4)]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "AGLK" and "identity" in str(chain.meta["seqres_rejected"])


def _without_residues(path: Path, chain: str, drop: set[str]) -> str:
    """The PDB file with the coordinate records of author residues ``drop`` of ``chain`` removed (SEQRES kept)."""
    return "".join(line for line in path.read_text().splitlines(True)
                   if not (line[:6] in ("ATOM  ", "HETATM") and line[21] == chain and line[22:27].strip() in drop))


def test_a_short_fragment_keeps_its_place_where_its_letters_also_fit_beside_its_neighbour(org: Path) -> None:
    """1brf chain A with only residues 7-8 (IC) and 42-53 in the coordinates: the letters IC also sit right before
    42 in SEQRES (... CPICGAPK ...). A per-residue alignment with free end gaps pulled them there (separation 1 for a
    pair 34 apart); the bonded fragments and the numbering put them back at 6-7."""
    full = read_structure(org / "1brf.pdb", "A")
    keep = {str(n) for n in (7, 8, *range(42, 54))}
    drop = {label for label in full.meta["numbering"] if label and label not in keep}
    chain = parse_structure_text(_without_residues(org / "1brf.pdb", "A", drop), source="1brf_cut.pdb", chain="A")
    assert chain.meta["sequence_source"] == "seqres" and chain.sequence == full.sequence
    index = {label: k for k, label in enumerate(chain.meta["numbering"]) if label}
    assert index == {label: k for k, label in enumerate(full.meta["numbering"]) if label in keep}
    assert index["42"] - index["8"] == 34


def test_placement_of_gapped_chains_matches_the_full_entry(org: Path) -> None:
    """Residues cut from real entries in 1-3 stretches of 1-8 (seeded): every remaining residue keeps the index it
    has in the full entry (19 of 900 such files were misplaced by the per-residue alignment)."""
    rng = np.random.default_rng(3)
    # cuts that the per-residue alignment misplaced, then seeded random ones
    known = {"1g2r": {"6", "7", "8", "9", "10"}, "1ihz": {"7", "8", "9", "10", "11"},
             "1fcy": {"412", "413", "414", "415", "416"}}
    checked = 0
    for stem in ("1g2r", "1ihz", "1ctf", "1brf", "1fcy", "1kw4"):
        full = read_structure(org / f"{stem}.pdb", "A")
        labels = [label for label in full.meta["numbering"] if label]
        for trial in range(8):
            drop: set[str] = set(known.get(stem, set()) if trial == 0 else ())
            for _ in range(int(rng.integers(1, 4)) if not drop else 0):
                size = int(rng.integers(1, 9))
                start = int(rng.integers(0, len(labels) - size))
                drop.update(labels[start:start + size])
            chain = parse_structure_text(_without_residues(org / f"{stem}.pdb", "A", drop), source=f"{stem}.pdb",
                                         chain="A")
            assert chain.meta["sequence_source"] == "seqres"
            expected = [label if label not in drop else "" for label in full.meta["numbering"]]
            assert chain.meta["numbering"] == expected, (stem, sorted(drop))
            checked += 1
    assert checked == 48


def test_a_mismatched_letter_beside_a_gap_stays_with_its_bonded_neighbours() -> None:
    """SEQRES AKWVGSTLMPEDFR; residues 5-6 (GS) missing and residue 7 deposited T but written SER
    (microheterogeneity with the other variant listed first). Residue 7 is bonded to 8, so it stays at index 6 with
    its mismatch; moving it onto the S at index 5 would put it 2 from residue 8."""
    seqres = "SEQRES   1 A   14  ALA LYS TRP VAL GLY SER THR LEU MET PRO GLU ASP PHE ARG"
    names = ["ALA", "LYS", "TRP", "VAL", None, None, "SER", "LEU", "MET", "PRO", "GLU", "ASP", "PHE", "ARG"]
    spec = [(name, k + 1, "", 3.8 * k + (6.0 if k > 4 else 0.0)) for k, name in enumerate(names) if name]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.meta["sequence_source"] == "seqres"
    assert chain.meta["numbering"] == [str(k + 1) if name else "" for k, name in enumerate(names)]


def test_one_position_written_as_atom_and_hetatm_is_one_residue() -> None:
    """MET 3 (occupancy 0.4, ATOM) and MSE 3 (0.6, HETATM) at one position: Bio.PDB keeps two residues, which
    shifted every later residue by one. The higher-occupancy variant is kept, with SEQRES and without."""
    def residue(resname: str, record: str, occupancy: float, serial: int) -> list[str]:
        ca = np.array([7.6, 0.0, 0.0])
        positions = {"N": ca + [-1.2, 0.5, 0.0], "CA": ca, "C": ca + [1.2, -0.5, 0.0], "CB": ca + [-0.5, -0.8, 1.2]}
        return [_atom(serial + k, name, resname, "A", 3, "", xyz, record=record, occupancy=occupancy)
                for k, (name, xyz) in enumerate(positions.items())]

    before = _backbone(_chain([("ALA", 1, "", 0.0), ("LYS", 2, "", 3.8)]))
    after = _backbone(_chain([("LEU", 4, "", 11.4), ("GLY", 5, "", 15.2)]))
    body = before + residue("MET", "ATOM", 0.4, 50) + residue("MSE", "HETATM", 0.6, 60) + after
    for header in ("", "SEQRES   1 A    5  ALA LYS MET LEU GLY\n"):
        chain = parse_structure_text(header + "\n".join(body) + "\n", source="mem.pdb")
        assert chain.sequence == "AKMLG" and chain.meta["numbering"] == ["1", "2", "3", "4", "5"]
        assert chain.meta.get("seqres_rejected") is None
    # A free amino-acid ligand that reuses number 2 further down, at a higher occupancy, replaces nothing.
    ligand = [_atom(90 + k, name, "GLU", "A", 2, "", np.array([60.0 + k, 0.0, 0.0]), record="HETATM")
              for k, name in enumerate(("N", "CA", "C", "CB"))]
    chain = parse_structure_text("\n".join(body + ligand) + "\n", source="mem.pdb")
    assert chain.sequence == "AKMLG" and chain.observed.all()


def test_insertion_codes_count_at_a_break_without_seqres() -> None:
    """Kabat-style numbering: 30A 30B | 30D 30E with 30C missing (a break) inserts one masked residue, 32 | 32B one
    (32A). Between numbers only the jump counts, 32B | 34A inserts 33 alone: some files code every residue (5A, 6A),
    so a code on the far side of a break adds nothing."""
    spec = [("ALA", 30, "A", 0.0), ("GLY", 30, "B", 3.8), ("LEU", 30, "D", 12.0), ("LYS", 30, "E", 15.8),
            ("SER", 31, "", 19.6), ("THR", 32, "", 23.4), ("VAL", 32, "B", 35.0), ("ILE", 34, "A", 50.0)]
    chain = parse_structure_text("\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.sequence == "AGXLKSTXVXI"
    assert chain.meta["numbering"] == ["30A", "30B", "", "30D", "30E", "31", "32", "", "32B", "", "34A"]


# ------------------------------------------------------------------------------------------------ lone HETATM residues
def _lone_mse_chain() -> list[tuple]:
    """ALA 1 - GLY 2 (bonded), MSE 5 alone (HETATM; 3-4 and 6-7 missing, its backbone 11 A and more from both sides),
    LEU 8 - LYS 9."""
    return _chain([("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8)]) + _chain([("MSE", 5, "", 15.0)], record="HETATM") + (
        _chain([("LEU", 8, "", 27.0), ("LYS", 9, "", 30.8)]))


def _ligands(*numbers: int, resname: str = "MSE") -> list[tuple]:
    """Free amino acids (HETATM, whole backbone) of chain A, 20 A apart and far from the chain."""
    return _chain([(resname, number, "", 80.0 + 20.0 * k) for k, number in enumerate(numbers)], record="HETATM")


TER = "TER      99      LYS A   9"
SEQRES_9 = "SEQRES   1 A    9  ALA GLY SER THR MSE VAL ILE LEU LYS"


def test_a_lone_hetatm_residue_between_gaps_is_kept() -> None:
    """A selenomethionine with missing residues on both sides is bonded to neither neighbour: it was dropped (its
    position masked, its contacts lost). Its number 5 lies between 2 and 8, so it is a residue of the chain, with or
    without SEQRES and TER. By hand: without SEQRES, 3-4 and 6-7 become X: AGXXMXXLK; with SEQRES (ALA GLY SER THR
    MSE VAL ILE LEU LYS) the deposited AGSTMVILK. Either way positions 1, 2, 5, 8, 9 are observed, 5 at index 4."""
    for header, expected in (("", "AGXXMXXLK"), (SEQRES_9 + "\n", "AGSTMVILK")):
        for ter in ([], [TER]):
            lines = [header.rstrip("\n")] if header else []
            lines += _backbone(_lone_mse_chain()) + ter
            chain = parse_structure_text("\n".join(lines) + "\nEND\n", source="mem.pdb")
            assert chain.sequence == expected, (header, ter)
            assert chain.meta["numbering"] == ["1", "2", "", "", "5", "", "", "8", "9"]
            assert chain.observed.tolist() == [True, True, False, False, True, False, False, True, True]
            np.testing.assert_allclose(chain.coords[4, 1], [15.0, 0.0, 0.0], atol=1e-3)  # the MSE's Cα
            assert chain.meta.get("seqres_rejected") is None


def test_free_amino_acid_ligands_stay_out_where_a_lone_residue_is_kept() -> None:
    """Beside the lone MSE 5 (kept, see above), free amino acids are ligands and stay out: after the chain's TER
    record, whether numbered inside the polymer's range (6), reusing a polymer number (2) or far outside it (401);
    without a TER record, at the end of the chain (401, 10); before the TER record, where a writer such as Bio.PDB's
    puts ligands, at the chain end without SEQRES (10, right after the last residue), or beyond SEQRES's room (101).
    Kept, each would lengthen the chain (appended after LYS 9) or take a masked position. By hand as above:
    AGXXMXXLK without SEQRES, AGSTMVILK with it, numbering 1 2 - - 5 - - 8 9."""
    chain_lines = _backbone(_lone_mse_chain())
    cases = {
        "after TER, inside the numbering": ("", chain_lines + [TER] + _backbone(_ligands(6, 2, 401))),
        "after TER, with SEQRES": (SEQRES_9, chain_lines + [TER] + _backbone(_ligands(6, 2, 401))),
        "no TER": ("", chain_lines + _backbone(_ligands(401) + _ligands(10, resname="MET"))),
        "before TER, no SEQRES": ("", chain_lines + _backbone(_ligands(10)) + [TER]),
        "before TER, no room in SEQRES": (SEQRES_9, chain_lines + _backbone(_ligands(101)) + [TER]),
    }
    for name, (header, lines) in cases.items():
        text = (header + "\n" if header else "") + "\n".join(lines) + "\nEND\n"
        chain = parse_structure_text(text, source="mem.pdb")
        assert chain.sequence == ("AGSTMVILK" if header else "AGXXMXXLK"), name
        assert chain.meta["numbering"] == ["1", "2", "", "", "5", "", "", "8", "9"], name
        assert chain.observed.sum() == 5, name


def test_a_lone_hetatm_residue_at_a_chain_end_before_ter_with_seqres_is_kept() -> None:
    """Between a chain end and a gap a lone MSE has one neighbour. A wwPDB entry tells it from a ligand: it comes
    before the chain's TER record (ligands follow it) and SEQRES has room for it. By hand: SEQRES ALA GLY SER THR MSE
    with 1, 2 and MSE 5 observed is AGSTM, 5 at index 4; SEQRES MSE SER THR LEU LYS with MSE 1, 4, 5 observed is
    MSTLK, 1 at index 0. A free MSE after the TER record stays out."""
    c_end = _chain([("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8)]) + _chain([("MSE", 5, "", 15.0)], record="HETATM")
    n_end = _chain([("MSE", 1, "", 0.0)], record="HETATM") + _chain([("LEU", 4, "", 12.0), ("LYS", 5, "", 15.8)])
    cases = [("SEQRES   1 A    5  ALA GLY SER THR MSE", c_end, "AGSTM", ["1", "2", "", "", "5"]),
             ("SEQRES   1 A    5  MSE SER THR LEU LYS", n_end, "MSTLK", ["1", "", "", "4", "5"])]
    for seqres, spec, expected, numbering in cases:
        text = seqres + "\n" + "\n".join(_backbone(spec) + [TER] + _backbone(_ligands(401))) + "\nEND\n"
        chain = parse_structure_text(text, source="mem.pdb")
        assert chain.sequence == expected and chain.meta["numbering"] == numbering
        assert chain.observed.tolist() == [label != "" for label in numbering]


_CIF_OFFSETS = {"N": (-1.2, 0.5, 0.0), "CA": (0.0, 0.0, 0.0), "C": (1.2, -0.5, 0.0), "CB": (-0.5, -0.8, 1.2)}


def _cif_text(residues: list[tuple[str, str, int, str, str, str, float]]) -> str:
    """An mmCIF entry of chain A: entity 1 is the polypeptide ALA GLY SER THR MSE VAL ILE LEU LYS ASN MSE, entity 2
    a non-polymer MSE. ``residues``: (group, name, author number, label_asym_id, label_entity_id, label_seq_id, x of
    the Cα), with the backbone of ``_backbone``."""
    poly = ["ALA", "GLY", "SER", "THR", "MSE", "VAL", "ILE", "LEU", "LYS", "ASN", "MSE"]
    lines = ["data_lone", "#", "loop_", "_entity.id", "_entity.type", "1 polymer", "2 non-polymer", "#",
             "_entity_poly.entity_id 1", "_entity_poly.type 'polypeptide(L)'", "_entity_poly.pdbx_strand_id A", "#",
             "loop_", "_entity_poly_seq.entity_id", "_entity_poly_seq.num", "_entity_poly_seq.mon_id"]
    lines += [f"1 {k} {name}" for k, name in enumerate(poly, start=1)] + ["#", "loop_"]
    lines += [f"_atom_site.{field}" for field in (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
        "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
        "B_iso_or_equiv", "auth_seq_id", "auth_asym_id", "pdbx_PDB_model_num")]
    serial = 0
    for group, name, number, asym, entity, seq_id, x in residues:
        for atom, (dx, dy, dz) in _CIF_OFFSETS.items():
            serial += 1
            lines.append(f"{group} {serial} {atom[0]} {atom} . {name} {asym} {entity} {seq_id} ? {x + dx:.3f} "
                         f"{dy:.3f} {dz:.3f} 1.00 20.00 {number} A 1")
    return "\n".join(lines + ["#"]) + "\n"


def test_mmcif_entities_decide_lone_hetatm_residues() -> None:
    """In mmCIF the entity says which HETATM amino acid is polymer: MSE 5 (between gaps) and MSE 11 (at the chain
    end after a gap) are residues of polymer entity 1, with a label_seq_id; the MSE numbered 6, written between
    them and the chain but of non-polymer entity 2, and MSE 401 are ligands. By hand: entity_poly_seq
    AGSTMVILKNM, observed 1, 2, 5, 8, 9, 11 at indices 0, 1, 4, 7, 8, 10. Without entities (Bio.PDB's writer puts
    '?' and no label_seq_id on HETATM) numbering decides: 5 lies between 2 and 8 and is kept, the end residue 11 is
    not (nothing tells it from a ligand), nor 401; MSE 6 is left out of that file."""
    def residues(known: bool) -> list[tuple[str, str, int, str, str, str, float]]:
        def het(name: str, number: int, polymer: bool, x: float) -> tuple[str, str, int, str, str, str, float]:
            if not known:
                return ("HETATM", name, number, "A" if polymer else "B", "?", ".", x)
            return ("HETATM", name, number, "A" if polymer else "B", "1" if polymer else "2",
                    str(number) if polymer else ".", x)

        def atom(name: str, number: int, x: float) -> tuple[str, str, int, str, str, str, float]:
            return ("ATOM", name, number, "A", "1" if known else "?", str(number), x)

        out = [atom("ALA", 1, 0.0), atom("GLY", 2, 3.8), het("MSE", 5, True, 15.0)]
        if known:
            out.append(het("MSE", 6, False, 60.0))
        return out + [atom("LEU", 8, 27.0), atom("LYS", 9, 30.8), het("MSE", 11, True, 45.0),
                      het("MSE", 401, False, 80.0)]

    chain = parse_structure_text(_cif_text(residues(True)), source="mem.cif")
    assert chain.meta["sequence_source"] == "entity_poly" and chain.sequence == "AGSTMVILKNM"
    assert chain.meta["numbering"] == ["1", "2", "", "", "5", "", "", "8", "9", "", "11"]
    assert np.flatnonzero(chain.observed).tolist() == [0, 1, 4, 7, 8, 10]
    chain = parse_structure_text(_cif_text(residues(False)), source="mem.cif")
    assert chain.sequence == "AGSTMVILKNM"
    assert chain.meta["numbering"] == ["1", "2", "", "", "5", "", "", "8", "9", "", ""]


def test_insertion_codes_break_ties_when_placing_fragments_on_seqres() -> None:
    """Kabat-style run 52, 52A-52E, 53 (SEQRES ALA GLY GLY GLY GLY GLY LYS): 52-52A observed and bonded, 52D alone,
    52F alone. The lone G fits at indices 2-5 equally well by letters; only the insertion codes tell where: 52A ->
    52D misses 52B and 52C, so 52D is index 4 (and 52F index 6, one missing between). The tie-break counted only the
    number jump (52 - 52 - 1 = -1: no information) and put 52D at the first free index, 3. By hand: numbering
    52 52A - - 52D - 52F."""
    seqres = "SEQRES   1 A    7  ALA GLY GLY GLY GLY GLY LYS"
    spec = [("ALA", 52, "", 0.0), ("GLY", 52, "A", 3.8), ("GLY", 52, "D", 15.0), ("LYS", 52, "F", 27.0)]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(_chain(spec))) + "\n", source="mem.pdb")
    assert chain.meta["sequence_source"] == "seqres" and chain.sequence == "AGGGGGK"
    assert chain.meta["numbering"] == ["52", "52A", "", "", "52D", "", "52F"]


# ------------------------------------------------------------------------------------------------------ bad input
def _one_line_error(path: Path, pattern: str, **kw: object) -> None:
    with pytest.raises(InputError, match=pattern) as info:
        read_structure(path, **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message, message


def _without_atom_site_column(lines: list[str], column: str) -> str:
    """An mmCIF text (lines of :func:`_to_mmcif`) with one ``_atom_site`` column removed, header and values."""
    headers = [i for i, line in enumerate(lines) if line.startswith("_atom_site.")]
    drop = [lines[i].strip() for i in headers].index(f"_atom_site.{column}")
    out = [line for i, line in enumerate(lines) if i != headers[drop]]
    first_row = headers[-1] + 1
    for i in range(first_row, len(lines)):
        if lines[i].startswith(("#", "loop_", "_")):
            break
        values = lines[i].split()
        assert len(values) == len(headers), lines[i]
        out[i - 1] = " ".join(values[:drop] + values[drop + 1:]) + "\n"
    return "".join(out)


def test_bad_structure_inputs(org: Path, tmp_path: Path) -> None:
    text = (org / "1a3a.pdb").read_text()
    cif_lines = _to_mmcif(org / "1dbx.pdb", "A").splitlines(keepends=True)
    good = _backbone(_chain([("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8), ("LEU", 3, "", 7.6)]))
    cases = {
        "missing.pdb": (None, "file not found"),
        "empty.pdb": (b"", "empty file"),
        "binary.pdb": (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
        "cut.pdb": (text[: text.index("ATOM") + 2000].encode(), "truncated file"),
        "cutline.pdb": ("\n".join(_backbone(_chain([("ALA", 1, "", 0.0)])))[:-40].encode(), "incomplete coordinate"),
        "cut.pdb.gz": (gzip.compress(text.encode())[:5000], "truncated or corrupt gzip"),
        "notes.txt": (b"just some notes\nnothing else\n", "neither a PDB nor an mmCIF"),
        "water.pdb": (("\n".join(_backbone([("HOH", 1, "", 0.0, "HETATM", ("O",))])) + "\nEND\n").encode(),
                      r"no protein chain \(chains: 'A'\)"),
        "noca.pdb": ("\n".join(_backbone(_chain([("ALA", 1, "", 0.0), ("GLY", 2, "", 3.8)], atoms=("N", "C", "O"))))
                     .encode(), "chain 'A' has no CA atoms"),
        # cut at a line boundary inside atom_site: Bio.PDB would read a shorter chain
        "cut.cif": ("".join(cif_lines[: len(cif_lines) // 2]).encode(), r"truncated file: .* last line \(\d+\) is not"),
        "broken.cif": (b"data_x\nloop_\n_atom_site.group_PDB\n_atom_site.id\n'unterminated\n", "cannot parse mmCIF"),
        # written without the author chain IDs: Bio.PDB's KeyError had been the whole message
        "noauth.cif": (_without_atom_site_column(cif_lines, "auth_asym_id").encode(),
                       r"cannot parse mmCIF: it has no _atom_site.auth_asym_id field \(author chain IDs"),
        # a damaged fixed column: Bio.PDB named no line for a bad residue number, and read a damaged occupancy as 0
        # (the atom then silently absent)
        "resseq.pdb": ("\n".join(good[:6] + [good[6][:22] + "  x1" + good[6][26:]] + good[7:]).encode(),
                       r"line 7: residue number 'x1' \(columns 23-26\) is not an integer"),
        "occupancy.pdb": ("\n".join(good[:6] + [good[6][:54] + "  x.xx" + good[6][60:]] + good[7:]).encode(),
                          r"line 7: occupancy 'x.xx' \(columns 55-60\) is not a number"),
        "coordinate.pdb": ("\n".join(good[:1] + [good[1][:38] + "   1.2.3" + good[1][46:]] + good[2:]).encode(),
                           r"line 2: y coordinate '1.2.3' \(columns 39-46\) is not a number"),
    }
    for name, (content, pattern) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        _one_line_error(path, pattern)


def test_missing_chain_lists_available_ones(org: Path) -> None:
    _one_line_error(org / "1a3a.pdb", r"chain 'Z' not found \(available: 'A', 'B', 'C', 'D'\)", chain="Z")


def test_model_index_out_of_range(org: Path) -> None:
    _one_line_error(org / "1a3a.pdb", "model index 3 out of range", model=3)


def test_input_files_are_read_within_a_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import protrnn.data.structure as structure

    monkeypatch.setattr(structure, "MAX_INPUT_BYTES", 1000)
    two_members = gzip.compress(b"A" * 400) + gzip.compress(b"B" * 500)  # 900 bytes out: within the bound
    assert structure.gunzip_if_needed(two_members, "x.gz") == b"A" * 400 + b"B" * 500
    bomb = gzip.compress(b"\n" * 10_000_000)  # ~10 KB in, 10 MB out: stopped after 1,001 bytes
    with pytest.raises(InputError, match=r"x\.gz: gzip content larger than"):
        structure.gunzip_if_needed(bomb, "x.gz")
    big = tmp_path / "big.pdb"
    big.write_bytes(b"REMARK\n" * 200)  # 1,400 bytes on disk
    with pytest.raises(InputError, match=r"big\.pdb: file larger than"):
        structure.read_input_bytes(big)
    with pytest.raises(InputError, match=r"/dev/zero: file larger than"):  # endless: read no further than the bound
        structure.read_input_bytes("/dev/zero")
    small = tmp_path / "small.pdb.gz"
    small.write_bytes(gzip.compress(b"REMARK\n" * 100))
    assert structure.read_input_bytes(small) == b"REMARK\n" * 100


def test_non_finite_coordinates_are_absent_atoms() -> None:
    """An infinite coordinate, or one that overflows float32 (1e300), was kept as an observed residue at infinity."""
    import warnings

    from protrnn.data.structure import build_chain

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(10, 4, 3)) * 5
    coords[2, 3] = [np.inf, 1.0, -np.inf]  # a Cβ at infinity: rebuilt from N, Cα, C like a missing one
    coords[5, 1] = [1e300, 0.0, 0.0]  # a Cα that overflows: the residue is not observed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning leaks
        chain = build_chain("x", "ACDEFHIKLM", coords)
    assert np.isfinite(chain.coords[chain.observed]).all()
    assert chain.observed.tolist() == [True] * 5 + [False] + [True] * 4
    expected_cb = virtual_cb(coords[2, 0], coords[2, 1], coords[2, 2])
    np.testing.assert_allclose(chain.coords[2, 3], expected_cb, atol=1e-3)


def test_cb_follows_the_residue_in_the_coordinates_where_the_deposited_letter_differs() -> None:
    """CASP's Cβ belongs to the residue whose atoms were located. SEQRES GLY at 2 written ALA with a CB atom kept Cα
    (the deposited G decided); SEQRES ALA at 4 written GLY got a virtual Cβ instead of Cα. The sequence stays the
    deposited one (what a model is given at prediction time): 2 mismatches in 24 keep SEQRES trusted (>= 90 %)."""
    deposited = ["ALA", "GLY", "LEU", "ALA"] + ["LYS", "SER", "GLU", "VAL"] * 5
    written = ["ALA", "ALA", "LEU", "GLY"] + deposited[4:]
    seqres = "\n".join(f"SEQRES {k + 1:3d} A {len(deposited):4d}  " + " ".join(deposited[13 * k:13 * k + 13])
                       for k in range((len(deposited) + 12) // 13))
    residues = [(name, k + 1, "", 3.8 * k, "ATOM", ("N", "CA", "C", "O") if name == "GLY" else FULL)
                for k, name in enumerate(written)]
    chain = parse_structure_text(seqres + "\n" + "\n".join(_backbone(residues)) + "\n", source="mem.pdb")
    assert chain.meta["sequence_source"] == "seqres" and chain.observed.all()
    assert chain.sequence[:4] == "AGLA"
    # _backbone places CA at (3.8 k, 0, 0) and every CB at CA + (-0.5, -0.8, 1.2)
    np.testing.assert_allclose(chain.coords[1, 3], [3.8 - 0.5, -0.8, 1.2], atol=1e-3)
    np.testing.assert_allclose(chain.coords[3, 3], [11.4, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(chain.coords[0, 3], [-0.5, -0.8, 1.2], atol=1e-3)
