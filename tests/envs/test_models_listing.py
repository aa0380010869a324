"""``atomtune models`` lists every environment family's checkpoints with an honest status."""

from __future__ import annotations

from atomtune.cli.models import environment_family_rows
from atomtune.envs.specs import SPECS


def test_every_family_is_listed_and_nothing_unbuilt_claims_to_be_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("ATOMTUNE_ENV_DIR", str(tmp_path))
    rows = environment_family_rows()
    assert {row["backbone"] for row in rows} == set(SPECS)
    for row in rows:
        assert not row["usable"]
        assert "offline" not in row["status"]
        assert f"atomtune env build {row['backbone']}" in row["status"]
    uma = next(row for row in rows if row["name"] == "uma-s-1p1")
    assert "gated" in uma["status"] and "HF_TOKEN" in uma["status"]
