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


# -- issue 16: stress layouts and units, degenerate cells ---------------------------------------------------------------


def _extxyz_with_info(tmp_path, frames, name="stress.extxyz"):
    """Write frames whose labels are plain info / arrays entries (as fitting codes write them), not via Dataset."""
    from ase.io import write

    path = tmp_path / name
    write(path, frames, format="extxyz")
    return path


def _labelled_frame(atoms, stress_value):
    from ase.calculators.emt import EMT

    atoms = atoms.copy()
    atoms.calc = EMT()
    frame = atoms.copy()
    frame.info["REF_energy"] = atoms.get_potential_energy()
    frame.arrays["REF_forces"] = atoms.get_forces()
    frame.info["REF_stress"] = stress_value(atoms)
    return frame


def test_stress_as_nine_numbers_is_read_as_a_symmetric_3x3(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)
    atoms.rattle(0.05, seed=1)
    frame = _labelled_frame(atoms, lambda a: a.get_stress(voigt=False).reshape(9))
    assert np.asarray(frame.info["REF_stress"]).shape == (9,)
    loaded = Dataset.read(_extxyz_with_info(tmp_path, [frame]))
    expected = atoms.copy()
    from ase.calculators.emt import EMT

    expected.calc = EMT()
    np.testing.assert_allclose(labels_of(loaded[0]).stress, expected.get_stress(voigt=True), atol=1e-9)
    # the same through attach_labels (readers, label jobs)
    again = attach_labels(atoms.copy(), -1.0, np.zeros((4, 3)), expected.get_stress(voigt=False).reshape(9))
    np.testing.assert_allclose(labels_of(again).stress, expected.get_stress(voigt=True), atol=1e-12)


def test_asymmetric_nine_number_stress_names_the_structure(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True)
    frames = [_labelled_frame(atoms, lambda a: a.get_stress(voigt=False).reshape(9))]
    frames.append(_labelled_frame(atoms, lambda a: np.array([0.01, 0.02, 0, 0.0, 0.01, 0, 0, 0, 0.01])))
    frames[1].info["id"] = "asym"
    with pytest.raises(DatasetError, match=r"structure 1 \(id asym.*not symmetric"):
        Dataset.read(_extxyz_with_info(tmp_path, frames))
    with pytest.raises(DatasetError, match=r"stress has 5 numbers"):
        attach_labels(atoms.copy(), -1.0, None, np.zeros(5))


def test_stress_in_kbar_is_refused_with_the_unit_fix(tmp_path):
    from ase.units import GPa

    frames = []
    for k, a in enumerate((3.50, 3.55, 3.70)):  # EMT Cu: ~ -9, -4, +? GPa, stored here as kbar numbers
        frame = _labelled_frame(bulk("Cu", "fcc", a=a, cubic=True), lambda s: s.get_stress() / GPa * 10.0)
        frame.info["id"] = f"cu-{k}"
        frames.append(frame)
    path = _extxyz_with_info(tmp_path, frames)
    message = r"3 of 3 structure\(s\) have stresses above 1000 GPa.*cu-0.*kBar.*0\.000624"
    with pytest.raises(DatasetError, match=message) as error:
        Dataset.read(path)
    assert "max_stress_gpa" in str(error.value)
    # told that the stresses are real: read, with a warning naming the structures and the likely fix
    with pytest.warns(UserWarning, match=r"cu-0.*kBar"):
        loaded = Dataset.read(path, max_stress_gpa=None)
    assert len(loaded) == 3


def test_plausible_stresses_read_without_warning(tmp_path, recwarn):
    frames = [_labelled_frame(bulk("Cu", "fcc", a=a, cubic=True), lambda s: s.get_stress()) for a in (3.5, 3.6)]
    Dataset.read(_extxyz_with_info(tmp_path, frames))
    assert not [w for w in recwarn if "stress" in str(w.message)]


@pytest.mark.parametrize(
    "cell, pbc, message",
    [
        ([[3.6, 0, 0], [0, 3.6, 0], [3.6, 3.6, 0]], True, r"cell is singular"),
        ([[3.6, 0, 0], [0, 3.6, 0], [0, 0, 0]], True, r"pbc is \[True, True, True\] but cell vector 3 is zero"),
        (np.zeros((3, 3)), True, r"but cell vector 1 is zero"),
        ([[3.6, 0, 0], [3.6, 1e-9, 0], [0, 0, 3.6]], [True, True, False], r"cell is singular"),
    ],
)
def test_degenerate_periodic_cells_name_the_structure(cell, pbc, message):
    from ase import Atoms

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], cell=cell, pbc=pbc)
    atoms.info["id"] = "flat"
    attach_labels(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    with pytest.raises(DatasetError, match=rf"structure 0 \(id flat, Cu2\).*{message}"):
        Dataset([atoms], name="mem").validate()


def test_degenerate_cell_in_a_file_is_a_clear_error(tmp_path):
    from ase import Atoms

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 1.8, 1.0]], cell=[[3.6, 0, 0], [0, 3.6, 0], [3.6, 3.6, 0]], pbc=True)
    frame = atoms.copy()
    frame.info["REF_energy"] = -1.0
    frame.arrays["REF_forces"] = np.zeros((2, 3))
    path = _extxyz_with_info(tmp_path, [frame], "flat.extxyz")
    with pytest.raises(DatasetError, match=r"flat.extxyz, structure 0 .*cell is singular"):
        Dataset.read(path)


def test_molecule_without_cell_is_fine():
    from ase.build import molecule

    water = molecule("H2O")
    attach_labels(water, energy=-14.0, forces=np.zeros((3, 3)))
    Dataset([water], name="mem").validate()
