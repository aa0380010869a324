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


# -- issue 16: bad settings, unlabelled data, structures where stress is undefined --------------------------------------


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_batch_size_must_be_positive(batch_size):
    from atomtune.exceptions import AtomtuneError

    with pytest.raises(AtomtuneError, match="batch_size"):
        errors.Settings(batch_size=batch_size)
    assert errors.Settings(batch_size=3).batch_size == 3 and errors.Settings().batch_size is None


@pytest.mark.parametrize("batch_size", ["0", "-1"])
def test_errors_cli_batch_size_is_a_clear_error(emt_dataset, tmp_path, toy_registry, batch_size):
    from atomtune.cli import app
    from atomtune.exceptions import AtomtuneError

    data = emt_dataset.write(tmp_path / "test.extxyz")
    result = CliRunner().invoke(
        app, ["errors", "--data", str(data), "--model", "toy-1", "--out", str(tmp_path / "o"), "--batch-size", batch_size]
    )
    assert isinstance(result.exception, AtomtuneError), result.exception
    assert "--batch-size" in str(result.exception) and batch_size in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_unlabelled_structures_are_a_clear_error(emt_dataset, toy_potential):
    from ase.build import bulk

    from atomtune.exceptions import AtomtuneError

    unlabelled = [bulk("Cu", "fcc", a=3.6), bulk("Ni", "fcc", a=3.52)]
    with pytest.raises(AtomtuneError, match=r"no reference labels.*2 structure"):
        errors.run(unlabelled, toy_potential, progress=False)
    with pytest.raises(AtomtuneError, match=r"no reference labels"):
        errors.run(unlabelled, EMT(), progress=False)
    mixed = [*list(emt_dataset)[:2], *unlabelled]  # some labelled: the unlabelled ones are counted, not an error
    records = errors.run(mixed, toy_potential, progress=False)
    assert errors.metrics(records)["n_structures_energy"] == 2


def test_bench_errors_on_unlabelled_data_is_a_clear_error(tmp_path, toy_registry):
    from ase.build import bulk
    from ase.io import write

    from atomtune.cli import app
    from atomtune.exceptions import AtomtuneError

    path = tmp_path / "bulk.extxyz"
    write(path, [bulk("Cu", "fcc", a=3.6), bulk("Al", "fcc", a=4.05)])
    result = CliRunner().invoke(
        app, ["bench", "--task", "errors", "--data", str(path), "--model", "toy-1", "--out", str(tmp_path / "r"),
              "--no-progress"],
    )
    assert isinstance(result.exception, AtomtuneError), result.exception
    assert "no reference labels" in str(result.exception) and "atomtune label" in str(result.exception)


def _molecule_with_labels():
    from ase.build import molecule

    water = molecule("H2O")  # no cell, pbc False: stress is undefined
    water.calc = EMT()
    from atomtune.data.dataset import attach_labels

    attach_labels(water, water.get_potential_energy(), water.get_forces())
    water.info["id"] = "water"
    return water


def test_molecule_among_bulk_keeps_the_stress_column_and_says_why(emt_dataset, toy_potential):
    bulk_structures = list(emt_dataset)[:4]
    structures = [bulk_structures[0], _molecule_with_labels(), *bulk_structures[1:]]
    for calculator in (toy_potential, toy_potential.calculator()):  # batched and ASE-calculator paths
        records = errors.run(structures, calculator, progress=False)
        assert ["stress_pred" in r for r in records] == [True, False, True, True, True]
        result = errors.metrics(records)
        assert result["n_structures_stress"] == 4 and "stress_mae_gpa" in result
        assert "water" in result["stress_note"] and "not periodic" in result["stress_note"]
        alone = errors.metrics([r for r in records if r["id"] != "water"])
        assert result["stress_mae_gpa"] == pytest.approx(alone["stress_mae_gpa"], rel=1e-5)
    no_stress = errors.metrics(errors.run([_molecule_with_labels()], toy_potential, progress=False))
    assert "stress_mae_gpa" not in no_stress and "no structure" in no_stress["stress_note"]


def test_errors_cli_prints_why_stress_rows_are_partial(emt_dataset, tmp_path, toy_registry):
    from atomtune.cli import app
    from atomtune.data.dataset import Dataset

    data = Dataset([*list(emt_dataset)[:3], _molecule_with_labels()]).write(tmp_path / "mixed.extxyz")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["errors", "--data", str(data), "--model", "toy-1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "σ MAE" in result.output and "water" in result.output and "not periodic" in result.output
    record = json.loads((out / "errors.json").read_text())
    assert record["models"]["toy-1"]["n_structures_stress"] == 3


def test_worker_model_predicts_the_set_as_one_unit(emt_dataset):
    """A model in another environment (WorkerModel) goes through its batched ``predict`` (one worker unit), not one
    socket calculation per structure; the records equal EMT's own."""
    from atomtune.envs.worker import WorkerModel

    calls = []

    class Worker(WorkerModel):
        def __init__(self):  # no worker process: predict is answered here with EMT
            self.backbone, self.model, self.dtype = "fake", "emt", "float32"

        def predict(self, structures, batch_size=None, forces=True, stress=True, progress=False):
            calls.append(len(structures))
            out = []
            for atoms in structures:
                work = atoms.copy()
                work.calc = EMT()
                record = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
                if stress:
                    record["stress"] = work.get_stress(voigt=False)
                out.append(record)
            return out

        def get_potential_energy(self, *args, **kwargs):
            raise AssertionError("stepped through the socket calculator")

    structures = list(emt_dataset)
    records = errors.run(structures, Worker(), progress=False)
    assert sum(calls) == len(structures) and len(calls) <= 2  # one unit per stress group
    reference = errors.run(structures, EMT(), progress=False)
    for got, want in zip(records, reference):
        assert got["energy_pred"] == pytest.approx(want["energy_pred"])
        np.testing.assert_allclose(got["stress_pred"], want["stress_pred"], atol=1e-12)
