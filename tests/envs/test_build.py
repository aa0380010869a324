"""Family environments (atomtune.envs.build / specs): keyed by the pinned spec, a family used before its environment
exists names the command that builds it, a failed build names the package, the pin and the log, bad family names get a
did-you-mean."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from atomtune.envs import build
from atomtune.envs.specs import SPECS, Pin
from atomtune.envs.worker import run_unit


@pytest.fixture
def empty_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMTUNE_ENV_DIR", str(tmp_path / "envs"))
    return tmp_path / "envs"


def test_every_pin_says_why():
    for spec in SPECS.values():
        assert spec.pins and spec.imports
        for pin in spec.pins:
            assert len(pin.reason) > 10, (spec.family, pin.requirement)


def test_fingerprint_follows_the_requirements_not_the_reasons():
    spec = SPECS["nequip"]
    reworded = dataclasses.replace(spec, pins=tuple(dataclasses.replace(p, reason="other words") for p in spec.pins))
    assert reworded.fingerprint() == spec.fingerprint()
    repinned = dataclasses.replace(spec, pins=spec.pins[:-1] + (Pin("nequip-allegro==0.8.2", "older"),))
    assert repinned.fingerprint() != spec.fingerprint()
    assert len({s.directory_name for s in SPECS.values()}) == len(SPECS)


def test_family_used_before_its_environment_exists_names_the_build_command(empty_env_dir):
    with pytest.raises(build.EnvironmentNotBuiltError, match="atomtune env build nequip"):
        run_unit("predict", family="nequip", model="nequip:model.nequip.zip", structures=[])
    status = {row.family: row for row in build.list_environments()}
    assert set(status) == set(SPECS) and not any(row.ready for row in status.values())


def test_unknown_family_suggests_the_close_one(empty_env_dir):
    with pytest.raises(build.UnknownFamilyError, match="Did you mean nequip"):
        build.build_environment("nequp")


def test_failed_build_names_package_pin_and_log_then_rebuilds_clean(empty_env_dir, monkeypatch):
    # A real venv and a real pip run; torch is swapped for pip itself (already in every venv) to keep this test fast.
    monkeypatch.setattr(build, "TORCH_REQUIREMENT", "pip")
    broken = dataclasses.replace(
        SPECS["nequip"],
        pins=(Pin("atomtune-no-such-package==0.0.1", "a pin that cannot be satisfied"),),
        imports=("json",),
    )
    monkeypatch.setitem(build.SPECS, "nequip", broken)
    with pytest.raises(build.EnvironmentBuildError) as failure:
        build.build_environment("nequip", echo=lambda line: None)
    error = failure.value
    assert error.package == "atomtune-no-such-package"
    assert error.requirement == "atomtune-no-such-package==0.0.1"
    assert error.log_path.is_file() and str(error.log_path) in str(error)
    assert "atomtune-no-such-package" in error.log_path.read_text()
    assert not build.is_ready("nequip")  # no marker: never used half-built
    assert build.remove_environment("nequip") and not list(empty_env_dir.glob("nequip-*"))


def test_pins_that_fail_together_are_retried_one_by_one_to_name_the_failing_one(empty_env_dir, monkeypatch):
    # Two pins in one pip call (the build installs a family's pins in one resolve): the error still names the bad one.
    monkeypatch.setattr(build, "TORCH_REQUIREMENT", "pip")
    broken = dataclasses.replace(
        SPECS["nequip"],
        pins=(Pin("pip", "already in every venv: installs"), Pin("atomtune-no-such-package==0.0.2", "cannot install")),
        imports=("json",),
    )
    monkeypatch.setitem(build.SPECS, "nequip", broken)
    assert [step[1] for step in build.build_steps(broken, build.atomtune_source())][1] == [
        "pip", "atomtune-no-such-package==0.0.2"
    ]
    with pytest.raises(build.EnvironmentBuildError) as failure:
        build.build_environment("nequip", echo=lambda line: None)
    assert failure.value.package == "atomtune-no-such-package"
    assert failure.value.requirement == "atomtune-no-such-package==0.0.2"
    assert "one by one" in failure.value.log_path.read_text()


def test_packages_the_main_environment_holds_at_the_same_version_are_hard_linked(tmp_path):
    """What pip would install (its own dry-run resolve) and the main environment already has at that version comes from
    there as hard links (the same files); the rest is left to pip."""
    import os
    import subprocess
    import sys
    from importlib import metadata

    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site_packages = tmp_path / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    tqdm_version = metadata.version("tqdm")
    with open(tmp_path / "build.log", "w") as log:
        linked = build.link_from_main(python, ["--no-deps", f"tqdm=={tqdm_version}"], site_packages, log, None)
    assert linked == [f"tqdm=={tqdm_version}"]
    main_file = Path(metadata.distribution("tqdm").locate_file("tqdm/__init__.py"))
    assert os.path.samefile(main_file, site_packages / "tqdm" / "__init__.py")  # the same file, not a copy
    installed = {d.metadata["Name"]: d.version for d in metadata.distributions(path=[str(site_packages)])}
    assert installed["tqdm"] == tqdm_version
    # the venv's own older setuptools: an upgrade to the main environment's version is left to pip (never two mixed)
    setuptools = metadata.version("setuptools")
    assert installed["setuptools"] != setuptools
    with open(tmp_path / "build.log", "a") as log:
        assert build.link_from_main(python, ["--no-deps", f"setuptools=={setuptools}"], site_packages, log, None) == []
