"""``atomtune label``: run the reference calculator (GPAW PBE, EMT, or any ASE calculator) over a structure file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atomtune.exceptions import AtomtuneError


def register(app: typer.Typer) -> None:
    @app.command("label")
    def label_command(
        data: Path = typer.Option(..., "--data", help="structures to label (extxyz or ASE db; labels not needed)"),
        out: Path = typer.Option(..., "--out", help="labelled output (extxyz or .db), labels under REF_energy/…"),
        calculator: str = typer.Option(
            "gpaw", "--calculator", help="gpaw (plane-wave PBE), emt (ASE EMT, for tests) or module:Class"
        ),
        kwargs: str = typer.Option(
            "{}", "--kwargs",
            help='JSON settings, e.g. \'{"cutoff": 450, "kpoint_density": 2.5, "smearing": 0.1}\' for gpaw '
            "(cutoff eV, k-points per Å⁻¹, Fermi–Dirac width eV) or the calculator's own keyword arguments",
        ),
        cache: Path = typer.Option(
            None, "--cache", help="folder with one JSON per finished structure (default: OUT's name + .cache)"
        ),
        workers: int = typer.Option(1, "--workers", help="local Dask worker processes, one thread each"),
        scheduler: str = typer.Option(None, "--scheduler", help="address of a running Dask scheduler, tcp://host:8786"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="recompute structures that failed before"),
    ) -> None:
        """Label structures with a reference calculator; cached per structure, so a rerun resumes.

        Example: atomtune label --calculator gpaw --kwargs '{"cutoff": 450}' --data structures.extxyz --out labelled.extxyz --cache cache/ --workers 2

        GPAW runs plane-wave PBE, spin-polarised when magnetic elements (Fe, Co, Ni, …) are present, with at least 700 eV for oxides. A structure that fails (SCF not converged, no PAW setup, rejected by the calculator) is recorded in OUT.failures.json and the others continue. Set OMP_NUM_THREADS=1.
        """
        from atomtune.data.dataset import Dataset
        from atomtune.data.label import CalculatorSpec, label, summarise_failures

        spec = CalculatorSpec.from_json(calculator, kwargs)
        structures = Dataset.read(data, require=())
        cache = cache or out.with_name(out.name + ".cache")
        labelled, failures = label(
            list(structures), spec, cache, workers=workers, scheduler=scheduler, retry_failed=retry_failed
        )
        if labelled:
            labelled.write(out)
            typer.echo(f"wrote {len(labelled)} labelled structures to {out} (cache {cache})")
        failure_path = out.with_name(out.stem + ".failures.json")
        if failures:
            failure_path.write_text(json.dumps([vars(f) for f in failures], indent=1))
            typer.echo(summarise_failures(failures, len(structures)).splitlines()[0] + f" Details: {failure_path}")
        if not labelled:
            raise AtomtuneError(f"none of the {len(structures)} structures in {data} was labelled; see {failure_path}.")
