"""Dataset io, validation messages (file + structure index) and deterministic splits."""

import numpy as np
import pytest
from ase.build import bulk

from atomtune.data.dataset import Dataset, attach_labels, labels_of, reduced_formula
from atomtune.exceptions import DatasetError


def test_extxyz_and_db_round_trip_preserve_labels(emt_dataset, tmp_path):
    for name in ("data.extxyz", "data.db"):
        path = emt_dataset.write(tmp_path / name)
        loaded = Dataset.read(path)
        assert len(loaded) == len(emt_dataset)
        for a, b in zip(emt_dataset, loaded):
            la, lb = labels_of(a), labels_of(b)
            assert la.energy == pytest.approx(lb.energy)
            np.testing.assert_allclose(la.forces, lb.forces, atol=1e-7)
            np.testing.assert_allclose(la.stress, lb.stress, atol=1e-9)
            assert b.info["id"] == a.info["id"]


def test_custom_keys(emt_dataset, tmp_path):
    path = emt_dataset.write(tmp_path / "d.extxyz", energy_key="dft_E", forces_key="dft_F", stress_key="dft_S")
    with pytest.raises(DatasetError, match=r"d.extxyz, structure 0 .*no energy label"):
        Dataset.read(path)
    loaded = Dataset.read(path, energy_key="dft_E", forces_key="dft_F", stress_key="dft_S")
    assert loaded.has_stress


def _write(tmp_path, structures, name="bad.extxyz"):
    return Dataset(structures).write(tmp_path / name)


def test_missing_forces_names_file_and_index(emt_dataset, tmp_path):
    structures = list(emt_dataset)[:3]
    broken = structures[1].copy()
    attach_labels(broken, energy=-1.0)
    path = _write(tmp_path, [structures[0], broken, structures[2]])
    with pytest.raises(DatasetError, match=r"bad.extxyz, structure 1 .*no forces label"):
        Dataset.read(path)


def test_nan_energy_and_inf_forces(emt_dataset, tmp_path):
    atoms = emt_dataset[0].copy()
    attach_labels(atoms, energy=float("nan"), forces=np.zeros((len(atoms), 3)))
    with pytest.raises(DatasetError, match=r"structure 0 .*energy is nan"):
        Dataset.read(_write(tmp_path, [atoms]))
    forces = np.zeros((len(atoms), 3))
    forces[1, 1] = np.inf
    attach_labels(atoms, energy=-1.0, forces=forces)
    with pytest.raises(DatasetError, match="forces contain NaN or inf"):
        Dataset.read(_write(tmp_path, [atoms], "inf.extxyz"))


def test_wrong_force_shape():
    atoms = bulk("Cu", cubic=True)
    attach_labels(atoms, energy=-1.0, forces=np.zeros((3, 3)))
    with pytest.raises(DatasetError, match=r"forces have shape \(3, 3\), expected \(4, 3\)"):
        Dataset([atoms], name="mem").validate()


def test_atoms_too_close():
    atoms = bulk("Cu", cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.2, 0, 0]
    attach_labels(atoms, energy=-1.0, forces=np.zeros((4, 3)))
    with pytest.raises(DatasetError, match=r"0.200 Å apart"):
        Dataset([atoms], name="mem").validate()


def test_empty_and_missing_and_malformed_files(tmp_path):
    empty = tmp_path / "empty.extxyz"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty.extxyz: the file is empty"):
        Dataset.read(empty)
    with pytest.raises(DatasetError, match="file not found"):
        Dataset.read(tmp_path / "nope.extxyz")
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("this is not\nan xyz file\n")
    with pytest.raises(DatasetError, match="garbage.extxyz: could not read as extxyz"):
        Dataset.read(garbage)


def test_random_split_is_deterministic(emt_dataset):
    a = emt_dataset.split({"train": 0.75, "test": 0.25}, seed=3)
    b = emt_dataset.split({"train": 0.75, "test": 0.25}, seed=3)
    assert a["test"].ids() == b["test"].ids()
    assert len(a["train"]) + len(a["test"]) == len(emt_dataset)
    assert all(atoms.info["split"] == "test" for atoms in a["test"])


def test_composition_split_never_shares_a_formula(emt_dataset):
    parts = emt_dataset.split({"train": 0.6, "valid": 0.2, "test": 0.2}, by="composition", seed=0)
    formulas = {
        name: {reduced_formula(atoms) for atoms in part}
        for name, part in parts.items()
    }
    assert not formulas["train"] & formulas["test"]
    assert not formulas["train"] & formulas["valid"]
    assert sum(len(p) for p in parts.values()) == len(emt_dataset)
