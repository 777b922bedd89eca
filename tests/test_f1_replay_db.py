"""Replay refuses a `--db` holding another run (issue 6): replay ids restart at 1 and the writer skips
ids already in the file, so mixing runs silently dropped this replay's orders and fills. Only a re-run
of the same replay (same recording, same config digest: the crash case) may continue into the file."""

from __future__ import annotations

import argparse
import random
import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.fakes.binance import FakeSymbol
from worker import replay as replay_cli
from worker.binance.recording import FrameWriter, SnapshotWriter
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS

pytestmark = pytest.mark.timeout(60)
START_NS = 1_723_161_600_037_000_000  # a Thursday: no Shabbat pause
SCHEDULE = "t_ms,side,type,tif,price,qty\n{t1},BUY,MARKET,IOC,,0.01\n{t2},SELL,MARKET,IOC,,0.01\n"


def _recording(directory: Path, name: str, seed: int, seconds: int = 6) -> Path:
    book = FakeSymbol(
        Market.SPOT, "BTCUSDT", DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")], random.Random(seed)
    )
    frames = directory / f"{name}.ws.jsonl.gz"
    with FrameWriter(frames) as fw, SnapshotWriter(directory / f"{name}.snapshots.jsonl") as sw:
        for i in range(seconds * 10):
            t = START_NS + i * 100_000_000
            depth, trade = book.step(t // 1_000_000)
            fw.write(t, orjson.dumps({"stream": "btcusdt@depth@100ms", "data": depth}))
            fw.write(t + 1, orjson.dumps({"stream": "btcusdt@trade", "data": trade}))
            if i == 2:
                sw.write(t + 2, "BTCUSDT", Market.SPOT, orjson.dumps(book.snapshot(1000, t // 1_000_000)))
    return frames


def _run(frames: Path, db: Path, schedule: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    replay_cli.add_arguments(parser)
    args = parser.parse_args(
        [str(frames), "--db", str(db), "--orders", str(schedule), "--no-progress", *extra]
    )
    return replay_cli.main(args)


def _counts(db: Path) -> tuple[int, int, list[tuple[int, str]]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        orders = conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        fills = conn.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
        runs = conn.execute("SELECT run_id, mode FROM runs ORDER BY run_id").fetchall()
    finally:
        conn.close()
    return orders, fills, runs


@pytest.fixture
def schedule(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    start_ms = START_NS // 1_000_000
    path.write_text(SCHEDULE.format(t1=start_ms + 1500, t2=start_ms + 3500))
    return path


def test_a_rerun_of_the_same_replay_continues_into_its_db(tmp_path: Path, schedule: Path) -> None:
    frames = _recording(tmp_path, "a", seed=3)
    db = tmp_path / "r.db"
    assert _run(frames, db, schedule) == 0
    orders, fills, runs = _counts(db)
    assert orders == 2 and fills >= 2 and runs == [(1, "replay")]
    # the crash re-run case: same recording, same configuration -> continues; nothing is written twice
    assert _run(frames, db, schedule) == 0
    assert _counts(db) == (orders, fills, [(1, "replay"), (2, "replay")])


@pytest.mark.parametrize("other", ["live", "another_recording", "another_config", "another_schedule"])
def test_a_db_holding_another_run_is_refused(
    tmp_path: Path, schedule: Path, other: str, caplog: pytest.LogCaptureFixture
) -> None:
    frames = _recording(tmp_path, "a", seed=3)
    db = tmp_path / "r.db"
    assert _run(frames, db, schedule) == 0
    before = _counts(db)
    extra: list[str] = []
    if other == "live":  # the file holds a live run's orders: pretend run 1 was live
        conn = sqlite3.connect(db)
        conn.execute("UPDATE runs SET mode = 'live' WHERE run_id = 1")
        conn.commit()
        conn.close()
        before = _counts(db)
    elif other == "another_recording":
        frames = _recording(tmp_path, "b", seed=4)
    elif other == "another_config":
        extra = ["--set", "trading.starting_cash=5000"]
    else:
        schedule.write_text(schedule.read_text().replace(",0.01\n", ",0.02\n"))
    caplog.clear()
    assert _run(frames, db, schedule, *extra) == 2
    assert _counts(db) == before, "a refused replay writes nothing"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "already holds run 1" in message and "replay into a fresh --db PATH" in message
    reason = {
        "live": "run 1 (live)",
        "another_recording": "run 1 (a replay of a.ws.jsonl.gz)",
        "another_config": "with another configuration",
        "another_schedule": "other snapshots or scripted orders",
    }[other]
    assert reason in message, message


async def test_the_check_runs_inside_replay_async(tmp_path: Path, schedule: Path) -> None:
    from worker.replay import ReplayTargetError, replay_async
    from worker.schedule import read_schedule

    frames = _recording(tmp_path, "a", seed=3)
    db = tmp_path / "r.db"
    orders = read_schedule(schedule)
    await replay_async(frames, tmp_path / "a.snapshots.jsonl", db_path=db, schedule=orders)
    other = _recording(tmp_path, "b", seed=4)
    with pytest.raises(ReplayTargetError, match=r"run 1 \(a replay of a.ws.jsonl.gz\)"):
        await replay_async(other, tmp_path / "b.snapshots.jsonl", db_path=db, schedule=orders)
