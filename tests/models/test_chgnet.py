"""CHGNet backbone: agreement with CHGNet's own ASE calculator, derivatives, batching, persistence, registry."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from atomtune.exceptions import ModelNotFoundError, UnsupportedElementsError

pytest.importorskip("chgnet")


@pytest.fixture(scope="module")
def potential():
    from atomtune.models.registry import load_potential

    return load_potential("chgnet-0.3.0")


@pytest.fixture(scope="module")
def potential_float64(potential):
    return copy.deepcopy(potential).double()


def chgnet_calculator(model):
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(model, use_device="cpu")


def sheared(atoms: Atoms, strain) -> Atoms:
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell[:] @ (np.eye(3) + np.asarray(strain)), scale_atoms=True)
    return atoms


def sample_cells() -> list[Atoms]:
    """Non-cubic and multi-element cells, strained and rattled so forces and all stress components are non-zero."""
    cells = [
        sheared(bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2)), [[0.02, 0.01, 0.0], [0.0, -0.01, 0.0], [0.0, 0.0, 0.01]]),
        bulk("NaCl", "rocksalt", a=5.64, cubic=True),
        bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 2, 1)),
        sheared(bulk("MgO", "rocksalt", a=4.21, cubic=True), [[0.0, 0.03, -0.02], [0.0, 0.0, 0.01], [0.0, 0.0, 0.0]]),
    ]
    symbols = cells[3].get_chemical_symbols()
    symbols[0], symbols[5] = "Al", "N"
    cells[3].set_chemical_symbols(symbols)  # four elements in one cell
    for seed, atoms in enumerate(cells):
        atoms.rattle(0.05, seed=seed)
        atoms.info["id"] = f"cell-{seed}"
    return cells




def test_matches_chgnet_calculator(potential):
    cells = sample_cells()
    predictions = potential.predict(cells)
    calculator = chgnet_calculator(potential.model)
    for atoms, prediction in zip(cells, predictions):
        calculator.calculate(atoms.copy(), ["energy", "forces", "stress"])
        native = calculator.results
        assert prediction["energy"] / len(atoms) == pytest.approx(native["energy"] / len(atoms), abs=1e-4)
        np.testing.assert_allclose(prediction["forces"], native["forces"], atol=1e-4)
        # CHGNet's calculator returns the 3x3 stress already in eV/Å³ (its GPa output times units.GPa)
        np.testing.assert_allclose(prediction["stress"], np.asarray(native["stress"]).reshape(3, 3), atol=1e-6)
        assert np.abs(prediction["stress"]).max() > 1e-3  # a meaningful comparison, not zeros against zeros


@pytest.mark.parametrize("checkpoint", ["0.2.0", "r2scan"])
def test_other_checkpoints_match_chgnet_calculator(checkpoint):
    from atomtune.models.chgnet import ChgnetPotential

    other = ChgnetPotential.from_checkpoint(checkpoint)
    atoms = sample_cells()[3]
    (prediction,) = other.predict([atoms])
    calculator = chgnet_calculator(other.model)
    calculator.calculate(atoms.copy(), ["energy", "forces", "stress"])
    assert prediction["energy"] / len(atoms) == pytest.approx(calculator.results["energy"] / len(atoms), abs=1e-4)
    np.testing.assert_allclose(prediction["forces"], calculator.results["forces"], atol=1e-4)
    np.testing.assert_allclose(prediction["stress"], np.asarray(calculator.results["stress"]).reshape(3, 3), atol=1e-6)


def graph_test_structures() -> list[Atoms]:
    """Cells that stress graph construction: one-atom cells (bonds to own images), hcp, diamond, a slab, strained ones."""
    from ase.build import fcc111

    structures = sample_cells() + [
        bulk("Cu", "fcc", a=3.6),
        bulk("Fe", "bcc", a=2.87),
        bulk("Si", "diamond", a=5.43),
        sheared(bulk("LiF", "rocksalt", a=4.03), [[0.04, -0.03, 0.02], [0.01, 0.0, 0.0], [0.0, 0.02, -0.04]]),
    ]
    slab = fcc111("Pt", (2, 2, 3), vacuum=6.0)
    slab.pbc = True
    return structures + [slab]


def test_graph_identical_to_chgnet_converter(potential):
    from chgnet.graph import CrystalGraphConverter
    from pymatgen.io.ase import AseAtomsAdaptor

    converter = CrystalGraphConverter(atom_graph_cutoff=6, bond_graph_cutoff=3)
    fields = ("atomic_number", "atom_graph", "neighbor_image", "directed2undirected", "undirected2directed", "bond_graph")
    for atoms in graph_test_structures():
        expected, graph = converter(AseAtomsAdaptor.get_structure(atoms)), potential.featurize(atoms)
        for field in fields:
            assert torch.equal(getattr(graph, field), getattr(expected, field)), (atoms.get_chemical_formula(), field)
        assert graph.bond_graph.shape[0] > 0


def test_isolated_atom_warns_with_structure_name(potential):
    atoms = Atoms("CuH", positions=[[0, 0, 0], [7, 7, 7]], cell=[14, 14, 14], pbc=True, info={"id": "lonely"})
    with pytest.warns(UserWarning, match="lonely: 2 atom"):
        (prediction,) = potential.predict([atoms])
    assert np.allclose(prediction["forces"], 0.0)


def test_forces_and_stress_are_energy_derivatives(potential_float64):
    atoms = sample_cells()[3]
    (reference,) = potential_float64.predict([atoms])

    def energy(structure):
        return potential_float64.predict([structure], forces=False, stress=False)[0]["energy"]

    delta = 1e-4
    for index, axis in [(0, 0), (3, 2), (6, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[index, axis] += delta
        minus.positions[index, axis] -= delta
        expected = -(energy(plus) - energy(minus)) / (2 * delta)
        assert reference["forces"][index, axis] == pytest.approx(expected, abs=1e-5)
    for a, b in [(0, 0), (0, 1), (1, 2)]:
        strain = np.zeros((3, 3))
        strain[a, b] = strain[b, a] = delta
        factor = 1 if a == b else 2
        expected = (energy(sheared(atoms, strain)) - energy(sheared(atoms, -strain))) / (2 * delta)
        assert reference["stress"][a, b] == pytest.approx(expected / atoms.get_volume() / factor, abs=1e-6)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_batched_equals_one_by_one(potential, potential_float64, precision):
    # float64 shows the batch bookkeeping is exact; float32 differs by summation order only (~1e-5 eV/Å).
    model, tolerance = (potential, 1e-4) if precision == "float32" else (potential_float64, 1e-10)
    cells = sample_cells()
    batched = model.predict(cells, batch_size=len(cells))
    single = model.predict(cells, batch_size=1)
    for atoms, a, b in zip(cells, batched, single):
        assert a["energy"] / len(atoms) == pytest.approx(b["energy"] / len(atoms), abs=tolerance)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=tolerance)
        np.testing.assert_allclose(a["stress"], b["stress"], atol=tolerance / 100)


def test_unsupported_element_raises_before_featurize(potential, monkeypatch):
    def featurize(atoms):
        raise AssertionError("featurize ran on a structure with an unsupported element")

    monkeypatch.setattr(potential, "featurize", featurize)
    curium = bulk("Cu", "fcc", a=3.6)
    curium.set_chemical_symbols(["Cm"])
    with pytest.raises(UnsupportedElementsError, match=r"chgnet:0.3.0 does not support element\(s\) Cm.*structure 1"):
        potential.predict([bulk("Cu", "fcc", a=3.6), curium])


def test_supported_elements_and_cutoff(potential):
    assert {"H", "O", "Fe", "Pu"} <= potential.supported_elements
    assert "Am" not in potential.supported_elements and len(potential.supported_elements) == 94
    assert potential.cutoff == 6.0 and potential.bond_graph_cutoff == 3.0


def test_blocks_cover_every_parameter_exactly_once(potential):
    blocks = potential.blocks()
    names = [name for name, _ in blocks]
    assert names[0] == "atom_reference" and names[1] == "embedding" and names[-1] == "readout"
    assert names[2:-1] == [f"interaction_{i}" for i in range(potential.model.n_conv)]
    seen = [id(parameter) for _, block in blocks for parameter in block.parameters()]
    model_parameters = {id(parameter) for parameter in potential.model.parameters()}
    assert len(seen) == len(set(seen))
    assert set(seen) == model_parameters
    assert not any(True for _ in potential.state_dict() if _.startswith("blocks"))  # blocks() registers nothing


def test_training_forward_is_differentiable_in_parameters(potential):
    trainee = copy.deepcopy(potential)
    trainee.train()
    batch = trainee.make_batch(sample_cells()[:2])
    output = trainee(batch)
    loss = output["energy"].square().sum() + output["forces"].square().sum() + output["stress"].square().sum()
    loss.backward()
    last_layer = trainee.model.atom_conv_layers[-1].twoBody_atom.mlp_core.layers[0].weight
    assert last_layer.grad is not None and last_layer.grad.abs().sum() > 0



@pytest.mark.parametrize("lora", [False, True])
def test_split_first_layer_equals_chgnet_layers_in_training(potential_float64, monkeypatch, lora):
    """The split gated-MLP first layer gives CHGNet's own layers' loss and parameter gradients (float64)."""
    import atomtune.models.chgnet as chgnet_module

    trainee = copy.deepcopy(potential_float64)
    if lora:
        from atomtune.finetune.strategies.lora import LoRA

        LoRA(rank=4).select(trainee)
        for parameter in trainee.parameters():  # a non-zero update, so the adapters take part in the forward
            if parameter.requires_grad:
                parameter.data.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    trainee.train()
    batch = trainee.make_batch(sample_cells()[:2])

    def loss_and_gradients():
        trainee.zero_grad(set_to_none=True)
        output = trainee(batch)
        loss = output["energy"].square().sum() + output["forces"].square().sum() + output["stress"].square().sum()
        loss.backward()
        named = trainee.named_parameters()
        return float(loss), {name: p.grad.clone() for name, p in named if p.requires_grad and p.grad is not None}

    split_loss, split_gradients = loss_and_gradients()
    monkeypatch.setattr(chgnet_module, "_first_linear", lambda mlp: (None, []))  # CHGNet's own GatedMLP path
    native_loss, native_gradients = loss_and_gradients()
    assert split_loss == pytest.approx(native_loss, rel=1e-10)
    assert split_gradients.keys() == native_gradients.keys() and len(split_gradients) > 10
    for name, gradient in split_gradients.items():
        torch.testing.assert_close(gradient, native_gradients[name], rtol=1e-8, atol=1e-10, msg=name)

def test_atom_features_shape(potential):
    cells = sample_cells()[:2]
    features = potential.embed(cells)
    assert [f.shape for f in features] == [(len(atoms), 64) for atoms in cells]
    assert all(np.isfinite(f).all() for f in features)


def test_save_load_round_trip_and_native_file(potential, tmp_path):
    from chgnet.model import CHGNet

    from atomtune.models.registry import load_potential

    tuned = copy.deepcopy(potential)
    with torch.no_grad():
        tuned.model.mlp.layers[-1].bias.add_(0.01)  # stands in for a fine-tune
    tuned.set_element_energy_shift({"Na": -0.5, "Cl": 0.25, "Mg": 1.0})
    directory = tuned.save(tmp_path / "model")
    loaded = load_potential(str(directory))
    assert loaded.checkpoint == "0.3.0" and loaded.get_element_energy_shift() == tuned.get_element_energy_shift()

    cells = sample_cells()
    before, after = tuned.predict(cells), loaded.predict(cells)
    for a, b in zip(before, after):
        assert a["energy"] == b["energy"]
        np.testing.assert_array_equal(a["forces"], b["forces"])
        np.testing.assert_array_equal(a["stress"], b["stress"])

    # The saved file is a CHGNet checkpoint with the element shift folded into AtomRef: native energies agree.
    native = chgnet_calculator(CHGNet.from_file(str(directory / "chgnet.pth.tar")))
    for atoms, prediction in zip(cells, before):
        native.calculate(atoms.copy(), ["energy", "forces"])
        assert native.results["energy"] / len(atoms) == pytest.approx(prediction["energy"] / len(atoms), abs=1e-4)


def test_float64_fine_tune_reloads_without_rounding(potential_float64, tmp_path):
    from atomtune.models.registry import load_potential

    tuned = copy.deepcopy(potential_float64)
    with torch.no_grad():
        tuned.model.mlp.layers[-1].bias.add_(1e-12)  # a float64 update float32 cannot hold
    loaded = load_potential(str(tuned.save(tmp_path / "model")), dtype="float64")
    for (name, a), b in zip(tuned.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_registry_names_and_availability():
    from atomtune.models.chgnet import ChgnetPotential
    from atomtune.models.registry import available_models, backbones_covering

    for checkpoint in ("0.3.0", "0.2.0", "r2scan"):
        assert ChgnetPotential.checkpoint_available(checkpoint)
    rows = {row["name"]: row["status"] for row in available_models()}
    assert rows["chgnet-0.3.0"] == rows["chgnet-r2scan"] == "offline"
    assert backbones_covering({"Fe", "Pu"})["chgnet-0.3.0"] is True
    assert backbones_covering({"Cm"})["chgnet-0.3.0"] is False
    with pytest.raises(ModelNotFoundError, match="0.1.0"):
        ChgnetPotential.from_checkpoint("0.1.0")


def test_registry_loads_default_checkpoint(potential):
    from atomtune.models.chgnet import ChgnetPotential

    assert isinstance(potential, ChgnetPotential)
    assert potential.name == "chgnet:0.3.0"
    assert potential.metadata()["backbone_version"] == "0.4.2"


def test_ase_calculator_and_molecule_error(potential):
    from atomtune.exceptions import AtomtuneError

    atoms = sample_cells()[1]
    atoms.calc = potential.calculator()
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_forces().shape == (len(atoms), 3)
    with pytest.raises(AtomtuneError, match="no 3D cell"):
        potential.predict([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])])
