"""Will a cell fit in memory? An estimate of the peak memory of one energy + forces + stress evaluation, made before a
large MD run or prediction starts, so that a cell too large is refused with the estimate instead of being killed by the
operating system an hour in.

The estimate is edges × bytes per edge: directed neighbour pairs within the model's cutoff (from the cell's number
density, ρ·4/3·π·r_c³ per atom) times a per-backbone constant measured by ``benchmarks/bench_scale.py`` on CPU in
float32 with autograd forces and stress (fcc Cu, 100–1000 atoms; memory grew linearly with N there, exponents in
docs/lammps.md). CHGNet and SevenNet recompute their layers' activations in the backward pass when keeping them would
not fit (``recompute_activations``, :mod:`atomtune.models.chunking`); their smaller measured constant applies then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ase import Atoms

from atomtune.exceptions import AtomtuneError

#: Peak bytes per directed edge of one forward + backward pass (CPU, float32), from benchmarks/results/scale.json
#: (the largest value measured per backbone). MACE was measured on the tests' tiny model (16x0e+16x1o+16x2e edge
#: features, 11 kB/edge) and is scaled linearly by a model's first-interaction edge width (MACE-MP-0 medium: 128
#: channels up to l = 3, ~14x wider): a rough, unmeasured extrapolation for the foundation models.
BYTES_PER_EDGE = {"chgnet": 56_000.0, "sevennet": 153_000.0, "mace": 11_000.0}
#: The same with each convolution's activations recomputed in the backward pass instead of kept
#: (``recompute_activations``, :func:`atomtune.models.chunking.recompute_wanted`), CPU, float32, measured by
#: ``benchmarks/bench_scale.py --recompute`` (benchmarks/results/scale_recompute_*.json). The peak is a fixed part (one
#: slice's activations, ~0.5 GiB) plus a part per edge (SevenNet-0: 10.3 kB; 826 MiB at 864 Cu atoms, 4.99 GiB at
#: 10,976); one constant per backbone that covers cells from where recomputation starts on an ~11 GiB budget (~1,800
#: atoms SevenNet-0, ~2,900 CHGNet), so it overestimates 10⁴ atoms by up to ~50 %.
BYTES_PER_EDGE_RECOMPUTED = {"chgnet": 10_000.0, "sevennet": 17_000.0}
#: Edge feature width (``interactions[0].target_irreps.dim``) of the MACE model BYTES_PER_EDGE["mace"] was measured on.
MACE_REFERENCE_EDGE_WIDTH = 144
#: Fraction of the available memory a run may plan to use.
USABLE_FRACTION = 0.8


@dataclass
class MemoryEstimate:
    """``edges``: directed pairs within the cutoff; ``bytes``: estimated peak of one evaluation; ``available_bytes``:
    MemAvailable of this machine when estimated."""

    n_atoms: int
    edges: int
    bytes: float
    available_bytes: float | None

    @property
    def gib(self) -> float:
        return self.bytes / 2**30


def available_memory_bytes() -> float | None:
    """``MemAvailable`` from /proc/meminfo (bytes), or None where there is no such file."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        return None
    return None


def estimate(potential, atoms: Atoms) -> MemoryEstimate:
    """Estimated peak memory of ``potential`` evaluating ``atoms`` (energy, forces, stress)."""
    density = len(atoms) / atoms.get_volume() if atoms.pbc.all() and atoms.cell.rank == 3 else _cluster_density(atoms)
    edges = int(len(atoms) * density * 4.0 / 3.0 * math.pi * potential.cutoff**3)
    per_edge = BYTES_PER_EDGE.get(potential.backbone, max(BYTES_PER_EDGE.values()))
    if potential.backbone == "mace" and MACE_REFERENCE_EDGE_WIDTH:
        width = potential.model.interactions[0].target_irreps.dim
        per_edge *= width / MACE_REFERENCE_EDGE_WIDTH
    available = available_memory_bytes()
    # None: recomputed when keeping the activations would not fit; True / False: forced (a backbone without it: False)
    recompute = getattr(potential, "recompute_activations", False)
    if recompute is None:
        recompute = available is not None and edges * per_edge > USABLE_FRACTION * available
    if recompute and potential.backbone in BYTES_PER_EDGE_RECOMPUTED:
        per_edge = BYTES_PER_EDGE_RECOMPUTED[potential.backbone]
    return MemoryEstimate(len(atoms), edges, edges * per_edge, available)


def check_fits(potential, atoms: Atoms, where: str = "") -> MemoryEstimate:
    """Raise :class:`AtomtuneError` with the estimate when ``atoms`` would not fit; return the estimate otherwise."""
    result = estimate(potential, atoms)
    if result.available_bytes is not None and result.bytes > USABLE_FRACTION * result.available_bytes:
        label = f"{where}: " if where else ""
        raise AtomtuneError(
            f"{label}{result.n_atoms} atoms with {potential.name} need about {result.gib:.1f} GiB for one force "
            f"evaluation (~{result.edges:,} neighbour pairs within {potential.cutoff:g} Å), and this machine has "
            f"{result.available_bytes / 2**30:.1f} GiB available. Use a smaller cell, a GPU with more memory, or export "
            "the model to LAMMPS (`atomtune export`) and run it on several ranks."
        )
    return result


def _cluster_density(atoms: Atoms) -> float:
    """Number density of a non-periodic structure: atoms over the volume of its bounding box (at least 1 Å per side)."""
    extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
    volume = float((extent.clip(min=1.0) + 2.0).prod())
    return len(atoms) / volume


__all__ = ["BYTES_PER_EDGE", "BYTES_PER_EDGE_RECOMPUTED", "MemoryEstimate", "available_memory_bytes", "check_fits", "estimate"]
