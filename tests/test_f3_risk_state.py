"""The risk engine's state survives restarts: peak since the last reset, day anchor, order-count windows.

Each "run" is what `python -m worker run` does with the store: `shell.open_store`, `shell.restore`, the
engine's outputs through `StoreSink` and `RiskStateSink`, `writer.close`. Marks go through the wiring the
trader uses on every book change (`portfolio.mark` then `risk.update`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from worker import config, shell
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS, MONEY_SCALE
from worker.orders import Fill, Liquidity, Side
from worker.risk import BreakerChanged, RiskConfig
from worker.store import risk_cli
from worker.store.adapt import StoreSink
from worker.store.db import connect_readonly
from worker.store.records import EquitySample
from worker.store.recovery import load_state

BTC = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
TRADED = {(Market.SPOT, "BTCUSDT"): BTC}
NS = 1_000_000_000
T0 = 1_723_204_800_000_000_000  # 2024-08-09 12:00 UTC (mid-day)


def cfg_with(risk: RiskConfig) -> config.WorkerConfig:
    return dataclasses.replace(config.load(None, env={}), risk=risk, calendar=None)


class Run:
    """One worker lifetime against the file."""

    def __init__(self, cfg: config.WorkerConfig, db: Path) -> None:
        self.cfg, self.db = cfg, db
        self.outputs: list[Any] = []

    async def __aenter__(self) -> Run:
        self.writer, self.state = await shell.open_store(self.cfg, TRADED, "live", self.db)
        self.engine = shell.make_engine(self.cfg, TRADED)
        self.risk = self.engine.trader.risk
        self.sinks = [StoreSink(self.writer), shell.RiskStateSink(self.engine, self.writer.submit)]
        shell.restore(self.engine, self.state, T0, self.emit, self.db)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sinks[1].save()
        await self.writer.close("stop")

    def emit(self, outputs: list[Any]) -> None:
        self.outputs.extend(outputs)
        for sink in self.sinks:
            sink(None, outputs)

    def fill(self, fill_id: int, price: int, qty: int, ts: int) -> None:
        f = Fill(
            fill_id, fill_id, "BTCUSDT", Side.BUY, price, qty, 0, "USDT", Liquidity.TAKER, ts, "test", 0, 0.0,
            float(price), float(price), 0.0,
        )  # fmt: skip
        self.engine.trader.portfolio.apply_fill(f)
        self.emit([f])

    def mark(self, bid: int, ts: int) -> None:
        """A book change at `bid` (ask one tick above), then the 1 s equity sample the trader emits."""
        portfolio = self.engine.trader.portfolio
        portfolio.mark("BTCUSDT", bid, bid + 1)
        self.risk.update(portfolio, ts)
        self.emit(self.risk.drain())
        eq = portfolio.equity
        self.emit([EquitySample(ts, eq, portfolio.cash, 0, 0, 0, 0)])

    def trips(self) -> list[str]:
        return [o.breaker for o in self.outputs if type(o) is BreakerChanged and o.tripped]


async def test_operator_reset_then_restart_does_not_retrip_the_drawdown_breaker(tmp_path: Path) -> None:
    cfg = cfg_with(RiskConfig(drawdown_reduce_bps=300, drawdown_halt_bps=500))
    db = tmp_path / "reset.db"
    async with Run(cfg, db) as run:  # buy 0.1 BTC at 60,000: equity 10,000 USDT, then a 6 % drawdown
        run.fill(1, 6_000_000, 10_000, T0)
        run.mark(6_000_000, T0 + NS)
        run.mark(5_400_000, T0 + 2 * NS)
        assert run.risk.state.value == "HALTED" and run.trips() == ["drawdown"]
    risk_cli.reset(str(db), "loss acknowledged", "ops")  # the worker is down
    async with Run(cfg, db) as run:  # restart: still HALTED; the worker applies the reset at 9,400
        assert run.risk.state.value == "HALTED"
        run.mark(5_400_000, T0 + 10 * NS)
        (action,) = run.state.pending_actions
        run.emit(shell.apply_operator_action(run.engine, action, T0 + 11 * NS) or [])
        assert run.risk.state.value == "ACTIVE" and run.risk.peak == 9_400 * MONEY_SCALE
    conn = connect_readonly(db)
    try:  # the all-time high of the equity bars is still 10,000: the old restore anchored there
        assert conn.execute("SELECT max(high) FROM equity_bars").fetchone()[0] == 10_000 * MONEY_SCALE
        assert load_state(conn).risk_state["peak"] == 9_400 * MONEY_SCALE
    finally:
        conn.close()
    async with Run(cfg, db) as run:  # restart again at the same price: the reset holds
        run.mark(5_400_000, T0 + 20 * NS)
        run.mark(5_380_000, T0 + 21 * NS)  # a further 0.2 %: below the 3 % reduce level
        assert run.risk.state.value == "ACTIVE", run.trips()
        assert run.trips() == [] and run.risk.peak == 9_400 * MONEY_SCALE


async def test_mid_day_restart_keeps_the_days_loss_and_the_order_count_windows(tmp_path: Path) -> None:
    limits = RiskConfig(drawdown_reduce_bps=None, drawdown_halt_bps=None, daily_loss_limit=Decimal(300))
    cfg = cfg_with(limits)
    db = tmp_path / "daily.db"
    async with Run(cfg, db) as run:
        run.fill(1, 6_000_000, 10_000, T0)
        run.mark(6_000_000, T0 + NS)  # the day's first update: opening equity 10,000
        run.risk.win_day.take(T0 + NS)  # two orders counted in Binance's daily window
        run.risk.win_day.take(T0 + NS)
        run.mark(5_800_000, T0 + 2 * NS)  # -200 USDT: below the 300 limit
        assert run.risk.state.value == "ACTIVE"
    async with Run(cfg, db) as run:  # an hour later, same UTC day
        ts = T0 + 3600 * NS
        assert run.risk.day_open_equity == 10_000 * MONEY_SCALE
        assert run.risk.win_day.count == 2 and run.risk.win_day.window == (T0 + NS) // (86_400 * NS)
        run.mark(5_700_000, ts)  # -300 USDT since the day opened: the limit counts the pre-restart loss
        assert run.risk.state.value == "HALTED" and run.trips() == ["daily_loss"]


async def test_a_file_without_risk_state_falls_back_to_the_breaker_rows(tmp_path: Path) -> None:
    cfg = cfg_with(RiskConfig(drawdown_reduce_bps=300, drawdown_halt_bps=500))
    db = tmp_path / "old.db"
    async with Run(cfg, db) as run:
        run.fill(1, 6_000_000, 10_000, T0)
        run.mark(6_000_000, T0 + NS)
        run.mark(5_400_000, T0 + 2 * NS)
    raw = sqlite3.connect(db)
    raw.execute("DELETE FROM risk_state")  # a file written before the risk_state table existed
    raw.commit()
    raw.close()
    async with Run(cfg, db) as run:
        assert run.state.risk_state is None
        assert run.risk.state.value == "HALTED"  # the tripped breaker row still holds


async def test_a_reset_made_while_down_waits_for_live_prices_before_anchoring(tmp_path: Path) -> None:
    """The issue's scenario end to end: trip, stop, `risk reset`, restart the live worker. The rebuilt
    portfolio is marked at its fill price (66,000) until the book is live (60,000); a reset anchored
    before that would re-trip the drawdown breaker at the first live price."""
    import asyncio

    from tests.fakes.binance import FakeBinance
    from tests.test_app_wiring import eventually, worker_env
    from worker import app

    db = tmp_path / "live.db"
    async with FakeBinance() as fake:  # spot BTCUSDT, mid 60,000.00
        sets = ["trading.strategy_enabled=false", "calendar.enabled=false", "risk.drawdown_halt_bps=500"]
        cfg = config.load(None, env=worker_env(fake, QF_DB=str(db), QF_HEALTH_PORT="0"), sets=sets)
        async with Run(cfg, db) as run:  # bought 0.1 BTC at 66,000; the market fell to 60,000: HALTED
            run.fill(1, 6_600_000, 10_000, T0)
            run.mark(6_600_000, T0 + NS)
            run.mark(6_000_000, T0 + 2 * NS)
            assert run.risk.state.value == "HALTED"
        risk_cli.reset(str(db), "loss acknowledged", "ops")
        fake.pause()  # no diffs: the book stays SYNCING while the worker starts
        worker = app.Worker(cfg)
        await worker.start()
        risk = worker.engine.trader.risk
        running = asyncio.create_task(worker.run())
        conn = connect_readonly(db)
        try:
            applied = "SELECT applied_wall_ns FROM operator_actions"
            polled = lambda: worker.actions_deferred > 0 or worker._applied_actions  # noqa: E731
            await eventually(polled, "the reset was polled")
            assert risk.state.value == "HALTED"  # not applied at the fill-price marks
            fake.resume()
            await eventually(lambda: conn.execute(applied).fetchone()[0], "the reset applied", 20)
            assert risk.state.value == "ACTIVE"
            seen = worker.counters.events
            await eventually(lambda: worker.counters.events > seen + 50, "more live events")
            assert risk.state.value == "ACTIVE" and not risk.breakers  # not re-tripped
            assert abs(risk.peak - 9_400 * MONEY_SCALE) < 5 * MONEY_SCALE  # anchored at ~60,000 marks
        finally:
            conn.close()
            worker.request_stop("test")
            await asyncio.wait_for(running, 10)
            await worker.close("test")


async def test_a_version_1_file_is_migrated_by_the_worker_and_passes_the_offline_check(
    tmp_path: Path,
) -> None:
    from worker.orders import OrderType, TimeInForce, new_order
    from worker.orders import fill as fill_order
    from worker.store import db as store_db
    from worker.store import schema
    from worker.store.records import OrderUpdate
    from worker.store.recovery import verify

    cfg = cfg_with(RiskConfig())
    path = tmp_path / "v1.db"
    async with Run(cfg, path) as run:
        order = new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10_000, 6_000_000, T0)
        run.emit([order, OrderUpdate(fill_order(order, 10_000), T0, "fill")])
        run.fill(1, 6_000_000, 10_000, T0)
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE risk_state")  # what the first release wrote: no v2 table, no v3 columns
    for column in ("stop_price", "reduce_only", "oco"):
        raw.execute(f"ALTER TABLE orders DROP COLUMN {column}")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    conn = connect_readonly(path, check_schema=False)
    try:
        report = verify(conn)
    finally:
        conn.close()
    assert report["ok"] and report["schema_version"] == 1 and "migrates" in report["note"], report
    conn = store_db.open_writer_sync(path)
    try:
        assert schema.schema_version(conn) == schema.LATEST_VERSION == 3
        assert conn.execute("SELECT count(*) FROM risk_state").fetchone()[0] == 0
    finally:
        conn.close()
    async with Run(cfg, path) as run:  # no risk state yet: the breaker rows and the all-time peak
        assert run.state.risk_state is None and run.engine.trader.portfolio.qty("BTCUSDT") == 10_000
