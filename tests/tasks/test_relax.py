"""Relax task and batched FIRE: recovers the reference after rattling, reports non-convergence, batched = ASE FIRE."""

import functools
import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from emt_data import emt_structures

from atomtune.data.dataset import attach_labels
from atomtune.tasks import relax
from atomtune.tasks.batched_relax import fire_relax


@pytest.fixture
def toy64():
    from toy_potential import ToyPotential

    torch.manual_seed(0)  # the toy's linear layers draw from the global generator
    return ToyPotential().double()


@functools.cache
def _relaxed_alloys():
    structures = []
    for k in range(2):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        symbols = atoms.get_chemical_symbols()
        symbols[k] = symbols[k + 3] = "Au"
        atoms.set_chemical_symbols(symbols)
        atoms.calc = EMT()
        FIRE(FrechetCellFilter(atoms), logfile=None).run(fmax=1e-3, steps=1000)
        attach_labels(atoms, atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        atoms.info["id"] = f"cuau-{k}"
        structures.append(atoms)
    return structures


def emt_relaxed_alloys(count=2):
    """Reference-relaxed structures with internal degrees of freedom (Cu–Au on fcc, relaxed with EMT)."""
    copies = []
    for atoms in _relaxed_alloys()[:count]:
        copy = atoms.copy()
        copy.calc = atoms.calc  # the reference labels (a read-only SinglePointCalculator)
        copies.append(copy)
    return copies


def test_relax_recovers_the_reference_after_rattling():
    records = relax.run(emt_relaxed_alloys(), EMT(), relax.Settings(rattle_stdev=0.1, fmax=0.01), progress=False)
    for record in records:
        assert record["converged"] and "error" not in record
        assert record["steps"] > 5  # the rattle was undone, not skipped
        assert record["structure_matched"]
        assert record["rmsd"] < 0.01
        assert abs(record["relaxation_energy_per_atom"]) < 1e-3
        assert abs(record["volume_change_fraction"]) < 0.005
        assert record["energy_per_atom_vs_label"] == pytest.approx(record["relaxation_energy_per_atom"], abs=1e-9)


def test_non_converging_structure_is_reported_with_its_steps():
    structures = emt_relaxed_alloys(1) + [bulk("Cu", "fcc", a=3.6, cubic=True)]
    records = relax.run(structures, EMT(), relax.Settings(rattle_stdev=0.2, max_steps=3, fmax=1e-4), progress=False)
    assert [r["id"] for r in records] == ["cuau-0", "1"]
    for record in records:
        assert record["converged"] is False
        assert record["steps"] == 3
        assert "not converged in 3 steps" in record["error"]
        assert record["energy_per_atom"] is not None  # what was computed is kept
    assert relax.summary(records)["fraction_converged"] == 0.0


@pytest.mark.parametrize("relax_cell", [False, True])
def test_batched_fire_takes_the_same_steps_as_ase_fire(toy64, relax_cell):
    structures = emt_structures(4, seed=3)
    batched = fire_relax(toy64, structures, fmax=0.002, max_steps=60, relax_cell=relax_cell, batch_size=4)
    assert sum(r.steps for r in batched) > 15
    for atoms, result in zip(structures, batched):
        work = atoms.copy()
        work.calc = toy64.calculator()
        optimizer = FIRE(FrechetCellFilter(work) if relax_cell else work, logfile=None)
        converged = optimizer.run(fmax=0.002, steps=60)
        assert result.steps == optimizer.nsteps
        assert result.converged == converged
        assert result.energy == pytest.approx(work.get_potential_energy(), abs=1e-8 * len(atoms))
        np.testing.assert_allclose(result.atoms.cell[:], work.cell[:], atol=1e-7)
        np.testing.assert_allclose(result.atoms.positions, work.positions, atol=1e-7)


def test_same_call_with_emt_and_a_potential_gives_comparable_records(toy64):
    structures = emt_structures(3, seed=1)
    settings = relax.Settings(relax_cell=False, max_steps=60)
    by_emt = relax.run(structures, EMT(), settings, progress=False)
    by_calculator = relax.run(structures, toy64.calculator(), settings, progress=False)
    by_potential = relax.run(structures, toy64, settings, progress=False)  # batched path
    assert [r["id"] for r in by_emt] == [r["id"] for r in by_potential] == ["emt-0", "emt-1", "emt-2"]
    assert set(by_emt[0]) == set(by_potential[0])
    for a, b in zip(by_calculator, by_potential):
        assert a["steps"] == b["steps"]
        assert a["energy_per_atom"] == pytest.approx(b["energy_per_atom"], abs=1e-8)
    assert json.loads(json.dumps(by_potential)) == by_potential


def test_bfgs_and_unsupported_element_records(toy64):
    structures = emt_structures(2, seed=2) + [bulk("Fe", "bcc", a=2.87, cubic=True)]
    for calculator in (toy64, toy64.calculator()):
        records = relax.run(structures, calculator, relax.Settings(optimizer="BFGS", max_steps=40), progress=False)
        assert "error" not in records[0] and "error" not in records[1]
        assert "Fe" in records[2]["error"]
    fire = relax.run(structures, toy64, relax.Settings(max_steps=40), progress=False)
    assert "does not support element(s) Fe" in fire[2]["error"]


def test_compare_and_plot(tmp_path):
    structures = emt_relaxed_alloys(1)
    emt = relax.run(structures, EMT(), progress=False)
    rattled_more = relax.run(structures, EMT(), relax.Settings(rattle_stdev=0.1, seed=5), progress=False)
    rows = relax.compare({"emt": emt, "emt-b": rattled_more}, reference="emt")
    energy = next(r for r in rows if r["property"] == "energy_per_atom" and r["id"] == "cuau-0")
    assert abs(energy["emt-b − emt"]) < 2e-3
    converged = next(r for r in rows if r["property"] == "fraction_converged")
    assert converged["emt"] == converged["emt-b"] == 1.0
    paths = relax.plot({"emt": emt, "emt-b": rattled_more}, tmp_path)
    assert paths and all(p.exists() and p.stat().st_size > 1000 for p in paths)
