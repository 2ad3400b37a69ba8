"""Client pieces without Ray: run config codec, site resolution, the site state store."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from flwr.app import Context, RecordDict

from mpdrm.contract.runconfig import build, flatten, merged
from client.site import resolve_site
from mpdrm.contract.sites import stable_site_id
from client.state import PREV_FILE, STATE_FILE, SiteStateStore, capture_rng


def _context(node_config: dict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config=node_config or {}, state=RecordDict(), run_config={})


@dataclasses.dataclass
class _Target:
    lr: float = 0.1
    widths: tuple[int, ...] = (1,)
    cap: int | None = 3


def test_flatten_and_build_roundtrip() -> None:
    flat = flatten({"train": {"lr": 1, "widths": [4, 8], "cap": None, "unknown": "x"}})
    assert flat == {"train.lr": 1, "train.widths": "[4, 8]", "train.cap": "", "train.unknown": "x"}
    target = build(_Target, flat, "train")
    assert target == _Target(lr=1.0, widths=(4, 8), cap=None)
    assert isinstance(target.lr, float)
    assert merged({"seed": 5}, {"seed": 6})["seed"] == 6


def _site(root: Path, name: str) -> Path:
    site = root / name
    site.mkdir(parents=True)
    (site / "manifest.csv").write_text("video,subject,visit,score\n")
    return site


def test_resolve_site_simulation_and_deployment(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    for name in ("site-02", "site-01", "site-03"):
        _site(cohort, name)
    run_cfg = {"cohort": str(cohort), "state-root": str(tmp_path / "state")}
    site = resolve_site({"partition-id": 1, "num-partitions": 3}, run_cfg)
    assert (site.name, site.site_id) == ("site-02", 1)
    assert site.state_dir == (tmp_path / "state" / "site-02").resolve()
    with pytest.raises(ValueError, match="partition-id 3"):
        resolve_site({"partition-id": 3}, run_cfg)

    data = _site(tmp_path, "hospital-a")
    dep = resolve_site({"data-path": str(data), "state-dir": str(tmp_path / "s")}, {})
    assert dep.site_id == stable_site_id("hospital-a") and dep.data_dir == data.resolve()
    assert resolve_site({"data-path": str(data), "site-id": 12}, {}).site_id == 12
    with pytest.raises(FileNotFoundError, match="manifest.csv"):
        resolve_site({"data-path": str(tmp_path)}, {})


def _state(round_: int, value: float) -> dict:
    return {"round": round_, "local": {"personality.w": torch.full((2,), value)}, "optimizer": None,
            "rng": capture_rng(), "dp": None}


def test_state_store_memory_disk_and_previous_round(tmp_path: Path) -> None:
    ctx = _context()
    store = SiteStateStore(tmp_path, ctx)
    assert store.load(1) is None
    store.save(_state(1, 1.0))
    store.save(_state(2, 2.0))
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / PREV_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    # same process: round 3 continues from round 2
    assert torch.equal(store.load(3)["local"]["personality.w"], torch.full((2,), 2.0))
    # a restarted site (empty context.state) finds the same state on disk
    fresh = SiteStateStore(tmp_path, _context())
    assert torch.equal(fresh.load(3)["local"]["personality.w"], torch.full((2,), 2.0))
    # a server resumed after round 1 gets the site's round-1 state back
    assert fresh.load(2)["round"] == 1
