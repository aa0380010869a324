"""Relaxed bulk and supercell sizes shared by the defect, surface, stacking-fault and phonon tasks."""

import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.exceptions import AtomtuneError
from atomtune.tasks.bulk_reference import periodic_bulk, relaxed_bulk, supercell_repeats


def test_supercell_repeats_use_perpendicular_widths():
    # conventional fcc: width a; primitive fcc: width a/√3 (distance between (111)-type faces of the rhombohedron)
    assert supercell_repeats(bulk("Cu", "fcc", a=3.6, cubic=True), 10.0) == (3, 3, 3)
    assert supercell_repeats(bulk("Cu", "fcc", a=3.6), 10.0) == (5, 5, 5)
    assert supercell_repeats(bulk("Cu", "fcc", a=3.6, cubic=True), 7.2) == (2, 2, 2)


def test_relaxed_bulk_reaches_the_emt_lattice_constant():
    relaxed = relaxed_bulk(bulk("Cu", "fcc", a=3.7, cubic=True), "cu", EMT(), fmax=1e-3, max_steps=100)
    assert relaxed.cell.lengths()[0] == pytest.approx(3.590, abs=2e-3)
    assert relaxed.calc is not None


def test_non_periodic_structure_is_refused_with_its_label():
    with pytest.raises(AtomtuneError, match="structure dimer is not periodic"):
        periodic_bulk(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), "dimer", "the vacancy task")
