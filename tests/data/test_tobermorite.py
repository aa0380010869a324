"""The shipped tobermorite 11 Å: the published CIF is refused for its quarter-occupied Ca and missing H, its framework is
crystal-chemically sound, and the completed cell has the published formula, sensible bonds and no overlaps."""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pytest
from ase.io import read
from ase.neighborlist import neighbor_list

from atomtune.data.readers.structure_files import ReadSettings, StructureFileError, read_structures

FOLDER = files("atomtune") / "resources" / "tobermorite"
CIF = FOLDER / "tobermorite_11A_hamid1981.cif"
COMPLETED = FOLDER / "tobermorite_11A_hamid1981_completed.extxyz"


def bonds(atoms, first: str, second: str, cutoff: float) -> np.ndarray:
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    symbols = np.array(atoms.get_chemical_symbols())
    return i[(symbols[i] == first) & (symbols[j] == second)], d[(symbols[i] == first) & (symbols[j] == second)]


def test_published_cif_is_refused_naming_the_partial_ca_site_then_the_missing_hydrogens():
    assert "Hamid" in CIF.read_text() and "8103889" in CIF.read_text()
    with pytest.raises(StructureFileError, match=r"site Ca5 / Ca6 .* partially occupied \(Ca 0.25\)"):
        read_structures(str(CIF))
    with pytest.raises(StructureFileError, match="hydrogen but no H site"):
        read_structures(str(CIF), ReadSettings(partial_occupancy="majority"))


def test_published_framework_has_tetrahedral_si_and_sevenfold_ca():
    (atoms,) = read_structures(str(CIF), ReadSettings(partial_occupancy="majority", allow_missing_hydrogens=True))
    assert atoms.get_chemical_formula() == "Ca8O36Si12"
    assert atoms.cell.cellpar() == pytest.approx([6.69, 7.39, 22.77, 90, 90, 123.49], abs=0.01)
    silicon, si_o = bonds(atoms, "Si", "O", 2.0)
    assert np.bincount(silicon)[np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "Si")].tolist() == [4] * 12
    assert 1.58 < si_o.mean() < 1.66 and si_o.min() > 1.5 and si_o.max() < 1.8
    calcium, ca_o = bonds(atoms, "Ca", "O", 2.9)
    assert 2.35 < ca_o.mean() < 2.55 and ca_o.min() > 2.25
    assert set(np.bincount(calcium)[np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "Ca")]) <= {6, 7}


def test_completed_cell_has_the_published_formula_and_sensible_hydrogen():
    atoms = read(COMPLETED)
    assert atoms.symbols.formula.count() == {"Ca": 9, "Si": 12, "O": 40, "H": 14}  # 4 × Ca2.25 Si3 O10 H3.5 (Z = 4)
    charges = {"Ca": 2, "Si": 4, "O": -2, "H": 1}
    assert sum(charges[s] for s in atoms.get_chemical_symbols()) == 0
    hydrogen, o_h = bonds(atoms, "H", "O", 1.2)
    assert len(np.unique(hydrogen)) == 14 and 0.93 < o_h.min() and o_h.max() < 1.1  # every H bonded to one O
    i, j, d = neighbor_list("ijd", atoms, 1.4)
    symbols = np.array(atoms.get_chemical_symbols())
    assert not np.any((symbols[i] == "H") & (symbols[j] == "H"))  # no H2
    heavy = symbols != "H"
    i, j, d = neighbor_list("ijd", atoms[heavy], 2.2)
    kinds = np.array(atoms[heavy].get_chemical_symbols())
    assert np.all(kinds[i][d < 1.5] == "Si") or not np.any(d < 1.5)  # only Si–O bonds are shorter than 1.5 Å
    density = atoms.get_masses().sum() / atoms.get_volume() * 1.66054
    assert density == pytest.approx(2.39, abs=0.1)  # Hamid's Dx = 2.39 g/cm³
    # the published atoms were not moved by the completion
    (published,) = read_structures(str(CIF), ReadSettings(partial_occupancy="majority", allow_missing_hydrogens=True))
    assert np.allclose(atoms.positions[: len(published)], published.positions, atol=1e-6)
