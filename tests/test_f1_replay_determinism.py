"""A replay's decisions depend on the recording alone: a slow disk (the writer's wall-clock lag) must
not change them. Before, replay ran live's `StorageLagGate`, and a lagging writer denied new positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.test_f1_replay_db import START_NS, _recording
from worker.replay import replay_async
from worker.schedule import read_schedule
from worker.store.writer import StoreWriter

pytestmark = pytest.mark.timeout(60)


def _outputs() -> tuple[list[Any], Any]:
    seen: list[Any] = []

    def observe(_event: Any, outputs: list[Any]) -> None:
        seen.extend(o for o in outputs if type(o).__name__ in ("Fill", "OrderUpdate", "Denied", "Order"))

    return seen, observe


async def test_a_lagging_writer_changes_nothing_in_a_replay(tmp_path: Path, monkeypatch) -> None:
    frames = _recording(tmp_path, "a", seed=3, seconds=60)
    snapshots = tmp_path / "a.snapshots.jsonl"
    start_ms = START_NS // 1_000_000
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "t_ms,side,type,tif,price,qty\n"
        f"{start_ms + 40_000},BUY,MARKET,IOC,,0.01\n{start_ms + 50_000},SELL,MARKET,IOC,,0.01\n"
    )
    schedule = read_schedule(csv)

    plain, observe = _outputs()
    reference = await replay_async(frames, snapshots, schedule=schedule, observers=[observe])
    assert reference.stats.frames > 1024  # past the point where the replay lets the writer run

    # a disk so slow that every record looks minutes old: live would stop opening positions
    monkeypatch.setattr(StoreWriter, "lag_seconds", lambda self: 600.0)
    monkeypatch.setattr(StoreWriter, "is_lagging", property(lambda self: True))
    slow, observe = _outputs()
    outcome = await replay_async(
        frames, snapshots, schedule=schedule, db_path=tmp_path / "r.db", observers=[observe]
    )
    assert outcome.store is not None and outcome.store["rows_written"] > 0
    fills = [o for o in slow if type(o).__name__ == "Fill"]
    assert fills, "the scripted orders traded"
    assert slow == plain
    summary = outcome.engine.trader.summary()
    assert summary == reference.engine.trader.summary()
