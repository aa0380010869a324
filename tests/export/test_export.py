"""Exports to LAMMPS formats: the exported TorchScript, loaded back and called as LAMMPS's pair style calls it,
reproduces the Potential's energies, forces and stresses, including a fine-tune's LoRA update and E0 shift; models
without a path and inconsistent type ↔ element mappings are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.build import bulk

from atomtune.exceptions import AtomtuneError
from atomtune.export import ExportedModel, export, formats_by_backbone
from atomtune.lammps.inputs import check_type_elements, pair_lines


def make_cells():
    """Two small test cells: a rattled Ni–Al fcc supercell and a strained triclinic Cu–Ni primitive supercell."""
    first = bulk("Ni", "fcc", a=3.52, cubic=True).repeat((2, 1, 1))
    first.symbols[[1, 5]] = "Al"
    first.rattle(0.05, seed=1)
    second = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 1))
    second.symbols[[0]] = "Ni"
    second.set_cell(
        second.cell[:] @ (np.eye(3) + 0.02 * np.array([[0, 1, 0], [0, 0, 0], [0, 0, -1]])), scale_atoms=True
    )
    second.rattle(0.04, seed=2)
    return [first, second]


def assert_reproduces(potential, evaluate, path, atol_energy, atol_forces, atol_stress):
    cells = make_cells()
    for atoms, expected in zip(cells, potential.predict(cells)):
        got = evaluate(path, atoms)
        assert got["energy"] == pytest.approx(expected["energy"], abs=atol_energy)
        assert np.abs(got["forces"] - expected["forces"]).max() < atol_forces
        assert np.abs(got["stress"] - expected["stress"]).max() < atol_stress


def perturb_lora(potential, rank=2):
    """Apply LoRA and give its adapters non-zero updates (as training would), without merging them."""
    from atomtune.finetune.strategies.lora import LoRA

    LoRA(rank=rank, seed=3).apply(potential)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in potential.named_parameters():
            if "parametrizations" in name and "original" not in name:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return potential


def test_mace_export_reproduces_a_fine_tuned_model_with_lora_and_e0_shift(tiny_mace_model_file, tmp_path):
    from atomtune.export.mace import evaluate_deployed
    from atomtune.models.registry import load_potential

    base = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
    potential = perturb_lora(load_potential(str(tiny_mace_model_file), dtype="float64", trust=True))
    potential.set_element_energy_shift({"Ni": 0.37, "Al": -0.21, "Cu": 0.05, "Fe": 1.0})  # Fe: not in the model
    cells = make_cells()
    # the fine-tune really differs from the foundation model, in forces too (not only by the shift)
    assert np.abs(potential.predict(cells)[0]["forces"] - base.predict(cells)[0]["forces"]).max() > 1e-4

    (record,) = export(potential, tmp_path, ["mace-libtorch"])
    assert record.path.is_file() and record.pair_style == "mace"
    assert_reproduces(potential, evaluate_deployed, record.path, 1e-8, 1e-8, 1e-9)
    # the Potential itself is untouched: adapters still attached, shift still atomtune's
    assert any("parametrizations" in name for name, _ in potential.named_parameters())
    assert potential.get_element_energy_shift()["Ni"] == pytest.approx(0.37)
    snippet = (tmp_path / "in.mace-libtorch.lammps").read_text()
    assert "pair_style mace" in snippet and "pair_coeff * * mace-lammps.pt Al Ni Cu" in snippet
    assert json.loads((tmp_path / "export.json").read_text())[0]["format"] == "mace-libtorch"


def test_mace_mliap_without_cuequivariance_says_what_to_install(tiny_mace_model_file, tmp_path):
    pytest.importorskip("mace")
    try:
        import cuequivariance_torch  # noqa: F401

        pytest.skip("cuequivariance is installed here")
    except ImportError:
        pass
    from atomtune.models.registry import load_potential

    potential = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
    with pytest.raises(AtomtuneError, match="cuequivariance-torch"):
        export(potential, tmp_path, ["mliap"])


def test_sevennet_e3gnn_export_reproduces_sevennet0_with_e0_shift(tmp_path):
    from atomtune.export.sevennet import evaluate_deployed
    from atomtune.models.registry import load_potential

    potential = load_potential("sevennet-0")
    potential.set_element_energy_shift({"Ni": 0.37, "Al": -0.21})
    (record,) = export(potential, tmp_path, ["e3gnn"])
    assert record.path.name == "deployed_serial.pt" and record.pair_style == "e3gnn"
    # LAMMPS's e3gnn runs in single precision, as the Potential does (float32)
    assert_reproduces(potential, evaluate_deployed, record.path, 2e-4, 2e-5, 1e-6)
    cells = make_cells()
    unshifted = load_potential("sevennet-0").predict(cells[:1])[0]["energy"]
    assert evaluate_deployed(record.path, cells[0])["energy"] - unshifted == pytest.approx(
        6 * 0.37 - 2 * 0.21, abs=2e-4
    )


@pytest.mark.slow
def test_sevennet_exports_a_lora_fine_tune_in_every_format(tmp_path):
    from atomtune.export.sevennet import evaluate_deployed
    from atomtune.models.registry import load_potential

    potential = perturb_lora(load_potential("sevennet-0"))
    potential.set_element_energy_shift({"Cu": 0.11})
    records = export(potential, tmp_path, ["e3gnn", "e3gnn-parallel", "mliap"])
    assert_reproduces(potential, evaluate_deployed, records[0].path, 2e-4, 2e-5, 1e-6)
    assert len(list((tmp_path / "deployed_parallel").glob("deployed_parallel_*.pt"))) == 5  # one per layer of 7net-0
    parallel = pair_lines(records[1], ["Cu", "Ni"])
    assert parallel[1].startswith("pair_coeff * * 5 deployed_parallel/deployed_parallel_0.pt")
    # the ML-IAP pickle carries the fine-tuned, shifted weights: a model built from it gives the Potential's energy
    from sevenn.calculator import SevenNetCalculator

    wrapper = torch.load(records[2].path, weights_only=False)  # written by this test
    calculator = SevenNetCalculator(model=wrapper.cp.build_model(), file_type="model_instance")
    atoms = make_cells()[1]
    atoms.calc = calculator
    assert atoms.get_potential_energy() == pytest.approx(potential.predict([atoms])[0]["energy"], abs=2e-4)


def test_chgnet_has_no_lammps_path_and_says_which_backbones_do(tmp_path):
    class ChgnetLike:
        backbone = "chgnet"
        name = "chgnet:0.3.0"

    with pytest.raises(AtomtuneError, match="no LAMMPS pair style.*SevenNet.*MACE"):
        export(ChgnetLike(), tmp_path)
    assert formats_by_backbone()["chgnet"] == ()
    assert "e3gnn" in formats_by_backbone()["sevennet"] and "mace-libtorch" in formats_by_backbone()["mace"]


def test_unknown_format_lists_the_formats_of_every_backbone(tmp_path):
    class SevennetLike:
        backbone = "sevennet"
        name = "sevennet:7net-0"

    with pytest.raises(AtomtuneError, match=r"exports to e3gnn, e3gnn-parallel, mliap.*chgnet: none"):
        export(SevennetLike(), tmp_path, ["mace-libtorch"])


def test_type_to_element_mapping_is_checked(tmp_path):
    record = ExportedModel("e3gnn", tmp_path / "deployed_serial.pt", "sevennet", "e3gnn", ["Al", "Ni"], 5.0, "x")
    assert pair_lines(record, ["Ni", "Al"]) == ["pair_style e3gnn", "pair_coeff * * deployed_serial.pt Ni Al"]
    with pytest.raises(AtomtuneError, match="Cu.*does not have"):
        pair_lines(record, ["Ni", "Cu"])
    with pytest.raises(AtomtuneError, match="more than one atom type"):
        pair_lines(record, ["Ni", "Ni"])
    with pytest.raises(AtomtuneError, match="declares 3 atom types"):
        check_type_elements(["Ni", "Al"], ["Al", "Ni"], n_types=3)
