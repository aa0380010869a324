"""Will a cell fit in memory? The measured constants behind the estimate of the peak memory of one energy + forces +
stress evaluation, and the memory this machine has. The estimate itself, the chunk plan and the refusal of a cell too
large are :mod:`atomtune.models.chunking`'s (``estimate_bytes``, ``plan``), made before a large MD run or prediction
starts, so that a cell too large is refused with the estimate instead of being killed by the operating system an hour in.

The estimate is edges × bytes per edge: directed neighbour pairs within the model's cutoff (from the cell's number
density, ρ·4/3·π·r_c³ per atom) times a per-backbone constant measured by ``benchmarks/bench_scale.py`` on CPU in
float32 with autograd forces and stress (fcc Cu, 100–1000 atoms; memory grew linearly with N there, exponents in
docs/lammps.md). CHGNet and SevenNet recompute their layers' activations in the backward pass when keeping them would
not fit (``recompute_activations``, :mod:`atomtune.models.chunking`); their smaller measured constant applies then.
"""

from __future__ import annotations

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


__all__ = ["BYTES_PER_EDGE", "BYTES_PER_EDGE_RECOMPUTED", "MACE_REFERENCE_EDGE_WIDTH", "available_memory_bytes"]
