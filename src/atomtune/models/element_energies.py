"""Per-element reference energies (E0): least-squares fit of an energy offset per element.

DFT codes, pseudopotentials and functionals differ in absolute energy by eV per atom (EMT vs PBE: 4–6 eV/atom; GPAW vs
VASP PAW: ~1 eV/atom), while energy *differences* are what a potential must get right. Fitting
``E_ref − E_model ≈ Σ_Z n_Z · μ_Z`` by least squares over a set of structures gives one offset μ_Z (eV/atom) per element;
the error benchmark reports errors after this alignment (``--align-e0``) and fine-tuning applies it as a fixed shift before
training (E0 re-estimation), so training spends no capacity learning a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols


def composition_matrix(structures: Sequence[Atoms]) -> tuple[np.ndarray, list[str]]:
    """Counts of each element per structure ``(n_structures, n_elements)`` and the element order (by Z)."""
    numbers = sorted({int(z) for atoms in structures for z in atoms.numbers})
    column = {z: k for k, z in enumerate(numbers)}
    counts = np.zeros((len(structures), len(numbers)))
    for row, atoms in enumerate(structures):
        for z in atoms.numbers:
            counts[row, column[int(z)]] += 1
    return counts, [chemical_symbols[z] for z in numbers]


def fit_element_energies(
    structures: Sequence[Atoms], reference_energies: Sequence[float], model_energies: Sequence[float] | None = None
) -> dict[str, float]:
    """Per-element offsets μ (eV/atom) minimising Σ (E_ref − E_model − Σ_Z n_Z μ_Z)².

    With ``model_energies=None`` this fits the reference energies themselves (plain E0s as in MACE's ``E0s: average``).
    Elements whose counts are linearly dependent across the set (e.g. every structure has Ni:Al = 1:1) are not separately
    identifiable; the minimum-norm solution is returned, which still reproduces every energy in the set.
    """
    counts, symbols = composition_matrix(structures)
    target = np.asarray(reference_energies, dtype=float)
    if model_energies is not None:
        target = target - np.asarray(model_energies, dtype=float)
    solution, *_ = np.linalg.lstsq(counts, target, rcond=None)
    return {symbol: float(value) for symbol, value in zip(symbols, solution)}


def apply_element_energies(structures: Sequence[Atoms], energies: Sequence[float], offsets: dict[str, float]) -> np.ndarray:
    """Energies with the per-element offsets added (eV)."""
    shifted = np.asarray(energies, dtype=float).copy()
    for k, atoms in enumerate(structures):
        shifted[k] += sum(offsets.get(symbol, 0.0) for symbol in atoms.get_chemical_symbols())
    return shifted
