"""The worker door (atomtune.envs.worker): units of work and the i-PI socket calculator, run with the main environment's
interpreter so that they can be compared with the same code in-process, bit for bit."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from atomtune.envs.worker import WorkerCalculator, WorkerDiedError, run_unit
from atomtune.exceptions import UnsupportedElementsError


def test_predict_unit_is_bit_for_bit_the_in_process_prediction(tiny_mace_model_file, labelled_structures):
    from atomtune.models.registry import load_potential

    local = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True).predict(labelled_structures)
    remote = run_unit("predict", model=str(tiny_mace_model_file), structures=labelled_structures, dtype="float64", trust=True)
    assert len(remote) == len(local)
    for mine, theirs in zip(local, remote):
        assert mine["energy"] == theirs["energy"]
        assert np.array_equal(mine["forces"], theirs["forces"])
        assert np.array_equal(mine["stress"], theirs["stress"])


@pytest.mark.slow
def test_task_unit_gives_the_same_records(tiny_mace_model_file, labelled_structures):
    from atomtune.models.registry import load_potential
    from atomtune.tasks import errors

    potential = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
    local = errors.run(labelled_structures, potential, errors.Settings(), progress=False)
    remote = run_unit(
        "task", task="errors", model=str(tiny_mace_model_file), structures=labelled_structures,
        settings=errors.Settings(), dtype="float64", trust=True,
    )
    assert remote == local
    assert errors.metrics(remote) == errors.metrics(local)


def test_error_in_worker_comes_back_with_its_class_and_message(tiny_mace_model_file):
    from atomtune.models.registry import load_potential

    gold = bulk("Au", "fcc", a=4.08)
    with pytest.raises(UnsupportedElementsError) as in_process:
        load_potential(str(tiny_mace_model_file), trust=True).predict([gold])
    with pytest.raises(UnsupportedElementsError) as in_worker:
        run_unit("predict", model=str(tiny_mace_model_file), structures=[gold], trust=True)
    assert str(in_worker.value) == str(in_process.value)


def test_killed_worker_is_reported_not_waited_on(tiny_mace_model_file, labelled_structures):
    import psutil

    me = psutil.Process()
    before = {child.pid for child in me.children()}

    def kill_the_worker():
        deadline = time.time() + 60
        while time.time() < deadline:
            new = [child for child in me.children() if child.pid not in before]
            if new:
                time.sleep(0.5)
                os.kill(new[0].pid, signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    with pytest.raises(WorkerDiedError, match="SIGKILL"):
        run_unit("predict", model=str(tiny_mace_model_file), structures=labelled_structures * 20, trust=True)
    killer.join()


def test_worker_past_its_timeout_is_stopped(tiny_mace_model_file, labelled_structures):
    with pytest.raises(WorkerDiedError, match="within 0 s"):
        run_unit("predict", model=str(tiny_mace_model_file), structures=labelled_structures, timeout=0.2, trust=True)


@pytest.mark.slow
def test_socket_calculator_matches_in_process_md(tiny_mace_model_file):
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from atomtune.models.registry import load_potential

    start = bulk("Ni", "fcc", a=3.52, cubic=True) * (2, 1, 1)
    start.symbols[[1, 5]] = "Cu"
    start.rattle(0.05, seed=3)

    def trajectory(calculator, steps=8):
        atoms = start.copy()
        atoms.calc = calculator
        energies, stresses = [], []
        dynamics = VelocityVerlet(atoms, 2 * units.fs)
        for _ in range(steps):
            dynamics.run(1)
            energies.append(atoms.get_potential_energy())
            stresses.append(atoms.get_stress())
        return np.array(energies), np.array(stresses), atoms.get_forces()

    local = trajectory(load_potential(str(tiny_mace_model_file), dtype="float64", trust=True).calculator())
    with WorkerCalculator(str(tiny_mace_model_file), dtype="float64", trust=True) as calculator:
        remote = trajectory(calculator)
        # a new species mix and atom count: sent to the same worker in i-PI's INIT message, no restart
        other = bulk("Al", "fcc", a=4.05)
        other.calc = calculator
        assert np.isfinite(other.get_potential_energy())
        scratch = calculator.log_path.parent
        assert scratch.is_dir()
    assert not scratch.exists()  # the worker's scratch folder (structure file, log) goes with the calculator
    for mine, theirs in zip(local, remote):
        np.testing.assert_allclose(theirs, mine, rtol=0, atol=1e-10)


@pytest.mark.slow
def test_socket_worker_errors_and_death_are_reported(tiny_mace_model_file):
    gold = bulk("Au", "fcc", a=4.08)
    with WorkerCalculator(str(tiny_mace_model_file), timeout=60, trust=True) as calculator:
        gold.calc = calculator
        with pytest.raises(UnsupportedElementsError, match="Au"):
            gold.get_potential_energy()

    nickel = bulk("Ni", "fcc", a=3.52)
    with WorkerCalculator(str(tiny_mace_model_file), timeout=60, trust=True) as calculator:
        nickel.calc = calculator
        nickel.get_potential_energy()
        os.kill(calculator._process.pid, signal.SIGKILL)
        nickel.positions[0, 0] += 0.01
        with pytest.raises(WorkerDiedError, match="SIGKILL") as death:
            nickel.get_potential_energy()
    log = Path(str(death.value).split("Log: ")[1].split(". Last lines")[0])
    assert log.is_file()  # the log the message names outlives the calculator's scratch folder
