"""LAMMPS input lines for exported models: the ``pair_style`` / ``pair_coeff`` pair, checked against the model's
elements, and a complete small input (``in.<format>.lammps``) written beside every export.

The one thing LAMMPS cannot check for a machine-learned pair style is the mapping from its numeric atom types to
elements: ``pair_coeff * * model.pt Ni Al`` says type 1 is Ni and type 2 is Al, and a data file written with the types
the other way round runs without complaint and gives a different material. :func:`pair_lines` takes the elements of the
types in order and refuses an element the model lacks, a duplicated element, or a wrong count.
"""

from __future__ import annotations

from collections.abc import Sequence

from atomtune.exceptions import AtomtuneError


def check_type_elements(
    type_elements: Sequence[str], model_elements: Sequence[str], n_types: int | None = None
) -> None:
    """Raise :class:`AtomtuneError` if the elements given to LAMMPS's atom types do not fit the model.

    ``type_elements[k]`` is the element of atom type k+1; ``n_types``: the number of types the data file declares.
    """
    missing = [symbol for symbol in type_elements if symbol not in set(model_elements)]
    if missing:
        raise AtomtuneError(
            f"atom types mapped to {', '.join(missing)}, which the model does not have (it covers "
            f"{', '.join(model_elements)}): fix the element list of pair_coeff / the data file's types."
        )
    repeated = sorted({symbol for symbol in type_elements if list(type_elements).count(symbol) > 1})
    if repeated:
        raise AtomtuneError(
            f"element(s) {', '.join(repeated)} given to more than one atom type ({' '.join(type_elements)}); "
            "each type must be one element, in the data file's type order."
        )
    if n_types is not None and n_types != len(type_elements):
        raise AtomtuneError(
            f"the data file declares {n_types} atom types but {len(type_elements)} element(s) were given "
            f"({' '.join(type_elements)}): give one element per type, in type order."
        )


def pair_lines(record, type_elements: Sequence[str] | None = None) -> list[str]:
    """``pair_style`` and ``pair_coeff`` lines for an exported model (:class:`atomtune.export.ExportedModel`).

    ``type_elements``: element of each atom type in the LAMMPS data file, in type order (default: all the model's
    elements, in atomic-number order).
    """
    elements = list(type_elements) if type_elements is not None else list(record.elements)
    check_type_elements(elements, record.elements)
    name = record.path.name
    symbols = " ".join(elements)
    if record.pair_style == "e3gnn":
        return ["pair_style e3gnn", f"pair_coeff * * {name} {symbols}"]
    if record.pair_style == "e3gnn/parallel":
        files = " ".join(sorted(path.name for path in record.path.glob("deployed_parallel_*.pt")))
        count = len(files.split())
        return [
            "pair_style e3gnn/parallel",
            f"pair_coeff * * {count} {' '.join(f'{name}/{f}' for f in files.split())} {symbols}",
        ]
    if record.pair_style == "mace":
        return ["pair_style mace no_domain_decomposition", f"pair_coeff * * {name} {symbols}"]
    if record.pair_style == "mliap unified":
        return [f"pair_style mliap unified {name} 0", f"pair_coeff * * {symbols}"]
    raise AtomtuneError(f"no LAMMPS lines known for pair style {record.pair_style!r}.")


def input_snippet(record, type_elements: Sequence[str] | None = None, data_file: str = "structure.data") -> str:
    """A complete short LAMMPS input (metal units, NVT at 300 K) using an exported model, with a header saying what
    LAMMPS build it needs. ``atomtune data read … --out structure.data`` writes a matching data file."""
    elements = list(type_elements) if type_elements is not None else list(record.elements)
    lines = [
        f"# {record.backbone} exported by atomtune ({record.format}); needs: {record.lammps_build}",
        f"# cutoff {record.cutoff_angstrom} Å; elements of the model: {' '.join(record.elements)}",
        "# pair_coeff lists one element per atom type of the data file, in type order: check it matches your file.",
        *[f"# note: {note}" for note in record.notes],
        "units metal",
        "atom_style atomic",
        "newton on",
        f"read_data {data_file}",
        *pair_lines(record, elements),
        "timestep 0.002",
        "velocity all create 300.0 12345 mom yes rot yes",
        "fix integrate all nvt temp 300.0 300.0 0.1",
        "thermo 10",
        "thermo_style custom step temp pe ke etotal press vol",
        "run 1000",
    ]
    return "\n".join(lines) + "\n"


__all__ = ["check_type_elements", "input_snippet", "pair_lines", "write_lammps_data"]


def write_lammps_data(path, structures) -> list[str]:
    """Write one structure as a LAMMPS data file (metal units, atom_style atomic), types in order of first appearance
    of each element; return lines saying the type → element mapping (what ``pair_coeff * * model Ni Al`` must list)."""
    from pathlib import Path

    from ase.io import write

    structures = list(structures)
    if len(structures) != 1:
        raise AtomtuneError(
            f"a LAMMPS data file holds one structure and {len(structures)} were read: write them to .extxyz, or read "
            "one file at a time."
        )
    (atoms,) = structures
    elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
    write(Path(path), atoms, format="lammps-data", specorder=elements, masses=True, units="metal", atom_style="atomic")
    return [
        "atom types: " + ", ".join(f"{k + 1} = {symbol}" for k, symbol in enumerate(elements)),
        f"pair_coeff * * <model file> {' '.join(elements)}",
    ]
