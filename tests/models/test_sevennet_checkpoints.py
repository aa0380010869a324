"""SevenNet checkpoints on disk: a public checkpoint sevenn has downloaded (to ~/.cache/sevennet) counts as offline in
`atomtune models`, as the ones in the wheel do; one not on disk says it downloads on first use. No network."""

from pathlib import Path

import pytest

pytest.importorskip("sevenn")


def test_downloaded_checkpoint_is_offline_and_missing_one_downloads(tmp_path, monkeypatch):
    import sevenn._const

    from atomtune.models.registry import available_models
    from atomtune.models.sevennet import SevennetPotential
    from atomtune.models.sevennet_mf import SevennetMultiFidelityPotential

    monkeypatch.setenv("HOME", str(tmp_path))
    rows = {row["name"]: row["status"] for row in available_models()}
    assert rows["sevennet-0"] == rows["sevennet-mf-0"] == "offline"  # in the wheel
    assert rows["sevennet-omat"] == "download on first use"
    assert not SevennetPotential.checkpoint_available("7net-omat")

    relative = Path(sevenn._const.SEVENNET_omat).relative_to(sevenn._const._prefix)
    downloaded = tmp_path / ".cache" / "sevennet" / relative  # where sevenn puts what it downloads
    downloaded.parent.mkdir(parents=True)
    downloaded.write_bytes(b"weights")
    assert SevennetPotential.checkpoint_available("7net-omat")
    assert SevennetMultiFidelityPotential.checkpoint_available("7net-mf-0:R2SCAN")
    assert {row["name"]: row["status"] for row in available_models()}["sevennet-omat"] == "offline"
