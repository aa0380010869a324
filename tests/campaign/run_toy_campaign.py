"""Run a campaign file with the toy potential registered (as a subprocess that tests can SIGKILL)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from atomtune.campaign.config import load_campaign  # noqa: E402
from atomtune.campaign.runner import run_campaign  # noqa: E402
from atomtune.models import registry  # noqa: E402

registry.BACKBONES["toy"] = "toy_potential:ToyPotential"
registry.CHECKPOINTS.append(registry.CheckpointInfo("toy-1", "toy", "toy", True, "toy"))

if __name__ == "__main__":
    campaign_file, workdir = sys.argv[1:3]
    run_campaign(load_campaign(campaign_file), Path(workdir), progress=False)
