"""MACE backbone on the tiny EMT-trained MACE model: agreement with mace's own MACECalculator, autograd forces and stress,
batching, element checks, blocks, atomic energies, save/load and the offline-download error."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress

from atomtune.exceptions import AtomtuneError, ModelNotFoundError, UnsupportedElementsError
from atomtune.models import mace as mace_backbone
from atomtune.models.mace import MacePotential
from atomtune.models.registry import load_potential


def mixed_cells():
    """Cubic, non-cubic (primitive fcc, hcp, sheared triclinic) and multi-element cells of 1–32 atoms."""
    rng = np.random.default_rng(5)
    cells = [
        bulk("Cu", "fcc", a=3.6, cubic=True),
        bulk("Ni", "fcc", a=3.5),  # primitive, 1 atom
        bulk("Al", "hcp", a=2.9, c=4.7),
        bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2)),
        bulk("Ni", "fcc", a=3.52, orthorhombic=True).repeat((1, 2, 1)),
    ]
    for k, atoms in enumerate(cells):
        symbols = atoms.get_chemical_symbols()
        for i in range(len(atoms)):
            symbols[i] = ("Ni", "Cu", "Al")[rng.integers(3)] if k > 1 else symbols[i]
        atoms.set_chemical_symbols(symbols)
        shear = np.eye(3) + rng.uniform(-0.04, 0.04, size=(3, 3))
        atoms.set_cell(atoms.cell[:] @ shear, scale_atoms=True)
        atoms.rattle(0.05, seed=k)
    return cells


def native_results(model_file, structures, dtype="float64"):
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(model_file), device="cpu", default_dtype=dtype)
    results = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        results.append(
            {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces(),
                "stress": voigt_6_to_full_3x3_stress(atoms.get_stress()),
            }
        )
    return results


def test_matches_mace_calculator_float64(tiny_mace, tiny_mace_model_file):
    structures = mixed_cells()
    ours = tiny_mace.predict(structures, batch_size=3)
    for atoms, mine, native in zip(structures, ours, native_results(tiny_mace_model_file, structures)):
        assert mine["energy"] / len(atoms) == pytest.approx(native["energy"] / len(atoms), abs=1e-10)
        np.testing.assert_allclose(mine["forces"], native["forces"], atol=1e-10)
        np.testing.assert_allclose(mine["stress"], native["stress"], atol=1e-10)


def test_matches_mace_calculator_float32_default(tiny_mace_model_file):
    potential = load_potential(str(tiny_mace_model_file), trust=True)
    assert potential.dtype == torch.float32
    structures = mixed_cells()
    ours = potential.predict(structures)
    for atoms, mine, native in zip(structures, ours, native_results(tiny_mace_model_file, structures, "float32")):
        assert mine["energy"] / len(atoms) == pytest.approx(native["energy"] / len(atoms), abs=1e-4)
        np.testing.assert_allclose(mine["forces"], native["forces"], atol=1e-4)
        np.testing.assert_allclose(mine["stress"], native["stress"], atol=1e-5)


def test_forces_match_finite_differences(tiny_mace):
    atoms = mixed_cells()[4]
    calc = tiny_mace.calculator()
    atoms.calc = calc
    forces = atoms.get_forces()
    delta = 1e-4
    for index, axis in [(0, 0), (1, 2), (3, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[index, axis] += sign * delta
            moved.calc = calc
            energies.append(moved.get_potential_energy())
        assert forces[index, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * delta), abs=1e-6)


def test_stress_is_ase_sign_strain_derivative(tiny_mace):
    atoms = mixed_cells()[4]
    calc = tiny_mace.calculator()
    atoms.calc = calc
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
    delta = 1e-5
    for a, b in [(0, 0), (1, 2)]:
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strain = np.zeros((3, 3))
            strain[a, b] = strain[b, a] = sign * delta
            strained.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
            strained.calc = calc
            energies.append(strained.get_potential_energy())
        factor = 1 if a == b else 2
        expected = (energies[0] - energies[1]) / (2 * delta) / atoms.get_volume() / factor
        assert stress[a, b] == pytest.approx(expected, abs=1e-8)


def test_batched_equals_one_by_one(tiny_mace):
    structures = mixed_cells()
    batched = tiny_mace.predict(structures, batch_size=5)
    single = tiny_mace.predict(structures, batch_size=1)
    for a, b in zip(batched, single):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-10)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-10)
        np.testing.assert_allclose(a["stress"], b["stress"], atol=1e-10)


def test_energy_only_and_forces_only(tiny_mace):
    structures = mixed_cells()[:3]
    full = tiny_mace.predict(structures)
    energy_only = tiny_mace.predict(structures, forces=False, stress=False)
    forces_only = tiny_mace.predict(structures, stress=False)
    for a, b, c in zip(full, energy_only, forces_only):
        assert b["energy"] == pytest.approx(a["energy"], abs=1e-10) and "forces" not in b
        np.testing.assert_allclose(c["forces"], a["forces"], atol=1e-10)
        assert "stress" not in c


def test_unsupported_element_raises_before_compute(tiny_mace, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("compute ran before the element check")

    monkeypatch.setattr(tiny_mace, "compute", fail)
    monkeypatch.setattr(tiny_mace, "featurize", fail)
    with pytest.raises(UnsupportedElementsError, match=r"mace:.* does not support element\(s\) Fe.*structure 1"):
        tiny_mace.predict([bulk("Cu", "fcc", a=3.6), bulk("Fe", "bcc", a=2.87)])


def test_supported_elements_and_cutoff(tiny_mace):
    assert tiny_mace.supported_elements == frozenset({"Ni", "Cu", "Al"})
    assert tiny_mace.cutoff == pytest.approx(4.5)
    assert tiny_mace.backbone == "mace" and tiny_mace.backbone_version()


def test_blocks_cover_every_parameter_once(tiny_mace):
    blocks = tiny_mace.blocks()
    names = [name for name, _ in blocks]
    assert names == ["node_embedding", "interaction_0", "product_0", "interaction_1", "product_1", "readout_0", "readout_1"]
    seen = [id(parameter) for _, block in blocks for parameter in block.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(parameter) for parameter in tiny_mace.parameters() if parameter.requires_grad}


def test_training_mode_is_differentiable_in_parameters(tiny_mace):
    tiny_mace.train()
    batch = tiny_mace.make_batch(mixed_cells()[:2])
    output = tiny_mace(batch)
    loss = output["energy"].sum() + output["forces"].pow(2).sum() + output["stress"].pow(2).sum()
    loss.backward()
    readout = dict(tiny_mace.blocks())["readout_1"]
    gradients = [parameter.grad for parameter in readout.parameters()]
    assert all(gradient is not None for gradient in gradients)
    assert sum(float(gradient.abs().sum()) for gradient in gradients) > 0


def test_atom_features_are_invariant_last_layer_scalars(tiny_mace):
    atoms = mixed_cells()[3]
    (features,) = tiny_mace.embed([atoms])
    assert features.shape == (len(atoms), 16)
    rotated = atoms.copy()
    rotated.rotate(37, "z", rotate_cell=True)
    rotated.rotate(20, "x", rotate_cell=True)
    (features_rotated,) = tiny_mace.embed([rotated])
    np.testing.assert_allclose(features, features_rotated, atol=1e-8)


def test_native_atomic_energies_shift_energy_per_atom(tiny_mace):
    atoms = mixed_cells()[3]
    before = tiny_mace.predict([atoms])[0]
    e0_before = tiny_mace.get_native_atomic_energies()
    tiny_mace.set_native_atomic_energies({"Cu": -1.25, "Al": 0.5})
    after = tiny_mace.predict([atoms])[0]
    symbols = atoms.get_chemical_symbols()
    expected = -1.25 * symbols.count("Cu") + 0.5 * symbols.count("Al")
    assert after["energy"] - before["energy"] == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(after["forces"], before["forces"], atol=1e-12)
    assert tiny_mace.get_native_atomic_energies()["Cu"] == pytest.approx(e0_before["Cu"] - 1.25)
    with pytest.raises(AtomtuneError, match="Fe"):
        tiny_mace.set_native_atomic_energies({"Fe": 1.0})


def test_save_load_round_trip_and_native_file(tiny_mace, tmp_path):
    from mace.calculators import MACECalculator

    structures = mixed_cells()[:3]
    tiny_mace.set_element_energy_shift({"Cu": -2.0, "Ni": 0.75})
    expected = tiny_mace.predict(structures)
    tiny_mace.save(tmp_path / "ft")
    assert (tmp_path / "ft" / "mace.model").exists() and (tmp_path / "ft" / "mace-native.model").exists()

    loaded = load_potential(str(tmp_path / "ft"), dtype="float64")
    assert isinstance(loaded, MacePotential)
    assert loaded.get_element_energy_shift() == {"Cu": -2.0, "Ni": 0.75}
    for a, b in zip(expected, loaded.predict(structures)):
        assert a["energy"] == b["energy"]
        np.testing.assert_array_equal(a["forces"], b["forces"])
        np.testing.assert_array_equal(a["stress"], b["stress"])

    # mace's own calculator on the exported file includes the shift (E0 folded into the model's atomic energies).
    calc = MACECalculator(model_paths=str(tmp_path / "ft" / "mace-native.model"), device="cpu")
    for atoms, record in zip(structures, expected):
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(record["energy"], abs=1e-9)


def test_load_potential_on_model_file(tiny_mace_model_file):
    potential = load_potential(str(tiny_mace_model_file), trust=True)
    assert isinstance(potential, MacePotential)
    assert potential.checkpoint == str(tiny_mace_model_file)
    assert MacePotential.checkpoint_available(str(tiny_mace_model_file))
    assert MacePotential.checkpoint_elements(str(tiny_mace_model_file), trust=True) == frozenset({"Ni", "Cu", "Al"})


def test_missing_and_wrong_model_files(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_potential(str(tmp_path / "missing.model"))
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "checkpoint.model")
    with pytest.raises(ModelNotFoundError, match="not a pickled MACE model"):
        load_potential(str(tmp_path / "checkpoint.model"), trust=True)
    (tmp_path / "garbage.model").write_text("not a model")
    with pytest.raises(AtomtuneError, match="could not load this MACE"):
        load_potential(str(tmp_path / "garbage.model"), trust=True)


def test_offline_download_gives_clear_error_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached

    def no_network(url):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(mace_backbone, "_probe_network", no_network)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"could not download mace-mp-0 .*no network.*pass the \.model path"):
        load_potential("mace-mp-0")
    assert time.perf_counter() - start < 5


def test_download_failure_after_probe_gives_clear_error(tmp_path, monkeypatch):
    import urllib.error

    from mace.calculators import foundations_models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mace_backbone, "_probe_network", lambda url: None)

    def refused(model=None):
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(foundations_models, "download_mace_mp_checkpoint", refused)
    with pytest.raises(ModelNotFoundError, match=r"could not download mace-mpa-0 .*connection refused"):
        MacePotential.from_checkpoint("medium-mpa-0")


def test_named_checkpoints_availability_and_elements(tmp_path, monkeypatch):
    from mace.calculators import foundations_models

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(foundations_models, "local_model_path", str(tmp_path / "absent.model"))
    for checkpoint in ("small", "medium", "large", "medium-mpa-0", "medium-omat-0"):
        assert not MacePotential.checkpoint_available(checkpoint)
        assert len(MacePotential.checkpoint_elements(checkpoint)) == 89
    cached = mace_backbone._cached_foundation_path("medium")
    assert cached.parent == tmp_path / "mace"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert MacePotential.checkpoint_available("medium")


def test_head_choice_follows_mace_calculator():
    choose = mace_backbone._choose_head
    assert choose(["Default"], None, "x") == "Default"
    assert choose(["pt_head", "Default"], None, "x") == "Default"
    assert choose(["pt_head", "Default"], "pt_head", "x") == "pt_head"
    with pytest.raises(AtomtuneError, match="none is called 'default'"):
        choose(["mp", "omat"], None, "x")
    with pytest.raises(AtomtuneError, match="no head 'dft'"):
        choose(["Default"], "dft", "x")
