"""A tiny MatterSim model of mattersim's own classes, trained on EMT data with mattersim's own trainer and saved in
mattersim's own checkpoint format, so the MatterSim path is tested end to end offline (the public MatterSim-v1 checkpoints
cannot be downloaded on the test machines). Test-only, random-initialised and trained for seconds: it is *not* MatterSim-v1.
Run with the mattersim environment's interpreter:

    python tests/mattersim_tiny.py OUT_DIR     # writes OUT_DIR/tiny-mattersim.pth

Model: mattersim's ``M3Gnet`` with 2 main blocks of 16 units, max_l 3, max_n 3, mattersim's default cutoffs (5 Å two-body,
4 Å three-body) and species embedding (max_z 94); per-element energy shift and force scale from mattersim's ``AtomScaling``
fitted on the training cells (linear regression of energies on composition, as M3GNet does), set with
``set_normalizer`` as mattersim's fine-tuning script does with ``--re_normalize``. Training: mattersim's
``Potential.train_model`` on 20 strained / rattled / substituted Ni/Cu/Al EMT cells (energies, forces, stresses in GPa as
mattersim's loader expects), 12 epochs of batch 8, which writes ``best_model.pth`` with ``Potential.save``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_ARGS = {"num_blocks": 2, "units": 16, "max_l": 3, "max_n": 3, "cutoff": 5.0, "threebody_cutoff": 4.0, "max_z": 94}


def main(out: Path) -> Path:
    sys.path.insert(0, str(HERE))
    import torch
    from ase.units import GPa
    from mace_tiny import emt_training_structures
    from mattersim.datasets.utils.build import build_dataloader
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
    from mattersim.forcefield.m3gnet.scaling import AtomScaling
    from mattersim.forcefield.potential import Potential

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    structures = emt_training_structures(count=20, seed=3)
    energies = [atoms.get_potential_energy() for atoms in structures]
    forces = [atoms.get_forces() for atoms in structures]
    stresses_gpa = [atoms.get_stress(voigt=False) / GPa for atoms in structures]  # mattersim trains on GPa
    loader = build_dataloader(
        structures, energies, forces, stresses_gpa, cutoff=MODEL_ARGS["cutoff"],
        threebody_cutoff=MODEL_ARGS["threebody_cutoff"], batch_size=8, shuffle=True,
    )
    model = M3Gnet(device="cpu", **MODEL_ARGS)
    model.set_normalizer(
        AtomScaling(atoms=structures, total_energy=energies, forces=forces, max_z=MODEL_ARGS["max_z"],
                    shift_key="per_species_energy_mean_linear_reg", scale_key="per_species_forces_rms", device="cpu")
    )
    potential = Potential(model, device="cpu", lr=5e-3)
    run = out / "run"
    potential.train_model(
        loader, None, include_energy=True, include_forces=True, include_stresses=True, epochs=12,
        save_checkpoint=True, save_path=str(run), ckpt_interval=100,
    )
    target = out / "tiny-mattersim.pth"
    tmp = target.with_suffix(".part")
    shutil.copyfile(run / "best_model.pth", tmp)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
