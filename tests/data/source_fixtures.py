"""Small files in each real source format, built at test time (never downloaded): a LeMat-Bulk parquet, an MPtrj JSON,
a vasprun.xml and an OUTCAR in VASP's layout, and an OC22-style ASE db with tags and slab metadata.

Labels are arbitrary numbers chosen so each unit conversion can be checked by hand; the structures are real geometry
(rocksalt oxides, fcc alloys, an MgO slab) so the shared structure checks pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

#: Cations of the classic rocksalt high-entropy oxide (Rost et al. 2015).
HEO_CATIONS = ("Mg", "Co", "Ni", "Cu", "Zn")

#: A stress in kbar, VASP sign (positive = compressive), and what ASE should read: −0.1 GPa/kbar in eV/Å³.
STRESS_KBAR = np.array([[10.0, 1.0, 2.0], [1.0, 20.0, 3.0], [2.0, 3.0, 30.0]])
GPA_IN_EV_PER_A3 = 1.0 / 160.21766208  # 1 GPa in eV/Å³, written out rather than taken from ase.units
STRESS_ASE_3X3 = -0.1 * GPA_IN_EV_PER_A3 * STRESS_KBAR
STRESS_ASE_VOIGT = STRESS_ASE_3X3.reshape(9)[[0, 4, 8, 5, 2, 1]]


def rocksalt_oxide(cations, a: float = 4.2, seed: int = 0, rattle: float = 0.02) -> Atoms:
    """A 2×n_cations-atom rocksalt supercell with one of each listed cation (repeat a cation to change ratios)."""
    cations = list(cations)
    atoms = bulk("MgO", "rocksalt", a=a).repeat((len(cations), 1, 1))
    symbols = atoms.get_chemical_symbols()
    cation_sites = [i for i, s in enumerate(symbols) if s == "Mg"]
    for site, cation in zip(cation_sites, cations):
        symbols[site] = cation
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(rattle, seed=seed)
    return atoms


def alloy(symbols=("Cu", "Ni", "Al", "Cu"), a: float = 3.6) -> Atoms:
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def fake_labels(atoms: Atoms, seed: int = 0) -> tuple[float, np.ndarray]:
    rng = np.random.default_rng(seed)
    return -5.0 * len(atoms) + rng.normal(), rng.normal(scale=0.3, size=(len(atoms), 3))


# -- LeMat-Bulk parquet -----------------------------------------------------------------------------------------------


def lematerial_row(atoms: Atoms, immutable_id: str, seed: int = 0, stress_kbar=STRESS_KBAR, **overrides) -> dict:
    """One row with the LeMat-Bulk column names and value layout (nested lists, total energy in eV)."""
    energy, forces = fake_labels(atoms, seed)
    symbols = atoms.get_chemical_symbols()
    elements = sorted(set(symbols))
    row = {
        "elements": elements,
        "nsites": len(atoms),
        "chemical_formula_anonymous": "A",
        "chemical_formula_reduced": atoms.get_chemical_formula(empirical=True),
        "chemical_formula_descriptive": atoms.get_chemical_formula(),
        "nelements": len(elements),
        "dimension_types": [1, 1, 1],
        "nperiodic_dimensions": 3,
        "lattice_vectors": atoms.cell[:].tolist(),
        "immutable_id": immutable_id,
        "cartesian_site_positions": atoms.positions.tolist(),
        "species": json.dumps([{"name": e, "chemical_symbols": [e], "concentration": [1]} for e in elements]),
        "species_at_sites": symbols,
        "last_modified": "2024-12-01",
        "elements_ratios": [symbols.count(e) / len(symbols) for e in elements],
        "stress_tensor": None if stress_kbar is None else np.asarray(stress_kbar).tolist(),
        "energy": energy,
        "energy_corrected": energy - 1.0,
        "magnetic_moments": [0.1] * len(atoms),
        "forces": forces.tolist(),
        "total_magnetization": 0.0,
        "dos_ef": None,
        "functional": "pbe",
        "cross_compatibility": True,
        "space_group_it_number": 225,
    }
    row.update(overrides)
    return row


def lematerial_rows() -> list[dict]:
    """Rows covering each filter and each bad-input case (ids say what the row is)."""
    heo = rocksalt_oxide(HEO_CATIONS)
    rows = [
        lematerial_row(heo, "heo-equimolar"),
        lematerial_row(rocksalt_oxide(HEO_CATIONS, seed=1), "heo-equimolar-2", seed=1),
        lematerial_row(rocksalt_oxide(("Mg", "Co", "Ni", "Cu", "Pt")), "heo-with-pt", seed=2),
        lematerial_row(rocksalt_oxide(("Mg", "Mg", "Mg", "Co", "Ni", "Cu", "Zn")), "heo-mg-rich", seed=3),
        lematerial_row(rocksalt_oxide(("Mg", "Co", "Ni", "Cu")), "quaternary-oxide", seed=4),
        lematerial_row(rocksalt_oxide(("Mg", "Co", "Ni", "Cu", "Si")), "oxide-with-si", seed=5),
        lematerial_row(alloy(), "alloy-cunial", seed=6),
        lematerial_row(rocksalt_oxide(HEO_CATIONS, seed=7), "heo-no-forces", seed=7, forces=None),
        lematerial_row(heo, "bad-lattice", lattice_vectors=[[4.2, 0.0, 0.0], [0.0, 4.2, 0.0]]),
        lematerial_row(heo, "unknown-species", species_at_sites=["Xx"] + heo.get_chemical_symbols()[1:]),
        lematerial_row(heo, "heo-equimolar"),  # duplicated id
        lematerial_row(rocksalt_oxide(HEO_CATIONS, seed=8), "heo-no-stress", seed=8, stress_kbar=None),
    ]
    return rows


def lematerial_schema():
    import pyarrow as pa

    nested = pa.list_(pa.list_(pa.float64()))
    return pa.schema(
        [
            ("elements", pa.list_(pa.string())),
            ("nsites", pa.int32()),
            ("chemical_formula_anonymous", pa.string()),
            ("chemical_formula_reduced", pa.string()),
            ("chemical_formula_descriptive", pa.string()),
            ("nelements", pa.int8()),
            ("dimension_types", pa.list_(pa.int8())),
            ("nperiodic_dimensions", pa.int8()),
            ("lattice_vectors", nested),
            ("immutable_id", pa.string()),
            ("cartesian_site_positions", nested),
            ("species", pa.string()),
            ("species_at_sites", pa.list_(pa.string())),
            ("last_modified", pa.string()),
            ("elements_ratios", pa.list_(pa.float64())),
            ("stress_tensor", nested),
            ("energy", pa.float64()),
            ("energy_corrected", pa.float64()),
            ("magnetic_moments", pa.list_(pa.float64())),
            ("forces", nested),
            ("total_magnetization", pa.float64()),
            ("dos_ef", pa.float64()),
            ("functional", pa.string()),
            ("cross_compatibility", pa.bool_()),
            ("space_group_it_number", pa.int32()),
        ]
    )


def write_lematerial_parquet(path: Path, rows: list[dict] | None = None, row_group_size: int = 4) -> Path:
    """A parquet file with LeMat-Bulk's schema, several row groups (so batch boundaries are exercised)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = lematerial_rows() if rows is None else rows
    table = pa.Table.from_pylist(rows, schema=lematerial_schema())
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


# -- MPtrj JSON -------------------------------------------------------------------------------------------------------


def mptrj_frame(atoms: Atoms, mp_id: str, seed: int = 0, stress_kbar=STRESS_KBAR, **overrides) -> dict:
    """One MPtrj frame: pymatgen Structure dict, uncorrected total energy (eV), force (eV/Å), stress (kbar), magmom."""
    from pymatgen.io.ase import AseAtomsAdaptor

    energy, forces = fake_labels(atoms, seed)
    frame = {
        "structure": AseAtomsAdaptor.get_structure(atoms).as_dict(),
        "uncorrected_total_energy": energy,
        "corrected_total_energy": energy - 0.5,
        "energy_per_atom": energy / len(atoms),
        "ef_per_atom": -1.2,
        "e_per_atom_relaxed": energy / len(atoms) - 0.01,
        "ef_per_atom_relaxed": -1.21,
        "force": forces.tolist(),
        "stress": np.asarray(stress_kbar).tolist(),
        "magmom": [0.5] * len(atoms),
        "bandgap": 0.0,
        "mp_id": mp_id,
    }
    frame.update(overrides)
    return frame


def mptrj_data() -> dict:
    heo = rocksalt_oxide(HEO_CATIONS)
    broken = mptrj_frame(alloy(), "mp-2", seed=3)
    broken["structure"]["sites"] = broken["structure"]["sites"][:2]  # fewer sites than forces → malformed forces
    return {
        "mp-1": {
            "mp-1-0-0": mptrj_frame(heo, "mp-1"),
            "mp-1-0-1": mptrj_frame(rocksalt_oxide(HEO_CATIONS, seed=1), "mp-1", seed=1),
            "mp-1-0-2": mptrj_frame(heo, "mp-1", seed=2, force=None),
        },
        "mp-2": {
            "mp-2-0-0": mptrj_frame(alloy(), "mp-2", seed=4, magmom=None),
            "mp-2-0-1": broken,
        },
    }


def write_mptrj_json(path: Path, data: dict | None = None) -> Path:
    path.write_text(json.dumps(mptrj_data() if data is None else data, indent=1))
    return path


# -- VASP -------------------------------------------------------------------------------------------------------------


def _vectors(rows) -> str:
    return "\n".join("    <v>" + " ".join(f"{x: .8f}" for x in row) + " </v>" for row in np.atleast_2d(rows))


def _structure_block(atoms: Atoms, name: str | None = None) -> str:
    label = f' name="{name}"' if name else ""
    return (
        f'  <structure{label}>\n   <crystal>\n   <varray name="basis" >\n{_vectors(atoms.cell[:])}\n   </varray>\n'
        f'   <i name="volume">{atoms.get_volume():.8f}</i>\n   </crystal>\n'
        f'   <varray name="positions" >\n{_vectors(atoms.get_scaled_positions())}\n   </varray>\n  </structure>\n'
    )


def vasp_steps(count: int = 2) -> list[tuple[Atoms, float, float, np.ndarray, np.ndarray]]:
    """(atoms, e_fr_energy, e_0_energy, forces eV/Å, stress kbar) for a short fake relaxation of Cu3Ni."""
    steps = []
    for k in range(count):
        atoms = alloy(("Cu", "Cu", "Cu", "Ni"), a=3.6 - 0.02 * k)
        forces = np.full((4, 3), 0.1 * (k + 1))
        forces[1] *= -1
        steps.append((atoms, -15.0 - k, -15.1 - k, forces, STRESS_KBAR * (k + 1)))
    return steps


def write_vasprun(path: Path, steps=None) -> Path:
    """A vasprun.xml with VASP's element layout (kpoints, parameters, atominfo, structures, calculations)."""
    steps = vasp_steps() if steps is None else steps
    first = steps[0][0]
    symbols = first.get_chemical_symbols()
    kinds = list(dict.fromkeys(symbols))
    atom_rows = "\n".join(f"    <rc><c>{s}</c><c>{kinds.index(s) + 1}</c></rc>" for s in symbols)
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>\n',
        ' <generator>\n  <i name="program" type="string">vasp </i>\n  <i name="version" type="string">6.4.2 </i>\n'
        " </generator>\n",
        ' <kpoints>\n  <varray name="kpointlist" >\n    <v> 0.0 0.0 0.0 </v>\n  </varray>\n'
        '  <varray name="weights" >\n    <v> 1.0 </v>\n  </varray>\n </kpoints>\n',
        ' <parameters>\n  <separator name="general" >\n   <i type="string" name="SYSTEM">fixture</i>\n'
        "  </separator>\n </parameters>\n",
        f' <atominfo>\n  <atoms>{len(symbols)}</atoms>\n  <types>{len(kinds)}</types>\n  <array name="atoms" >\n'
        '   <dimension dim="1">ion</dimension>\n   <field type="string">element</field>\n'
        f'   <field type="int">atomtype</field>\n   <set>\n{atom_rows}\n   </set>\n  </array>\n </atominfo>\n',
        _structure_block(first, "initialpos"),
    ]
    for atoms, free_energy, energy_zero, forces, stress_kbar in steps:
        scf = (
            f'  <scstep>\n   <energy>\n    <i name="e_fr_energy"> {free_energy:.8f} </i>\n'
            f'    <i name="e_wo_entrp"> {energy_zero:.8f} </i>\n    <i name="e_0_energy"> {energy_zero:.8f} </i>\n'
            "   </energy>\n  </scstep>\n"
        )
        parts.append(
            f" <calculation>\n{scf}{_structure_block(atoms)}"
            f'  <varray name="forces" >\n{_vectors(forces)}\n  </varray>\n'
            f'  <varray name="stress" >\n{_vectors(stress_kbar)}\n  </varray>\n'
            f'  <energy>\n   <i name="e_fr_energy"> {free_energy:.8f} </i>\n'
            f'   <i name="e_wo_entrp"> {energy_zero:.8f} </i>\n   <i name="e_0_energy"> {energy_zero:.8f} </i>\n'
            "  </energy>\n </calculation>\n"
        )
    parts.append(_structure_block(steps[-1][0], "finalpos"))
    parts.append("</modeling>\n")
    path.write_text("".join(parts))
    return path


def write_outcar(path: Path, steps=None) -> Path:
    """An OUTCAR with the lines ASE's parser keys on (POTCAR, ions per type, k-points, per-step blocks)."""
    steps = vasp_steps() if steps is None else steps
    symbols = steps[0][0].get_chemical_symbols()
    kinds = list(dict.fromkeys(symbols))
    counts = [symbols.count(kind) for kind in kinds]
    header = [" vasp.6.4.2 18Apr23 (build Apr 18 2023) complex\n"]
    header += [f"   POTCAR:    PAW_PBE {kind} 02Aug2007\n" for kind in kinds] * 2
    header += [
        "   ISPIN  =      1    spin polarized calculation?\n",
        f"   ions per type =              {'  '.join(str(c) for c in counts)}\n",
        "   k-points           NKPTS =      1   k-points in BZ     NKDIM =      1   "
        "number of bands    NBANDS=     24\n",
        " k-points in reciprocal lattice and weights: fixture\n",
        "   0.00000000  0.00000000  0.00000000       1.000\n",
        "\n",
    ]
    body = []
    for number, (atoms, free_energy, energy_zero, forces, stress_kbar) in enumerate(steps, start=1):
        s = stress_kbar
        body += [
            f"{'-' * 41} Iteration    {number}(   1)  {'-' * 39}\n",
            "  FORCE on cell =-STRESS in cart. coord.  units (eV):\n",
            f"  in kB  {s[0, 0]:12.5f}{s[1, 1]:12.5f}{s[2, 2]:12.5f}{s[0, 1]:12.5f}{s[1, 2]:12.5f}{s[0, 2]:12.5f}\n",
            "\n",
            "      direct lattice vectors                 reciprocal lattice vectors\n",
        ]
        reciprocal = atoms.cell.reciprocal()
        body += [
            "    "
            + " ".join(f"{x:12.9f}" for x in atoms.cell[i])
            + "   "
            + " ".join(f"{x:12.9f}" for x in reciprocal[i])
            + "\n"
            for i in range(3)
        ]
        body += [
            "\n",
            " POSITION                                       TOTAL-FORCE (eV/Angst)\n",
            " -----------------------------------------------------------------------------------\n",
        ]
        body += [
            "     " + " ".join(f"{x:12.5f}" for x in position) + "    " + " ".join(f"{f:12.6f}" for f in force) + "\n"
            for position, force in zip(atoms.positions, forces)
        ]
        body += [
            " -----------------------------------------------------------------------------------\n",
            "\n",
            "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)\n",
            "  ---------------------------------------------------\n",
            f"  free  energy   TOTEN  =       {free_energy:.8f} eV\n",
            "\n",
            f"  energy  without entropy=      {energy_zero:.8f}  energy(sigma->0) =      {energy_zero:.8f}\n",
            "\n",
        ]
    path.write_text("".join(header + body))
    return path


# -- OC22 ASE db -------------------------------------------------------------------------------------------------------


def oc22_slab(adsorbate: bool = False) -> Atoms:
    """A 3-layer MgO(100) slab, tags 0 (bottom two layers) / 1 (top layer), optionally an O adatom tagged 2."""
    from ase.build import add_adsorbate, surface

    slab = surface(bulk("MgO", "rocksalt", a=4.21, cubic=True), (1, 0, 0), layers=3, vacuum=7.5)
    heights = slab.positions[:, 2]
    top = heights > heights.max() - 0.5
    slab.set_tags(np.where(top, 1, 0))
    if adsorbate:
        add_adsorbate(slab, "O", 1.9, position=tuple(slab.positions[np.argmax(heights), :2]))
        tags = slab.get_tags()
        tags[-1] = 2
        slab.set_tags(tags)
    return slab


def write_oc22_db(path: Path) -> Path:
    """Rows: a clean slab, its adslab (metadata in key-value pairs / in data), an unknown tag, a missing-forces row."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db import connect

    def labelled(atoms: Atoms, seed: int, forces: bool = True) -> Atoms:
        energy, random_forces = fake_labels(atoms, seed)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=random_forces if forces else None)
        return atoms

    with connect(path, type="db") as database:
        database.write(
            labelled(oc22_slab(), 0), bulk_id="mp-1265", miller_index="(1, 0, 0)", sid=101, fid=0, is_slab=True
        )
        database.write(
            labelled(oc22_slab(adsorbate=True), 1),
            sid=102,
            fid=3,
            data={"bulk_id": "mp-1265", "millers": [1, 0, 0], "slab_sid": 101, "ads_symbols": "*O"},
        )
        wrong = oc22_slab()
        wrong.set_tags(np.full(len(wrong), 5))
        database.write(labelled(wrong, 2), sid=103, fid=0, bulk_id="mp-1265", miller_index="(1, 0, 0)")
        database.write(labelled(oc22_slab(), 3, forces=False), sid=104, fid=0, bulk_id="mp-1265", miller_index="1 0 0")
    return path
