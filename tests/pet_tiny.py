"""A tiny PET trained on EMT data with metatrain's own trainer (``mtt train``, which also exports it), so the PET
path is tested end to end offline (no Hugging Face download). Test-only: run with the pet environment's interpreter.

    python tests/pet_tiny.py OUT_DIR     # writes OUT_DIR/tiny.ckpt (metatrain checkpoint) and OUT_DIR/tiny.pt (exported)

Options: ``tests/pet_tiny.yaml`` (PET, Ni/Cu/Al, d_pet 8, 2 GNN layers of 1 attention layer, cutoff 4.5 Å, float64;
4 epochs on 20 strained / rattled / substituted EMT cells, 6 more for validation). The checkpoint is what upet downloads
for PET-MAD (a metatrain ``.ckpt``), the ``.pt`` what ``mtt export`` writes (a metatomic TorchScript model).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_reference_file(path: Path, structures) -> None:
    """Labels under keys of their own (ASE would read ``energy``/``forces``/``stress`` back as a calculator's results,
    which metatrain's reader does not look at); stress 3×3 in eV/Å³ with ASE's sign, as metatrain reads it."""
    from ase.io import write

    frames = []
    for atoms in structures:
        labelled = atoms.copy()
        labelled.info = {"reference_energy": atoms.get_potential_energy(),
                         "reference_stress": atoms.get_stress(voigt=False)}
        labelled.arrays["reference_forces"] = atoms.get_forces()
        frames.append(labelled)
    write(path, frames, format="extxyz")


def main(out: Path) -> Path:
    sys.path.insert(0, str(HERE))
    from mace_tiny import emt_training_structures

    out.mkdir(parents=True, exist_ok=True)
    structures = emt_training_structures(count=26, seed=3)
    write_reference_file(out / "train.extxyz", structures[:20])
    write_reference_file(out / "valid.extxyz", structures[20:])
    shutil.copyfile(HERE / "pet_tiny.yaml", out / "options.yaml")
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    mtt = str(Path(sys.executable).parent / "mtt")
    # ``-o tiny.pt``: mtt train writes the exported model there and the checkpoint beside it as tiny.ckpt
    subprocess.run([mtt, "train", "options.yaml", "-o", "tiny.pt"], check=True, env=environment, cwd=out)
    return out / "tiny.ckpt"


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
