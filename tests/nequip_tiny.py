"""A tiny NequIP trained on EMT data with nequip's own trainer and packaged with nequip's own tool, so the NequIP path is
tested end to end offline (no nequip.net download). Test-only: run with the nequip environment's interpreter.

    python tests/nequip_tiny.py OUT_DIR [CONFIG]   # writes OUT_DIR/tiny.nequip.zip (and data.extxyz, the training data)

Config: ``tests/nequip_tiny.yaml`` (NequIPGNNModel, Ni/Cu/Al, l_max 1, 2 layers, 8 features, r_max 4.5 Å, float64; 2
epochs of Adam on 20 strained / rattled / substituted EMT cells). ``nequip-train`` then ``nequip-package build``.
``CONFIG`` names another config next to this file: ``allegro_tiny.yaml`` (allegro's AllegroModel, same data and trainer).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(out: Path, config: str = "nequip_tiny.yaml") -> Path:
    sys.path.insert(0, str(HERE))
    from ase.io import write
    from mace_tiny import emt_training_structures

    out.mkdir(parents=True, exist_ok=True)
    data = out / "data.extxyz"
    structures = emt_training_structures(count=20, seed=3)
    for atoms in structures:
        atoms.info.pop("config_type", None)
    write(data, structures)
    environment = dict(os.environ, NEQUIP_TINY_DATA=str(data), OMP_NUM_THREADS="1")
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "nequip-train"), "-cp", str(HERE), "-cn", config, f"hydra.run.dir={out / 'run'}"],
        check=True, env=environment, cwd=out,
    )
    package = out / "tiny.nequip.zip"
    subprocess.run(
        [str(bin_dir / "nequip-package"), "build", str(out / "run" / "last.ckpt"), str(package)],
        check=True, env=environment, cwd=out,
    )
    return package


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), *sys.argv[2:3]))
