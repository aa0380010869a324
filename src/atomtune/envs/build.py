"""Build, list and remove the per-family virtual environments described by :mod:`atomtune.envs.specs`.

Environments live under ``$ATOMTUNE_ENV_DIR`` (default ``~/.cache/atomtune/envs``), one directory per family and spec
fingerprint (``nequip-3f2a…``): a changed pin builds a new environment beside the old one, an unchanged spec is reused
(CI keeps the directory between runs on one machine). A directory is *ready* only once the build has written its
``atomtune-env.json`` marker at the very end, so an interrupted build is detected and redone, never half-used.

Build order inside the new venv (``python3.11 -m venv``): ``torch==2.13.0`` first, the family's pins in one pip call
per kind (``--no-deps`` ones, then the rest: one resolve instead of one pip start-up and index look-up per pin),
atomtune's core (``--no-deps -e`` of this checkout plus its light dependencies), then an import check. Before each pip
call, the packages it would install that the main environment holds at the same version are hard-linked from there
(:func:`link_from_main`: the same torch build and most of numpy / scipy / pymatgen …, neither downloaded, unpacked nor
compiled again, nor stored twice). When a pip call of several pins fails, the pins are installed again one by one so that
the error names the one that fails. The pip output of every step, with its duration, goes to ``build.log`` in the
environment directory.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from atomtune.envs.specs import SPECS, TORCH_REQUIREMENT, EnvironmentSpec, Pin
from atomtune.exceptions import AtomtuneError

MARKER_FILE = "atomtune-env.json"
LOG_FILE = "build.log"


class FamilyEnvironmentError(AtomtuneError):
    """Base of the errors about family environments."""


class UnknownFamilyError(FamilyEnvironmentError):
    """A family name with no environment spec."""


class EnvironmentNotBuiltError(FamilyEnvironmentError):
    """A family was used before its environment was built; the message gives the command that builds it."""


class EnvironmentBuildError(FamilyEnvironmentError):
    """A build step failed; the message names the package, its pin and the log file."""

    def __init__(self, message: str, package: str = "", requirement: str = "", log_path: Path | None = None):
        super().__init__(message)
        self.package = package
        self.requirement = requirement
        self.log_path = log_path


@dataclass
class EnvironmentStatus:
    """One row of ``atomtune env list``."""

    family: str
    fingerprint: str
    path: str
    ready: bool
    size_mb: float | None = None
    build_seconds: float | None = None
    unbuildable_reason: str = ""
    stale_directories: int = 0  # directories of older specs of the same family (``atomtune env remove`` clears them)

    def to_dict(self) -> dict:
        return asdict(self)


def environment_root() -> Path:
    """Where environments live: ``$ATOMTUNE_ENV_DIR`` or ``~/.cache/atomtune/envs``."""
    configured = os.environ.get("ATOMTUNE_ENV_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "atomtune" / "envs"


def family_spec(family: str) -> EnvironmentSpec:
    """The spec of ``family``; an unknown name raises with a did-you-mean."""
    try:
        return SPECS[family]
    except KeyError:
        close = difflib.get_close_matches(family, list(SPECS), n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnknownFamilyError(
            f"no environment spec for family {family!r}.{hint} Families with their own environment: "
            f"{', '.join(SPECS)} (CHGNet, SevenNet and MACE run in atomtune's main environment)."
        ) from None


def environment_path(family: str) -> Path:
    """Directory of ``family``'s environment for its current spec (whether built or not)."""
    return environment_root() / family_spec(family).directory_name


def environment_python(family: str) -> Path:
    """The Python interpreter of ``family``'s ready environment, or an error with the command that builds it."""
    spec = family_spec(family)
    path = environment_path(family)
    if spec.unbuildable_reason:
        raise EnvironmentNotBuiltError(f"the {family} environment cannot be built here: {spec.unbuildable_reason}")
    if not (path / MARKER_FILE).exists():
        raise EnvironmentNotBuiltError(
            f"the {family} environment is not built (expected in {path}). Build it once with "
            f"`atomtune env build {family}` ({spec.description})."
        )
    return path / "bin" / "python"


def is_ready(family: str) -> bool:
    return (environment_path(family) / MARKER_FILE).exists()


def atomtune_source() -> Path:
    """The atomtune checkout installed into each environment with ``pip install --no-deps -e``."""
    import atomtune

    root = Path(atomtune.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").exists():
        raise EnvironmentBuildError(
            f"atomtune is not installed from a source checkout ({root} has no pyproject.toml); family environments "
            f"install atomtune's core from its checkout: clone the repository and `pip install -e` it."
        )
    return root


def _directory_size_mb(path: Path, unshared: bool = False) -> float:
    """Apparent size of the files under ``path``; with ``unshared``, only of those not hard-linked elsewhere (the disk
    the environment takes beyond what it shares with the main environment)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                status = os.lstat(os.path.join(root, name))
                if not unshared or status.st_nlink == 1:
                    total += status.st_size
    return total / 1e6


@contextlib.contextmanager
def _build_lock(family: str):
    """One build of a family at a time on this machine (CI and a test may race for the same directory)."""
    root = environment_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{family}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _base_python(spec: EnvironmentSpec) -> str:
    candidates = [f"python{spec.python}"]
    if sys.version_info[:2] == tuple(int(part) for part in spec.python.split(".")):
        candidates.insert(0, sys.executable)
    for candidate in candidates:
        found = shutil.which(candidate) if os.sep not in candidate else candidate
        if found:
            return found
    raise EnvironmentBuildError(
        f"the {spec.family} environment needs Python {spec.python}, which is not on this machine "
        f"(no `python{spec.python}` on PATH)."
    )


def build_steps(spec: EnvironmentSpec, source: Path) -> list[tuple[str, list[str], tuple[Pin, ...]]]:
    """The pip invocations of a build: (label, arguments after ``python -m pip install``, the pins it installs).

    The family's pins go in two calls, the ``--no-deps`` ones first (as the specs list them: a package installed without
    its declared dependencies, then the dependencies it does need), then all the others in one resolve."""
    steps: list[tuple[str, list[str], tuple[Pin, ...]]] = [
        ("torch (same build as the main environment)", [TORCH_REQUIREMENT], (Pin(TORCH_REQUIREMENT, "first, always"),))
    ]
    for no_deps in (True, False):
        pins = tuple(pin for pin in spec.pins if pin.no_deps == no_deps)
        if pins:
            arguments = (["--no-deps"] if no_deps else []) + [pin.requirement for pin in pins]
            steps.append((", ".join(pin.package for pin in pins), arguments, pins))
    steps.append(("atomtune core", ["--no-deps", "-e", str(source)], ()))
    steps.append(("atomtune core dependencies", [pin.requirement for pin in spec.core], ()))
    return steps


def link_from_main(python: Path, arguments: list[str], site_packages: Path, log, environment) -> list[str]:
    """Hard-link into the new environment every package that ``pip install arguments`` would install and that the main
    environment already holds at the very same version (it runs the same Python): every file its pip RECORD lists inside
    site-packages, compiled bytecode included. The same files, not copies: nothing downloaded, unpacked or compiled
    again, nothing stored twice (the mattersim environment shares all but six of its ~75 packages with the main one,
    torch among them); the ``pip install`` that follows finds them satisfied and installs the rest. What pip would
    install comes from its own resolver (``--dry-run --report``), so the environment ends up with exactly the versions a
    plain install gives. Console scripts (outside site-packages, naming the main interpreter) are not linked; editable
    installs never are. Returns ``name==version`` of what was linked; where linking fails (e.g. another file system)
    nothing is left behind and pip installs everything, as without this."""
    from importlib import metadata

    report_path = site_packages.parent / "atomtune-pip-report.json"
    command = [str(python), "-m", "pip", "install", "--progress-bar", "off", "--dry-run", "--quiet", "--report",
               str(report_path), *arguments]
    started = time.perf_counter()
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, check=False)
    log.write(f"# pip's dry run (what it would install): {time.perf_counter() - started:.1f} s\n")
    started = time.perf_counter()
    if result.returncode != 0 or not report_path.exists():
        return []  # the real install reports the failure
    planned = json.loads(report_path.read_text()).get("install", [])
    report_path.unlink()
    # packages the venv already holds in another version (pip, setuptools) are left to pip: two must not mix
    present = {_normalised(d.metadata["Name"]) for d in metadata.distributions(path=[str(site_packages)])}
    linked_files: list[Path] = []
    linked: list[str] = []
    try:
        for item in planned:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            if _normalised(name) in present:
                continue
            try:
                distribution = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            editable = json.loads(distribution.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable")
            if distribution.version != version or editable or not distribution.files:
                continue
            source_root = Path(distribution.locate_file("")).resolve()
            # the .dist-info last, so that pip never sees a package installed whose files are not all there
            files = sorted((f for f in distribution.files if not str(f).startswith("..")),
                           key=lambda f: ".dist-info" in str(f))
            for relative in files:
                source, target = source_root / relative, site_packages / relative
                if not source.is_file() or target.exists():
                    continue  # a RECORD entry without its file (bytecode never written), or shared by two packages
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(source, target)
                linked_files.append(target)
            linked.append(f"{name}=={version}")
    except OSError as error:
        for target in linked_files:
            target.unlink(missing_ok=True)
        log.write(f"\n# not hard-linked from the main environment ({error}); pip installs everything\n")
        return []
    if linked:
        log.write(f"# hard-linked from the main environment in {time.perf_counter() - started:.1f} s "
                  f"({len(linked_files)} files): {' '.join(linked)}\n")
    log.flush()
    return linked


def _normalised(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def build_environment(family: str, force: bool = False, echo=print) -> EnvironmentStatus:
    """Build ``family``'s environment if its current spec is not built yet (``force`` rebuilds). Idempotent.

    ``echo`` receives one line per step. Raises :class:`EnvironmentBuildError` naming the failing package, its pin and
    the log file.
    """
    spec = family_spec(family)
    if spec.unbuildable_reason:
        raise EnvironmentBuildError(f"the {family} environment cannot be built here: {spec.unbuildable_reason}")
    path = environment_path(family)
    with _build_lock(family):
        if (path / MARKER_FILE).exists() and not force:
            echo(f"[env] {family}: ready in {path}")
            return environment_status(family)
        if path.exists():
            shutil.rmtree(path)  # an interrupted or forced build: start clean
        source = atomtune_source()
        started = time.perf_counter()
        base = _base_python(spec)
        path.mkdir(parents=True)
        log_path = path / LOG_FILE
        python = path / "bin" / "python"
        with open(log_path, "w") as log:
            _run_logged([base, "-m", "venv", str(path)], log, log_path, f"creating the venv with {base}", "", "")
            environment = dict(os.environ)
            environment.pop("PYTHONPATH", None)
            environment.pop("VIRTUAL_ENV", None)
            site_packages = path / "lib" / f"python{spec.python}" / "site-packages"
            same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == spec.python
            linked: list[str] = []
            for label, arguments, pins in build_steps(spec, source):
                echo(f"[env] {family}: installing {label}")
                if same_python and "-e" not in arguments:
                    linked += link_from_main(python, arguments, site_packages, log, environment)
                _install(python, arguments, pins, log, log_path, label, environment)
            echo(f"[env] {family}: checking imports {', '.join(spec.imports)}")
            check = "import importlib, sys\nfor name in sys.argv[1:]: importlib.import_module(name)\nimport atomtune.envs"
            _run_logged(
                [str(python), "-c", check, *spec.imports], log, log_path,
                f"at the import check of {', '.join(spec.imports)} (a module the pins do not install?)", "", "",
                environment,
            )
            freeze = subprocess.run(
                [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, env=environment, check=False
            ).stdout.split()
        seconds = time.perf_counter() - started
        marker = {
            "spec": spec.to_dict(),
            "fingerprint": spec.fingerprint(),
            "build_seconds": round(seconds, 1),
            "size_mb": round(_directory_size_mb(path), 1),
            "size_mb_not_shared": round(_directory_size_mb(path, unshared=True), 1),
            "installed": freeze,
            "hard_linked_from_main_environment": linked,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        (path / (MARKER_FILE + ".tmp")).write_text(json.dumps(marker, indent=2))
        os.replace(path / (MARKER_FILE + ".tmp"), path / MARKER_FILE)
        echo(f"[env] {family}: built in {seconds:.0f} s, {marker['size_mb']:.0f} MB, {path}")
    return environment_status(family)


def _install(python: Path, arguments: list[str], pins: tuple[Pin, ...], log, log_path: Path, label: str,
             environment) -> None:
    """``pip install arguments``; when several pins fail together, install them one by one so that the error names the
    pin that fails (if each installs alone, the error names them all: they conflict with each other)."""
    command = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
    package = ", ".join(pin.package for pin in pins) if pins else label
    requirement = " ".join(pin.requirement for pin in pins) if pins else " ".join(arguments)
    if len(pins) < 2:
        _run_logged([*command, *arguments], log, log_path, label, package, requirement, environment)
        return
    try:
        _run_logged([*command, *arguments], log, log_path, label, package, requirement, environment)
        return
    except EnvironmentBuildError:
        log.write("\n# the pins of this step failed together: installing them one by one to find the one that fails\n")
    for pin in pins:
        single = (["--no-deps"] if pin.no_deps else []) + [pin.requirement]
        _run_logged([*command, *single], log, log_path, pin.package, pin.package, pin.requirement, environment)
    raise EnvironmentBuildError(
        f"environment build failed installing {package} together ({requirement}); each installs alone, so these pins "
        f"conflict with each other. Full log: {log_path}.",
        package=package, requirement=requirement, log_path=log_path,
    )


def _run_logged(command, log, log_path: Path, label: str, package: str, requirement: str, environment=None) -> None:
    """Run ``command`` with its output (and duration) appended to the build log; a failure raises
    :class:`EnvironmentBuildError` naming ``package`` and ``requirement``."""
    log.write(f"\n$ {' '.join(command)}\n")
    log.flush()
    started = time.perf_counter()
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, check=False)
    log.write(f"# {time.perf_counter() - started:.1f} s, exit code {result.returncode}\n")
    log.flush()
    if result.returncode != 0:
        log.flush()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        what = f"installing {package} ({requirement})" if package else label
        raise EnvironmentBuildError(
            f"environment build failed {what}: exit code {result.returncode}. Full log: {log_path}. Last lines:\n  "
            + "\n  ".join(tail),
            package=package,
            requirement=requirement,
            log_path=log_path,
        )


def environment_status(family: str) -> EnvironmentStatus:
    spec = family_spec(family)
    path = environment_path(family)
    marker_file = path / MARKER_FILE
    marker = json.loads(marker_file.read_text()) if marker_file.exists() else {}
    root = environment_root()
    stale = [p for p in root.glob(f"{family}-*") if p.is_dir() and p.name != path.name] if root.exists() else []
    return EnvironmentStatus(
        family=family,
        fingerprint=spec.fingerprint(),
        path=str(path),
        ready=bool(marker),
        size_mb=marker.get("size_mb"),
        build_seconds=marker.get("build_seconds"),
        unbuildable_reason=spec.unbuildable_reason,
        stale_directories=len(stale),
    )


def list_environments() -> list[EnvironmentStatus]:
    """Status of every family's environment (built or not)."""
    return [environment_status(family) for family in SPECS]


def remove_environment(family: str) -> list[Path]:
    """Delete every environment directory of ``family`` (current and older specs); returns what was removed."""
    family_spec(family)
    root = environment_root()
    removed = []
    if root.exists():
        with _build_lock(family):
            for path in sorted(root.glob(f"{family}-*")):
                if path.is_dir():
                    shutil.rmtree(path)
                    removed.append(path)
    return removed
