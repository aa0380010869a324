"""Views of a dataset: what elements, sizes, energies and forces a user has, and where structures sit in a foundation
model's feature space. The last step of the data box before training; ``atomtune data show`` writes everything here as
PNG files plus a short ``summary.md``.

Plots use matplotlib's object API (``Figure``), never pyplot, so nothing depends on a display or global state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from atomtune.data.dataset import Dataset, labels_of
from atomtune.exceptions import AtomtuneError

#: UMAP needs a handful of points to build a neighbour graph at all.
UMAP_MIN_STRUCTURES = 4


@dataclass
class Statistics:
    """Numbers behind the plots (also written to ``summary.md``)."""

    n_structures: int
    n_atoms: int
    structures_per_element: dict[str, int]
    atoms_per_element: dict[str, int]
    elements_per_structure: list[int]
    atoms_per_structure: list[int]
    energy_per_atom: list[float]  # eV/atom, structures with an energy
    force_magnitudes: np.ndarray = field(repr=False)  # eV/Å, every atom with a force
    sources: dict[str, int] = field(default_factory=dict)
    with_stress: int = 0


def statistics(dataset: Sequence[Atoms]) -> Statistics:
    structures_per_element: Counter = Counter()
    atoms_per_element: Counter = Counter()
    energies, forces, sources = [], [], Counter()
    with_stress = 0
    for atoms in dataset:
        symbols = atoms.get_chemical_symbols()
        atoms_per_element.update(symbols)
        structures_per_element.update(set(symbols))
        labels = labels_of(atoms)
        if labels.energy is not None:
            energies.append(labels.energy / len(atoms))
        if labels.forces is not None:
            forces.append(np.linalg.norm(labels.forces, axis=1))
        with_stress += labels.stress is not None
        sources[str(atoms.info.get("source", "unknown"))] += 1
    order = sorted(structures_per_element, key=lambda s: atomic_numbers[s])
    return Statistics(
        n_structures=len(dataset),
        n_atoms=sum(len(a) for a in dataset),
        structures_per_element={s: structures_per_element[s] for s in order},
        atoms_per_element={s: atoms_per_element[s] for s in order},
        elements_per_structure=[len(set(a.numbers)) for a in dataset],
        atoms_per_structure=[len(a) for a in dataset],
        energy_per_atom=energies,
        force_magnitudes=np.concatenate(forces) if forces else np.zeros(0),
        sources=dict(sources),
        with_stress=with_stress,
    )


# -- plots ------------------------------------------------------------------------------------------------------------


def plot_element_counts(stats: Statistics, path: Path) -> Path:
    """Bar chart: number of structures containing each element (ordered by atomic number)."""
    from matplotlib.figure import Figure

    elements = list(stats.structures_per_element)
    figure = Figure(figsize=(max(4.0, 0.35 * len(elements) + 1.5), 3.2), layout="constrained")
    axes = figure.add_subplot()
    axes.bar(elements, [stats.structures_per_element[e] for e in elements], color="tab:blue")
    axes.set_ylabel("structures containing element")
    axes.set_title(f"elements in {stats.n_structures} structures")
    axes.tick_params(axis="x", labelrotation=90 if len(elements) > 20 else 0)
    figure.savefig(path, dpi=120)
    return path


def periodic_table_position(symbol: str) -> tuple[float, float]:
    """(column, row) of an element in the usual 18-column layout; lanthanides and actinides in two rows below."""
    z = atomic_numbers[symbol]
    if 57 <= z <= 71:
        return 3 + (z - 57), 8.5
    if 89 <= z <= 103:
        return 3 + (z - 89), 9.5
    period_starts = [1, 3, 11, 19, 37, 55, 87, 119]
    row = max(i for i, start in enumerate(period_starts) if z >= start) + 1
    offset = z - period_starts[row - 1]
    if row == 1:
        column = 1 if z == 1 else 18
    elif row in (2, 3):
        column = offset + 1 if offset < 2 else offset + 11
    elif row in (4, 5):
        column = offset + 1
    else:  # periods 6 and 7: the f-block (15 elements) sits in the rows below
        column = offset + 1 if offset < 3 else offset + 1 - 14
    return float(column), float(row)


def plot_periodic_table(stats: Statistics, path: Path) -> Path:
    """Periodic-table heatmap of how many structures contain each element (log colour scale)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    counts = stats.structures_per_element
    figure = Figure(figsize=(10, 5.6), layout="constrained")
    axes = figure.add_subplot()
    norm = LogNorm(vmin=1, vmax=max(2, max(counts.values(), default=2)))
    cmap = colormaps["viridis"]
    for z in range(1, 104):
        symbol = chemical_symbols[z]
        column, row = periodic_table_position(symbol)
        count = counts.get(symbol, 0)
        face = cmap(norm(count)) if count else (0.92, 0.92, 0.92)
        axes.add_patch(Rectangle((column - 0.45, row - 0.45), 0.9, 0.9, facecolor=face, edgecolor="white"))
        dark = count and norm(count) < 0.6
        axes.text(column, row, symbol, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    axes.set_xlim(0.4, 18.6)
    axes.set_ylim(10.1, 0.4)
    axes.set_aspect("equal")
    axes.axis("off")
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.6, label="structures containing element")
    axes.set_title(f"element coverage of {stats.n_structures} structures")
    figure.savefig(path, dpi=120)
    return path


def plot_distributions(stats: Statistics, path: Path) -> Path:
    """Four panels: elements per structure, atoms per structure, energy per atom (eV/atom), |F| per atom (eV/Å)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 7), layout="constrained")
    panels = figure.subplots(2, 2)
    n_elements = Counter(stats.elements_per_structure)
    keys = sorted(n_elements)
    panels[0, 0].bar([str(k) for k in keys], [n_elements[k] for k in keys], color="tab:blue")
    panels[0, 0].set(xlabel="elements per structure", ylabel="structures")
    panels[0, 1].hist(stats.atoms_per_structure, bins=min(40, max(5, len(set(stats.atoms_per_structure)))))
    panels[0, 1].set(xlabel="atoms per structure", ylabel="structures")
    if stats.energy_per_atom:
        panels[1, 0].hist(stats.energy_per_atom, bins=40, color="tab:green")
    panels[1, 0].set(xlabel="energy per atom (eV/atom)", ylabel="structures")
    if len(stats.force_magnitudes):
        panels[1, 1].hist(stats.force_magnitudes, bins=50, color="tab:red")
        panels[1, 1].set_yscale("log")
    panels[1, 1].set(xlabel="|F| per atom (eV/Å)", ylabel="atoms")
    figure.savefig(path, dpi=120)
    return path


def umap_embedding(features: np.ndarray, seed: int = 0, n_neighbors: int = 15) -> np.ndarray | None:
    """2-D UMAP of per-structure features; ``None`` below :data:`UMAP_MIN_STRUCTURES` structures.

    On small sets ``n_neighbors`` is capped at n − 1 and the layout starts from random positions (the spectral start
    needs a connected neighbour graph, which a dozen structures often do not give).
    """
    features = np.asarray(features, dtype=float)
    if len(features) < UMAP_MIN_STRUCTURES:
        return None
    import warnings

    import umap

    neighbours = max(2, min(n_neighbors, len(features) - 1))
    init = "spectral" if len(features) > 50 else "random"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state": intended, for reproducible maps
        reducer = umap.UMAP(n_neighbors=neighbours, n_components=2, random_state=seed, init=init)
        return np.asarray(reducer.fit_transform(features))


def plot_umap(points: np.ndarray, dataset: Sequence[Atoms], path: Path, selected: np.ndarray | None = None) -> Path:
    """UMAP map coloured by source, by energy per atom and (if given) by selected-or-not."""
    from matplotlib.figure import Figure

    panels_wanted = 3 if selected is not None else 2
    figure = Figure(figsize=(5 * panels_wanted, 4.4), layout="constrained")
    panels = figure.subplots(1, panels_wanted)
    sources = [str(a.info.get("source", "unknown")) for a in dataset]
    names = sorted(set(sources))
    for k, name in enumerate(names):
        mask = np.array([s == name for s in sources])
        panels[0].scatter(*points[mask].T, s=12, label=name, color=f"C{k % 10}")
    panels[0].set_title("source")
    if len(names) <= 12:
        panels[0].legend(fontsize=7, markerscale=1.5)
    energies = np.array([_energy_per_atom(a) for a in dataset])
    has = np.isfinite(energies)
    panels[1].scatter(*points[~has].T, s=8, color="lightgrey")
    mappable = panels[1].scatter(*points[has].T, s=12, c=energies[has], cmap="viridis")
    figure.colorbar(mappable, ax=panels[1], label="energy per atom (eV/atom)")
    panels[1].set_title("energy per atom")
    if selected is not None:
        panels[2].scatter(
            *points[~selected].T, s=8, color="lightgrey", label=f"not selected ({int((~selected).sum())})"
        )
        panels[2].scatter(*points[selected].T, s=18, color="tab:red", label=f"selected ({int(selected.sum())})")
        panels[2].legend(fontsize=7)
        panels[2].set_title("selected or not")
    for axes in panels:
        axes.set(xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    figure.savefig(path, dpi=120)
    return path


def example_indices(count: int, n_examples: int) -> list[int]:
    """Evenly spread indices, so examples are not just the first few structures of a sorted file."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(n_examples, count))}) if count else []


def plot_examples(dataset: Sequence[Atoms], path: Path, n_examples: int = 4) -> Path:
    """Images of a few structures (ase.visualize.plot.plot_atoms), titled with formula and id."""
    from ase.visualize.plot import plot_atoms
    from matplotlib.figure import Figure

    indices = example_indices(len(dataset), n_examples)
    figure = Figure(figsize=(3.2 * len(indices), 3.6), layout="constrained")
    panels = np.atleast_1d(figure.subplots(1, len(indices)))
    for axes, index in zip(panels, indices):
        atoms = dataset[index]
        plot_atoms(atoms, axes, rotation="15x,-20y,0z", radii=0.45)
        axes.set_title(f"{atoms.get_chemical_formula(mode='metal')}\n{atoms.info.get('id', index)}", fontsize=8)
        axes.axis("off")
    figure.savefig(path, dpi=120)
    return path


# -- everything --------------------------------------------------------------------------------------------------------


def show(
    dataset: Dataset | Sequence[Atoms],
    out: str | Path,
    features: np.ndarray | None = None,
    selected_ids: Sequence[str] | None = None,
    n_examples: int = 4,
    seed: int = 0,
) -> Path:
    """Write element counts (bar + periodic table), distributions, example images and — when per-structure
    ``features`` are given (e.g. :func:`atomtune.data.select.structure_features`) — a UMAP map, plus ``summary.md``
    in ``out``. ``selected_ids``: ids of a selection to highlight on the map. Returns the summary's path."""
    structures = list(dataset)
    if not structures:
        raise AtomtuneError("nothing to show: the dataset is empty.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = statistics(structures)
    images = {
        "element counts": plot_element_counts(stats, out / "elements.png"),
        "periodic table": plot_periodic_table(stats, out / "periodic_table.png"),
        "distributions": plot_distributions(stats, out / "distributions.png"),
        "example structures": plot_examples(structures, out / "examples.png", n_examples),
    }
    notes = []
    if features is not None:
        if len(features) != len(structures):
            raise AtomtuneError(f"{len(features)} feature rows for {len(structures)} structures.")
        selected = None
        if selected_ids is not None:
            wanted = {str(i) for i in selected_ids}
            selected = np.array([str(a.info.get("id")) in wanted for a in structures])
            notes.append(f"{int(selected.sum())} of {len(selected_ids)} selected ids found in the dataset.")
        points = umap_embedding(features, seed=seed)
        if points is None:
            notes.append(f"UMAP skipped: it needs at least {UMAP_MIN_STRUCTURES} structures.")
        else:
            images["UMAP of model embeddings"] = plot_umap(points, structures, out / "umap.png", selected)
    summary = out / "summary.md"
    summary.write_text(_summary_markdown(stats, images, notes, getattr(dataset, "name", "")))
    return summary


def _energy_per_atom(atoms: Atoms) -> float:
    energy = labels_of(atoms).energy
    return np.nan if energy is None else energy / len(atoms)


def _summary_markdown(stats: Statistics, images: dict[str, Path], notes: list[str], name: str) -> str:
    sizes = np.asarray(stats.atoms_per_structure)
    lines = [f"# Dataset {name}".rstrip(), ""]
    lines.append(
        f"- {stats.n_structures:,} structures, {stats.n_atoms:,} atoms, {len(stats.structures_per_element)} elements"
    )
    lines.append(f"- atoms per structure: min {sizes.min()}, median {int(np.median(sizes))}, max {sizes.max()}")
    if stats.energy_per_atom:
        energies = np.asarray(stats.energy_per_atom)
        lines.append(
            f"- energy per atom: {energies.min():.3f} … {energies.max():.3f} eV/atom ({len(energies):,} labelled)"
        )
    if len(stats.force_magnitudes):
        magnitudes = stats.force_magnitudes
        lines.append(
            f"- |F| per atom: mean {magnitudes.mean():.3f}, 99th percentile {np.percentile(magnitudes, 99):.3f}, "
            f"max {magnitudes.max():.3f} eV/Å"
        )
    lines.append(f"- stress labels on {stats.with_stress:,} of {stats.n_structures:,} structures")
    lines.append("- sources: " + ", ".join(f"{source} ({count:,})" for source, count in stats.sources.items()))
    lines += ["", "| element | structures | atoms |", "|---|---:|---:|"]
    lines += [
        f"| {element} | {count:,} | {stats.atoms_per_element[element]:,} |"
        for element, count in stats.structures_per_element.items()
    ]
    lines.append("")
    for note in notes:
        lines.append(f"> {note}")
    lines += ["", *[f"## {title}\n\n![{title}]({path.name})\n" for title, path in images.items()]]
    return "\n".join(lines)
