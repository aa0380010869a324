"""Random substitution: configurations at the target composition, relaxed; ranking agreement by Spearman ρ."""

import json

import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from atomtune.tasks import substitution

SETTINGS = dict(composition={"Ni": 0.5, "Al": 0.25, "Cu": 0.25}, supercell=(2, 1, 1), n_configurations=4)


@pytest.fixture(scope="module")
def emt_records():
    parent = bulk("Ni", "fcc", a=3.52, cubic=True)
    parent.info["id"] = "ni"
    return substitution.run([parent], EMT(), substitution.Settings(**SETTINGS), progress=False)


def test_configurations_are_relaxed_at_the_target_composition(emt_records):
    assert [r["id"] for r in emt_records] == ["ni/0", "ni/1", "ni/2", "ni/3"]
    for record in emt_records:
        assert record["formula"] == "Al2Cu2Ni4"
        assert record["composition"] == {"Al": 0.25, "Cu": 0.25, "Ni": 0.5}
        assert record["converged"] and record["steps"] > 0
        assert record["relative_energy_mev_per_atom"] >= 0
    assert min(r["relative_energy_mev_per_atom"] for r in emt_records) == 0.0
    assert len({round(r["energy_per_atom"], 6) for r in emt_records}) > 1  # the decorations differ
    assert json.loads(json.dumps(emt_records)) == emt_records


def test_spearman_ranking_agreement(emt_records):
    reversed_energies = [dict(r, energy_per_atom=-r["energy_per_atom"]) for r in emt_records]
    rows = substitution.compare({"emt": emt_records, "same": emt_records, "reversed": reversed_energies}, "emt")
    ranking = next(row for row in rows if row["property"].startswith("spearman"))
    assert ranking["id"] == "ni"
    assert ranking["same"] == pytest.approx(1.0)
    assert ranking["reversed"] < 0
    assert next(row for row in rows if row["property"] == "fraction_converged")["emt"] == 1.0


def test_missing_composition_is_an_error_record_and_other_parents_finish():
    records = substitution.run([bulk("Ni", "fcc", a=3.52, cubic=True)], EMT(), substitution.Settings(), progress=False)
    assert len(records) == 1 and "composition is not set" in records[0]["error"]
    bad_sublattice = substitution.Settings(**{**SETTINGS, "sublattice": "O", "n_configurations": 1})
    records = substitution.run([bulk("Ni", "fcc", a=3.52, cubic=True)], EMT(), bad_sublattice, progress=False)
    assert "no O sites" in records[0]["error"]


def test_same_call_with_emt_and_a_potential_gives_comparable_records(emt_records, tmp_path):
    from toy_potential import ToyPotential

    torch.manual_seed(0)
    parent = bulk("Ni", "fcc", a=3.52, cubic=True)
    parent.info["id"] = "ni"
    settings = substitution.Settings(**SETTINGS, relax_cell=False, max_steps=50)
    by_potential = substitution.run([parent], ToyPotential(), settings, progress=False)
    assert [r["id"] for r in by_potential] == [r["id"] for r in emt_records]
    assert set(by_potential[0]) - {"error"} == set(emt_records[0])
    paths = substitution.plot({"emt": emt_records, "toy": by_potential}, tmp_path)
    assert {p.name for p in paths} >= {"substitution_steps.png", "substitution_ranking.png"}
