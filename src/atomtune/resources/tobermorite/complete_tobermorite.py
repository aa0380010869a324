"""Complete Hamid's (1981) tobermorite 11 Å into a simulation cell: one interlayer Ca, hydroxyl H and interlayer water.

Reads ``tobermorite_11A_hamid1981.cif`` (the published COD 8103889 data, unchanged) with atomtune's checked reader,
resolving its two documented gaps explicitly, and writes ``tobermorite_11A_hamid1981_completed.extxyz``:

1. Ca5/Ca6 (occupancy 0.25 each, 1 Ca per cell over 4 half-sites): all four are dropped by the reader
   (``partial_occupancy="majority"``) and one Ca is put back at Ca5's position (0.506, 0.38, 0.198), which gives the
   published Ca2.25 per formula unit (Ca9 per cell).
2. Hydroxyl H (1.5 per formula unit, 6 per cell): on the 6 oxygens with the lowest bond-valence sums (Brown & Altermatt,
   Acta Cryst. B 41, 244 (1985): R0 Si–O 1.624 Å, Ca–O 1.967 Å, b 0.37 Å), 0.97 Å from O, pointing away from the O's
   cation neighbours.
3. Water (1 per formula unit, 4 per cell): O at the 4 points of the cell farthest from every atom (a 0.25 Å grid,
   updated after each placement), H at 0.97 Å towards the two nearest oxygens (H–O–H ≈ 104.5°).
4. The added atoms (1 Ca, 6 + 8 H, 4 O) are relaxed with SevenNet-0 with every published atom and the cell fixed.

Composition then equals the published formula (Ca2.25Si3O10H3.5, Z = 4: Ca9Si12O40H14), charge-neutral with
Ca²⁺ / Si⁴⁺ / O²⁻ / H⁺. The published heavy-atom positions are not moved. This completion is atomtune's, not Hamid's:
the hydrogen positions and water sites are a model.

Also writes ``tobermorite_11A_hamid1981_rattled.extxyz``: three copies rattled by 0.05 Å, unlabelled, for a campaign to
label (``examples/tobermorite.yaml``).

    python src/atomtune/resources/tobermorite/complete_tobermorite.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

HERE = Path(__file__).parent
SOURCE = HERE / "tobermorite_11A_hamid1981.cif"
TARGET = HERE / "tobermorite_11A_hamid1981_completed.extxyz"
#: Three rattled copies (σ 0.05 Å), unlabelled: the data a campaign labels (examples/tobermorite.yaml).
RATTLED = HERE / "tobermorite_11A_hamid1981_rattled.extxyz"
BOND_VALENCE_R0 = {"Si": 1.624, "Ca": 1.967}
BOND_VALENCE_B = 0.37
OH_LENGTH = 0.97
HOH_ANGLE = np.radians(104.5)


def framework() -> Atoms:
    from atomtune.data.readers.structure_files import ReadSettings, read_structures

    (atoms,) = read_structures(SOURCE, ReadSettings(partial_occupancy="majority", allow_missing_hydrogens=True))
    interlayer = Atoms("Ca", scaled_positions=[[0.506, 0.38, 0.198]], cell=atoms.cell, pbc=True)
    interlayer.arrays["site_label"] = np.array(["Ca5"])
    return atoms + interlayer


def bond_valence_sums(atoms: Atoms) -> np.ndarray:
    first, second, distance = neighbor_list("ijd", atoms, 3.2)
    symbols = np.array(atoms.get_chemical_symbols())
    sums = np.zeros(len(atoms))
    for i, j, d in zip(first, second, distance):
        if symbols[i] == "O" and symbols[j] in BOND_VALENCE_R0:
            sums[i] += np.exp((BOND_VALENCE_R0[symbols[j]] - d) / BOND_VALENCE_B)
    return sums


def add_hydroxyl_hydrogens(atoms: Atoms, count: int) -> Atoms:
    sums = bond_valence_sums(atoms)
    oxygens = [i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "O"]
    chosen = sorted(oxygens, key=lambda i: sums[i])[:count]
    first, second, vectors = neighbor_list("ijD", atoms, 2.9)
    symbols = np.array(atoms.get_chemical_symbols())
    positions = []
    for oxygen in chosen:
        bonded = (first == oxygen) & np.isin(symbols[second], ["Si", "Ca"])
        direction = -vectors[bonded].sum(axis=0)
        direction /= np.linalg.norm(direction)
        positions.append(atoms.positions[oxygen] + OH_LENGTH * direction)
    hydrogens = Atoms(f"H{count}", positions=positions, cell=atoms.cell, pbc=True)
    hydrogens.arrays["site_label"] = np.array([f"H_OH{k + 1}" for k in range(count)])
    print("hydroxyl O (bond-valence sum):", [(atoms.arrays["site_label"][i], round(float(sums[i]), 2)) for i in chosen])
    return atoms + hydrogens


def add_water(atoms: Atoms, count: int) -> Atoms:
    grid = np.stack(
        np.meshgrid(*[np.arange(0, 1, 0.25 / length) for length in atoms.cell.lengths()], indexing="ij"), -1
    ).reshape(-1, 3)
    cartesian = grid @ atoms.cell[:]
    for number in range(count):
        nearest = _nearest_distances(cartesian, atoms)
        site = cartesian[int(np.argmax(nearest))]
        oxygens = np.array([i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "O"])
        vectors = atoms.positions[oxygens] - site
        vectors -= np.rint(vectors @ np.linalg.inv(atoms.cell[:])) @ atoms.cell[:]
        order = np.argsort(np.linalg.norm(vectors, axis=1))
        towards = vectors[order[0]] / np.linalg.norm(vectors[order[0]])
        second_direction = vectors[order[1]] - (vectors[order[1]] @ towards) * towards
        second_direction /= np.linalg.norm(second_direction)
        other = np.cos(HOH_ANGLE) * towards + np.sin(HOH_ANGLE) * second_direction
        water = Atoms(
            "OH2", positions=[site, site + OH_LENGTH * towards, site + OH_LENGTH * other], cell=atoms.cell, pbc=True
        )
        water.arrays["site_label"] = np.array([f"Ow{number + 1}", f"Hw{number + 1}a", f"Hw{number + 1}b"])
        print(f"water {number + 1}: {float(nearest.max()):.2f} Å from the nearest atom")
        atoms = atoms + water
    return atoms


def _nearest_distances(points: np.ndarray, atoms: Atoms) -> np.ndarray:
    """Distance (Å) from each point to its nearest atom, periodic images included (minimum image over 27 cells)."""
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ atoms.cell[:]
    images = (atoms.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    nearest = np.empty(len(points))
    for start in range(0, len(points), 2000):  # chunks keep the distance matrix small
        chunk = points[start : start + 2000]
        nearest[start : start + 2000] = np.sqrt(((chunk[:, None, :] - images[None, :, :]) ** 2).sum(-1)).min(axis=1)
    return nearest


def relax_added(atoms: Atoms, n_published: int, model: str = "sevennet-0") -> Atoms:
    from ase.constraints import FixAtoms
    from ase.optimize import FIRE

    from atomtune.models import load_potential

    relaxed = atoms.copy()
    relaxed.set_constraint(FixAtoms(indices=range(n_published - 1)))  # the last framework atom is the added Ca
    relaxed.calc = load_potential(model).calculator()
    optimizer = FIRE(relaxed, logfile="-")
    optimizer.run(fmax=0.05, steps=300)
    relaxed.set_constraint()
    relaxed.info["relaxation"] = f"added atoms relaxed with {model} (FIRE, fmax 0.05 eV/Å, {optimizer.nsteps} steps)"
    return relaxed


def write_rattled(atoms: Atoms, copies: int = 3, stdev: float = 0.05) -> None:
    from ase.io import write

    frames = []
    for seed in range(copies):
        frame = atoms.copy()
        frame.rattle(stdev, seed=seed)
        frame.info["id"] = f"tobermorite_11A_rattled_{seed}"
        frames.append(frame)
    write(RATTLED, frames, format="extxyz")


def main() -> Atoms:
    from ase.io import write

    atoms = framework()
    n_published = len(atoms)
    atoms = add_hydroxyl_hydrogens(atoms, 6)
    atoms = add_water(atoms, 4)
    atoms = relax_added(atoms, n_published)
    atoms.info.update(
        {
            "id": "tobermorite_11A_hamid1981",
            "source": "Hamid, Z. Kristallogr. 154, 189 (1981); COD 8103889; completed by complete_tobermorite.py",
            "completion": "1 interlayer Ca at Ca5, 6 OH hydrogens (lowest bond-valence-sum O), 4 interlayer H2O",
        }
    )
    write(TARGET, atoms, format="extxyz")
    write_rattled(atoms)
    print(atoms.get_chemical_formula(), "written to", TARGET)
    return atoms


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
