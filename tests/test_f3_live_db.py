"""`python -m worker run` refuses a database holding replay runs (their fills would become live positions)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.fakes.binance import FakeBinance
from tests.test_app_wiring import WorkerProcess, synthetic_recording, worker_env
from worker import config, shell
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.replay import replay_async
from worker.store.db import MixedRunsError, connect_readonly


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="qfl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_live_run_refuses_a_database_holding_replay_runs(short_dir: Path) -> None:
    frames = synthetic_recording(short_dir, seconds=5)
    snapshots = short_dir / "spot_btcusdt_test.snapshots.jsonl"
    db_path = short_dir / "quantumflow.db"
    await replay_async(frames, snapshots, config=config.load(None, env={}), db_path=db_path)
    with pytest.raises(MixedRunsError, match="replay run"):
        shell.preflight(db_path)
    async with FakeBinance() as fake:
        worker = await WorkerProcess(["--db", str(db_path)], worker_env(fake), short_dir).start()
        rc = await worker.exited()
    assert rc == 2, "\n".join(worker.raw)
    errors = [r["message"] for r in worker.lines if r.get("level") == "error"]
    assert len(errors) == 1 and "1 replay run(s)" in errors[0] and "--db" in errors[0], errors
    assert fake.depth_requests == 0  # refused before any network
    conn = connect_readonly(db_path)
    try:
        assert conn.execute("SELECT mode FROM runs").fetchall() == [("replay",)]  # no live run recorded
    finally:
        conn.close()


async def test_a_fresh_or_live_only_database_passes_the_check(short_dir: Path) -> None:
    db_path = short_dir / "live.db"
    shell.preflight(db_path)  # fresh
    traded = {(Market.SPOT, "BTCUSDT"): DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]}
    cfg = config.load(None, env={})
    writer, _ = await shell.open_store(cfg, traded, "live", db_path)
    await writer.close("stop")
    shell.preflight(db_path)  # a previous live run is fine
