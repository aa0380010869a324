"""Helpers shared by the fine-tuning tests (importable by name: tests/finetune is on sys.path while they run)."""

from __future__ import annotations


def shifted_toy_labels(structures, potential, offsets):
    """Copies of ``structures`` labelled by ``potential`` plus per-element ``offsets`` (eV/atom): E0 is then exact."""
    from atomtune.data.dataset import attach_labels

    labelled = []
    for atoms, record in zip(structures, potential.predict(structures)):
        copy = atoms.copy()
        copy.info.update(atoms.info)
        shift = sum(offsets[symbol] for symbol in copy.get_chemical_symbols())
        attach_labels(copy, record["energy"] + shift, record["forces"], record["stress"])
        labelled.append(copy)
    return labelled
