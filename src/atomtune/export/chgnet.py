"""CHGNet has no LAMMPS pair style: neither the chgnet package nor LAMMPS ships one, so there is nothing to export to.

What a CHGNet user does instead: run LAMMPS with atomtune computing the forces (``atomtune md --engine lammps``, one
rank through ``fix external``), or fine-tune a backbone that has a LAMMPS path (SevenNet → ``pair_style e3gnn``, MACE →
``pair_style mace`` / ML-IAP) on the same data.
"""

from __future__ import annotations

from atomtune.exceptions import AtomtuneError

FORMATS: tuple[str, ...] = ()


def export(potential, out_dir, formats) -> list:
    """Always raises: CHGNet cannot be exported to a LAMMPS pair style."""
    raise AtomtuneError(
        f"{potential.name}: CHGNet has no LAMMPS pair style (neither chgnet nor LAMMPS provides one), so it cannot be "
        "exported. Run it in LAMMPS through atomtune instead (`atomtune md --engine lammps`, one rank, fix external), "
        "or fine-tune SevenNet (pair_style e3gnn) or MACE (pair_style mace / mliap), which export."
    )
