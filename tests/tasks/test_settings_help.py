"""`bench --help` material: every task's settings with the defaults its Settings dataclass really has, and descriptions
taken from the Settings docstring (issue 16: a user had to read the source)."""

import json
from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from atomtune.tasks import TASKS, _field_descriptions, json_ready, load_task, settings_fields, settings_help, settings_overview


@pytest.mark.parametrize("name", list(TASKS))
def test_fields_and_defaults_are_the_dataclass_and_paste_back_into_settings(name):
    module = load_task(name)
    entries = settings_fields(name)
    assert [entry["name"] for entry in entries] == [item.name for item in fields(module.Settings)]
    # the printed defaults are JSON that --settings accepts and that rebuild the same Settings
    printed = {entry["name"]: json.loads(json.dumps(json_ready(entry["default"]))) for entry in entries}
    try:
        rebuilt = module.Settings(**printed)
    except Exception as error:  # a Settings whose defaults alone are not valid input (a required setting)
        pytest.skip(f"{name}: default Settings() is not runnable: {error}")
    assert json_ready(vars(rebuilt)) == json_ready(vars(module.Settings()))
    described = [entry for entry in entries if entry["description"]]
    assert len(described) >= 0.8 * len(entries), [e["name"] for e in entries if not e["description"]]


def test_help_of_one_task_shows_default_type_and_description():
    text = settings_help("elastic")
    assert "fmax = 0.0005  (float)" in text and "max_steps = 500  (int)" in text
    assert "strains = [0.005, 0.01]" in text and "engineering" in text
    relax = {entry["name"]: entry["description"] for entry in settings_fields("relax")}
    assert relax["ltol"] == relax["angle_tol"] and "StructureMatcher" in relax["ltol"]  # defined together
    scan = {entry["name"]: entry["description"] for entry in settings_fields("composition_scan")}
    assert scan["fmax"].startswith("(eV/Å)") and "relax task" in scan["fmax"] and "relax task" in scan["batch_size"]


def test_docstring_grammar():
    doc = """What the settings are for.

    ``alpha``: the first one (1: one). ``beta``, ``gamma``: share this text.
    ``delta`` (Å), ``epsilon``: shared with a unit of its own. ``zeta``; ``eta`` / ``theta``: Monte Carlo
    sweeps, with ``iota`` inside (``iota`` is never defined itself).
    """
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    found = _field_descriptions(doc, names)
    assert found["alpha"] == "the first one (1: one)."
    assert found["beta"] == found["gamma"] == "share this text."
    assert found["delta"] == "(Å) shared with a unit of its own." and found["epsilon"] == "shared with a unit of its own."
    assert found["zeta"] == ""
    assert found["eta"] == found["theta"] and found["theta"].startswith("Monte Carlo sweeps")
    assert found["iota"] == "see theta" and "kappa" not in found


def test_overview_renders_in_typer_help_with_every_task_and_default():
    app = typer.Typer()

    @app.command("bench", epilog=settings_overview())
    def bench(task: str = typer.Option(..., "--task")):
        """Run a task."""

    @app.command("other")
    def other():
        """Another command, so that `bench` is a subcommand as in atomtune."""

    output = CliRunner().invoke(app, ["bench", "--help"], terminal_width=400).output
    flat = " ".join(output.replace("│", " ").split())
    for name in TASKS:
        assert f"{name}:" in flat
        for entry in settings_fields(name):
            value = json.dumps(json_ready(entry["default"]), ensure_ascii=False)
            assert f"{entry['name']}={value}" in flat, (name, entry["name"])
