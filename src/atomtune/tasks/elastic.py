"""Elastic constants Cᵢⱼ (GPa) from stress–strain with relaxed ions, and Voigt–Reuss–Hill bulk and shear moduli.

Each structure is relaxed (cell and ions) with the calculator, then each of the six Voigt strain components is applied
at ± a few small magnitudes, the ions relaxed at each fixed strained cell (the relaxed-ion tensor, as Materials Project
reports), and the stresses fitted: σᵢ = σ⁰ᵢ + Σⱼ Cᵢⱼ εⱼ by least squares per strain component, the intercept absorbing
the residual stress of the relaxation. Stresses are ASE's (positive under tension, so σ = Cε without a sign flip),
converted to GPa via ``ase.units.GPa``. The moduli come from pymatgen's ``ElasticTensor`` (k_vrh, g_vrh …).

Shear-strain convention: Voigt strains with *engineering* shears, ε₄ = γ_yz = 2ε_yz (ε₅ = 2ε_xz, ε₆ = 2ε_xy), the
convention in which the Voigt matrix C is the usual one (C₄₄ = σ_yz / γ_yz). A shear magnitude m in
``Settings.strains`` is therefore the engineering strain γ = m, i.e. the tensor components ε_yz = ε_zy = m / 2. A tool
that takes tensor shear strains applies twice the shear for the same number; each record spells out what was applied
(``normal_strains``, ``engineering_shear_strains``, ``tensor_shear_strains``) so numbers can be matched.

Relaxation tolerance: the default ``fmax`` (5e-4 eV/Å) was chosen by measurement (benchmarks/bench_elastic_fmax.py,
docs/performance.md): with CHGNet 0.3.0, C11, C12 and C44 of Cu, Al and Si then agree with the converged values
(fmax 1e-4 eV/Å in float64) within 0.25 %, where fmax 0.01 was off by up to 11 % (Al C44) — a loose fmax leaves the
ions of a strained cell unrelaxed (the internal strain of Si under shear) and the cell at the wrong volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import GPa

from atomtune.tasks import run_each
from atomtune.tasks.bulk_reference import periodic_bulk, relaxed_bulk
from atomtune.tasks.comparison import compare_properties, plot_properties, records_by_id
from atomtune.tasks.relax import relax_structures

PROPERTIES = (
    "c11_gpa",
    "c12_gpa",
    "c44_gpa",
    "bulk_modulus_vrh_gpa",
    "shear_modulus_vrh_gpa",
)

#: Voigt index pairs of the constants a record names (C11, C12, C13, C33, C44, C66: enough for cubic to hexagonal).
NAMED_CONSTANTS = ((0, 0), (0, 1), (0, 2), (2, 2), (3, 3), (5, 5))

#: What records say about shear strains (module docstring).
SHEAR_STRAIN_CONVENTION = "engineering: Voigt ε4 = γ_yz = 2·ε_yz (ε5, ε6 likewise); C44 = σ_yz / γ_yz"

#: Voigt index → (row, column) of the symmetric 3×3 strain.
VOIGT_PAIRS = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


@dataclass
class Settings:
    """``strains``: Voigt strain magnitudes applied to each of the six components, both signs: normal strains ε_ii for
    components 1–3 and *engineering* shear strains γ = 2ε_ij for components 4–6 (0.01 shears ε_yz by 0.005; see the
    module docstring). 0.5 % and 1 %: inside the linear regime of metals and oxides, large enough that stress noise
    from fmax-level relaxation stays below ~1 GPa in Cᵢⱼ.
    ``relax_first``: relax cell and ions first, so Cᵢⱼ is taken at the calculator's own equilibrium. ``relax_ions``:
    relax ions in each strained cell (relaxed-ion constants; False gives clamped-ion ones). ``fmax``: eV/Å for all
    relaxations; 5e-4 keeps C11, C12, C44 within 0.25 % of the converged values for CHGNet on Cu, Al, Si (0.01 was off
    by up to 11 %; measured, see the module docstring). ``max_steps``: per relaxation."""

    strains: tuple[float, ...] = (0.005, 0.01)
    relax_first: bool = True
    relax_ions: bool = True
    fmax: float = 5e-4
    max_steps: int = 500


def run(structures: Sequence[Atoms], calculator, settings: Settings | None = None, progress: bool = True) -> list[dict]:
    """One record per structure: ``elastic_tensor_gpa`` (6×6, Voigt with engineering shear strains), ``c11_gpa``,
    ``c12_gpa``, ``c13_gpa``, ``c33_gpa``, ``c44_gpa``, ``c66_gpa``, ``bulk_modulus_{voigt,reuss,vrh}_gpa``,
    ``shear_modulus_{voigt,reuss,vrh}_gpa``, ``mechanically_stable`` (all eigenvalues of C positive: Born criterion),
    ``fit_rmse_gpa`` (stress residual of the linear fits), the strains applied — ``normal_strains`` (ε_ii),
    ``engineering_shear_strains`` (γ_ij) and ``tensor_shear_strains`` (ε_ij = γ_ij / 2) — and
    ``shear_strain_convention``."""
    settings = settings or Settings()

    def compute(atoms: Atoms, label: str) -> dict:
        return _elastic_constants(atoms, label, calculator, settings)

    return run_each(structures, compute, "elastic", progress)


def strained(atoms: Atoms, component: int, magnitude: float) -> Atoms:
    """``atoms`` with Voigt strain ``magnitude`` on one component (0–5): normal ε_aa = magnitude, or engineering shear
    γ_ab = magnitude, i.e. tensor ε_ab = ε_ba = magnitude / 2."""
    row, column = VOIGT_PAIRS[component]
    strain = np.zeros((3, 3))
    if row == column:
        strain[row, row] = magnitude
    else:
        strain[row, column] = strain[column, row] = magnitude / 2
    copy = atoms.copy()
    copy.set_cell(atoms.cell[:] @ (np.eye(3) + strain), scale_atoms=True)
    return copy


def _elastic_constants(atoms: Atoms, label: str, calculator, settings: Settings) -> dict:
    record: dict = {"id": label, "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
    periodic_bulk(atoms, label, "the elastic-constant task")
    atoms.calc = None
    if settings.relax_first:
        atoms = relaxed_bulk(atoms, label, calculator, settings.fmax, settings.max_steps)
        atoms.calc = None
    magnitudes = sorted({sign * m for m in settings.strains for sign in (-1.0, 1.0)} | {0.0})
    cases = [(component, magnitude) for component in range(6) for magnitude in magnitudes if magnitude != 0.0]
    cells = [atoms.copy()] + [strained(atoms, component, magnitude) for component, magnitude in cases]
    steps = settings.max_steps if settings.relax_ions and len(atoms) > 1 else 0
    relaxations = relax_structures(cells, calculator, settings.fmax, steps, relax_cell=False, stress=True)
    stresses = []
    for relaxation in relaxations:
        stress = relaxation.atoms.calc.results.get("stress") if relaxation.atoms.calc is not None else None
        if stress is None or not np.isfinite(relaxation.energy):
            record["error"] = f"stress not computed for a strained cell: {relaxation.error or 'no stress'}"
            return record
        stresses.append(np.asarray(stress, dtype=float) / GPa)
    unstrained, stresses = stresses[0], stresses[1:]
    tensor = np.zeros((6, 6))
    residuals = []
    for component in range(6):
        strains = np.array([0.0] + [m for c, m in cases if c == component])
        values = np.array([unstrained] + [s for (c, _), s in zip(cases, stresses) if c == component])
        design = np.column_stack([np.ones_like(strains), strains])
        coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
        tensor[:, component] = coefficients[1]
        residuals.append(values - design @ coefficients)
    tensor = 0.5 * (tensor + tensor.T)
    record.update(moduli(tensor))
    applied = [m for m in magnitudes if m != 0.0]
    record["normal_strains"] = applied
    record["engineering_shear_strains"] = applied
    record["tensor_shear_strains"] = [m / 2 for m in applied]
    record["shear_strain_convention"] = SHEAR_STRAIN_CONVENTION
    record["fit_rmse_gpa"] = float(np.sqrt(np.mean(np.concatenate(residuals) ** 2)))
    record["residual_stress_gpa"] = unstrained
    if steps and any(not r.converged for r in relaxations):
        record["unconverged_relaxations"] = sum(not r.converged for r in relaxations)
    return record


def moduli(tensor_gpa: np.ndarray) -> dict:
    """Named constants, VRH moduli (pymatgen ``ElasticTensor``) and Born stability of a 6×6 Voigt tensor in GPa."""
    from pymatgen.analysis.elasticity import ElasticTensor

    elastic = ElasticTensor.from_voigt(tensor_gpa)
    values = {
        "elastic_tensor_gpa": tensor_gpa,
        **{f"c{i + 1}{j + 1}_gpa": float(tensor_gpa[i, j]) for i, j in NAMED_CONSTANTS},
        "bulk_modulus_voigt_gpa": float(elastic.k_voigt),
        "bulk_modulus_reuss_gpa": float(elastic.k_reuss),
        "bulk_modulus_vrh_gpa": float(elastic.k_vrh),
        "shear_modulus_voigt_gpa": float(elastic.g_voigt),
        "shear_modulus_reuss_gpa": float(elastic.g_reuss),
        "shear_modulus_vrh_gpa": float(elastic.g_vrh),
        "mechanically_stable": bool(np.all(np.linalg.eigvalsh(tensor_gpa) > 0)),
    }
    return values


def compare(results: dict[str, list[dict]], reference: str | None = None) -> list[dict]:
    """Rows per structure and property (C₁₁, C₁₂, C₄₄, K_VRH, G_VRH), one column per model; differences and MAE against
    ``reference`` when given."""
    return compare_properties(results, PROPERTIES, reference)


def plot(results: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """Bars of the moduli across models, and one heat map of Cᵢⱼ per structure with a panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atomtune.tasks.comparison import safe_filename

    out_dir = Path(out_dir)
    paths = plot_properties(results, ("bulk_modulus_vrh_gpa", "shear_modulus_vrh_gpa", "c11_gpa"), out_dir, "elastic")
    indexed = {model: records_by_id(records) for model, records in results.items()}
    ids = list(dict.fromkeys(i for records in indexed.values() for i in records))
    for structure in ids:
        tensors = {
            model: np.array(records[structure]["elastic_tensor_gpa"])
            for model, records in indexed.items()
            if records.get(structure, {}).get("elastic_tensor_gpa") is not None
        }
        if not tensors:
            continue
        top = max(np.abs(t).max() for t in tensors.values())
        figure, axes = plt.subplots(1, len(tensors), figsize=(3.4 * len(tensors), 3.2), squeeze=False)
        for axis, (model, tensor) in zip(axes[0], tensors.items()):
            image = axis.imshow(tensor, cmap="RdBu_r", vmin=-top, vmax=top)
            for i in range(6):
                for j in range(6):
                    axis.text(j, i, f"{tensor[i, j]:.0f}", ha="center", va="center", fontsize=6)
            axis.set_xticks(range(6), [str(k + 1) for k in range(6)])
            axis.set_yticks(range(6), [str(k + 1) for k in range(6)])
            axis.set_title(model, fontsize="small")
        figure.colorbar(image, ax=axes[0].tolist(), label="Cᵢⱼ (GPa)", shrink=0.8)
        figure.suptitle(f"elastic: {structure}")
        path = out_dir / f"elastic_tensor_{safe_filename(structure)}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
