"""The one door between atomtune's main process and a backbone family's own environment.

Two ways through it, both started from the main process, both running ``python -m atomtune.envs.worker`` with the
family environment's interpreter:

* **Whole units of work** (:func:`run_unit`): ``predict`` on a batch of structures or ``task`` (one property task on one
  model). The request and the response are JSON files (structures and arrays through ASE's ``jsonio``: float64 arrays
  round-trip bit for bit, and nothing is unpickled). One process per unit, so the family's imports are paid once per
  unit, not per structure.
* **Step-by-step driving** (:class:`WorkerCalculator`): an ASE ``SocketIOCalculator`` whose client is a worker holding the
  model, talking the i-PI protocol over a Unix socket (positions and cell in; energy, forces and virial out), for work
  that must stay in the main process (MD, a task mixing calculators). This is the design of rootstock (an i-PI server in
  the main process, a persistent worker per model in its own environment) built on ASE's own socket classes.

Errors raised in the worker come back with the same message (an :class:`~atomtune.exceptions.AtomtuneError` keeps its
class); a worker that dies (killed, segfault, out of memory) or overruns its timeout raises :class:`WorkerDiedError`
naming the family, the unit and the log file, instead of hanging.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.calculators.socketio import SocketClosed, SocketIOCalculator
from ase.io import jsonio

from atomtune.exceptions import AtomtuneError

#: Set in a worker's environment: the family whose environment it runs in ("main" for atomtune's own).
FAMILY_VARIABLE = "ATOMTUNE_ENVIRONMENT"
#: Test hook (tests/campaign/test_worker_killed.py): a file path; the first worker that finds it unset writes its
#: process id there once its work has started and then waits, so that a test can kill it mid-task deterministically.
HOLD_VARIABLE = "ATOMTUNE_WORKER_TEST_HOLD"
LOG_TAIL_LINES = 15


class WorkerError(AtomtuneError):
    """An error raised inside a worker that is not one of atomtune's own (the message names the environment)."""


class WorkerDiedError(AtomtuneError):
    """The worker process ended without answering (killed, crashed, or past its timeout)."""


# -- structures across the boundary -------------------------------------------------------------------------------
def encode_structures(structures) -> list[dict]:
    """Structures as JSON-able dicts: ASE's ``Atoms.todict`` (positions, cell, info, arrays) plus reference labels."""
    encoded = []
    for atoms in structures:
        item = {"atoms": atoms.todict()}
        if atoms.calc is not None and getattr(atoms.calc, "results", None):
            item["labels"] = {key: value for key, value in atoms.calc.results.items() if key != "free_energy"}
        encoded.append(item)
    return encoded


def decode_structures(encoded: list[dict]) -> list[Atoms]:
    structures = []
    for item in encoded:
        atoms = Atoms.fromdict(item["atoms"])
        if item.get("labels"):
            atoms.calc = SinglePointCalculator(atoms, **item["labels"])
        structures.append(atoms)
    return structures


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(jsonio.encode(value))
    os.replace(tmp, path)


# -- units of work (run inside the worker) --------------------------------------------------------------------------
def predict_unit(model: str, structures: list[dict], batch_size: int | None = None, forces: bool = True,
                 stress: bool = True, dtype: str = "float32", threads: int = 1, trust: bool = False) -> list[dict]:
    """``Potential.predict`` in the worker: per structure ``{"energy": eV, "forces": eV/Å, "stress": 3×3 eV/Å³}``.

    ``trust`` is the user's ``--trust-model`` (a pickled model file may load), passed on unchanged."""
    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    potential = load_potential(model, dtype=dtype, trust=trust)
    return potential.predict(decode_structures(structures), batch_size=batch_size, forces=forces, stress=stress)


def task_unit(task: str, model: str, structures: list[dict], settings: dict | None = None, dtype: str = "float32",
              threads: int = 1, trust: bool = False) -> list[dict]:
    """One property task (``atomtune.tasks``) on one model in the worker; returns the task's JSON-ready records."""
    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads
    from atomtune.tasks import load_task

    configure_threads(threads)
    module = load_task(task)
    potential = load_potential(model, dtype=dtype, trust=trust)
    task_settings = module.Settings(**(settings or {}))
    return module.run(decode_structures(structures), potential, task_settings, progress=False)


def finetune_unit(model: str, train: list[dict], valid: list[dict], out: str, spec: dict | None = None,
                  trust: bool = False, threads: int = 1, device: str = "cpu", resume: bool = False,
                  general: list[dict] | None = None) -> dict:
    """``FinetuneSpec(**spec).fit`` in the worker (the one Trainer, every strategy); the fine-tuned model is saved in
    ``out`` (a directory the main process loads like any other model). Returns the metrics record and history."""
    from atomtune.finetune.spec import FinetuneSpec
    from atomtune.runtime import configure_threads

    configure_threads(threads)
    result = FinetuneSpec(**(spec or {})).fit(
        model, decode_structures(train), decode_structures(valid), out, progress=False, trust=trust, device=device,
        resume=resume, general=decode_structures(general) if general is not None else None,
    )
    return {"out": str(result.out or out), "metrics": result.metrics, "history": result.history}


def fit_in_environment(spec, model: str, train, valid, out, device: str = "cpu", resume: bool = False, general=None,
                       trust: bool = False):
    """``FinetuneSpec.fit`` of a model whose family lives in another environment, run there as a finetune unit (so
    ``atomtune finetune --model pet-mad`` works from the main environment); the result is a
    :class:`~atomtune.finetune.loop.FitResult` whose potential is the saved model seen from here. None when ``model``
    is not such a model, or this process already runs in its family's environment."""
    import torch

    route = environment_route(str(model))
    if route is None or os.environ.get(FAMILY_VARIABLE) == route[0] or _inside(route[0]):
        return None
    from atomtune.finetune.loop import FitResult
    from atomtune.models.registry import load_potential

    answer = run_unit(
        "finetune", family=route[0], model=str(model), train=list(train), valid=list(valid), out=str(out),
        spec=spec.model_dump(mode="json"), trust=trust, threads=torch.get_num_threads(), device=device, resume=resume,
        general=list(general) if general is not None else None,
    )
    return FitResult(potential=load_potential(answer["out"], trust=trust), history=answer["history"],
                     metrics=answer["metrics"], out=Path(answer["out"]))


def describe_unit(model: str, trust: bool = False) -> dict:
    """What the main process needs to know about a model before any compute: elements (symbols) and cutoff (Å)."""
    from atomtune.models.registry import load_potential

    potential = load_potential(model, trust=trust)
    return {"supported_elements": sorted(potential.supported_elements), "cutoff": float(potential.cutoff),
            "name": potential.name}


UNITS = {"predict": predict_unit, "task": task_unit, "finetune": finetune_unit, "describe": describe_unit}


# -- the main-process side -------------------------------------------------------------------------------------------
def worker_python(family: str | None) -> str:
    """The interpreter a worker of ``family`` runs with (``None`` or ``"main"``: this process's own)."""
    if family in (None, "main"):
        return sys.executable
    from atomtune.envs.build import environment_python

    return str(environment_python(family))


def _worker_environment(family: str | None) -> dict:
    environment = dict(os.environ)
    environment[FAMILY_VARIABLE] = family or "main"
    # Exactly this process's atomtune code, whichever checkout the environment was built from (a cached environment
    # outlives the CI clone that built it), and nothing else from this side: the family's packages come from its own
    # environment only.
    import atomtune

    environment["PYTHONPATH"] = str(Path(atomtune.__file__).resolve().parents[1])
    environment.setdefault("OMP_NUM_THREADS", "1")
    return environment


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n  ".join(lines[-LOG_TAIL_LINES:])


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def raise_worker_error(error: dict, where: str) -> None:
    """Re-raise an error reported by a worker: atomtune's own errors keep their class and message."""
    message = error["message"]
    module_name, class_name = error.get("module", ""), error.get("type", "")
    if module_name.startswith("atomtune"):
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, AtomtuneError):
            # Rebuild without calling the subclass's own __init__ (some take structured arguments): same class, same
            # message, so callers that catch e.g. UnsupportedElementsError still do.
            rebuilt = cls.__new__(cls)
            Exception.__init__(rebuilt, message)
            raise rebuilt
    raise WorkerError(f"{class_name}: {message} ({where}; traceback in the worker log)\n  {error.get('traceback_tail', '')}")


def run_unit(unit: str, family: str | None = None, timeout: float | None = None, **arguments) -> Any:
    """Run one unit of work (``"predict"`` or ``"task"``, see :data:`UNITS`) in ``family``'s environment and return its
    result. ``family=None`` runs the same worker with this process's interpreter (used to check that both ways give
    bit-for-bit the same records). Structures in ``arguments`` are ``ase.Atoms`` lists; settings may be dataclasses.
    """
    if unit not in UNITS:
        raise AtomtuneError(f"unknown worker unit {unit!r}; units: {', '.join(UNITS)}")
    python = worker_python(family)
    arguments = dict(arguments)
    for key in ("structures", "train", "valid", "general"):
        if arguments.get(key) is not None:
            arguments[key] = encode_structures(arguments[key])
    if is_dataclass(arguments.get("settings")):
        arguments["settings"] = asdict(arguments["settings"])
    where = f"{unit} in the {family or 'main'} environment"
    with tempfile.TemporaryDirectory(prefix="atomtune-worker-") as scratch:
        scratch = Path(scratch)
        request, response, log_path = scratch / "request.json", scratch / "response.json", scratch / "worker.log"
        _write_json(request, {"unit": unit, "arguments": arguments})
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [python, "-m", "atomtune.envs.worker", "unit", str(request), str(response)],
                stdout=log, stderr=subprocess.STDOUT, env=_worker_environment(family),
            )
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise WorkerDiedError(
                    f"the {family or 'main'} worker did not finish {unit} within {timeout:.0f} s and was stopped. "
                    f"Last log lines:\n  {_log_tail(log_path)}"
                ) from None
        if not response.exists():
            kept = _keep_log(log_path)
            raise WorkerDiedError(
                f"the {family or 'main'} worker died ({_describe_exit(process.returncode)}) while running {unit}; "
                f"no result came back. Log: {kept}. Last lines:\n  {_log_tail(kept)}"
            )
        answer = jsonio.decode(response.read_text())
        if "error" in answer:
            raise_worker_error(answer["error"], where)
        return answer["result"]


def _keep_log(log_path: Path) -> Path:
    """Copy a failed worker's log out of its scratch directory so the message can point at it."""
    kept = Path(tempfile.gettempdir()) / f"atomtune-worker-{uuid.uuid4().hex[:8]}.log"
    try:
        kept.write_bytes(log_path.read_bytes())
    except OSError:
        return log_path
    return kept


def _error_record(error: BaseException) -> dict:
    lines = traceback.format_exception(error)
    return {
        "type": type(error).__name__,
        "module": type(error).__module__,
        "message": str(error),
        "traceback_tail": "".join(lines[-3:]).strip(),
    }


# -- step-by-step: an i-PI socket calculator --------------------------------------------------------------------------
class WorkerCalculator(SocketIOCalculator):
    """ASE calculator for ``model`` computed by a worker in ``family``'s environment over i-PI on a Unix socket.

    Use it in a ``with`` block (or call ``close()``): the worker lives as long as the calculator. The worker is started
    at the first calculation and restarted if the atoms' species or periodicity change (i-PI only carries positions and
    cell). Energies eV, forces eV/Å, stress eV/Å³ (ASE sign; periodic cells only). ``timeout`` (s) bounds each
    calculation so that a hung worker is reported, not waited on forever.

    Example::

        with WorkerCalculator("nequip:./model.nequip.zip", family="nequip") as calc:
            atoms.calc = calc
            MolecularDynamics(atoms, ...).run(1000)
    """

    def __init__(self, model: str, family: str | None = None, dtype: str = "float32", threads: int = 1,
                 timeout: float | None = 600.0, trust: bool = False, stress: bool = True):
        self.model = model
        self.trust = trust
        # i-PI always carries a virial, so the worker would compute stress at every step; MD at fixed cell does not
        # need it (measured: CHGNet 32 atoms, ~2x the cost per step), hence the switch. Without it no stress is reported.
        self.stress = stress
        if not stress:
            self.implemented_properties = ["energy", "free_energy", "forces"]
        self.family = family
        self.dtype = dtype
        self.threads = threads
        self.python = worker_python(family)  # fails here, before any socket, if the environment is not built
        # made when a worker starts, removed by close() (a model only asked for predict units never makes one)
        self._scratch: Path | None = None
        self.log_path: Path | None = None
        self._log_handle = None
        self._system: tuple | None = None
        #: every worker death seen by this calculator: a task that records per-structure errors and goes on still
        #: leaves a trace here, so that a campaign does not cache its incomplete result (campaign/steps.py)
        self.worker_failures: list[str] = []
        super().__init__(unixsocket=f"atomtune-{uuid.uuid4().hex[:12]}", timeout=timeout, launch_client=self._launch)

    def _launch(self, atoms, properties=None, port=None, unixsocket=None):
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="atomtune-socket-"))
            self.log_path = self._scratch / "worker.log"
        structure_file = self._scratch / "structure.json"
        _write_json(structure_file, encode_structures([atoms]))
        self._error_file = self._scratch / "error.json"
        self._error_file.unlink(missing_ok=True)
        if self._log_handle is not None:
            self._log_handle.close()
        self._log_handle = open(self.log_path, "a")  # noqa: SIM115 — open for the worker's life, closed in close()
        command = [
            self.python, "-m", "atomtune.envs.worker", "socket", "--model", self.model, "--structure",
            str(structure_file), "--unixsocket", unixsocket, "--dtype", self.dtype, "--threads", str(self.threads),
            "--error-file", str(self._error_file),
        ] + (["--trust-model"] if self.trust else []) + ([] if self.stress else ["--no-stress"])
        self._process = subprocess.Popen(
            command, stdout=self._log_handle, stderr=subprocess.STDOUT, env=_worker_environment(self.family)
        )
        return self._process

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        # i-PI carries positions and cell only. ASE's Calculator.get_property resets self.atoms before calculate(),
        # so SocketIOCalculator's own check never sees a change of species; compare with the system the worker holds.
        system = (atoms.numbers.tobytes(), atoms.pbc.tobytes())
        if self.server is not None and system != self._system:
            process = getattr(self, "_process", None)
            if self.server.protocol is not None and process is not None and process.poll() is None:
                self._send_system(atoms)  # the same worker takes the new species / atom count / periodicity
            else:
                self._stop_worker()
        self._system = system
        try:
            super().calculate(atoms, list(properties), system_changes)
            if not self.stress:
                self.results.pop("stress", None)  # computed by ASE from the zero virial the worker sent
        except (SocketClosed, OSError, TimeoutError) as error:
            self._report_failure(error)

    def _send_system(self, atoms) -> None:
        """Tell the worker about a new system through i-PI's INIT message (its initialisation string, which i-PI leaves
        to the client to interpret): atomic numbers and periodicity as JSON; POSDATA then brings cell and positions."""
        payload = json.dumps({"numbers": atoms.numbers.tolist(), "pbc": atoms.pbc.tolist()}).encode()
        protocol = self.server.protocol
        try:
            protocol.sendmsg("INIT")
            protocol.send(0, np.int32)  # bead index
            protocol.send(len(payload), np.int32)
            protocol.send(np.frombuffer(payload, dtype=np.byte), np.byte)
        except OSError as error:
            self._report_failure(error)

    def _report_failure(self, error: BaseException):
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None and isinstance(error, TimeoutError):
            process.kill()
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.server is not None:  # the worker is gone: close our end (frees the socket name for the next worker)
            self.server.proc = None
            try:
                self.server.close()
            except OSError:
                pass
            self.server = None
        error_file = getattr(self, "_error_file", None)
        if error_file is not None and error_file.exists():
            raise_worker_error(json.loads(error_file.read_text()), f"socket worker for {self.model}")
        exit_state = _describe_exit(process.returncode if process is not None else None)
        kept = _keep_log(self.log_path) if self.log_path is not None else None  # close() removes the scratch folder
        message = (
            f"the {self.family or 'main'} worker for {self.model} died ({exit_state}; {type(error).__name__}: "
            f"{error}). Log: {kept}. Last lines:\n  {_log_tail(kept) if kept else ''}"
        )
        self.worker_failures.append(message)
        raise WorkerDiedError(message) from None

    def _stop_worker(self):
        if self.server is not None:
            try:
                if self.server.protocol is not None:
                    self.server.protocol.end()
            except OSError:
                pass
            self.server.proc = None  # ASE's close() would wait on it; we end it ourselves below
            self.server.close()
            self.server = None
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self):
        self._stop_worker()
        super().close()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class WorkerModel(WorkerCalculator):
    """A model of a family that lives in another environment, as the main process sees it: an ASE calculator (the
    socket worker above) whose ``predict`` runs as one worker unit. :func:`atomtune.models.load_potential` hands one out
    for such a family, so tasks and commands use it like any other model (tasks that batch see an ASE calculator)."""

    def __init__(self, spec: str, family: str, backbone: str, dtype: str = "float32", threads: int = 1,
                 trust: bool = False, timeout: float | None = 600.0):
        super().__init__(spec, family=family, dtype=dtype, threads=threads, timeout=timeout, trust=trust)
        self.backbone = backbone

    @property
    def name(self) -> str:
        return f"{self.backbone}:{self.model}"

    def _description(self) -> dict:
        if getattr(self, "_described", None) is None:
            self._described = self._unit("describe", trust=self.trust)
        return self._described

    def _unit(self, unit: str, **arguments):
        """:func:`run_unit` for this model; a worker death is also kept in :attr:`worker_failures`."""
        try:
            return run_unit(unit, family=self.family, model=self.model, timeout=self.timeout, **arguments)
        except WorkerDiedError as error:
            self.worker_failures.append(str(error))
            raise

    @property
    def supported_elements(self) -> frozenset[str]:
        """Chemical symbols the model covers (asked once from a worker)."""
        return frozenset(self._description()["supported_elements"])

    @property
    def cutoff(self) -> float:
        return self._description()["cutoff"]

    def check_elements(self, structures, where: str = "") -> None:
        """Raise :class:`UnsupportedElementsError` before any compute, as :meth:`Potential.check_elements` does."""
        from atomtune.exceptions import UnsupportedElementsError

        present = {symbol for atoms in structures for symbol in atoms.get_chemical_symbols()}
        missing = present - self.supported_elements
        if missing:
            raise UnsupportedElementsError(missing, self.name, where)

    def calculator(self, **kwargs) -> WorkerModel:
        """The ASE calculator of this model: itself (one worker per model)."""
        return self

    def predict(self, structures, batch_size: int | None = None, forces: bool = True, stress: bool = True,
                progress: bool = False) -> list[dict]:
        """Batched inference in the family's environment: per structure energy eV, forces eV/Å, stress 3×3 eV/Å³."""
        return self._unit("predict", structures=list(structures), batch_size=batch_size, forces=forces, stress=stress,
                          dtype=self.dtype, threads=self.threads, trust=self.trust)


def environment_route(spec: str) -> tuple[str, str] | None:
    """``(family, checkpoint)`` when ``spec`` names a model of a family with its own environment (``nequip:PATH``,
    ``nequip.net:…``, ``*.nequip.zip``, a public checkpoint listed in the family's spec such as ``uma-s-1p1`` (optionally
    with the family's own ``:option`` suffix), or a directory saved from such a model); None otherwise."""
    from atomtune.envs.specs import SPECS, family_of_checkpoint

    prefix, separator, rest = spec.partition(":")
    if separator and prefix in SPECS and rest:
        return prefix, rest
    if spec.startswith("nequip.net:") or spec.endswith(".nequip.zip"):
        return "nequip", spec
    family = family_of_checkpoint(prefix)
    if family is not None:
        return family, spec
    path = Path(spec)
    metadata_file = path / "atomtune.json"
    if path.is_dir() and metadata_file.is_file():
        try:
            backbone = json.loads(metadata_file.read_text()).get("backbone")
        except ValueError:
            return None  # the registry reports the broken metadata file
        if backbone in SPECS:
            return backbone, spec
    return None


def load_in_environment(spec: str, dtype: str = "float32", trust: bool = False, threads: int = 1):
    """The model ``spec`` of an environment family: the adapter itself when this process runs in that family's
    environment, else a :class:`WorkerModel`. None when ``spec`` is not such a model (the registry resolves it)."""
    from atomtune.envs.build import environment_python, family_spec

    route = environment_route(spec)
    if route is None:
        return None
    family, checkpoint = route
    spec_of_family = family_spec(family)
    if os.environ.get(FAMILY_VARIABLE) == family or _inside(family):
        if not spec_of_family.adapter:
            raise AtomtuneError(f"atomtune has no adapter for {family} models yet (`atomtune models`).")
        module_name, class_name = spec_of_family.adapter.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        if Path(checkpoint).is_dir():
            return None  # a saved directory: the registry loads it with the backbone's load_weights
        return cls.from_checkpoint(checkpoint, trust=trust)
    if not spec_of_family.adapter:
        raise AtomtuneError(f"atomtune has no adapter for {family} models yet (`atomtune models`).")
    environment_python(family)  # not built → one error with the command that builds it
    return WorkerModel(spec, family=family, backbone=family, dtype=dtype, threads=threads, trust=trust)


def _inside(family: str) -> bool:
    """Whether this interpreter belongs to an environment atomtune built for ``family`` (its marker file says so)."""
    from atomtune.envs.build import MARKER_FILE

    marker = Path(sys.prefix) / MARKER_FILE
    try:
        return json.loads(marker.read_text())["spec"]["family"] == family
    except (OSError, ValueError, KeyError):
        return False


def _serve_socket(arguments) -> int:
    from ase.calculators.socketio import SocketClient

    from atomtune.models.registry import load_potential
    from atomtune.runtime import configure_threads

    try:
        configure_threads(arguments.threads)
        (atoms,) = decode_structures(jsonio.decode(Path(arguments.structure).read_text()))
        potential = load_potential(arguments.model, dtype=arguments.dtype, trust=arguments.trust_model)
        potential.check_elements([atoms])
        atoms.calc = potential.calculator()
        _hold_for_test()
        client = SocketClient(unixsocket=arguments.unixsocket)
    except Exception as error:  # noqa: BLE001 — any failure is reported to the main process through the error file
        Path(arguments.error_file).write_text(json.dumps(_error_record(error)))
        traceback.print_exc()
        return 1
    try:
        _answer_positions(client.protocol, atoms, potential, stress=not arguments.no_stress)
    except SocketClosed:
        pass  # the main process closed the calculator
    except Exception as error:  # noqa: BLE001 — as above, during the calculations
        Path(arguments.error_file).write_text(json.dumps(_error_record(error)))
        traceback.print_exc()
        return 1
    return 0


def _answer_positions(protocol, atoms, potential, stress: bool) -> None:
    """The i-PI client loop (as ASE's ``SocketClient.irun``), plus INIT carrying a new system as JSON (numbers, pbc):
    the model stays loaded while a task walks through structures of different species and sizes."""
    from ase.calculators.socketio import SocketClosed

    state = "READY"
    while True:
        try:
            message = protocol.recvmsg()
        except SocketClosed:
            return
        if message == "EXIT":
            return
        if message == "STATUS":
            protocol.sendmsg(state)
        elif message == "INIT":
            _, payload = protocol.recvinit()
            system = json.loads(bytes(np.asarray(payload, dtype=np.uint8)).decode())
            atoms = Atoms(numbers=system["numbers"], pbc=system["pbc"])
            potential.check_elements([atoms])
            atoms.calc = potential.calculator()
        elif message == "POSDATA":
            cell, _, positions = protocol.recvposdata()
            atoms.cell[:] = cell
            atoms.positions[:] = positions
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            # i-PI's virial: −V σ (ASE's stress sign); zero when stress is not wanted or the cell is not periodic
            virial = -atoms.get_volume() * atoms.get_stress(voigt=False) if stress and atoms.pbc.all() else np.zeros((3, 3))
            state = "HAVEDATA"
        elif message == "GETFORCE":
            protocol.sendforce(energy, forces, virial)
            state = "READY"
        else:
            raise AtomtuneError(f"unexpected i-PI message {message!r} from the main process")


def _hold_for_test() -> None:
    """The :data:`HOLD_VARIABLE` hook: nothing unless a test set it (and only the first worker to get there holds)."""
    hold = os.environ.get(HOLD_VARIABLE)
    if not hold or Path(hold).exists():
        return
    partial = Path(f"{hold}.{os.getpid()}")
    partial.write_text(str(os.getpid()))
    os.replace(partial, hold)
    import time

    time.sleep(600)


def _serve_unit(request_path: str, response_path: str) -> int:
    try:
        request = jsonio.decode(Path(request_path).read_text())
        _hold_for_test()
        result = UNITS[request["unit"]](**request["arguments"])
        answer = {"result": result}
    except Exception as error:  # noqa: BLE001 — every failure of a unit goes back to the caller as its answer
        traceback.print_exc()
        answer = {"error": _error_record(error)}
    _write_json(Path(response_path), answer)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atomtune.envs.worker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    unit = commands.add_parser("unit", help="run one unit of work from a JSON request file")
    unit.add_argument("request")
    unit.add_argument("response")
    socket_parser = commands.add_parser("socket", help="serve a model as an i-PI client on a Unix socket")
    socket_parser.add_argument("--model", required=True)
    socket_parser.add_argument("--structure", required=True)
    socket_parser.add_argument("--unixsocket", required=True)
    socket_parser.add_argument("--dtype", default="float32")
    socket_parser.add_argument("--threads", type=int, default=1)
    socket_parser.add_argument("--error-file", required=True)
    socket_parser.add_argument("--trust-model", action="store_true", help="the user trusts the model file (pickles)")
    socket_parser.add_argument("--no-stress", action="store_true", help="send a zero virial instead of computing stress")
    arguments = parser.parse_args(argv)
    if arguments.command == "unit":
        return _serve_unit(arguments.request, arguments.response)
    return _serve_socket(arguments)


if __name__ == "__main__":
    sys.exit(main())
