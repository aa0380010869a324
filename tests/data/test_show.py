"""Views: statistics behind the plots, PNGs + summary.md, periodic-table layout, UMAP (slow: numba compiles on first
use) and the `atomtune data show` command."""

import numpy as np
import pytest
from typer.testing import CliRunner

from atomtune.data.dataset import Dataset
from atomtune.data.show import example_indices, periodic_table_position, show, statistics, umap_embedding

PNGS = {"elements.png", "periodic_table.png", "distributions.png", "examples.png"}


def test_statistics(emt_dataset):
    stats = statistics(emt_dataset)
    assert stats.n_structures == 12 and stats.n_atoms == emt_dataset.n_atoms
    assert list(stats.structures_per_element) == ["Al", "Ni", "Cu"]  # atomic-number order
    assert sum(stats.atoms_per_element.values()) == emt_dataset.n_atoms
    assert len(stats.force_magnitudes) == emt_dataset.n_atoms and stats.with_stress == 12
    assert stats.sources == {"emt": 12}


def test_periodic_table_layout():
    from pymatgen.core import Element

    for element in Element:
        if element.Z <= 103 and not (57 <= element.Z <= 71 or 89 <= element.Z <= 103):
            assert periodic_table_position(element.symbol) == (element.group, element.row)
    assert periodic_table_position("La") == (3, 8.5) and periodic_table_position("Lr") == (17, 9.5)


def test_show_writes_pngs_and_summary(tmp_path, emt_dataset):
    summary = show(emt_dataset, tmp_path / "views")
    assert PNGS <= {p.name for p in (tmp_path / "views").iterdir()}
    text = summary.read_text()
    assert "12 structures" in text and "| Cu |" in text and "![periodic table](periodic_table.png)" in text
    assert example_indices(12, 4) == [0, 3, 7, 11] and example_indices(2, 4) == [0, 1]


def test_umap_is_skipped_below_four_structures(tmp_path, emt_dataset):
    structures = list(emt_dataset)[:3]
    summary = show(structures, tmp_path, features=np.random.default_rng(0).normal(size=(3, 4)))
    assert "UMAP skipped" in summary.read_text() and not (tmp_path / "umap.png").exists()
    assert umap_embedding(np.zeros((2, 3))) is None


@pytest.mark.slow
def test_umap_map_with_selection(tmp_path, toy_potential, emt_dataset):
    from atomtune.data.select import structure_features

    structures = list(emt_dataset)[:8]
    features = structure_features(toy_potential, structures)
    points = umap_embedding(features)
    assert points.shape == (8, 2) and np.all(np.isfinite(points))
    summary = show(structures, tmp_path, features=features, selected_ids=["emt-0", "emt-5", "missing"])
    assert (tmp_path / "umap.png").exists() and "2 of 3 selected ids found" in summary.read_text()


def test_show_command(tmp_path, emt_dataset):
    from atomtune.cli import app

    data = emt_dataset.write(tmp_path / "emt.extxyz")
    result = CliRunner().invoke(
        app, ["data", "show", "--data", str(data), "--out", str(tmp_path / "v"), "--examples", "2"]
    )
    assert result.exit_code == 0, result.output
    assert PNGS <= {p.name for p in (tmp_path / "v").iterdir()} and (tmp_path / "v" / "summary.md").exists()


def test_convert_command(tmp_path):
    from source_fixtures import write_mptrj_json

    from atomtune.cli import app

    source = write_mptrj_json(tmp_path / "mptrj.json")
    result = CliRunner().invoke(app, ["data", "convert", "--source", str(source), "--out", str(tmp_path / "m.extxyz")])
    assert result.exit_code == 0, result.output
    assert "skipped 1 (missing forces)" in result.output
    assert Dataset.read(tmp_path / "m.extxyz").ids() == ["mp-1-0-0", "mp-1-0-1", "mp-2-0-0"]
