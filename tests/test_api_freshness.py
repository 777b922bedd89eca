"""The API never serves data older than the file: reused connections and cached answers both follow it.

- A write through SQLite (the worker) and a raw rewrite of the file (what `litestream restore -f` does to
  its copy) are both seen by the very next request.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from loadtests.seed_api_db import SYMBOLS, seed
from worker.store import records
from worker.store.writer import RunInfo, StoreWriter

NS = 1_000_000_000


async def test_cached_answers_follow_a_write_through_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    end = (time.time_ns() // NS - 600) * NS
    await seed(path, days=0.02, equity_step_s=5, orders=50, fills_target=80, end_ns=end)
    with TestClient(create_app(Settings(str(path), cache_ttl_s=60))) as client:
        client.get("/api/v1/pnl")  # the first reader may create the -wal file: that is a change too
        first = client.get("/api/v1/pnl")
        again = client.get("/api/v1/pnl")
        assert again.headers.get("x-cache") == "hit" and again.json() == first.json()
        writer = StoreWriter(path, [i for i, _ in SYMBOLS.values()], RunInfo("test", "fresh", "0" * 64))
        await writer.start()
        writer.submit(records.EquitySample(end + 5 * NS, 123_456_789_012, 0, 0, 0, 0, 0))
        await writer.flush(timeout=10)
        await writer.close()
        after = client.get("/api/v1/pnl")
        assert after.headers.get("x-cache") is None
        assert after.json()["equity"] == "1234.56789012"


@pytest.mark.parametrize("fresh", [False, True], ids=["reused-connection", "fresh-connection"])
async def test_a_raw_rewrite_of_the_file_is_seen_by_the_next_request(tmp_path: Path, fresh: bool) -> None:
    a, b, served = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "served.db"
    end = (time.time_ns() // NS - 600) * NS
    await seed(a, days=0.02, equity_step_s=5, orders=50, fills_target=80, end_ns=end, seed_value=1)
    await seed(b, days=0.03, equity_step_s=5, orders=90, fills_target=150, end_ns=end, seed_value=2)
    shutil.copyfile(a, served)
    with TestClient(create_app(Settings(str(served), cache_ttl_s=60, fresh_connections=fresh))) as client:
        client.get("/api/v1/stats")
        before = client.get("/api/v1/stats").json()
        assert client.get("/api/v1/stats").headers.get("x-cache") == "hit"
        with open(served, "r+b") as out:  # in place, same inode: pages overwritten under the reader
            out.write(b.read_bytes())
        after = client.get("/api/v1/stats").json()
        assert before["orders"] == 50 and after["orders"] == 90
        assert client.get("/api/v1/fills", params={"limit": 1}).json()["data"][0]["fill_id"] == after["fills"]
