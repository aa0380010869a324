"""Error benchmark: metrics against hand-computed values, E0 alignment, the CLI end to end on the toy potential."""

import json

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.units import GPa
from typer.testing import CliRunner

from atomtune.tasks import errors


def test_metrics_match_hand_computation(emt_dataset):
    records = errors.run(list(emt_dataset), EMT(), progress=False)
    # EMT against its own labels: zero error
    zero = errors.metrics(records)
    assert zero["energy_mae_mev_per_atom"] == pytest.approx(0, abs=1e-9)
    assert zero["force_rmse_mev_per_a"] == pytest.approx(0, abs=1e-9)
    # shift one structure's prediction by +0.04 eV/atom and one force component by 0.3 eV/Å
    records[0]["energy_pred"] += 0.04 * records[0]["n_atoms"]
    records[1]["forces_pred"][0][2] += 0.3
    records[2]["stress_pred"][0] += 0.5 * GPa
    result = errors.metrics(records)
    n = len(records)
    n_components = 3 * sum(r["n_atoms"] for r in records)
    assert result["energy_mae_mev_per_atom"] == pytest.approx(40.0 / n)
    assert result["energy_rmse_mev_per_atom"] == pytest.approx(np.sqrt(40.0**2 / n))
    assert result["force_mae_mev_per_a"] == pytest.approx(300.0 / n_components)
    assert result["stress_mae_gpa"] == pytest.approx(0.5 / (6 * n))
    element = records[1]["symbols"][0]
    assert result["per_element"][element]["force_mae_mev_per_a"] > 0


def test_align_e0_removes_per_element_offset(emt_dataset):
    records = errors.run(list(emt_dataset), EMT(), progress=False)
    offsets = {"Cu": 4.0, "Ni": 5.5, "Al": -3.0}
    for record in records:
        record["energy_pred"] += sum(offsets[s] for s in record["symbols"])
    result = errors.metrics(records, align_e0=True)
    assert result["energy_mae_mev_per_atom"] > 1000
    assert result["aligned_energy_mae_mev_per_atom"] == pytest.approx(0, abs=1e-6)
    assert result["aligned_e0_offsets_ev"]["Ni"] == pytest.approx(-5.5)
    assert "differ in absolute energy" in result["aligned_note"]


def test_potential_and_calculator_paths_agree(emt_dataset, toy_potential):
    batched = errors.run(list(emt_dataset), toy_potential, progress=False)
    looped = errors.run(list(emt_dataset), toy_potential.calculator(), progress=False)
    for a, b in zip(batched, looped):
        assert a["energy_pred"] == pytest.approx(b["energy_pred"], abs=1e-5)
        np.testing.assert_allclose(a["stress_pred"], b["stress_pred"], atol=1e-6)


@pytest.fixture
def toy_registry(monkeypatch):
    from atomtune.models import registry

    monkeypatch.setitem(registry.BACKBONES, "toy", "toy_potential:ToyPotential")
    monkeypatch.setattr(
        registry, "CHECKPOINTS", registry.CHECKPOINTS + [registry.CheckpointInfo("toy-1", "toy", "toy", True, "toy")]
    )


def test_errors_cli_writes_json_plots_and_table(emt_dataset, tmp_path, toy_registry):
    from atomtune.cli import app

    data = emt_dataset.write(tmp_path / "test.extxyz")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["errors", "--data", str(data), "--model", "toy-1", "--out", str(out), "--align-e0", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "errors.json").read_text())
    assert set(record["models"]["toy-1"]["per_element"]) == {"Al", "Cu", "Ni"}
    assert "aligned_energy_mae_mev_per_atom" in record["models"]["toy-1"]
    assert (out / "parity_toy-1.png").stat().st_size > 1000
    assert "F MAE" in result.output and "E0-aligned" in result.output


def test_errors_cli_unsupported_element_is_one_clear_message(tmp_path, toy_registry):
    from ase.build import bulk

    from atomtune.cli import app
    from atomtune.data.dataset import Dataset, attach_labels

    atoms = bulk("Fe", cubic=True)
    attach_labels(atoms, -1.0, np.zeros((2, 3)))
    path = Dataset([atoms]).write(tmp_path / "fe.extxyz")
    result = CliRunner().invoke(app, ["errors", "--data", str(path), "--model", "toy-1", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "does not support element(s) Fe" in str(result.exception)


def test_unknown_model_suggests_close_name():
    from atomtune.exceptions import ModelNotFoundError
    from atomtune.models import load_potential

    with pytest.raises(ModelNotFoundError, match="Did you mean chgnet-0.3.0"):
        load_potential("chgnet-0.3")
