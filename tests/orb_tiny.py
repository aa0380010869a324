"""A small ORB v3 conservative model trained on EMT data with orb-models' own pieces, so the ORB path is tested end to end
offline (no download from ORB's bucket). Test-only: run with the orb environment's interpreter.

    python tests/orb_tiny.py OUT_DIR     # writes OUT_DIR/tiny.ckpt (ORB's checkpoint format: a plain state dict)
                                         # and OUT_DIR/tiny-architecture.json (what the checkpoint's architecture is)

Model: ``orb_v3_conservative_architecture`` (ORB's own builder: attention GNS, Bessel x spherical-harmonics edge features,
energy + confidence heads, ZBL pair repulsion) shrunk to latent 32, MLP 64 x 2, 2 message-passing layers, with ORB's
v3 system config (6 Å, up to 120 neighbours). Training: ORB's own data path and loss as its ``finetune.py`` runs them —
an ASE sqlite database read by ``AseSqliteDataset``, ``base.batch_graphs``, ``utils.get_optim`` (Adam + one-cycle) and
``model.loss`` (energy, conservative forces and stress, confidence) — for a few epochs on 20 strained / rattled /
substituted Ni/Cu/Al EMT cells; saved with ``torch.save(model.state_dict())`` as ``finetune.py`` saves its checkpoints.
In the first epochs ORB's confidence loss can be NaN for a batch (every atom's force error above its largest bin, so its
cross-entropy has no target left); that is ORB's own loss on an untrained model, and the weights stay finite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Arguments of orb_models.forcefield.pretrained.orb_v3_conservative_architecture (the JSON atomtune reads).
ARCHITECTURE = {
    "builder": "orb_v3_conservative_architecture",
    "arguments": {
        "latent_dim": 32,
        "base_mlp_hidden_dim": 64,
        "base_mlp_depth": 2,
        "head_mlp_hidden_dim": 32,
        "head_mlp_depth": 1,
        "num_message_passing_steps": 2,
        "activation": "silu",
    },
    "system_config": {"radius": 6.0, "max_num_neighbors": 120},
    "elements": ["Al", "Ni", "Cu"],
}


def main(out: Path, epochs: int = 6, batch_size: int = 4, seed: int = 0) -> Path:
    sys.path.insert(0, str(HERE))
    import ase.db
    import torch
    from mace_tiny import emt_training_structures
    from orb_models import utils
    from orb_models.dataset.ase_sqlite_dataset import AseSqliteDataset
    from orb_models.forcefield import base, pretrained, property_definitions
    from orb_models.forcefield.atomic_system import SystemConfig

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    database = out / "data.db"
    database.unlink(missing_ok=True)
    with ase.db.connect(str(database)) as connection:
        for atoms in emt_training_structures(count=20, seed=3):
            connection.write(atoms)

    system_config = SystemConfig(**ARCHITECTURE["system_config"])
    model = pretrained.orb_v3_conservative_architecture(
        **ARCHITECTURE["arguments"], device="cpu", system_config=system_config
    )
    dataset = AseSqliteDataset(
        "emt", database, system_config=system_config,
        target_config=property_definitions.instantiate_property_config(
            {"graph": ["energy", "stress"], "node": ["forces"]}
        ),
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=base.batch_graphs)
    optimizer, scheduler = utils.get_optim(1e-3, epochs * len(loader), model)
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss)
        print(f"epoch {epoch}: loss {total / len(loader):.4f}")
    checkpoint = out / "tiny.ckpt"
    torch.save(model.state_dict(), checkpoint)
    (out / "tiny-architecture.json").write_text(json.dumps(ARCHITECTURE, indent=2))
    return checkpoint


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
