"""Readers: each real source layout → Dataset in ASE units (every stress conversion checked by hand), bad rows skipped
with counts and first ids, a whole file in the wrong format → one DatasetError. Fixtures are built in code
(source_fixtures.py), never downloaded."""

import json

import numpy as np
import pytest
from ase.units import GPa
from source_fixtures import (
    STRESS_ASE_3X3,
    STRESS_ASE_VOIGT,
    STRESS_KBAR,
    lematerial_row,
    lematerial_rows,
    mptrj_data,
    rocksalt_oxide,
    vasp_steps,
    write_lematerial_parquet,
    write_mptrj_json,
    write_oc22_db,
    write_outcar,
    write_vasprun,
)

from atomtune.data.dataset import Dataset, labels_of
from atomtune.data.readers import ReadReport, detect_format, iter_any, read_any
from atomtune.data.readers import lematerial as lematerial_module
from atomtune.data.readers import mptrj as mptrj_module
from atomtune.data.readers.records import vasp_kbar_to_ase_stress
from atomtune.exceptions import AtomtuneError, DatasetError


def test_kbar_conversion_by_hand():
    # 10 kbar of VASP pressure (compressive) = 1 GPa = 1/160.2177 eV/Å³, negative in ASE's sign.
    ase_stress = vasp_kbar_to_ase_stress(np.eye(3) * 10.0)
    assert ase_stress[0, 0] == pytest.approx(-1.0 / 160.21766208, rel=1e-6)
    assert ase_stress[0, 0] == pytest.approx(-1.0 * GPa)
    np.testing.assert_allclose(vasp_kbar_to_ase_stress(STRESS_KBAR), STRESS_ASE_3X3, rtol=1e-6)


# -- LeMat-Bulk --------------------------------------------------------------------------------------------------------


def test_lematerial_parquet_labels_units_and_skips(tmp_path):
    path = write_lematerial_parquet(tmp_path / "train-00000.parquet")
    report = ReadReport()
    data = read_any(path, report=report)
    rows = {row["immutable_id"]: row for row in lematerial_rows()}
    assert data.ids() == [
        "heo-equimolar",
        "heo-equimolar-2",
        "heo-with-pt",
        "heo-mg-rich",
        "quaternary-oxide",
        "oxide-with-si",
        "alloy-cunial",
        "heo-no-stress",
    ]
    atoms = data[0]
    labels = labels_of(atoms)
    assert labels.energy == pytest.approx(rows["heo-equimolar"]["energy"])  # total eV, uncorrected
    np.testing.assert_allclose(labels.forces, rows["heo-equimolar"]["forces"])
    np.testing.assert_allclose(labels.stress, STRESS_ASE_VOIGT, rtol=1e-6)  # kbar, VASP sign → eV/Å³, ASE sign
    np.testing.assert_allclose(atoms.cell[:], rows["heo-equimolar"]["lattice_vectors"])
    np.testing.assert_allclose(atoms.arrays["magmoms"], 0.1)
    assert atoms.info["functional"] == "pbe" and atoms.info["energy_corrected"] == pytest.approx(labels.energy - 1)
    assert labels_of(data[-1]).stress is None  # a row without stress keeps energy and forces
    assert report.read == 12 and report.produced == 8
    assert report.skipped == {"missing forces": 1, "malformed lattice": 1, "unknown species": 1, "duplicated id": 1}
    assert report.examples["malformed lattice"] == ["bad-lattice"]
    assert report.examples["duplicated id"] == ["heo-equimolar"]


def test_lematerial_hub_stream_is_lazy_and_called_as_documented(monkeypatch):
    calls, pulled = [], []

    def fake_load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))

        def rows():
            for row in lematerial_rows():
                pulled.append(row["immutable_id"])
                yield row

        return rows()

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    report = ReadReport()
    first = list(iter_any("lematerial", config="compatible_pbesol", report=report, max_rows=3))
    assert calls == [("LeMaterial/LeMat-Bulk", "compatible_pbesol", "train", True)]
    assert len(pulled) == 3 and [a.info["id"] for a in first] == pulled  # never read past max_rows
    assert first[0].info["source"] == "LeMaterial/LeMat-Bulk/compatible_pbesol"
    np.testing.assert_allclose(labels_of(first[0]).stress, STRESS_ASE_VOIGT, rtol=1e-6)


def test_lematerial_hub_unreachable_says_how_to_work_offline(monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'LeMaterial/LeMat-Bulk' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(AtomtuneError, match=r"(?s)could not stream LeMaterial/LeMat-Bulk.*parquet.*--source"):
        read_any("lematerial")
    with pytest.raises(AtomtuneError, match="unknown LeMat-Bulk config"):
        read_any("lematerial", config="pbe")


def test_lematerial_connection_lost_mid_stream_says_how_far(monkeypatch):
    import datasets

    def dropping(*args, **kwargs):
        yield lematerial_rows()[0]
        raise ConnectionError("connection reset")

    monkeypatch.setattr(datasets, "load_dataset", dropping)
    with pytest.raises(AtomtuneError, match="after 1 rows"):
        read_any("lematerial")


def test_keep_species_rejects_rows_before_conversion(tmp_path, monkeypatch):
    path = write_lematerial_parquet(tmp_path / "part.parquet")
    converted = []
    original = lematerial_module.row_to_atoms
    monkeypatch.setattr(
        lematerial_module, "row_to_atoms", lambda row, *a: converted.append(row["immutable_id"]) or original(row, *a)
    )
    report = ReadReport()
    kept = list(iter_any(path, report=report, keep_species=lambda species: "Pt" in species))
    assert [a.info["id"] for a in kept] == ["heo-with-pt"] and converted == ["heo-with-pt"]
    assert report.read == 12


def test_overlapping_atoms_and_non_finite_labels_are_skipped(tmp_path):
    heo = rocksalt_oxide(("Mg", "Co", "Ni", "Cu", "Zn"))
    squashed = heo.positions.copy()
    squashed[1] = squashed[0] + [0.1, 0.0, 0.0]
    rows = [
        lematerial_row(heo, "fine"),
        lematerial_row(heo, "overlap", cartesian_site_positions=squashed.tolist()),
        lematerial_row(heo, "nan-energy", energy=float("nan")),
    ]
    report = ReadReport()
    data = read_any(write_lematerial_parquet(tmp_path / "x.parquet", rows), report=report)
    assert data.ids() == ["fine"]
    assert report.skipped == {"overlapping atoms": 1, "non-finite labels": 1}


def test_parquet_in_the_wrong_layout_is_one_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"formula": ["NaCl"], "energy": [1.0]}), tmp_path / "other.parquet")
    with pytest.raises(
        DatasetError, match=r"other.parquet: not in the LeMat-Bulk layout: missing column\(s\) immutable_id"
    ):
        read_any(tmp_path / "other.parquet")
    (tmp_path / "fake.parquet").write_text("not parquet at all")
    with pytest.raises(DatasetError, match="fake.parquet: not a parquet file"):
        read_any(tmp_path / "fake.parquet")


def test_parquet_glob_and_folder(tmp_path):
    rows = lematerial_rows()
    write_lematerial_parquet(tmp_path / "a.parquet", rows[:2])
    write_lematerial_parquet(tmp_path / "b.parquet", [lematerial_row(rocksalt_oxide(("Mg", "Ni")), "mgnio")])
    assert len(read_any(str(tmp_path / "*.parquet"))) == 3
    assert len(read_any(tmp_path)) == 3
    with pytest.raises(DatasetError, match="no file matches"):
        read_any(str(tmp_path / "*.nothing"))


# -- MPtrj -------------------------------------------------------------------------------------------------------------


def test_mptrj_layout_units_and_skips(tmp_path):
    path = write_mptrj_json(tmp_path / "MPtrj_2022.9_full.json")
    report = ReadReport()
    data = read_any(path, report=report)
    frames = mptrj_data()
    assert data.ids() == ["mp-1-0-0", "mp-1-0-1", "mp-2-0-0"]
    first = data[0]
    labels = labels_of(first)
    assert labels.energy == pytest.approx(frames["mp-1"]["mp-1-0-0"]["uncorrected_total_energy"])
    np.testing.assert_allclose(labels.forces, frames["mp-1"]["mp-1-0-0"]["force"])
    np.testing.assert_allclose(labels.stress, STRESS_ASE_VOIGT, rtol=1e-6)
    np.testing.assert_allclose(first.arrays["magmoms"], 0.5)
    assert first.info["material_id"] == "mp-1" and first.info["corrected_total_energy"] == pytest.approx(
        labels.energy - 0.5
    )
    assert "magmoms" not in data[2].arrays  # magmom null in the file
    assert report.skipped == {"missing forces": 1, "malformed forces": 1}
    assert report.examples == {"missing forces": ["mp-1-0-2"], "malformed forces": ["mp-2-0-1"]}


def test_mptrj_streaming_parser_handles_chunk_boundaries(tmp_path, monkeypatch):
    path = write_mptrj_json(tmp_path / "mptrj.json")
    expected = read_any(path)
    monkeypatch.setattr(mptrj_module, "CHUNK_CHARS", 37)  # keys, values and commas straddle every chunk boundary
    streamed = read_any(path)
    assert streamed.fingerprint() == expected.fingerprint()
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(mptrj_data(), separators=(",", ":")))
    assert read_any(compact).fingerprint() == expected.fingerprint()


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2, 3]", "not a JSON object"),
        ('{"mp-1": {"frame": {"energy": 1.0}}}', "not in the MPtrj layout"),
        ('{"mp-1": {"mp-1-0-0": {"structure": ', "malformed or truncated JSON"),
    ],
)
def test_mptrj_wrong_format_is_one_error(tmp_path, content, message):
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_any(path)


# -- VASP --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer, name", [(write_vasprun, "vasprun.xml"), (write_outcar, "OUTCAR")])
def test_vasp_outputs_all_steps_or_last(tmp_path, writer, name):
    path = writer(tmp_path / name)
    steps = vasp_steps()
    data = read_any(path)
    assert data.ids() == [f"{name}:0", f"{name}:1"]
    for atoms, (reference, _free_energy, energy_zero, forces, stress_kbar) in zip(data, steps):
        labels = labels_of(atoms)
        assert labels.energy == pytest.approx(energy_zero)  # σ → 0 by default
        np.testing.assert_allclose(labels.forces, forces)
        expected = vasp_kbar_to_ase_stress(stress_kbar).reshape(9)[[0, 4, 8, 5, 2, 1]]
        np.testing.assert_allclose(labels.stress, expected, rtol=1e-5)
        np.testing.assert_allclose(atoms.cell[:], reference.cell[:], atol=1e-6)
    np.testing.assert_allclose(labels_of(data[0]).stress, STRESS_ASE_VOIGT, rtol=1e-5)
    last = read_any(path, steps="last", energy="free_energy")
    assert last.ids() == [f"{name}:1"] and labels_of(last[0]).energy == pytest.approx(steps[-1][1])


def test_vasp_folder_of_runs(tmp_path):
    write_vasprun((tmp_path / "run1").mkdir() or tmp_path / "run1" / "vasprun.xml")
    write_outcar((tmp_path / "run2").mkdir() or tmp_path / "run2" / "OUTCAR")
    write_outcar(tmp_path / "run1" / "OUTCAR")  # vasprun.xml wins in run1
    assert detect_format(tmp_path) == "vasp"
    data = read_any(tmp_path, steps="last")
    assert data.ids() == ["run1/vasprun.xml:1", "run2/OUTCAR:1"]


def test_broken_vasp_file_is_one_error(tmp_path):
    (tmp_path / "vasprun.xml").write_text("<modeling><atominfo>")
    with pytest.raises(DatasetError, match="vasprun.xml: could not read as vasp-xml"):
        read_any(tmp_path / "vasprun.xml")


# -- OC22 --------------------------------------------------------------------------------------------------------------


def test_oc22_db_tags_and_surface_metadata(tmp_path):
    path = write_oc22_db(tmp_path / "oc22.db")
    assert detect_format(path) == "oc22"
    report = ReadReport()
    data = read_any(path, report=report)
    slab, adslab = data
    assert slab.info["system"] == "slab" and adslab.info["system"] == "adslab"
    assert set(slab.get_tags()) == {0, 1} and list(adslab.get_tags()).count(2) == 1
    assert adslab.info["n_adsorbate_atoms"] == 1 and adslab.info["slab_sid"] == 101
    for atoms in data:
        assert atoms.info["bulk_id"] == "mp-1265"  # from key-value pairs (slab) and from data (adslab)
        np.testing.assert_array_equal(atoms.info["miller_index"], [1, 0, 0])
        assert atoms.info["surface_area"] == pytest.approx(np.linalg.norm(np.cross(*atoms.cell[:2])))
    assert report.skipped == {"unknown tags": 1, "missing forces": 1}
    assert report.examples["unknown tags"] == ["103-0"]
    back = Dataset.read(data.write(tmp_path / "oc22.extxyz"))
    np.testing.assert_array_equal(back[1].get_tags(), adslab.get_tags())
    assert back[1].info["system"] == "adslab"


def test_not_a_database_is_one_error(tmp_path):
    (tmp_path / "slabs.db").write_text("definitely not sqlite")
    with pytest.raises(DatasetError, match="slabs.db"):
        read_any(tmp_path / "slabs.db", format="oc22")


# -- dispatch ----------------------------------------------------------------------------------------------------------


def test_read_any_dispatches_extxyz_and_plain_db(tmp_path, emt_dataset):
    assert detect_format("lematerial") == "lematerial"
    for name, fmt in (("d.extxyz", "extxyz"), ("d.db", "ase-db")):
        path = emt_dataset.write(tmp_path / name)
        assert detect_format(path) == fmt
        assert read_any(path).fingerprint() == Dataset.read(path).fingerprint()
    (tmp_path / "data.cif").write_text("")
    with pytest.raises(DatasetError, match="unknown format"):
        read_any(tmp_path / "data.cif")
    with pytest.raises(DatasetError, match="unknown reader option"):
        read_any(tmp_path / "d.extxyz", steps_typo="last")


def test_nothing_usable_is_an_error_with_the_reasons(tmp_path):
    rows = [lematerial_row(rocksalt_oxide(("Mg", "Ni")), "only-bad", forces=None)]
    path = write_lematerial_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(DatasetError, match=r"no usable structures .*missing forces"):
        read_any(path)
    assert len(read_any(path, require=("energy",))) == 1
