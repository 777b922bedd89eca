"""Keyset cursors stay exact while the worker keeps writing: no row repeated, none skipped."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx

from api.app import create_app
from api.settings import Settings
from loadtests.seed_api_db import SYMBOLS, seed
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, fill, new_order
from worker.store import records
from worker.store.writer import RunInfo, StoreWriter

NS = 1_000_000_000


async def test_pages_are_stable_while_fills_are_inserted(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    end_ns = (time.time_ns() // NS - 3600) * NS
    summary = await seed(path, days=0.05, equity_step_s=10, orders=300, fills_target=500, end_ns=end_ns)
    conn = sqlite3.connect(path)
    before = [r[0] for r in conn.execute("SELECT fill_id FROM fills ORDER BY ts_ns DESC, fill_id DESC")]
    newest_ts = conn.execute("SELECT max(ts_ns) FROM fills").fetchone()[0]
    conn.close()
    assert len(before) > 300

    writer = StoreWriter(
        path, [inst for inst, _ in SYMBOLS.values()], RunInfo("test", "cursor-test", "0" * 64)
    )
    await writer.start()
    app = create_app(Settings(str(path)))
    next_order = summary.orders + 1000
    next_fill = summary.fills + 1000
    seen: list[int] = []
    inserted = 0
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            params: dict[str, str | int] = {"limit": 37}
            while True:
                response = await client.get("/api/v1/fills", params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                seen += [f["fill_id"] for f in body["data"]]
                # The worker writes between pages: new fills, newer than anything paged so far, and one
                # that ties the newest timestamp already served.
                for k in range(5):
                    ts = newest_ts + (0 if k == 0 else k * 1_000_000)
                    order = new_order(
                        next_order, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 5, 6_000_000, ts
                    )
                    f = Fill(
                        next_fill,
                        next_order,
                        "BTCUSDT",
                        Side.BUY,
                        6_000_000,
                        5,
                        1,
                        "USDT",
                        Liquidity.TAKER,
                        ts,
                        "test/1",
                        0,
                        0,
                        6e6,
                        6e6,
                        0.0,
                    )
                    writer.submit_many(
                        [records.OrderUpdate(order, ts), f, records.OrderUpdate(fill(order, 5), ts)]
                    )
                    next_order += 1
                    next_fill += 1
                    inserted += 1
                await writer.flush(timeout=10)
                if not body["next"]:
                    break
                params = {"limit": 37, "cursor": body["next"]}
    finally:
        await writer.close()
    assert inserted >= 40
    assert len(seen) == len(set(seen)), "a row was served twice"
    assert seen == before, "pages skipped or reordered rows that existed when paging started"
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == len(before) + inserted
    conn.close()
