"""Random substitution (out of distribution): relax random configurations of a parent crystal at a target composition.

For each parent (rock-salt MgO → the high-entropy oxide (Mg,Co,Ni,Cu,Zn)O on the Mg sublattice; fcc Ni → Ni–Al–Cu …) a
supercell is decorated at random ``n_configurations`` times (:func:`atomtune.data.generate.substitute`) and every
configuration relaxed with the calculator (batched FIRE through :func:`atomtune.tasks.relax.relax_structures` when given
a Potential). Reported per configuration: final energy per atom, steps to converge, volume. ``compare`` asks whether
models agree on which configurations are stable: the Spearman rank correlation (scipy) of their energies per parent,
which is blind to a constant energy offset between a model and the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from atomtune.tasks import json_ready
from atomtune.tasks.comparison import compare_properties, plot_properties, records_by_id
from atomtune.tasks.relax import plot_steps_histogram, relax_generated

PROPERTIES = ("energy_per_atom", "relative_energy_mev_per_atom", "volume_per_atom", "steps")

COMPOSITION_EXAMPLE = "{'Ni': 0.6, 'Al': 0.2, 'Cu': 0.2} (bench: --settings '{\"composition\": {...}}')"


@dataclass
class Settings:
    """``composition``: target site fractions on the substituted sites, e.g. ``{"Mg": 0.2, "Co": 0.2, "Ni": 0.2,
    "Cu": 0.2, "Zn": 0.2}`` (required; normalised; counts rounded by largest remainder). ``sublattice``: the element
    whose sites are substituted (``"Mg"`` in MgO); None substitutes every site. ``supercell``: repeats of the parent
    cell (an int or three ints; 2 turns a 4-atom fcc cell into 32 sites, enough for a few % resolution).
    ``n_configurations``: random decorations per parent (10: enough for a rank correlation to mean something). ``seed``:
    configuration k uses ``seed + k``. ``fmax`` (eV/Å), ``max_steps``, ``relax_cell``, ``optimizer``, ``batch_size``: as
    in the relax task."""

    composition: dict[str, float] | None = None
    sublattice: str | None = None
    supercell: int | tuple[int, int, int] = 2
    n_configurations: int = 10
    seed: int = 0
    fmax: float = 0.05
    max_steps: int = 500
    relax_cell: bool = True
    optimizer: str = "FIRE"
    batch_size: int | None = None


def configurations(parent: Atoms, label: str, settings: Settings) -> list[Atoms]:
    """The random configurations of one parent; ``info["id"]`` is ``"<parent id>/<k>"``."""
    from atomtune.data import generate
    from atomtune.exceptions import AtomtuneError

    if not settings.composition:
        raise AtomtuneError(f"Settings.composition is not set: give target site fractions, e.g. {COMPOSITION_EXAMPLE}.")
    host = generate.supercell(parent, settings.supercell)
    made = []
    for k in range(settings.n_configurations):
        atoms = generate.substitute(host, settings.composition, settings.sublattice, seed=settings.seed + k)
        atoms.info["id"] = f"{label}/{k}"
        atoms.info["parent"] = label
        atoms.info["configuration"] = k
        made.append(atoms)
    return made


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per configuration: ``id`` (``"<parent>/<k>"``), ``parent``, ``configuration``, ``formula``,
    ``composition`` (realised fractions of all sites), ``energy_per_atom`` (eV/atom, relaxed),
    ``relative_energy_mev_per_atom`` (above the lowest configuration of the same parent with this calculator),
    ``volume_per_atom`` (Å³), ``steps``, ``converged``, ``max_force`` (eV/Å). A parent that cannot be decorated gives
    one record with its id and ``"error"``; a configuration that fails keeps its steps and gets ``"error"``."""
    settings = settings or Settings()
    make = functools.partial(configurations, settings=settings)
    records, pending, relaxations = relax_generated(
        structures, make, calculator, settings, relax_cell=settings.relax_cell, progress=progress
    )
    configuration_records = []
    for atoms, relaxation in zip(pending, relaxations):
        n_atoms = len(atoms)
        symbols = atoms.get_chemical_symbols()
        record = {
            "id": atoms.info["id"],
            "parent": atoms.info["parent"],
            "configuration": atoms.info["configuration"],
            "formula": atoms.get_chemical_formula(),
            "composition": {s: symbols.count(s) / n_atoms for s in sorted(set(symbols))},
            "n_atoms": n_atoms,
            "energy_per_atom": relaxation.energy / n_atoms,
            "steps": relaxation.steps,
            "converged": relaxation.converged,
            "max_force": relaxation.max_force,
        }
        if relaxation.usable:
            record["volume_per_atom"] = relaxation.atoms.get_volume() / n_atoms if atoms.pbc.all() else None
        else:
            record["energy_per_atom"] = None
        if relaxation.error:
            record["error"] = relaxation.error
        configuration_records.append(record)
    _add_relative_energies(configuration_records)
    return records + [json_ready(record) for record in configuration_records]


def _add_relative_energies(records: list[dict]) -> None:
    by_parent: dict[str, list[dict]] = {}
    for record in records:
        by_parent.setdefault(record["parent"], []).append(record)
    for group in by_parent.values():
        energies = [r["energy_per_atom"] for r in group if r.get("energy_per_atom") is not None]
        if not energies:
            continue
        lowest = min(energies)
        for record in group:
            if record.get("energy_per_atom") is not None:
                record["relative_energy_mev_per_atom"] = (record["energy_per_atom"] - lowest) * 1000.0


def ranking_agreement(results: dict[str, list[dict]], baseline: str) -> list[dict]:
    """Per parent: Spearman ρ between each model's and ``baseline``'s configuration energies (configurations both
    relaxed; None with fewer than three), and the number of configurations compared."""
    from scipy.stats import spearmanr

    rows = []
    parents = list(dict.fromkeys(r["parent"] for records in results.values() for r in records if "parent" in r))
    base = records_by_id(results[baseline])
    for parent in parents:
        row: dict = {"id": parent, "property": f"spearman_energy_ranking (vs {baseline})"}
        counts: dict = {"id": parent, "property": "configurations_ranked"}
        for model, records in results.items():
            pairs = [
                (base[r["id"]]["energy_per_atom"], r["energy_per_atom"])
                for r in records
                if r.get("parent") == parent
                and r.get("energy_per_atom") is not None
                and base.get(r["id"], {}).get("energy_per_atom") is not None
            ]
            counts[model] = len(pairs)
            if len(pairs) < 3:
                row[model] = None
                continue
            first, second = np.array(pairs).T
            rho = spearmanr(first, second).statistic
            row[model] = None if not np.isfinite(rho) else float(rho)
        rows += [row, counts]
    return rows


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per configuration and property (energy per atom, relative energy, volume, steps), one column per model;
    then per parent the Spearman rank correlation of every model's configuration energies with the reference's (or, with
    no reference, the first model's), and each model's fraction of configurations converged."""
    rows = compare_properties(results, PROPERTIES, reference)
    if not results:
        return rows
    rows += ranking_agreement(results, reference if reference is not None else next(iter(results)))
    fraction = {}
    for model, records in results.items():
        relaxed = [r for r in records if "converged" in r]
        fraction[model] = sum(r["converged"] for r in relaxed) / len(relaxed) if relaxed else None
    rows.append({"id": "all", "property": "fraction_converged", **fraction})
    return rows


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Histogram of steps to converge per model; relative energies of the configurations, every model against the first
    (the ranking: points on a rising line mean the models agree)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps_path = out_dir / "substitution_steps.png"
    paths = [plot_steps_histogram(results, steps_path, "substitution: steps", "configurations")]
    if len(results) > 1:
        first = next(iter(results))
        base = records_by_id(results[first])
        figure, axis = plt.subplots(figsize=(4.6, 4.2))
        for model, records in results.items():
            if model == first:
                continue
            pairs = [
                (base[r["id"]].get("relative_energy_mev_per_atom"), r.get("relative_energy_mev_per_atom"))
                for r in records
                if r["id"] in base
            ]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if pairs:
                x, y = np.array(pairs).T
                axis.scatter(x, y, s=12, alpha=0.7, label=model)
        axis.set_xlabel(f"{first}: relative energy (meV/atom)")
        axis.set_ylabel("relative energy (meV/atom)")
        axis.set_title("substitution: configuration energies")
        axis.legend(fontsize="small")
        figure.tight_layout()
        path = out_dir / "substitution_ranking.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    paths += plot_properties(results, ("relative_energy_mev_per_atom",), out_dir, "substitution")
    return paths
