"""Exact chunked evaluation of cells too large for one forward pass: domain decomposition with ghost atoms.

A message-passing potential with T interaction layers of cutoff r_c gives every atom an energy that depends only on the
atoms within its *receptive field* R = T · r_c (each layer moves information by at most r_c). So a large periodic cell
is split into spatial chunks along its cell vectors; each chunk is evaluated as a **non-periodic cluster** of its owned
atoms plus every periodic image of every atom within R of an owned atom (the halo, positions unwrapped by their image
offsets), and:

- the chunk energy is the sum of the per-atom energies of its owned atoms only (halo atoms miss neighbours, so their
  own energies are wrong, but their features at the depths an owned atom reads are right);
- forces are −∂E_chunk/∂r_k on every cluster atom (owned and halo), accumulated onto the atom each image belongs to:
  Σ_chunks −∂E_chunk/∂r_k = −∂E/∂r_k exactly, since E = Σ_chunks E_chunk;
- stress is the strain derivative of each chunk energy, −(1/V) Σ_k F_k ⊗ r_k over the cluster's unwrapped positions
  (exact for a cluster energy, which depends on relative positions only), summed over chunks.

Why a non-periodic cluster and not a smaller periodic cell: the halo of a 20–25 Å receptive field is wider than half of
most cells it is needed for, so the same atom appears as several images of itself; only explicit, unwrapped images
represent that exactly. The cluster sits in an orthorhombic box with at least ``cutoff + 1`` Å of vacuum on each side,
so every backbone's own graph builder (CHGNet needs a 3D cell) sees no periodic image within its cutoff.

Memory: each backbone's peak of one energy + forces + stress evaluation grows with its directed edges (measured in
``benchmarks/bench_scale.py``; the bytes-per-edge constants and their source are in :mod:`atomtune.lammps.memory`).
``Potential.predict`` estimates a cell's edges from its number density before building any graph, evaluates it whole
when the estimate fits the memory budget, in chunks when it does not, and refuses with the estimate when even the
smallest chunk (the receptive field around one atom) would not fit. A backbone that can recompute its layers'
activations in the backward pass instead of keeping them (CHGNet, SevenNet: ``recompute_activations``, below) does so
whenever keeping them would exceed the budget, and the estimates use its smaller bytes per edge: such a cell is
evaluated whole, exactly (to float32 round-off), at 1.1–2.4× the time, before chunking is considered.

The price of exactness is the halo: a chunk holds its owned atoms plus a shell R thick, so with R = 24 Å (CHGNet) or
25 Å (SevenNet-0) a chunk of dense matter holds thousands of atoms however few it owns; chunking saves memory only when the
cell is much larger than 2R across, and multiplies the work by (cluster atoms) / (owned atoms). The plan chooses the
grid with the least total work that fits (:func:`plan`), and records that overhead.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from atomtune.exceptions import AtomtuneError

logger = logging.getLogger(__name__)

#: Environment variable with the memory budget in GiB (when ``potential.memory_budget`` is not set).
BUDGET_VARIABLE = "ATOMTUNE_MEMORY_BUDGET_GIB"
#: Fraction of ``MemAvailable`` that one evaluation may plan to use when no budget is set.
DEFAULT_BUDGET_FRACTION = 0.6
#: Margin (Å) added to the receptive field when collecting halo atoms: including a few atoms too many costs time only.
HALO_MARGIN = 0.01
#: At most this many chunks along one cell vector.
MAX_CHUNKS_PER_AXIS = 24


class CellTooLargeError(AtomtuneError, MemoryError):
    """A cell whose evaluation would not fit in memory, even in chunks (the message holds the estimate)."""


@dataclass
class Chunk:
    """One chunk: the cluster to evaluate, the original atom index of each cluster atom (owned first) and how many of
    its atoms it owns."""

    cluster: Atoms
    index: np.ndarray  # (M,) original atom index of each cluster atom
    n_owned: int


@dataclass
class ChunkPlan:
    grid: tuple[int, int, int]
    receptive_field: float
    estimated_cluster_atoms: float  # the largest chunk, estimated before any halo is built
    estimated_chunk_bytes: float
    estimated_whole_bytes: float
    budget_bytes: float
    chunks: list[Chunk] = field(default_factory=list)

    @property
    def n_chunks(self) -> int:
        return int(np.prod(self.grid))

    def summary(self) -> dict:
        """What was planned and built: grid, atoms per cluster, work overhead (cluster atoms / cell atoms)."""
        cluster_atoms = [len(chunk.cluster) for chunk in self.chunks]
        owned = sum(chunk.n_owned for chunk in self.chunks)
        return {
            "grid": list(self.grid),
            "n_chunks": self.n_chunks,
            "receptive_field_angstrom": self.receptive_field,
            "max_cluster_atoms": max(cluster_atoms, default=0),
            "work_overhead": (sum(cluster_atoms) / owned) if owned else None,
            "estimated_chunk_gib": float(self.estimated_chunk_bytes) / 2**30,
            "estimated_whole_gib": float(self.estimated_whole_bytes) / 2**30,
            "budget_gib": self.budget_bytes / 2**30,
        }


# -- memory estimate ----------------------------------------------------------------------------------------------------
def bytes_per_edge(potential, recompute: bool = False) -> float:
    """Peak bytes per directed edge of one energy + forces + stress pass (measured constants in float32, see
    :mod:`atomtune.lammps.memory`: CHGNet 56 kB, SevenNet 153 kB, tiny MACE 11 kB scaled by a MACE model's edge width;
    with ``recompute`` the constant of a pass that recomputes each interaction block's activations, see
    :func:`recompute_wanted`), scaled by the model's float size."""
    from atomtune.lammps import memory

    if recompute and can_recompute(potential):
        per_edge = memory.BYTES_PER_EDGE_RECOMPUTED[potential.backbone]
    else:
        per_edge = memory.BYTES_PER_EDGE.get(potential.backbone, max(memory.BYTES_PER_EDGE.values()))
    if potential.backbone == "mace" and memory.MACE_REFERENCE_EDGE_WIDTH:
        try:
            width = potential.model.interactions[0].target_irreps.dim
            per_edge *= width / memory.MACE_REFERENCE_EDGE_WIDTH
        except AttributeError:
            pass
    # measured in float32; float64 doubles it (tiny MACE at 10,976 atoms: 2.76 GiB float32, 5.38 GiB float64)
    parameter = next(iter(potential.parameters()), None)
    if parameter is not None and parameter.is_floating_point():
        per_edge *= parameter.element_size() / 4.0
    return float(per_edge)


def number_density(atoms: Atoms) -> float:
    """Atoms per Å³: of the cell for a periodic 3D cell, of the bounding box (+1 Å each side) otherwise."""
    if atoms.cell.rank == 3 and atoms.pbc.all():
        volume = abs(float(np.linalg.det(atoms.cell.array)))
        if volume > 1e-6:  # a singular cell falls through: the backbone's own featurize names the problem
            return len(atoms) / volume
    extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0) if len(atoms) else np.zeros(3)
    return len(atoms) / float((extent + 2.0).prod())


def estimate_edges(potential, n_atoms: float, density: float) -> float:
    """Directed edges within the cutoff of ``n_atoms`` at number density ``density``: n · ρ · 4/3 π r_c³."""
    return n_atoms * density * 4.0 / 3.0 * math.pi * potential.cutoff**3


def estimate_bytes(
    potential, n_atoms: float, density: float, recompute: bool | None = None, budget: float | None = None
) -> float:
    """Peak bytes of evaluating ``n_atoms`` at number density ``density``: edges × bytes per edge.

    ``recompute`` None: as the backbone will run it (:func:`recompute_wanted`: with the smaller constant of recomputed
    activations when keeping them would exceed ``budget``, default the memory budget, and the backbone can recompute);
    True / False: with / without recomputed activations."""
    edges = estimate_edges(potential, n_atoms, density)
    if recompute is None:
        recompute = recompute_for_inference(potential, edges, budget)
    return edges * bytes_per_edge(potential, recompute)


# -- recomputing activations (activation checkpointing) -----------------------------------------------------------------
# Most of a deep backbone's peak is what autograd keeps for the backward pass: every interaction block's edge and angle
# activations. torch.utils.checkpoint (non-reentrant, so it works under torch.autograd.grad) keeps only each block's
# inputs and recomputes one block at a time during the backward: the same operations on the same inputs, hence the same
# numbers (tests/models/test_checkpointed_inference.py), at the cost of a second forward pass through the blocks.
# Inference only: a training step (create_graph) keeps its graph as before.


def can_recompute(potential) -> bool:
    """Whether the backbone can recompute its interaction blocks' activations (and has a measured constant for it)."""
    from atomtune.lammps import memory

    return hasattr(potential, "recompute_activations") and potential.backbone in memory.BYTES_PER_EDGE_RECOMPUTED


def recompute_for_inference(potential, edges: float, budget: float | None = None) -> bool:
    """Whether an inference pass (``predict``, a calculator) of the backbone over ``edges`` directed edges recomputes
    its blocks' activations: ``potential.recompute_activations`` when set, else when keeping them would exceed
    ``budget`` (default: the memory budget); False for a backbone that cannot."""
    if not can_recompute(potential):
        return False
    if potential.recompute_activations is not None:
        return bool(potential.recompute_activations)
    if budget is None:
        budget = memory_budget_bytes(potential)
    return edges * bytes_per_edge(potential, recompute=False) > budget


def recompute_wanted(potential, n_edges: int) -> bool:
    """Whether a backbone's forward pass over ``n_edges`` directed edges should recompute its blocks' activations in
    the backward pass instead of keeping them: ``potential.recompute_activations`` when set (True / False), else
    (None) when keeping them would exceed the memory budget. Never while training or without autograd."""
    if potential.training or not torch.is_grad_enabled():
        return False
    return recompute_for_inference(potential, float(n_edges))


def over_row_slices(
    function, tensors, n_rows: int, rows_per_slice: int, combine: str, recompute: bool, release_memory: bool = False
):
    """``function(rows, *tensors)`` over the rows of an edge- or angle-level computation: without ``recompute`` one
    call on all rows (``slice(None)``); with, one call per slice of ``rows_per_slice`` rows, each under
    ``torch.utils.checkpoint`` (activations recomputed in the backward pass, so one slice's exist at a time), the
    results summed (``combine`` "sum": a scatter onto nodes) or concatenated ("cat": one output row per row).

    Large tensors derived inside the enclosing block go in ``tensors`` rather than the closure: a checkpoint around the
    block then frees and recomputes them (a closure would keep them alive until the backward pass). ``release_memory``:
    hand the heap's free pages back to the operating system before each slice (:func:`_return_freed_memory`)."""
    if not recompute:
        return function(slice(None), *tensors)
    from torch.utils.checkpoint import checkpoint

    def trimmed(rows: slice, *tensors):
        if release_memory:
            _return_freed_memory()
        return function(rows, *tensors)

    total, parts = None, []
    for start in range(0, max(n_rows, 1), rows_per_slice):
        part = checkpoint(
            trimmed, slice(start, min(start + rows_per_slice, n_rows)), *tensors, use_reentrant=False,
            early_stop=False,
        )
        if combine == "cat":
            parts.append(part)
        else:  # summed as they come: a list of per-slice sums (one node-sized tensor each) would hold them all
            total = part if total is None else total + part
    return torch.cat(parts) if combine == "cat" else total


_malloc_trim = None


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc ``malloc_trim``; nothing elsewhere).

    glibc serves allocations below its adaptive mmap threshold (up to 32 MB: a slice's activations) from the heap, and
    pages freed between longer-lived tensors stay resident: without this, the resident memory of a recomputing pass
    grew to 3× its live memory at ~10³ atoms and without bound at 10⁴ (CHGNet, 10,976 atoms: past 13 GiB and rising
    before it was stopped; benchmarks/bench_scale.py --recompute). Called before each slice (forward and recomputation);
    the pages it returns are faulted in again by the next slice, which is what it costs in time (CHGNet at 864 atoms:
    2.4× the time of keeping the activations instead of ~1.0×). SevenNet-0's slices did not need it (4.9 GiB above the
    loaded model at 10,976 atoms without), so only CHGNet asks for it.
    """
    global _malloc_trim
    if _malloc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def run_block(function, *inputs, recompute: bool):
    """``function(*inputs)``; with ``recompute``, under ``torch.utils.checkpoint`` (its activations recomputed in the
    backward pass; gradients also reach tensors ``function`` reads from its closure)."""
    if not recompute:
        return function(*inputs)
    from torch.utils.checkpoint import checkpoint

    # early_stop=False: torch stops a recomputation early by raising an exception, which a TorchScript module inside the
    # block (e3nn's in SevenNet) turns into a plain RuntimeError
    return checkpoint(function, *inputs, use_reentrant=False, early_stop=False)


def memory_budget_bytes(potential=None) -> float:
    """The memory one evaluation may use: ``potential.memory_budget`` when set (bytes), else the environment variable
    ``ATOMTUNE_MEMORY_BUDGET_GIB`` (GiB; reaches command-line runs), else ``DEFAULT_BUDGET_FRACTION`` of this machine's MemAvailable (/proc/meminfo, or psutil), else unlimited."""
    budget = getattr(potential, "memory_budget", None)
    if budget is not None:
        return float(budget)
    if os.environ.get(BUDGET_VARIABLE):
        return float(os.environ[BUDGET_VARIABLE]) * 2**30
    from atomtune.lammps import memory

    available = memory.available_memory_bytes()
    if available is None:
        try:
            import psutil

            available = float(psutil.virtual_memory().available)
        except ImportError:
            return math.inf
    return DEFAULT_BUDGET_FRACTION * available


def supports_chunking(potential, atoms: Atoms) -> str:
    """Empty when ``atoms`` can be evaluated in chunks by ``potential``, else why not."""
    if getattr(potential, "receptive_field", None) is None:
        return f"{potential.name} states no receptive field"
    if type(potential).compute_atoms is _base_compute_atoms():
        return f"{potential.name} gives no per-atom energies"
    if not (atoms.pbc.all() and atoms.cell.rank == 3):
        return "only 3D-periodic cells are split into chunks"
    return ""


def _base_compute_atoms():
    from atomtune.models.base import Potential

    return Potential.compute_atoms


# -- the plan ---------------------------------------------------------------------------------------------------------
def _heights(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along each cell vector (Å)."""
    return 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)


def _cluster_atoms_estimate(heights: np.ndarray, grid, radius: float, density: float) -> float:
    """Atoms in one chunk's cluster: ρ × volume of the chunk box grown by a ball of radius R (Steiner's formula)."""
    a, b, c = heights / np.asarray(grid, dtype=float)
    volume = a * b * c + 2.0 * radius * (a * b + b * c + a * c) + math.pi * radius**2 * (a + b + c)
    volume += 4.0 / 3.0 * math.pi * radius**3
    return density * volume


def plan(potential, atoms: Atoms, budget: float | None = None, grid=None) -> ChunkPlan:
    """Choose the chunk grid for ``atoms`` (``grid`` forces one) and build the clusters.

    The grid is the one with the least total work (chunks × estimated cluster atoms) whose largest chunk fits
    ``budget``; :class:`CellTooLargeError` when none does.
    """
    if budget is None:
        budget = memory_budget_bytes(potential)
    reason = supports_chunking(potential, atoms)
    density = number_density(atoms)
    whole = estimate_bytes(potential, len(atoms), density, budget=budget)
    if reason:
        raise _too_large(potential, atoms, whole, budget, f"it cannot be split into chunks ({reason})")
    radius = float(potential.receptive_field) + HALO_MARGIN
    heights = _heights(atoms.cell.array)
    if grid is None:
        # the finest useful split: chunks at least ~1 Å thick, at most MAX_CHUNKS_PER_AXIS per axis
        limits = [max(1, min(MAX_CHUNKS_PER_AXIS, int(h))) for h in heights]
        candidates = []
        for candidate in itertools.product(*(range(1, limit + 1) for limit in limits)):
            if candidate == (1, 1, 1):  # the whole cell: evaluated without chunks when it fits
                continue
            cluster = _cluster_atoms_estimate(heights, candidate, radius, density)
            needed = estimate_bytes(potential, cluster, density, budget=budget)
            if needed <= budget:
                candidates.append((int(np.prod(candidate)) * cluster, int(np.prod(candidate)), candidate, cluster))
        if not candidates:
            smallest = _cluster_atoms_estimate(heights, limits, radius, density)
            split = "×".join(str(n) for n in limits)
            raise _too_large(
                potential, atoms, whole, budget,
                f"even the finest split ({split} chunks, {min(heights / np.asarray(limits)):.1f} Å wide) needs the "
                f"receptive field of {radius:.0f} Å around each chunk: ~{smallest:,.0f} atoms, "
                f"~{_size(estimate_bytes(potential, smallest, density, budget=budget))} per chunk",
            )
        _, _, grid, cluster = min(candidates)
    else:
        grid = tuple(int(n) for n in grid)
        cluster = _cluster_atoms_estimate(heights, grid, radius, density)
    result = ChunkPlan(
        grid=tuple(grid), receptive_field=radius, estimated_cluster_atoms=cluster,
        estimated_chunk_bytes=estimate_bytes(potential, cluster, density, budget=budget), estimated_whole_bytes=whole,
        budget_bytes=budget,
    )
    result.chunks = build_chunks(atoms, result.grid, radius, vacuum=float(potential.cutoff) + 1.0)
    return result


def _size(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def _too_large(potential, atoms: Atoms, whole: float, budget: float, why: str) -> CellTooLargeError:
    lengths = "×".join(f"{length:.1f}" for length in atoms.cell.lengths())
    budget_text = _size(budget) if math.isfinite(budget) else "unlimited"
    edges = estimate_edges(potential, len(atoms), number_density(atoms))
    recompute = recompute_for_inference(potential, edges, budget)
    how = " with the convolutions' activations recomputed in the backward pass" if recompute else ""
    return CellTooLargeError(
        f"{len(atoms)} atoms (cell {lengths} Å) with {potential.name} need about {_size(whole)} for one "
        f"energy + forces + stress evaluation{how} (~{edges:,.0f} neighbour pairs within {potential.cutoff:g} Å × "
        f"{bytes_per_edge(potential, recompute) / 1e3:.0f} kB each), over the memory budget of "
        f"{budget_text}, and {why}. Use a smaller cell, a machine or GPU with more memory (or raise the budget: "
        f"potential.memory_budget = bytes), a backbone with a smaller receptive field, or export the model to LAMMPS "
        f"(`atomtune export`) and run it on several ranks."
    )


def build_chunks(atoms: Atoms, grid, radius: float, vacuum: float) -> list[Chunk]:
    """Owned atoms of each chunk of the ``grid`` (along the cell vectors) plus every image of every atom within
    ``radius`` of one of them, as non-periodic clusters in boxes with ``vacuum`` Å free on each side."""
    from scipy.spatial import cKDTree

    cell = atoms.cell.array
    grid = np.asarray(grid, dtype=int)
    fractional = atoms.cell.scaled_positions(atoms.positions)
    fractional -= np.floor(fractional)
    fractional[fractional >= 1.0] = 0.0  # -1e-17 wraps to 1.0 in floating point
    owner = np.minimum((fractional * grid).astype(int), grid - 1)
    owner_id = np.ravel_multi_index(owner.T, grid)
    pad = radius * np.linalg.norm(np.linalg.inv(cell), axis=0)  # fractional distance per Å along each vector × R
    chunks = []
    for chunk_id, corner in enumerate(itertools.product(*(range(n) for n in grid))):
        owned = np.flatnonzero(owner_id == chunk_id)
        if not len(owned):
            continue
        low = np.asarray(corner) / grid - pad
        high = (np.asarray(corner) + 1) / grid + pad
        ranges = [range(math.floor(low[k] - 1.0), math.ceil(high[k]) + 1) for k in range(3)]
        indices, shifts = [], []
        for shift in itertools.product(*ranges):
            moved = fractional + np.asarray(shift, dtype=float)
            inside = np.flatnonzero(np.all((moved >= low) & (moved < high), axis=1))
            if shift == (0, 0, 0):
                inside = np.setdiff1d(inside, owned, assume_unique=True)  # owned atoms go first, once
            if len(inside):
                indices.append(inside)
                shifts.append(np.broadcast_to(np.asarray(shift, dtype=float), (len(inside), 3)))
        owned_positions = fractional[owned] @ cell
        if indices:
            halo_index = np.concatenate(indices)
            halo_positions = (fractional[halo_index] + np.concatenate(shifts)) @ cell
            distance, _ = cKDTree(owned_positions).query(halo_positions, k=1, distance_upper_bound=radius)
            keep = np.isfinite(distance)
            halo_index, halo_positions = halo_index[keep], halo_positions[keep]
        else:
            halo_index, halo_positions = np.zeros(0, dtype=int), np.zeros((0, 3))
        index = np.concatenate([owned, halo_index])
        positions = np.concatenate([owned_positions, halo_positions])
        lower = positions.min(axis=0)
        extent = positions.max(axis=0) - lower
        cluster = Atoms(
            numbers=atoms.numbers[index], positions=positions - lower + vacuum,
            cell=np.diag(extent + 2.0 * vacuum), pbc=True,
        )
        cluster.info["id"] = f"{atoms.info.get('id', atoms.get_chemical_formula())} chunk {chunk_id}"
        chunks.append(Chunk(cluster=cluster, index=index, n_owned=len(owned)))
    return chunks


# -- the evaluation ---------------------------------------------------------------------------------------------------
def evaluate(potential, atoms: Atoms, chunk_plan: ChunkPlan, forces: bool = True, stress: bool = True) -> dict:
    """Energy (eV), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ (ASE sign) of ``atoms`` from its chunks, float64."""
    total_energy = 0.0
    total_forces = np.zeros((len(atoms), 3))
    virial = np.zeros((3, 3))
    shift_table = potential.element_energy_shift.detach().double().cpu().numpy()
    need_gradients = forces or stress
    for chunk in chunk_plan.chunks:
        with warnings.catch_warnings():  # halo atoms at the rim have few or no neighbours: expected, not a problem
            warnings.filterwarnings("ignore", message=".*no neighbo")
            graph = potential.featurize(chunk.cluster)
        data = potential.collate([graph])
        weights = torch.zeros(len(chunk.cluster), dtype=torch.float64)
        weights[: chunk.n_owned] = 1.0
        output = potential.compute_atoms(data, weights=weights.to(potential.device), forces=need_gradients)
        energies = output["energies"].detach().double().cpu().numpy()
        total_energy += float(energies[: chunk.n_owned].sum())
        total_energy += float(shift_table[chunk.cluster.numbers[: chunk.n_owned]].sum())
        if need_gradients:
            chunk_forces = output["forces"].detach().double().cpu().numpy()
            np.add.at(total_forces, chunk.index, chunk_forces)
            virial -= chunk_forces.T @ chunk.cluster.positions  # −Σ_k F_k ⊗ r_k
        del graph, data, output
    record: dict = {"energy": total_energy}
    if forces:
        record["forces"] = total_forces
    if stress:
        record["stress"] = 0.5 * (virial + virial.T) / atoms.get_volume()
    return record


def needs_chunking(potential, atoms: Atoms, budget: float | None = None) -> bool:
    """Whether the estimated memory of evaluating ``atoms`` whole (with recomputed activations where the backbone
    can, :func:`recompute_wanted`) exceeds the budget."""
    if budget is None:
        budget = memory_budget_bytes(potential)
    return estimate_bytes(potential, len(atoms), number_density(atoms), budget=budget) > budget


def predict_chunked(potential, atoms: Atoms, forces: bool = True, stress: bool = True, budget: float | None = None,
                    grid=None) -> dict:
    """:meth:`Potential.predict`'s record for one cell, evaluated in chunks (``grid`` forces a split)."""
    chunk_plan = plan(potential, atoms, budget=budget, grid=grid)
    summary = chunk_plan.summary()
    logger.info("%s: %d atoms in %d chunks %s", potential.name, len(atoms), summary["n_chunks"], summary)
    record = evaluate(potential, atoms, chunk_plan, forces=forces, stress=stress)
    record["chunking"] = summary
    return record


__all__ = [
    "CellTooLargeError",
    "ChunkPlan",
    "build_chunks",
    "bytes_per_edge",
    "can_recompute",
    "estimate_bytes",
    "estimate_edges",
    "evaluate",
    "memory_budget_bytes",
    "needs_chunking",
    "over_row_slices",
    "plan",
    "predict_chunked",
    "recompute_for_inference",
    "recompute_wanted",
    "run_block",
]
