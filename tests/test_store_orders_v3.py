"""Schema v3: stop orders, reduce-only and one-cancels-the-other lists survive a restart; a damaged open
order row is reported at start, never a crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from worker import config, shell
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import OrderType, Side, TimeInForce, new_order
from worker.store.db import connect_readonly

BTC = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
TRADED = {(Market.SPOT, "BTCUSDT"): BTC}
T0 = 1_723_161_600_000_000_000


async def _write_protective_exits(db_path: Path) -> None:
    cfg = config.load(None, env={})
    writer, _ = await shell.open_store(cfg, TRADED, "test", db_path)
    stop = new_order(
        5, "BTCUSDT", Side.SELL, OrderType.STOP_MARKET, TimeInForce.GTC, 300, None, T0, "protect:stop",
        stop_price=5_940_000, reduce_only=True, oco=5,
    )  # fmt: skip
    take = new_order(
        6, "BTCUSDT", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 300, 6_120_000, T0, "protect:take",
        reduce_only=True, oco=5,
    )  # fmt: skip
    writer.submit(stop)
    writer.submit(take)
    await writer.close("crash")


async def test_stop_orders_and_their_oco_list_are_stored_and_come_back_on_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "v3.db"
    await _write_protective_exits(db_path)
    conn = connect_readonly(db_path)
    try:
        sql = "SELECT order_id, type, price, stop_price, reduce_only, oco FROM orders"
        rows = conn.execute(sql).fetchall()
    finally:
        conn.close()
    assert sorted(rows) == [(5, "STOP_MARKET", None, 5_940_000, 1, 5), (6, "LIMIT", 6_120_000, None, 1, 5)]
    cfg = config.load(None, env={})
    writer, state = await shell.open_store(cfg, TRADED, "test", db_path)
    await writer.close("stop")
    assert state.damaged_orders == []
    by_id = {o.order_id: o for o in state.open_orders}
    assert (by_id[5].type, by_id[5].stop_price, by_id[5].reduce_only, by_id[5].oco) == (
        OrderType.STOP_MARKET, 5_940_000, True, 5
    )  # fmt: skip
    assert (by_id[6].price, by_id[6].reduce_only, by_id[6].oco) == (6_120_000, True, 5)


async def test_a_damaged_open_order_row_is_reported_not_a_crash(tmp_path: Path) -> None:
    db_path = tmp_path / "damaged.db"
    await _write_protective_exits(db_path)
    raw = sqlite3.connect(db_path)
    raw.execute("UPDATE orders SET stop_price = NULL WHERE order_id = 5")  # a stop order with no trigger
    raw.commit()
    raw.close()
    cfg = config.load(None, env={})
    writer, state = await shell.open_store(cfg, TRADED, "test", db_path)
    await writer.close("stop")
    assert [o.order_id for o in state.open_orders] == [6]
    assert len(state.damaged_orders) == 1 and state.damaged_orders[0].startswith("order 5:")
    conn = connect_readonly(db_path)
    try:
        sql = "SELECT kind, severity FROM system_events WHERE kind = 'damaged_order'"
        events = conn.execute(sql).fetchall()
    finally:
        conn.close()
    assert events == [("damaged_order", "error")]
