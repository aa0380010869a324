"""Curation: each named filter on hand-made compositions, the HEO preset, counts per filter on a LeMat-Bulk stream
(offline parquet and a monkeypatched Hub stream), and the `atomtune data curate` command."""

import json
import math
from collections import Counter

import numpy as np
import pytest
from source_fixtures import HEO_CATIONS, lematerial_rows, rocksalt_oxide, write_lematerial_parquet
from typer.testing import CliRunner

from atomtune.data.curate import (
    METALS,
    NOBLE_METALS,
    CationEntropy,
    Curation,
    ElementCount,
    EquimolarCations,
    Functional,
    HasForces,
    MaxForce,
    MetalsBesides,
    OnlyElements,
    build_filters,
    cation_entropy,
    curate,
    heo_filters,
)
from atomtune.data.dataset import Dataset, attach_labels, labels_of
from atomtune.exceptions import AtomtuneError

#: What the HEO preset with every option on does to the fixture rows (ids say what each row is).
HEO_KEPT = ["heo-equimolar", "heo-equimolar-2", "heo-no-stress"]


def test_metals_are_pymatgens():
    from pymatgen.core import Element

    assert METALS == {e.symbol for e in Element if e.Z <= 103 and e.is_metal}
    assert not {"B", "Si", "Ge", "As", "Sb", "Te", "O", "C"} & METALS


def test_cation_entropy_and_equimolarity():
    assert cation_entropy(Counter(dict.fromkeys(HEO_CATIONS, 1) | {"O": 5})) == pytest.approx(math.log(5))
    mg_rich = Counter({"Mg": 3, "Co": 1, "Ni": 1, "Cu": 1, "Zn": 1, "O": 7})
    assert cation_entropy(mg_rich) == pytest.approx(-(3 / 7) * math.log(3 / 7) - 4 / 7 * math.log(1 / 7))
    assert not CationEntropy(1.5).keep_counts(mg_rich)  # 1.475 R: just below the high-entropy threshold
    assert EquimolarCations(0.05).keep_counts(Counter({"Mg": 2, "Co": 2, "Ni": 2, "Cu": 2, "Zn": 2, "O": 10}))
    assert not EquimolarCations(0.05).keep_counts(mg_rich)
    assert EquimolarCations(0.25).keep_counts(mg_rich)  # 3/7 − 1/5 = 0.23


def test_heo_definition():
    filters = heo_filters()
    assert [f.name for f in filters] == ["contains O", "≥ 5 elements", "non-O elements are metals", "has forces"]

    def passes(symbols, forces=True):
        atoms = rocksalt_oxide(symbols)
        attach_labels(atoms, 0.0, np.zeros((len(atoms), 3)) if forces else None)
        return all(f.keep(atoms) for f in filters)

    assert passes(HEO_CATIONS)
    assert passes(("Mg", "Co", "Ni", "Cu"))  # 4 cations + O is 5 elements: the definition counts elements
    assert not passes(("Mg", "Co", "Ni"))
    assert not passes(("Mg", "Co", "Ni", "Cu", "Si"))  # Si is a metalloid
    assert not passes(HEO_CATIONS, forces=False)
    assert MetalsBesides(["O"]).keep_counts(Counter({"Li": 1, "La": 1, "Bi": 1, "O": 3}))


def test_each_structure_is_counted_against_the_first_filter_that_drops_it():
    structures = []
    for symbols, forces in ((HEO_CATIONS, 0.1), (("Mg", "Co"), 0.1), (HEO_CATIONS, 50.0), (HEO_CATIONS, None)):
        atoms = rocksalt_oxide(symbols)
        attach_labels(atoms, -1.0, None if forces is None else np.full((len(atoms), 3), forces))
        atoms.info["functional"] = "pbe"
        structures.append(atoms)
    structures[1].info["functional"] = "scan"  # also fails the functional filter, but the element count comes first
    filters = [ElementCount(minimum=5), Functional(["PBE"]), HasForces(), MaxForce(10.0)]
    data, report = Curation(filters).run(structures)
    assert len(data) == 1 and report.kept == 1
    assert [(row["filter"], row["removed"], row["remaining"]) for row in report.rows()] == [
        ("≥ 5 elements", 1, 3),
        ("functional pbe", 0, 3),
        ("has forces", 1, 2),
        ("|F| ≤ 10 eV/Å", 1, 1),
    ]


def test_build_filters_merges_repeats_and_rejects_unknown_presets():
    names = [f.name for f in build_filters(preset="heo", include=["O"], min_elements=3, only=["Mg", "O"])]
    assert names[:4] == ["only Mg-O", "contains O", "≥ 5 elements", "non-O elements are metals"]
    assert names.count("contains O") == 1
    with pytest.raises(AtomtuneError, match="unknown preset"):
        build_filters(preset="hea")
    with pytest.raises(AtomtuneError, match="no filters"):
        Curation([])
    assert OnlyElements(["Cu", "Ni"]).keep_counts(Counter({"Cu": 3}))


def test_curate_lematerial_parquet_counts_every_filter(tmp_path):
    path = write_lematerial_parquet(tmp_path / "compatible_pbe.parquet")
    filters = heo_filters(min_cation_entropy=1.5, equimolar_tolerance=0.05, exclude=NOBLE_METALS, max_force=10)
    data, report = curate(path, filters)
    assert data.ids() == HEO_KEPT
    removed = {row["filter"]: row["removed"] for row in report.rows()}
    assert removed == {
        "contains O": 1,  # alloy-cunial
        "≥ 5 elements": 0,
        "non-O elements are metals": 1,  # oxide-with-si
        "excludes Ru Rh Pd Ag Os Ir Pt Au": 1,  # heo-with-pt
        "cation entropy ≥ 1.5 R": 2,  # quaternary-oxide (ln 4), heo-mg-rich (1.475 R)
        "equimolar cations (±0.05)": 0,
        "has forces": 1,  # heo-no-forces: counted here, not as a reader skip
        "|F| ≤ 10 eV/Å": 0,
    }
    # bad input is reported by the reader, including unknown species (never mistaken for a non-metal)
    assert report.reader.skipped == {"malformed lattice": 1, "unknown species": 1, "duplicated id": 1}
    assert report.rows()[-1]["remaining"] == report.kept == 3
    assert "| has forces | 1 | 3 |" in report.to_markdown()
    np.testing.assert_allclose(labels_of(data[0]).stress[:3], [-0.00624151, -0.01248302, -0.01872453], rtol=1e-5)


def _fake_hub(monkeypatch, rows):
    import datasets

    seen = []

    def load_dataset(name, config, split, streaming):
        seen.append((name, config, split, streaming))
        return iter(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return seen


def test_curate_command_online_and_offline(tmp_path, monkeypatch):
    from atomtune.cli import app

    runner = CliRunner()
    seen = _fake_hub(monkeypatch, lematerial_rows())
    online = tmp_path / "online" / "heo.extxyz"
    result = runner.invoke(
        app,
        [
            "data",
            "curate",
            "--source",
            "lematerial",
            "--config",
            "compatible_pbe",
            "--preset",
            "heo",
            "--out",
            str(online),
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen == [("LeMaterial/LeMat-Bulk", "compatible_pbe", "train", True)]
    assert "has forces" in result.output and "kept 6 structures" in result.output

    write_lematerial_parquet(tmp_path / "a.parquet", lematerial_rows()[:6])
    write_lematerial_parquet(tmp_path / "b.parquet", lematerial_rows()[6:])
    offline = tmp_path / "offline" / "heo.extxyz"
    result = runner.invoke(
        app,
        [
            "data",
            "curate",
            "--source",
            str(tmp_path / "*.parquet"),
            "--preset",
            "heo",
            "--exclude-noble-metals",
            "--min-cation-entropy",
            "1.5",
            "--equimolar-tolerance",
            "0.05",
            "--max-force",
            "10",
            "--out",
            str(offline),
        ],
    )
    assert result.exit_code == 0, result.output
    data = Dataset.read(offline)
    assert data.ids() == HEO_KEPT
    record = json.loads(offline.with_name("heo.curation.json").read_text())
    assert record["kept"] == 3 and record["reader"]["skipped"]["malformed lattice"] == 1
    # same structures either way: the Hub rows and the parquet rows are the same data
    assert Dataset.read(online).ids()[: len(HEO_KEPT) - 1] == HEO_KEPT[:2]


def test_curate_command_nothing_kept_is_an_error(tmp_path):
    from atomtune.cli import app

    path = write_lematerial_parquet(tmp_path / "x.parquet")
    result = CliRunner().invoke(
        app, ["data", "curate", "--source", str(path), "--only", "Fe,O", "--out", str(tmp_path / "none.extxyz")]
    )
    assert isinstance(result.exception, AtomtuneError) and "no structure passed" in str(result.exception)
    assert (tmp_path / "none.curation.json").exists()
