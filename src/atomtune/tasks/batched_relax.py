"""Batched FIRE: relax many structures through one Potential forward pass per step (torch-sim style).

Used by the relax-based tasks (:mod:`atomtune.tasks.relax`, substitution, composition scan) when they are given a
:class:`~atomtune.models.base.Potential` rather than an ASE calculator. Every unconverged structure of a pool of
``batch_size`` takes one FIRE step per iteration; all of them are evaluated by a single ``potential.predict`` call (one
``forward``); a structure that converges (or runs out of steps) leaves the pool and the next waiting structure takes its
place, so each structure converges on its own.

The algorithm is ASE's, step for step, so the two paths give the same structures and step counts:
:class:`ase.optimize.FIRE` with its default parameters, on positions and — with ``relax_cell`` — the cell through the
same degrees of freedom as :class:`ase.filters.FrechetCellFilter` (positions in the undeformed cell, plus ``n_atoms ×
logm(F)`` for the deformation gradient F; cell gradient from the virial through the Fréchet derivative of expm, and
``fmax`` applied to those cell rows as well). Convergence is ASE's: the largest row norm of the (filtered) forces
strictly below ``fmax``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

#: Below this volume per atom (Å³) a cell has collapsed (the densest solids have ~5 Å³/atom); stop there, before the
#: neighbour lists of a collapsing cell grow without bound.
MIN_VOLUME_PER_ATOM = 1.0



@dataclass(frozen=True)
class FireParameters:
    """ASE FIRE's defaults (Bitzek et al., PRL 97, 170201 (2006)): time steps in ASE time units, ``maxstep`` in Å."""

    dt: float = 0.1
    maxstep: float = 0.2
    dtmax: float = 1.0
    n_min: int = 5
    finc: float = 1.1
    fdec: float = 0.5
    astart: float = 0.1
    fa: float = 0.99


@dataclass
class Relaxation:
    """The outcome of relaxing one structure.

    ``atoms``: final structure with a SinglePointCalculator holding its energy (eV), forces (eV/Å) and, when computed,
    stress (eV/Å³, Voigt, ASE sign); ``steps``: optimiser steps taken (force evaluations − 1, as ASE
    counts); ``max_force``: the convergence measure at the end (eV/Å; includes the cell rows of the Fréchet filter
    when the cell was relaxed); ``error``: why it is not a converged relaxation (None when converged).
    """

    atoms: Atoms
    energy: float
    steps: int
    converged: bool
    max_force: float
    error: str | None = None
    collapsed: bool = False

    @property
    def usable(self) -> bool:
        """A meaningful final structure, if perhaps not converged to ``fmax``: finite energy and no collapsed cell."""
        return bool(np.isfinite(self.energy)) and not self.collapsed


class _FireState:
    """One structure's FIRE state and its Fréchet-cell degrees of freedom."""

    def __init__(self, atoms: Atoms, relax_cell: bool, parameters: FireParameters, stress: bool = False):
        self.atoms = atoms
        self.relax_cell = relax_cell
        # Stress at fixed cell only when the caller needs the final stress (elastic constants): it costs a strain
        # derivative in every step's backward pass.
        self.want_stress = relax_cell or (stress and bool(atoms.pbc.all()))
        self.parameters = parameters
        self.n_atoms = len(atoms)
        self.original_cell = np.array(atoms.cell[:], dtype=float)
        # Cell DOF scaled by the number of atoms (FrechetCellFilter's exp_cell_factor default) so a cell step and an
        # atom step are of similar size in FIRE's single velocity vector.
        self.exp_cell_factor = float(self.n_atoms)
        self.log_deformation = np.zeros((3, 3))  # logm(F), F the deformation gradient from the original cell
        self.deformation = np.eye(3)
        self.velocity: np.ndarray | None = None
        self.dt = parameters.dt
        self.alpha = parameters.astart
        self.n_downhill = 0
        self.steps = 0

    def dofs(self) -> np.ndarray:
        if not self.relax_cell:
            return self.atoms.positions.copy()
        positions = np.linalg.solve(self.deformation, self.atoms.positions.T).T
        return np.vstack([positions, self.exp_cell_factor * self.log_deformation])

    def set_dofs(self, dofs: np.ndarray) -> None:
        from scipy.linalg import expm

        if not self.relax_cell:
            self.atoms.set_positions(dofs)
            return
        self.log_deformation = dofs[self.n_atoms :] / self.exp_cell_factor
        self.deformation = expm(self.log_deformation)
        self.atoms.set_cell(self.original_cell @ self.deformation.T, scale_atoms=False)
        self.atoms.set_positions(dofs[: self.n_atoms] @ self.deformation.T)

    def generalised_forces(self, forces: np.ndarray, stress: np.ndarray | None) -> np.ndarray:
        """Forces on the DOFs: atom forces (in the undeformed frame) and, with the cell, −∂E/∂(scaled log F)."""
        if not self.relax_cell:
            return forces
        from scipy.linalg import expm_frechet

        volume = abs(np.linalg.det(self.atoms.cell[:]))
        virial = -volume * stress
        cell_gradient = virial @ np.linalg.inv(self.deformation.T)
        # Σ_μν (∂expm(L)/∂L_μν) ⊙ G is the adjoint of expm's Fréchet derivative at L applied to G, which is the
        # Fréchet derivative at Lᵀ: one call instead of FrechetCellFilter's nine.
        log_force = expm_frechet(self.log_deformation.T, cell_gradient, compute_expm=False)
        return np.vstack([forces @ self.deformation, log_force / self.exp_cell_factor])

    def step(self, force: np.ndarray) -> None:
        """One ase.optimize.FIRE step (downhill_check off) with ``force`` = −gradient on the DOFs."""
        p = self.parameters
        if self.velocity is None:
            self.velocity = np.zeros_like(force)
        else:
            vf = np.vdot(force, self.velocity)
            if vf > 0.0:
                self.velocity = (1.0 - self.alpha) * self.velocity + self.alpha * force / np.sqrt(
                    np.vdot(force, force)
                ) * np.sqrt(np.vdot(self.velocity, self.velocity))
                if self.n_downhill > p.n_min:
                    self.dt = min(self.dt * p.finc, p.dtmax)
                    self.alpha *= p.fa
                self.n_downhill += 1
            else:
                self.velocity[:] *= 0.0
                self.alpha = p.astart
                self.dt *= p.fdec
                self.n_downhill = 0
        self.velocity += self.dt * force
        displacement = self.dt * self.velocity
        norm = np.sqrt(np.vdot(displacement, displacement))
        if norm > p.maxstep:
            displacement = p.maxstep * displacement / norm
        self.set_dofs(self.dofs() + displacement)


def fire_relax(
    potential,
    structures: Sequence[Atoms],
    fmax: float = 0.05,
    max_steps: int = 500,
    relax_cell: bool = True,
    batch_size: int | None = None,
    parameters: FireParameters = FireParameters(),
    progress: bool = False,
    stress: bool = False,
) -> list[Relaxation]:
    """Relax ``structures`` (not modified) with batched FIRE on ``potential``; one :class:`Relaxation` each, in order.

    ``fmax`` in eV/Å; ``max_steps`` optimiser steps per structure; ``relax_cell`` relaxes the cell too (periodic
    structures only; others relax positions); ``batch_size`` structures per forward (None: the backbone's measured
    ``cpu_batch_size`` / ``gpu_batch_size``, as for ``predict``; see benchmarks/bench_batched_relax.py); ``stress``:
    also compute the stress of periodic structures relaxed at fixed cell (it is always computed when the cell relaxes).
    A structure that fails (an element the model lacks, non-finite energies) gets a Relaxation with ``error`` set; the
    others go on.
    """
    structures = list(structures)
    if batch_size is None:
        # The pool is one predict() batch, so the backbone's predict batch sizes apply: on CPU, batched forwards of
        # CHGNet were measured no cheaper per structure than single ones, for relaxations too (batched_relax.json).
        batch_size = potential.gpu_batch_size if potential.device.type == "cuda" else potential.cpu_batch_size
    batch_size = max(1, int(batch_size))
    results: list[Relaxation | None] = [None] * len(structures)
    waiting = deque(range(len(structures)))
    active: list[tuple[int, _FireState]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(structures), desc=f"relax ({potential.name}, batched FIRE)", unit="structure")

    def finish(index: int, relaxation: Relaxation) -> None:
        results[index] = relaxation
        if bar is not None:
            bar.update(1)

    try:
        while waiting or active:
            while waiting and len(active) < batch_size:
                index = waiting.popleft()
                atoms = structures[index].copy()
                atoms.calc = None
                try:
                    potential.check_elements([atoms], where=f"structure {index} ({atoms.info.get('id', index)})")
                except Exception as error:  # reported on its own record, the pool goes on
                    finish(index, _failed(atoms, error))
                    continue
                relaxes_cell = relax_cell and bool(atoms.pbc.all())
                active.append((index, _FireState(atoms, relaxes_cell, parameters, stress)))
            predictions = _evaluate(potential, [state for _, state in active])
            still_active = []
            for (index, state), predicted in zip(active, predictions):
                if isinstance(predicted, Exception):
                    finish(index, _failed(state.atoms, predicted, steps=state.steps))
                    continue
                force = state.generalised_forces(predicted["forces"], predicted.get("stress"))
                max_force = float(np.linalg.norm(force, axis=1).max()) if len(force) else 0.0
                if not (np.isfinite(predicted["energy"]) and np.isfinite(max_force)):
                    finish(index, _outcome(state, predicted, max_force, "energy or forces became non-finite"))
                elif state.relax_cell and state.atoms.get_volume() / state.n_atoms < MIN_VOLUME_PER_ATOM:
                    finish(index, _outcome(state, predicted, max_force, collapsed_message(state.atoms), collapsed=True))
                elif max_force < fmax:
                    finish(index, _outcome(state, predicted, max_force, None))
                elif state.steps >= max_steps:
                    message = f"not converged in {max_steps} steps (max force {max_force:.3g} eV/Å > fmax {fmax})"
                    finish(index, _outcome(state, predicted, max_force, message))
                else:
                    state.step(force)
                    state.steps += 1
                    still_active.append((index, state))
            active = still_active
    finally:
        if bar is not None:
            bar.close()
    return results  # type: ignore[return-value]


def collapsed_message(atoms: Atoms) -> str:
    return (
        f"cell collapsed to {atoms.get_volume() / len(atoms):.2f} Å³/atom (< {MIN_VOLUME_PER_ATOM} Å³/atom): the model "
        f"has no minimum near this structure"
    )


def _evaluate(potential, states: list[_FireState]) -> list[dict | Exception]:
    """One forward for all states (stress where wanted); on failure, find the structure that fails."""
    want_stress = [state.want_stress for state in states]
    try:
        return _predict_groups(potential, states, want_stress)
    except Exception:  # one bad structure must not fail the pool: evaluate one by one to find it
        outcomes: list[dict | Exception] = []
        for state, stress in zip(states, want_stress):
            try:
                outcomes.extend(_predict_groups(potential, [state], [stress]))
            except Exception as error:
                outcomes.append(error)
        return outcomes


def _predict_groups(potential, states: list[_FireState], want_stress: list[bool]) -> list[dict]:
    outcomes: list[dict | None] = [None] * len(states)
    for stress in (True, False):
        group = [k for k, wanted in enumerate(want_stress) if wanted == stress]
        if not group:
            continue
        predictions = potential.predict([states[k].atoms for k in group], batch_size=len(group), stress=stress)
        for k, predicted in zip(group, predictions):
            outcomes[k] = predicted
    return outcomes  # type: ignore[return-value]


def _outcome(
    state: _FireState, predicted: dict, max_force: float, error: str | None, collapsed: bool = False
) -> Relaxation:
    atoms = state.atoms.copy()
    results = {"energy": float(predicted["energy"]), "forces": np.asarray(predicted["forces"], dtype=float)}
    if predicted.get("stress") is not None:
        results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(predicted["stress"], dtype=float))
    atoms.calc = SinglePointCalculator(atoms, **results)
    return Relaxation(atoms, results["energy"], state.steps, error is None, max_force, error, collapsed)


def _failed(atoms: Atoms, error: Exception, steps: int = 0) -> Relaxation:
    from atomtune.tasks import error_message

    return Relaxation(atoms.copy(), float("nan"), steps, False, float("nan"), error_message(error))
