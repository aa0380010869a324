"""Structure files with checks: CIF partial occupancy names the site, overlapping sites and missing hydrogens are
refused, 'majority' resolves disorder explicitly, POSCAR and supercells through ASE."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from atomtune.data.readers.structure_files import ReadSettings, StructureFileError, parse_supercell, read_structures
from atomtune.exceptions import DatasetError

ROCKSALT = """data_test
_chemical_formula_sum 'Mg4 O4'
_cell_length_a 4.212
_cell_length_b 4.212
_cell_length_c 4.212
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
_symmetry_Int_Tables_number 225
loop_
_symmetry_equiv_pos_as_xyz
{ops}
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{sites}
"""


def rocksalt_cif(tmp_path, sites: str, formula: str = "Mg4 O4", name: str = "mgo.cif"):
    from pymatgen.symmetry.groups import SpaceGroup

    operations = "\n".join(f"'{op.as_xyz_str()}'" for op in SpaceGroup("Fm-3m").symmetry_ops)
    path = tmp_path / name
    path.write_text(ROCKSALT.format(ops=operations, sites=sites).replace("Mg4 O4", formula))
    return path


def test_ordered_cif_reads_with_symmetry_expansion_and_supercell(tmp_path):
    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 1.0\nO1 O 0.5 0.5 0.5 1.0")
    (atoms,) = read_structures(path)
    assert atoms.get_chemical_formula() == "Mg4O4"
    assert atoms.get_volume() == pytest.approx(4.212**3)
    assert sorted(set(atoms.arrays["site_label"])) == ["Mg1", "O1"]
    (big,) = read_structures(path, ReadSettings(supercell=(2, 2, 1)))
    assert len(big) == 32 and big.info["id"] == "mgo-2x2x1" and big.get_volume() == pytest.approx(4 * 4.212**3)


def test_partial_occupancy_is_an_error_naming_the_site(tmp_path):
    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 0.6\nFe1 Fe 0 0 0 0.4\nO1 O 0.5 0.5 0.5 1.0", formula="Mg2.4 Fe1.6 O4")
    with pytest.raises(
        StructureFileError,
        match=r"mgo.cif: site Mg1 .* partially occupied \(Mg 0.6, Fe 0.4\) \(in the file: Mg1 \(Mg 0.6\), Fe1 \(Fe 0.4\)\)",
    ):
        read_structures(path)


def test_majority_resolves_disorder_and_says_what_it_did(tmp_path):
    path = rocksalt_cif(
        tmp_path, "Mg1 Mg 0 0 0 0.6\nFe1 Fe 0 0 0 0.4\nO1 O 0.5 0.5 0.5 0.3", formula="Mg2.4 Fe1.6 O1.2"
    )
    (atoms,) = read_structures(path, ReadSettings(partial_occupancy="majority"))
    assert atoms.get_chemical_formula() == "Mg4"  # Mg wins each cation site; the 30 %-occupied O site goes
    assert "site O1 removed (occupancy 0.3)" in atoms.info["occupancy_resolved"]
    assert "→ Mg (was Mg0.6 Fe0.4)" in atoms.info["occupancy_resolved"]


def test_vacancy_type_partial_occupancy_is_also_refused(tmp_path):
    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 1.0\nO1 O 0.5 0.5 0.5 0.9", formula="Mg4 O3.6")
    with pytest.raises(StructureFileError, match="site O1"):
        read_structures(path)


def test_overlapping_sites_are_refused_with_both_named(tmp_path):
    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 1.0\nO1 O 0.5 0.5 0.5 1.0\nO2 O 0.52 0.5 0.5 1.0")
    with pytest.raises(StructureFileError, match=r"overlapping sites O\d .* Å apart"):
        read_structures(path)


def test_missing_hydrogens_are_refused_unless_allowed(tmp_path):
    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 1.0\nO1 O 0.5 0.5 0.5 1.0", formula="Mg4 O4 H8")
    with pytest.raises(StructureFileError, match="hydrogen but no H site"):
        read_structures(path)
    (atoms,) = read_structures(path, ReadSettings(allow_missing_hydrogens=True))
    assert "H" not in atoms.get_chemical_symbols()


def test_poscar_and_extxyz_go_through_ase(tmp_path):
    cell = bulk("Si", "diamond", a=5.43)
    write(tmp_path / "POSCAR", cell, format="vasp")
    (atoms,) = read_structures(tmp_path / "POSCAR", ReadSettings(format="vasp", supercell=(1, 1, 3)))
    assert len(atoms) == 6 and np.allclose(atoms.cell[2], 3 * cell.cell[2])
    crowded = cell.copy()
    crowded.positions[1] = crowded.positions[0] + [0.2, 0, 0]
    write(tmp_path / "bad.extxyz", crowded)
    with pytest.raises(StructureFileError, match="atom 0 Si and atom 1 Si are 0.200 Å"):
        read_structures(tmp_path / "bad.extxyz")


def test_bad_inputs_give_clear_errors(tmp_path):
    (tmp_path / "junk.cif").write_text("this is not a cif")
    with pytest.raises(StructureFileError, match="junk.cif"):
        read_structures(tmp_path / "junk.cif")
    with pytest.raises(DatasetError, match="not found"):
        read_structures(tmp_path / "missing.cif")
    with pytest.raises(DatasetError, match="2x2x1"):
        parse_supercell("2x0x1")
    assert parse_supercell("2x2x1") == (2, 2, 1) and parse_supercell("3,1,2") == (3, 1, 2)
    with pytest.raises(DatasetError, match="partial_occupancy"):
        read_structures(tmp_path / "junk.cif", ReadSettings(partial_occupancy="random"))


def test_data_read_command_writes_extxyz_and_lammps_data(tmp_path):
    from typer.testing import CliRunner

    from atomtune.cli import app

    path = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 1.0\nO1 O 0.5 0.5 0.5 1.0")
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "read", str(path), "--supercell", "1x1x2", "--out", str(tmp_path / "m.extxyz")]
    )
    assert result.exit_code == 0, result.output
    from ase.io import read

    assert len(read(tmp_path / "m.extxyz")) == 16
    result = runner.invoke(app, ["data", "read", str(path), "--out", str(tmp_path / "m.data")])
    assert result.exit_code == 0 and "1 = Mg, 2 = O" in result.output
    atoms = read(tmp_path / "m.data", format="lammps-data", atom_style="atomic")
    assert len(atoms) == 8 and atoms.get_volume() == pytest.approx(4.212**3)
    bad = rocksalt_cif(tmp_path, "Mg1 Mg 0 0 0 0.5\nO1 O 0.5 0.5 0.5 1.0", name="bad.cif", formula="Mg2 O4")
    result = runner.invoke(app, ["data", "read", str(bad), "--out", str(tmp_path / "b.extxyz")])
    assert result.exit_code != 0 and isinstance(result.exception, StructureFileError)
