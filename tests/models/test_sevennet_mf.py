"""SevenNet-MF-0 (in the sevenn wheel) at each fidelity: atomtune's batched forward agrees with sevenn's own
SevenNetCalculator(modal=...), the fidelity is chosen by name, and a saved model keeps it."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from atomtune.exceptions import ModelNotFoundError


def _structures():
    nickel_aluminium = bulk("Ni", "fcc", a=3.52, cubic=True)
    nickel_aluminium.symbols[1] = "Al"
    nickel_aluminium.rattle(0.05, seed=1)
    copper = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    copper.rattle(0.05, seed=2)
    return [nickel_aluminium, copper]


@pytest.mark.parametrize("name, modal", [("sevennet-mf-0", "PBE"), ("sevennet-mf-0-r2scan", "R2SCAN")])
def test_mf0_agrees_with_sevenn_calculator_at_each_fidelity(name, modal, tmp_path):
    from sevenn.calculator import SevenNetCalculator

    from atomtune.models.registry import load_potential

    potential = load_potential(name)
    assert potential.modal == modal
    structures = _structures()
    predicted = potential.predict(structures)
    native = SevenNetCalculator("7net-mf-0", modal=modal)
    for atoms, record in zip(structures, predicted):
        atoms = atoms.copy()
        atoms.calc = native
        assert abs(atoms.get_potential_energy() - record["energy"]) / len(atoms) < 1e-5
        assert np.abs(atoms.get_forces() - record["forces"]).max() < 1e-4
        assert np.abs(atoms.get_stress(voigt=False) - record["stress"]).max() < 1e-5
    reloaded = load_potential(str(potential.save(tmp_path / "mf")))
    assert reloaded.modal == modal
    assert reloaded.predict(structures[:1])[0]["energy"] == predicted[0]["energy"]


def test_unknown_fidelity_names_the_available_ones():
    from atomtune.models.sevennet_mf import SevennetMultiFidelityPotential

    with pytest.raises(ModelNotFoundError, match="R2SCAN"):
        SevennetMultiFidelityPotential.from_checkpoint("7net-mf-0:HSE06")
