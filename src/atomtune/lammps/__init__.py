"""LAMMPS for atomtune: LAMMPS integrates while an atomtune model computes (``fix external``), and the input snippets
for models exported to LAMMPS's own pair styles.

Where this sits: beside ``tasks/md.py`` (``md.Settings(engine="lammps")`` swaps ASE's integrators for
:class:`LammpsIntegrator`, everything else of the md task is shared) and ``export/`` (SevenNet / MACE files for
``pair_style e3gnn`` / ``mace`` / ``mliap``, whose input lines :mod:`atomtune.lammps.inputs` writes).
"""

from __future__ import annotations

from atomtune.lammps.fix_external import (
    LammpsDynamics,
    LammpsIntegrator,
    check_extra_commands,
    lammps_available,
    molecular_dynamics,
    rotate_to_lammps_frame,
)


def dynamics_for(settings, ensemble: str) -> LammpsDynamics:
    """The :class:`LammpsDynamics` of an md task's settings (``atomtune.tasks.md.Settings``) for one segment
    (``ensemble`` ``"nvt"`` / ``"npt"`` for the thermostatted part, ``"nve"`` for the drift measurement)."""
    return LammpsDynamics(
        timestep_fs=settings.timestep_fs,
        ensemble=ensemble,
        temperature_k=settings.temperature_k,
        pressure_gpa=settings.pressure_gpa,
        thermostat=settings.thermostat,
        friction_per_fs=settings.friction_per_fs,
        thermostat_time_fs=settings.thermostat_time_fs,
        barostat=settings.barostat,
        barostat_time_fs=settings.barostat_time_fs,
        bulk_modulus_gpa=settings.bulk_modulus_gpa,
        # LAMMPS seeds must be positive; the md task's seed 0 is a valid choice there
        seed=int(settings.seed) + 1,
        extra_commands=tuple(settings.lammps_commands),
    )


__all__ = [
    "LammpsDynamics",
    "LammpsIntegrator",
    "check_extra_commands",
    "dynamics_for",
    "lammps_available",
    "molecular_dynamics",
    "rotate_to_lammps_frame",
]
