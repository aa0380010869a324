"""Monte Carlo on toy expansions whose transitions are known exactly (the square-lattice Ising model, Onsager)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.units import kB

from atomtune.exceptions import AtomtuneError
from atomtune.tasks import cluster_expansion as ce
from atomtune.tasks import monte_carlo as mc

#: Bond energy of the Ising model, eV. icet's pair parameter multiplies the orbit-averaged σσ, so on the square lattice
#: (2 bonds per site) E/N = parameter · ⟨σσ⟩ = 2 J_bond ⟨σσ⟩: parameter = 2 J_bond.
BOND = 0.02
ONSAGER_TC = 2 / np.log(1 + np.sqrt(2)) * BOND / kB  # 526.7 K


def _square_lattice_expansion(tmp_path, bond: float):
    """A square lattice (layers 10 Å apart, beyond the 3 Å cutoff) with a nearest-neighbour pair interaction only."""
    from icet import ClusterExpansion, ClusterSpace

    primitive = Atoms("Ag", positions=[[0, 0, 0]], cell=[2.5, 2.5, 10.0], pbc=True)
    primitive.info["id"] = "square"
    space = ClusterSpace(primitive, [3.0], [["Ag", "Au"]])
    assert len(space) == 3  # zerolet, point, nearest-neighbour pair
    expansion = ClusterExpansion(space, [0.0, 0.0, 2 * bond])
    record = {"id": "square/expansion", "kind": "expansion", "calculator": "ising", "mixing_species": ["Ag", "Au"],
              "expansion": ce.expansion_to_dict(expansion, primitive, [["Ag", "Au"]], "ising")}
    path = tmp_path / "records_ising.json"
    path.write_text(json.dumps([record]))
    return primitive, path


def test_canonical_finds_the_ordering_transition_within_the_grid(tmp_path):
    primitive, path = _square_lattice_expansion(tmp_path, BOND)  # J > 0: unlike neighbours, checkerboard order
    settings = mc.Settings(temperatures=list(range(400, 701, 50)), concentration=0.5, supercell=[12, 12, 1],
                           equilibration_sweeps=100, sampling_sweeps=400, expansion=str(path))
    records = mc.run([primitive], None, settings, progress=False)
    (summary,) = mc.transition_records(records)
    assert summary["grid_resolution_k"] == 50
    assert abs(summary["transition_temperature_k"] - ONSAGER_TC) <= summary["grid_resolution_k"]
    assert summary["ordering"] == "ordering"
    assert not summary["peak_at_grid_edge"]
    points = sorted((r for r in records if r["kind"] == "temperature"), key=lambda r: r["temperature_k"])
    assert points[0]["sro_first_shell"] < -0.6 < points[-1]["sro_first_shell"]  # ordered when cold, not when hot
    assert all(r["concentration"] == 0.5 for r in points)
    for point in points:  # ordering lowers the energy more than it costs entropy: F below U, above U − T·S_ideal
        ideal = kB * np.log(2)
        assert point["mixing_energy_per_atom"] - point["temperature_k"] * ideal - 1e-3 \
            < point["mixing_free_energy_per_atom"] < point["mixing_energy_per_atom"]
    assert mc.plot({"ising": records}, tmp_path)
    rows = {row["property"]: row for row in mc.compare({"ising": records, "again": records}, reference="ising")}
    assert rows["transition_temperature_k"]["again − ising"] == 0 and rows["ordering"]["again"] == "ordering"


def test_semi_grand_canonical_finds_the_miscibility_gap(tmp_path):
    primitive, path = _square_lattice_expansion(tmp_path, -BOND)  # J < 0: like neighbours, phase separation
    settings = mc.Settings(ensemble="semi-grand-canonical", temperatures=[350, 800],
                           chemical_potential_differences=[-0.03, -0.002, 0.002, 0.03], supercell=[10, 10, 1],
                           equilibration_sweeps=50, sampling_sweeps=100, expansion=str(path))
    records = mc.run([primitive], None, settings, progress=False)
    (summary,) = mc.transition_records(records)
    assert summary["miscibility_gap_temperature_k"] == 350  # below Onsager's 527 K a jump, above it none
    cold = sorted((r for r in records if r.get("temperature_k") == 350 and r["kind"] == "sgc_point"),
                  key=lambda r: r["chemical_potential_difference"])
    assert cold[0]["concentration"] < 0.1 and cold[-1]["concentration"] > 0.9


def test_mixing_free_energy_of_an_ideal_solution_is_minus_t_s(tmp_path):
    """With no interactions, U = 0 and the mixing free energy is −T S_ideal exactly at every temperature."""
    primitive, path = _square_lattice_expansion(tmp_path, 0.0)
    settings = mc.Settings(temperatures=[1000, 600, 300], concentration=0.25, supercell=[4, 4, 1],
                           equilibration_sweeps=2, sampling_sweeps=5, expansion=str(path))
    points = [r for r in mc.run([primitive], None, settings, progress=False) if r["kind"] == "temperature"]
    ideal = -kB * -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    for point in points:
        assert point["mixing_free_energy_per_atom"] == pytest.approx(point["temperature_k"] * ideal, abs=1e-9)


def test_bad_input(tmp_path, toy_potential):
    primitive, path = _square_lattice_expansion(tmp_path, BOND)
    with pytest.raises(AtomtuneError, match="temperatures is empty"):
        mc.run([primitive], None, mc.Settings(temperatures=[], expansion=str(path)), progress=False)
    with pytest.raises(AtomtuneError, match="chemical_potential_differences"):
        mc.run([primitive], None, mc.Settings(ensemble="semi-grand-canonical", expansion=str(path)), progress=False)
    with pytest.raises(AtomtuneError, match="fitted to ising, not to toy:toy"):
        mc.run([primitive], toy_potential, mc.Settings(expansion=str(path)), progress=False)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(AtomtuneError, match="no expansion record"):
        mc.run([primitive], None, mc.Settings(expansion=str(tmp_path / "empty.json")), progress=False)
    with pytest.raises(AtomtuneError, match="leaves no"):
        mc.run([primitive], None, mc.Settings(concentration=0.001, supercell=[2, 2, 1], expansion=str(path)),
               progress=False)
