"""The live worker's start against the venue's prices, its config_unusable stop, and the USD-M funding
backfill on restart — all against the loopback Binance stand-in.

- Limits no order can meet at the venue's price (`ticker_prices` -> `check_limits_at_prices`): exit 2
  naming the key, before any stream.
- The core's `Incident("config_unusable")` at the first live book (the price moved since start) stops
  the worker with exit 2.
- A USD-M restart settles the funding Binance applied while the worker was down, once.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.binance import FakeBinance
from tests.test_app_wiring import WorkerProcess, worker_env
from worker import app, config, shell
from worker.binance.rest import BinanceRest
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, new_order
from worker.orders import fill as fill_order
from worker.store.db import connect_readonly
from worker.store.records import OrderUpdate

NS = 1_000_000_000
HOUR_MS = 3_600_000


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="qfs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_limits_impossible_at_the_venue_price_exit_2_before_any_stream(short_dir: Path) -> None:
    # 0.00001 BTC at ~60,000 USDT is 0.6 USDT: below the 5 USDT min notional, whatever the side.
    async with FakeBinance() as fake:
        args = ["--db", str(short_dir / "x.db"), "--set", "risk.max_order_qty=0.00001"]
        worker = await WorkerProcess(args, worker_env(fake), short_dir).start()
        rc = await worker.exited()
        assert fake.ticker_requests >= 1 and fake.depth_requests == 0
    assert rc == 2, "\n".join(worker.raw)
    errors = [r["message"] for r in worker.lines if r.get("level") == "error"]
    assert len(errors) == 1 and "risk.BTCUSDT.max_order_qty" in errors[0] and "60000" in errors[0], errors


async def test_config_unusable_at_the_first_live_book_stops_the_worker_with_exit_2(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = BinanceRest.ticker_prices

    async def ten_times(self: BinanceRest, symbols: list[str]) -> dict[str, Decimal]:
        return {s: p * 10 for s, p in (await real(self, symbols)).items()}  # the price fell 90 % since

    monkeypatch.setattr(BinanceRest, "ticker_prices", ten_times)
    async with FakeBinance() as fake:
        # 0.00005 BTC: 30 USDT at the start price, 3 USDT (< 5 min notional) at the book's.
        cfg = config.load(
            None,
            env=worker_env(fake, QF_DB=str(short_dir / "u.db"), QF_HEALTH_PORT="0"),
            sets=["risk.max_order_qty=0.00005"],
        )
        rc = await asyncio.wait_for(app.serve(cfg), 30)
    assert rc == 2
    conn = connect_readonly(short_dir / "u.db")
    try:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM system_events ORDER BY event_id")]
        reason = conn.execute("SELECT stop_reason FROM runs").fetchone()[0]
    finally:
        conn.close()
    assert "config_unusable" in kinds and reason == "config_unusable"


async def _position(db: Path, cfg: config.WorkerConfig, ts_ns: int) -> None:
    """A previous live run that bought 0.010 BTC perpetual at 60,000 and stopped at `ts_ns`."""
    inst = DEFAULT_INSTRUMENTS[(Market.USDM, "BTCUSDT")]
    writer, _ = await shell.open_store(cfg, {(Market.USDM, "BTCUSDT"): inst}, "live", db)
    order = new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10, 600_000, ts_ns)
    writer.submit(order)
    writer.submit(OrderUpdate(fill_order(order, 10), ts_ns, "fill"))
    writer.submit(
        Fill(1, 1, "BTCUSDT", Side.BUY, 600_000, 10, 0, "USDT", Liquidity.TAKER, ts_ns, "test", 0, 0.0,
             600_000.0, 600_000.0, 0.0)
    )  # fmt: skip
    await writer.close("stop")


async def test_usdm_restart_settles_the_funding_applied_while_down_once(short_dir: Path) -> None:
    db = short_dir / "usdm.db"
    now_ms = time.time_ns() // 1_000_000
    down_ms = now_ms - 20 * HOUR_MS  # the previous run's last event
    async with FakeBinance(symbols=((Market.USDM, "BTCUSDT"),)) as fake:
        env = worker_env(fake, QF_DB=str(db), QF_HEALTH_PORT="0", QF_MARKET="usdm")
        cfg = config.load(None, env=env)
        await _position(db, cfg, down_ms * 1_000_000)
        fake.set_funding_history(
            "BTCUSDT",
            [
                (down_ms - HOUR_MS, "0.00010000", "59000.0"),  # before the stop: not ours to settle
                (down_ms + HOUR_MS, "0.00010000", "61000.0"),
                (down_ms + 9 * HOUR_MS, "-0.00020000", "62000.0"),
            ],
        )
        for _ in range(2):  # the second start finds both already settled
            worker = app.Worker(cfg)
            try:
                await worker.start()
            finally:
                await worker.close("test")
        assert fake.funding_requests and all(int(r["startTime"]) >= down_ms for r in fake.funding_requests), (
            fake.funding_requests
        )
    conn = connect_readonly(db)
    try:
        rows = conn.execute(
            "SELECT funding_ns, rate_e8, mark_price, position_qty, amount FROM funding_payments "
            "ORDER BY funding_ns"
        ).fetchall()
    finally:
        conn.close()
    # 0.010 BTC long: pays 0.01 % of 0.010 x 61,000 = 0.061 USDT, receives 0.02 % of 620 = 0.124 USDT.
    assert rows == [
        ((down_ms + HOUR_MS) * 1_000_000, 10_000, 610_000, 10, -6_100_000),
        ((down_ms + 9 * HOUR_MS) * 1_000_000, -20_000, 620_000, 10, 12_400_000),
    ]


async def test_funding_a_disconnect_swallowed_is_settled_from_the_rest_history(short_dir: Path) -> None:
    from tests.test_app_wiring import eventually
    from worker.trader import Incident

    db = short_dir / "gap.db"
    async with FakeBinance(symbols=((Market.USDM, "BTCUSDT"),)) as fake:
        env = worker_env(fake, QF_DB=str(db), QF_HEALTH_PORT="0", QF_MARKET="usdm")
        cfg = config.load(None, env=env)
        await _position(db, cfg, time.time_ns() - 60 * NS)
        worker = app.Worker(cfg)
        worker.funding_retry_s, worker.funding_retries = 0.05, 1000
        try:
            await worker.start()
            due_ms = time.time_ns() // 1_000_000
            detail = f"BTCUSDT funding at {due_ms * 1_000_000} ns: the last mark update was 900 s before it"
            before = len(fake.funding_requests)
            due = due_ms * 1_000_000
            worker.funding_unsettled(Incident(due, "funding_unsettled", detail, at_ns=due))
            # Binance has not published it yet: the worker asks again until the history shows it.
            await eventually(lambda: len(fake.funding_requests) > before, "the history was asked")
            fake.set_funding_history("BTCUSDT", [(due_ms, "0.00010000", "61000.0")])
            await asyncio.wait_for(worker._funding_task, 10)
            assert len(fake.funding_requests) >= before + 2
            payments = worker.engine.trader.portfolio.funding
        finally:
            await worker.close("test")
    assert payments == -6_100_000  # 0.01 % of 0.010 BTC x 61,000 paid by the long
    conn = connect_readonly(db)
    try:
        rows = conn.execute("SELECT funding_ns, amount FROM funding_payments").fetchall()
    finally:
        conn.close()
    assert rows == [(due_ms * 1_000_000, -6_100_000)]
