import numpy as np
import pytest
from ase.build import bulk

from atomtune.models.element_energies import apply_element_energies, fit_element_energies


def test_fit_recovers_known_offsets():
    structures = [bulk("Cu", cubic=True), bulk("Ni", cubic=True), bulk("Al", cubic=True) * (1, 1, 2)]
    mixed = bulk("Cu", cubic=True)
    mixed.symbols[:2] = "Ni"
    structures.append(mixed)
    true = {"Al": -3.0, "Ni": -5.5, "Cu": -4.0}
    model = np.array([0.1, -0.2, 0.05, 0.3])
    reference = apply_element_energies(structures, model, true)
    fitted = fit_element_energies(structures, reference, model)
    for symbol, value in true.items():
        assert fitted[symbol] == pytest.approx(value, abs=1e-10)
