"""Adsorption task: O on Cu in EMT against ASE's add_adsorbate, site naming and ranking, gas references, bad input,
records."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import adsorption

A_CU = 3.59  # EMT lattice constant of Cu (Å)


def cu111(size=(2, 2, 3)):
    slab = fcc111("Cu", size, a=A_CU, vacuum=6.0)
    slab.info["id"] = "Cu111"
    return slab


def direct_adsorption_energy(site: str) -> float:
    """E_ads of O at ASE's named site of Cu(111) with ASE alone, bottom layer fixed as in the task's settings."""
    slab = cu111()
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))  # fcc111 tags layers from the top: 3 is the bottom one
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.005)
    clean = slab.get_potential_energy()
    add_adsorbate(slab, "O", 2.0, site)
    slab.calc = EMT()
    BFGS(slab, logfile=None).run(fmax=0.005)
    oxygen = Atoms("O", cell=[16, 16, 16], pbc=True)
    oxygen.calc = EMT()
    return slab.get_potential_energy() - clean - oxygen.get_potential_energy()


@pytest.fixture(scope="module")
def o_on_cu111():
    settings = adsorption.Settings(fixed_bottom_layers=1, fmax=0.005)
    return {r["site"]: r for r in adsorption.run([cu111()], EMT(), settings, progress=False)}


def test_sites_are_named_like_ase_and_energies_match_add_adsorbate(o_on_cu111):
    assert set(o_on_cu111) == {"ontop", "bridge", "fcc_hollow", "hcp_hollow"}
    slab = cu111()
    surface_cell = np.asarray(slab.info["adsorbate_info"]["cell"])  # ASE's 1×1 surface cell (2×2, Å)
    for site in ("fcc", "hcp", "ontop"):
        # ASE's named site (fractions of the 1×1 cell) against ours, in-plane and modulo the 1×1 lattice
        name = {"fcc": "fcc_hollow", "hcp": "hcp_hollow"}.get(site, site)
        ase_site = np.asarray(slab.info["adsorbate_info"]["sites"][site]) @ surface_cell
        offset = np.asarray(o_on_cu111[name]["site_position"]) - ase_site
        fractions = np.linalg.solve(surface_cell.T, offset)
        assert np.linalg.norm((fractions - np.round(fractions)) @ surface_cell) < 0.05, site
    # (111) has three bridge orientations, equivalent by the 3-fold axis but not by a lattice vector, and pymatgen's site
    # finder returns whichever it meets first (it changed between releases): a bridge is midway between two top atoms
    top = slab.positions[slab.get_tags() == 1]
    bridge = np.asarray(o_on_cu111["bridge"]["site_position"])[:2]
    images = [top[:, :2] + i * slab.cell[0, :2] + j * slab.cell[1, :2] for i in (-1, 0, 1) for j in (-1, 0, 1)]
    distances = np.sort(np.linalg.norm(np.concatenate(images) - bridge, axis=1))
    assert distances[:2] == pytest.approx([A_CU / np.sqrt(8)] * 2, abs=0.05)  # half the nearest-neighbour distance
    for site in ("fcc", "ontop"):
        name = {"fcc": "fcc_hollow"}.get(site, site)
        assert o_on_cu111[name]["adsorption_energy"] == pytest.approx(direct_adsorption_energy(site), abs=2e-3)


def test_ranking_prefers_hollows_and_sites_are_kept(o_on_cu111):
    ranks = {name: r["rank"] for name, r in o_on_cu111.items()}
    assert sorted(ranks.values()) == [1, 2, 3, 4]
    assert ranks["ontop"] == 4 and {ranks["fcc_hollow"], ranks["hcp_hollow"]} == {1, 2}
    for name, record in o_on_cu111.items():
        assert record["final_site"] == name and record["lateral_displacement"] < 0.05
        assert record["adsorption_energy"] < 0 and record["converged"]
    assert o_on_cu111["ontop"]["adsorbate_height"] > o_on_cu111["fcc_hollow"]["adsorbate_height"]


def test_fourfold_hollow_on_cu100_is_named_and_ranked_first():
    slab = fcc100("Cu", (2, 2, 3), a=A_CU, vacuum=6.0)
    records = adsorption.run([slab], EMT(), adsorption.Settings(fixed_bottom_layers=1), progress=False)
    by_site = {r["site"]: r for r in records}
    assert set(by_site) == {"ontop", "bridge", "fourfold_hollow"}  # pymatgen calls the fourfold hollow a "bridge"
    assert by_site["fourfold_hollow"]["rank"] == 1
    hollows = adsorption.find_sites(slab, ("hollow",), 2.0, 0.01)
    assert list(hollows) == ["fourfold_hollow"]
    with pytest.raises(AtomtuneError, match="unknown site kind"):
        adsorption.run([slab], EMT(), adsorption.Settings(sites=("hollow", "atop")), progress=False)


def test_gas_reference_and_molecular_adsorbate():
    slab = cu111()
    quick = {"sites": ("ontop",), "fixed_bottom_layers": 1}
    (atom,) = adsorption.run([slab], EMT(), adsorption.Settings(**quick), progress=False)
    (half_o2,) = adsorption.run([slab], EMT(), adsorption.Settings(reference={"O2": 0.5}, **quick), progress=False)
    o2 = adsorption.gas_energy("O2", EMT(), fmax=0.02, max_steps=200)
    assert half_o2["energy_reference"] == pytest.approx(0.5 * o2)
    assert half_o2["adsorption_energy"] - atom["adsorption_energy"] == pytest.approx(
        atom["energy_reference"] - 0.5 * o2
    )
    with pytest.raises(AtomtuneError, match="add up to the adsorbate"):
        adsorption.run([slab], EMT(), adsorption.Settings(reference={"O2": 1.0}), progress=False)
    with pytest.raises(AtomtuneError, match="g2 set"):
        adsorption.run([slab], EMT(), adsorption.Settings(adsorbate="Unobtainium"), progress=False)
    co = adsorption.adsorbate_atoms("CO", binding_atom="C")
    assert co.get_chemical_symbols() == ["C", "O"] and co.positions[1, 2] > co.positions[0, 2] == 0
    with pytest.raises(AtomtuneError, match="not an atom of CO"):
        adsorption.adsorbate_atoms("CO", binding_atom="N")
    settings = adsorption.Settings(adsorbate="CO", binding_atom="C", **quick)
    (carbon_monoxide,) = adsorption.run([slab], EMT(), settings, progress=False)
    assert carbon_monoxide["adsorbate"] == "CO" and np.isfinite(carbon_monoxide["adsorption_energy"])


def test_bad_structures_give_error_records_and_the_others_finish(toy_potential):
    iron = fcc111("Ni", (2, 2, 3), a=3.52, vacuum=6.0)
    iron.set_chemical_symbols(["Fe"] * len(iron))  # an element the toy potential lacks
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])
    structures = [bulk("Cu", "fcc", a=A_CU, cubic=True), molecule, iron, cu111()]
    # the toy potential's random pair term has no repulsion, so relaxing with it would pull the adsorbate into the slab
    settings = adsorption.Settings(relax=False, fixed_bottom_layers=1)
    records = adsorption.run(structures, toy_potential.calculator(), settings, progress=False)
    assert "looks like a bulk crystal" in records[0]["error"]
    assert "not periodic in-plane" in records[1]["error"]
    assert "Fe" in records[2]["error"]
    assert all("error" not in r for r in records[3:]) and len(records) == 3 + 4


def test_records_json_keys_compare_and_plot(toy_potential, tmp_path):
    settings = adsorption.Settings(sites=("ontop", "hollow"), relax=False, fixed_bottom_layers=1)
    results = {
        "emt": adsorption.run([cu111()], EMT(), settings, progress=False),
        "toy": adsorption.run([cu111()], toy_potential, settings, progress=False),
    }
    assert [set(r) for r in results["emt"]] == [set(r) for r in results["toy"]]
    assert json.loads(json.dumps(results)) == results
    rows = adsorption.compare(results, reference="emt")
    assert {r["property"] for r in rows} == {"adsorption_energy", "rank", "most_stable_site"}
    most_stable = next(r for r in rows if r["property"] == "most_stable_site")
    assert most_stable["emt"] == next(r["site"] for r in results["emt"] if r["rank"] == 1)
    paths = adsorption.plot(results, tmp_path)
    assert paths and all(p.stat().st_size > 1000 for p in paths)
