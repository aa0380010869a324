"""Composition scan: formation energy and lattice constant versus x across a random solid solution A₁₋ₓBₓ.

For each parent (fcc Ni, say) random supercells with a fraction x of the host sites replaced by the solute (Al, Cu …)
are built for every x of the scan (:func:`atomtune.data.generate.substitute`), all relaxed with the calculator (cell and
ions; batched on a Potential), and for each configuration reported: the formation energy per atom relative to the end
members of the scan — the relaxed x = 0 and x = 1 structures, i.e. the elemental solids for an elemental parent:
E_f(x) = E/N − [(1 − x) E₀/N₀ + x E₁/N₁] (x the realised fraction of all atoms that are solute) — and the lattice
constant (the parent's conventional a scaled by the cube root of the volume change), to set against Vegard's law.
"Ni % versus stability" is this curve read from the Ni end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.tasks import json_ready
from atomtune.tasks.comparison import compare_properties
from atomtune.tasks.relax import relax_generated

PROPERTIES = ("formation_energy_per_atom", "lattice_constant")


@dataclass
class Settings:
    """``solute``: the element substituted in (required, e.g. ``"Al"``). ``host``: the element replaced (None: the
    parent's only element; required for a compound parent, e.g. ``"Ni"`` in NiO). ``fractions``: x values, fraction of
    host sites given to the solute (0 and 1 are always added: they are the reference end members). ``supercell``:
    repeats of the parent cell (2 makes 32 sites from a 4-atom fcc cell: x in steps of 1/32). ``n_configurations``:
    random decorations per intermediate x (3: averages out most configurational scatter at 32 sites). ``seed``;
    ``fmax`` (eV/Å), ``max_steps``, ``optimizer``, ``batch_size``: as in the relax task (the cell is always relaxed)."""

    solute: str | None = None
    host: str | None = None
    fractions: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    supercell: int | tuple[int, int, int] = 2
    n_configurations: int = 3
    seed: int = 0
    fmax: float = 0.05
    max_steps: int = 500
    optimizer: str = "FIRE"
    batch_size: int | None = None


def configurations(parent: Atoms, label: str, settings: Settings) -> list[Atoms]:
    """The scan of one parent: one configuration at x = 0 and x = 1, ``n_configurations`` at each x in between."""
    from atomtune.data import generate
    from atomtune.exceptions import AtomtuneError

    if not settings.solute:
        raise AtomtuneError("Settings.solute is not set: name the element to substitute in, e.g. 'Al' for Ni₁₋ₓAlₓ.")
    elements = sorted(set(parent.get_chemical_symbols()))
    host = settings.host or (elements[0] if len(elements) == 1 else None)
    if host is None or host not in elements:
        raise AtomtuneError(
            f"{label} ({parent.get_chemical_formula()}): set Settings.host to the element whose sites the solute takes "
            f"(one of {', '.join(elements)})."
        )
    supercell = generate.supercell(parent, settings.supercell)
    made = []
    for x in sorted({0.0, 1.0, *(float(f) for f in settings.fractions)}):
        if not 0.0 <= x <= 1.0:
            raise AtomtuneError(f"fraction {x} outside 0–1 in Settings.fractions.")
        count = 1 if x in (0.0, 1.0) else settings.n_configurations
        for k in range(count):
            atoms = generate.substitute(
                supercell, {host: 1.0 - x, settings.solute: x}, sublattice=host, seed=settings.seed + k
            )
            atoms.info.update(
                {"id": f"{label}/x={x:.4g}/{k}", "parent": label, "x": x, "configuration": k, "host": host}
            )
            made.append(atoms)
    return made


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per configuration: ``id`` (``"<parent>/x=<x>/<k>"``), ``parent``, ``x`` (target fraction of host
    sites), ``solute_fraction`` (realised fraction of all atoms), ``formula``, ``energy_per_atom`` (eV/atom),
    ``formation_energy_per_atom`` (eV/atom, see module docstring), ``volume_per_atom`` (Å³), ``lattice_constant`` (Å),
    ``steps``, ``converged``. A configuration that fails keeps its steps and gets ``"error"``; when an end member fails,
    the parent's formation energies are missing and say why."""
    from atomtune.tasks.eos import conventional_lattice_constant

    settings = settings or Settings()
    # (conventional a, volume per atom) of each parent: the scale of the configurations' lattice constant.
    parent_lattice: dict[str, tuple[float, float]] = {}

    def make(parent: Atoms, label: str) -> list[Atoms]:
        made = configurations(parent, label, settings)
        parent_lattice[label] = (conventional_lattice_constant(parent), parent.get_volume() / len(parent))
        return made

    records, pending, relaxations = relax_generated(structures, make, calculator, settings, progress=progress)
    scan = []
    for atoms, relaxation in zip(pending, relaxations):
        n_atoms = len(atoms)
        symbols = atoms.get_chemical_symbols()
        record: dict = {
            "id": atoms.info["id"],
            "parent": atoms.info["parent"],
            "x": atoms.info["x"],
            "configuration": atoms.info["configuration"],
            "solute_fraction": symbols.count(settings.solute) / n_atoms,
            "formula": atoms.get_chemical_formula(),
            "n_atoms": n_atoms,
            "energy_per_atom": relaxation.energy / n_atoms if relaxation.usable else None,
            "steps": relaxation.steps,
            "converged": relaxation.converged,
        }
        if relaxation.usable:
            a_parent, volume_parent = parent_lattice[record["parent"]]
            volume = relaxation.atoms.get_volume() / n_atoms
            record["volume_per_atom"] = volume
            record["lattice_constant"] = a_parent * (volume / volume_parent) ** (1 / 3)
        if relaxation.error:
            record["error"] = relaxation.error
        scan.append(record)
    _add_formation_energies(scan)
    return records + [json_ready(record) for record in scan]


def _add_formation_energies(records: list[dict]) -> None:
    by_parent: dict[str, list[dict]] = {}
    for record in records:
        by_parent.setdefault(record["parent"], []).append(record)
    for parent, group in by_parent.items():
        ends = {r["x"]: r for r in group if r["x"] in (0.0, 1.0)}
        energies = {x: ends.get(x, {}).get("energy_per_atom") for x in (0.0, 1.0)}
        if any(energy is None for energy in energies.values()):
            for record in group:
                record["formation_energy_error"] = f"an end member (x = 0 or 1) of {parent} did not relax"
            continue
        # Mixing fraction between the end members from realised counts: the solute fraction of all atoms over that of
        # the x = 1 end member (1 for an elemental parent; 1/2 for the cation sublattice of a rock salt, say).
        full = ends[1.0]["solute_fraction"]
        for record in group:
            if record.get("energy_per_atom") is None:
                continue
            fraction = record["solute_fraction"] / full
            record["formation_energy_per_atom"] = record["energy_per_atom"] - (
                (1.0 - fraction) * energies[0.0] + fraction * energies[1.0]
            )


def scan_summary(records: Sequence[dict]) -> list[dict]:
    """Per (parent, x): mean and standard deviation over configurations of formation energy and lattice constant."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for record in records:
        if "x" in record:
            groups.setdefault((record["parent"], record["x"]), []).append(record)
    rows = []
    for (parent, x), group in groups.items():
        row: dict = {"id": f"{parent} x={x:.4g}", "parent": parent, "x": x, "n_configurations": len(group)}
        for quantity in PROPERTIES:
            values = [r[quantity] for r in group if r.get(quantity) is not None]
            row[quantity] = float(np.mean(values)) if values else None
            row[f"{quantity}_std"] = float(np.std(values)) if len(values) > 1 else None
        errors = [r["error"] for r in group if r.get("error")]
        if errors:
            row["error"] = f"{len(errors)} of {len(group)} configurations: {errors[0]}"
        rows.append(row)
    return rows


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per (parent, x) of the configuration-averaged formation energy and lattice constant, one column per model;
    differences and MAE against ``reference`` when given."""
    summaries = {model: scan_summary(records) for model, records in results.items()}
    return compare_properties(summaries, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Per parent: formation energy and lattice constant versus x (mean ± std over configurations), one line per model,
    with Vegard's law (the line between the end members) dashed under the lattice constants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atomtune.tasks.comparison import safe_filename

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {model: scan_summary(records) for model, records in results.items()}
    parents = list(dict.fromkeys(row["parent"] for rows in summaries.values() for row in rows))
    paths = []
    for parent in parents:
        figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
        for model, rows in summaries.items():
            rows = sorted((r for r in rows if r["parent"] == parent), key=lambda r: r["x"])
            panels = ((axes[0], "formation_energy_per_atom", 1000.0), (axes[1], "lattice_constant", 1.0))
            for axis, quantity, scale in panels:
                points = [(r["x"], r[quantity], r[f"{quantity}_std"] or 0.0) for r in rows if r[quantity] is not None]
                if not points:
                    continue
                x, y, spread = np.array(points).T
                line = axis.errorbar(x, y * scale, yerr=spread * scale, marker="o", ms=4, capsize=2, label=model)
                if quantity == "lattice_constant" and x[0] == 0.0 and x[-1] == 1.0:
                    axis.plot([0, 1], [y[0], y[-1]], "--", lw=0.8, color=line[0].get_color())
        axes[0].axhline(0.0, color="k", lw=0.6)
        axes[0].set_ylabel("formation energy (meV/atom)")
        axes[1].set_ylabel("lattice constant (Å)  [dashed: Vegard]")
        for axis in axes:
            axis.set_xlabel("x (solute fraction of host sites)")
            axis.legend(fontsize="small")
        figure.suptitle(f"composition scan: {parent}")
        figure.tight_layout()
        path = out_dir / f"composition_scan_{safe_filename(parent)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
