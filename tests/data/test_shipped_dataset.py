"""The shipped GPAW Ni-alloy dataset: labels, provenance and the convergence check agree with each other."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from atomtune.data.dataset import Dataset, labels_of

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "atomtune" / "resources" / "ni_alloy"


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((SHIPPED / "provenance.json").read_text())


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return Dataset.read(SHIPPED / "ni_alloy_pbe.extxyz", require=("energy", "forces", "stress"))


def test_structures_match_the_provenance(dataset, provenance):
    assert len(dataset) == provenance["n_structures"]
    assert dict(Counter(atoms.info["config_type"] for atoms in dataset)) == provenance["config_types"]
    assert [t["id"] for t in provenance["timings"]] == [str(atoms.info["id"]) for atoms in dataset]
    # a structure that could not be labelled is listed with its reason, never silently dropped
    assert all("structure" in failure and ": " in failure for failure in provenance["failures"])
    assert len(provenance["failures"]) <= 1
    assert provenance["complete"] is True
    assert provenance["settings"]["cutoff"] == 450.0 and provenance["settings"]["kpoint_density"] == 2.5


def test_every_kind_of_structure_the_tasks_need_is_there(dataset):
    kinds = {atoms.info["config_type"] for atoms in dataset}
    assert {"eos", "reference", "random_strain", "rattle", "solid_solution", "slab", "vacancy"} <= kinds
    assert {atoms.get_chemical_formula() for atoms in dataset if atoms.info["config_type"] == "reference"} == {
        "Ni", "Al", "Cu", "AlNi", "AlNi3"
    }


def test_labels_are_physical(dataset):
    elements = set()
    for atoms in dataset:
        labels = labels_of(atoms)
        elements |= set(atoms.get_chemical_symbols())
        assert 1 <= len(atoms) <= 8
        per_atom = labels.energy / len(atoms)
        assert -8.5 < per_atom < -2.5, (atoms.info["id"], per_atom)  # PBE (GPAW PAW reference) energies of Ni/Al/Cu
        assert np.isfinite(labels.forces).all() and np.abs(labels.forces).max() < 10.0
        assert np.abs(labels.stress).max() * 160.21766 < 60.0  # GPa
        if atoms.info["config_type"] in ("eos", "reference", "random_strain") and len(atoms) == 1:
            assert np.abs(labels.forces).max() < 1e-3  # one atom per cell: zero force by symmetry
    assert elements == {"Ni", "Al", "Cu"}


def test_convergence_check_backs_the_chosen_settings(provenance):
    check = provenance["convergence_check"]
    cutoff = {row["cutoff"]: row["delta_mev_per_atom"] for row in check["cutoff"]}
    density = {row["kpoint_density"]: row["delta_mev_per_atom"] for row in check["kpoint_density"]}
    assert abs(cutoff[450.0]) < 20.0 and cutoff[600.0] == 0.0  # vs the densest setting
    assert abs(density[2.5]) < 5.0 and density[4.5] == 0.0
    # energy falls monotonically with the cutoff (plane-wave basis is variational)
    values = [cutoff[c] for c in sorted(cutoff)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_reference_structures_are_the_equation_of_state_minima(dataset):
    references = Dataset.read(SHIPPED / "ni_alloy_reference.extxyz")
    lattice = {atoms.get_chemical_formula(): atoms.cell.cellpar()[0] for atoms in references}
    assert len(references) == 5
    # primitive-cell lengths of the GPAW equilibria: fcc a/√2, B2 a, L1₂ a
    assert lattice["Ni"] * np.sqrt(2) == pytest.approx(3.533, abs=0.005)
    assert lattice["AlNi"] == pytest.approx(2.900, abs=0.005)
    for atoms in references:
        pressure = -labels_of(atoms).stress[:3].mean() * 160.21766
        assert abs(pressure) < 6.0, atoms.get_chemical_formula()  # only the 450 eV Pulay stress remains
