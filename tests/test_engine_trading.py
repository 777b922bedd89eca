"""The whole engine (book -> features -> strategy -> risk -> broker -> portfolio) on real and made-up data.

- Replay is deterministic: two runs over a real recording give the same fills digest.
- Nothing trades on a SYNCING book, and the trader forgets its state when a book is lost.
- Scripted orders go through risk and the broker; a Shabbat window driven by the replayed clock stops
  new orders inside it, cancels resting ones before it, and trading resumes after it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import recording
from worker.broker import OrderUpdate
from worker.calendar import CalendarClock, CalendarConfig, pause_windows
from worker.engine import Engine
from worker.events import DepthDiff, DepthSnapshot, Market, Trade
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Cancelled, Denied, Fill, OrderType, Side, TimeInForce
from worker.replay import replay
from worker.strategy import Signal
from worker.tally import TradingTally
from worker.trader import PauseChange, ScheduledOrder, Trader, TradingConfig

NS = 1_000_000_000
SPOT = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
SPOT_ONLY = {(Market.SPOT, "BTCUSDT"): SPOT}


def full_engine(**trader_kwargs) -> Engine:
    return Engine(SPOT_ONLY, trader=Trader([SPOT], **trader_kwargs))


def run_real(market: str) -> dict:
    ws, snaps = recording(market)
    mkt = Market(market)
    instruments = {k: v for k, v in DEFAULT_INSTRUMENTS.items() if k[0] is mkt}
    engine = Engine(instruments, trader=Trader([instruments[(mkt, "BTCUSDT")]]))
    tally = TradingTally()
    replay(ws, snaps, instruments=instruments, engine=engine, on_outputs=tally.add)
    return tally.summary(engine.trader.summary(), engine.trader.instruments)


def test_replay_is_deterministic_to_the_last_fill() -> None:
    first = run_real("spot")
    second = run_real("spot")
    assert first["fills"] > 0, "the strategy traded nothing on the recording: the check would be empty"
    assert first["fills_digest"] == second["fills_digest"]
    assert first == second


# --- made-up market: a book that moves one level per event -------------------------------------------
class Market1:
    """A tiny spot market: snapshot at id 100, then one diff per call, update ids contiguous."""

    def __init__(self, mid: int = 6_000_000) -> None:
        self.mid = mid
        self.u = 100

    def snapshot(self, ts: int) -> DepthSnapshot:
        bids = [(self.mid - i, 50_000) for i in range(1, 6)]
        asks = [(self.mid + i, 50_000) for i in range(1, 6)]
        return DepthSnapshot("BTCUSDT", Market.SPOT, self.u, bids, asks, ts)

    def diff(self, ts: int, skip: int = 0) -> DepthDiff:
        self.u += 1 + skip
        qty = 50_000 + (self.u % 7) * 1_000
        return DepthDiff(
            "BTCUSDT", Market.SPOT, self.u, self.u, None, [(self.mid - 1, qty)], [(self.mid + 1, qty)], ts, ts
        )

    def trade(self, ts: int, trade_id: int) -> Trade:
        return Trade("BTCUSDT", Market.SPOT, trade_id, self.mid + 1, 10, False, ts, ts)


def test_nothing_trades_while_syncing_and_state_is_forgotten() -> None:
    engine = full_engine()
    market = Market1()
    t0 = 1_700_000_000 * NS
    outputs: list = []
    outputs += engine.on_event(market.snapshot(t0))
    outputs += engine.on_event(market.diff(t0 + 50_000_000))
    state = engine.trader.symbols["BTCUSDT"]
    assert state.book is not None, "the trader sees the book once it is LIVE"
    for i in range(1, 50):
        outputs += engine.on_event(market.diff(t0 + i * 100_000_000))
    gap_at = len(outputs)
    outputs += engine.on_event(market.diff(t0 + 60 * 100_000_000, skip=3))  # a gap: back to SYNCING
    assert state.book is None and state.vector is None
    syncing_outputs = []
    for i in range(61, 120):
        syncing_outputs += engine.on_event(market.diff(t0 + i * 100_000_000))
    assert not [o for o in syncing_outputs if isinstance(o, Signal | OrderUpdate | Fill)]
    assert state.book is None, "a SYNCING book never reaches the trader"
    assert any(getattr(o, "reason", "") == "gap" for o in outputs[gap_at:])


def scheduled_row(t_ns: int, ref_offset: int = -50, tif: TimeInForce = TimeInForce.GTC) -> ScheduledOrder:
    return ScheduledOrder(
        t_ns // 1_000_000, Side.BUY, OrderType.LIMIT, tif, Decimal("0.001"), None, "bid", ref_offset
    )


def test_scripted_orders_pass_risk_and_reach_the_broker() -> None:
    t0 = 1_700_000_000 * NS
    rows = [
        ScheduledOrder(t0 // 1_000_000 + 1_000, Side.BUY, OrderType.MARKET, TimeInForce.IOC, Decimal("0.01")),
        scheduled_row(t0 + 2 * NS),  # rests 50 ticks below the bid
        ScheduledOrder(  # below min notional (5 USDT): the venue rejects it with Binance's reason
            t0 // 1_000_000 + 3_000, Side.BUY, OrderType.MARKET, TimeInForce.IOC, Decimal("0.00001")
        ),
        ScheduledOrder(  # ~0.3 BTC: more quote than the account holds, so risk cuts it to what fits
            t0 // 1_000_000 + 4_000,
            Side.BUY,
            OrderType.LIMIT,
            TimeInForce.IOC,
            Decimal("0.3"),
            None,
            "ask",
            100,
        ),
    ]
    engine = full_engine(schedule=rows)
    market = Market1()
    outputs = engine.on_event(market.snapshot(t0))
    for i in range(1, 120):
        outputs += engine.on_event(market.diff(t0 + i * 100_000_000))
    final = {}
    for o in outputs:
        if isinstance(o, OrderUpdate):
            final[o.order.order_id] = o.order
    assert len(final) == 4
    market_buy, resting, tiny, big = (final[i] for i in sorted(final))
    assert market_buy.status_name == "Filled"
    fills = [o for o in outputs if isinstance(o, Fill)]
    first_fills = [f for f in fills if f.order_id == market_buy.order_id]
    assert first_fills and first_fills[0].ts_ns - t0 >= 1 * NS + 200_000_000, "acts after its entry latency"
    assert resting.status_name == "Pending" and resting.price == market.mid - 1 - 50
    assert tiny.status_name == "Rejected" and tiny.status.reason.startswith("MIN_NOTIONAL")
    # the big order went out at the size risk approved, and every lot it filled is a fill on the account
    decisions = [o for o in outputs if type(o).__name__ == "RiskDecisionEvent" and o.tag == big.tag]
    assert [(d.verdict, d.reason, d.qty_requested) for d in decisions] == [
        ("adjusted", "insufficient_quote", 30_000)
    ]
    assert big.qty == decisions[0].qty_approved
    assert 0 < big.qty < 30_000 and big.status_name in ("Filled", "PartiallyFilled", "Cancelled")
    big_fills = [f for f in fills if f.order_id == big.order_id]
    assert sum(f.qty for f in big_fills) == big.filled_qty > 0
    assert not [o for o in outputs if getattr(o, "kind", "") == "impossible_fill"]
    portfolio = engine.trader.portfolio
    assert portfolio.qty("BTCUSDT") == sum(f.qty for f in fills) == 1_000 + big.filled_qty


def friday_window() -> tuple[int, int]:
    config = CalendarConfig()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    window = pause_windows(config, start, start + dt.timedelta(days=7))[0]
    return window.start_ns, window.end_ns


def test_shabbat_window_pauses_and_resumes_on_the_replayed_clock() -> None:
    start_ns, end_ns = friday_window()
    step = 10 * 60 * NS
    t0 = start_ns - 2 * 3600 * NS
    t_end = end_ns + 2 * 3600 * NS
    before = scheduled_row(start_ns - 60 * 60 * NS)  # rests; must be cancelled before the window
    inside = [scheduled_row(start_ns + k * 3600 * NS) for k in (1, 5, 12)]
    after = scheduled_row(end_ns + 30 * 60 * NS)
    engine = full_engine(
        schedule=[before, *inside, after],
        calendar=CalendarClock(CalendarConfig()),
        trading=TradingConfig(pause_lead_s=300),
    )
    market = Market1()
    outputs = engine.on_event(market.snapshot(t0))
    ts = t0
    trade_id = 1
    while ts < t_end:
        ts += step
        outputs += engine.on_event(market.diff(ts))
        outputs += engine.on_event(market.trade(ts + 1, trade_id))
        trade_id += 1
    pauses = [o for o in outputs if isinstance(o, PauseChange)]
    assert [p.paused for p in pauses] == [True, False]
    assert start_ns <= pauses[0].ts_ns < start_ns + step
    assert end_ns <= pauses[1].ts_ns < end_ns + step
    orders = {}
    for o in outputs:
        if isinstance(o, OrderUpdate):
            orders[o.order.order_id] = o.order
    ordered = [orders[i] for i in sorted(orders)]
    assert len(ordered) == 5
    first, *during, last = ordered
    assert isinstance(first.status, Cancelled) and first.status.reason == "shabbat"
    assert all(isinstance(o.status, Denied) and o.status.reason == "shabbat" for o in during)
    assert not isinstance(last.status, Denied), "trading resumes after havdalah"
    assert engine.trader.risk.state.value == "ACTIVE"


@pytest.mark.parametrize("bad", [{"order_style": "yolo"}, {"taker_slippage_ticks": -1}, {"starting_cash": 0}])
def test_trading_config_refuses_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError, match="trading\\."):
        TradingConfig(**bad).validate()


SCHEDULE = """t_ms,side,type,tif,price,qty,cancel_after_ms
1723161300000,BUY,MARKET,IOC,,0.01,
1723161310000,BUY,LIMIT,GTC,bid-1,0.01,20000
1723161320000,SELL,LIMIT,GTX,ask,0.005,
1723161330000,SELL,LIMIT,GTX,bid,0.005,
1723161340000,BUY,LIMIT,GTC,61000.005,0.01,
"""


def test_replay_cli_scripted_orders_report_and_fill_model_comparison(tmp_path) -> None:
    import csv
    import json
    import subprocess
    import sys

    ws, snaps = recording("spot")
    schedule = tmp_path / "schedule.csv"
    schedule.write_text(SCHEDULE)
    result_csv, summary_json = tmp_path / "result.csv", tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "worker", "replay", str(ws), "--snapshots", str(snaps), "--no-db",
            "--orders", str(schedule), "--orders-out", str(result_csv), "--compare-fill-models",
            "--summary-json", str(summary_json),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_json.read_text())
    for key in ("signals", "orders", "fills", "fills_digest", "realized_pnl", "fees", "max_drawdown"):
        assert key in summary
    assert summary["orders"] == 5 and summary["signals"] == 0, "a schedule replaces the strategy"
    rows = list(csv.DictReader(result_csv.open()))
    assert [r["status"] for r in rows] == ["Filled", "Filled", "Pending", "Rejected", "Rejected"]
    assert rows[0]["liquidity"] == "taker" and rows[1]["liquidity"] == "maker"
    assert rows[3]["reason"].startswith("GTX_WOULD_TAKE"), "a post-only order that would cross"
    assert rows[4]["reason"].startswith("PRICE_FILTER"), "off the tick grid: the venue's reason"
    assert int(rows[0]["arrival_ns"]) > int(rows[0]["decision_ns"]), "latency before arrival"
    models = summary["fill_models"]
    assert set(models) == {"conservative", "probabilistic"}
    assert models["conservative"]["fills"] <= models["probabilistic"]["fills"]
    assert "conservative" in done.stdout and "probabilistic" in done.stdout


def test_replay_cli_refuses_a_bad_schedule_naming_the_line(tmp_path) -> None:
    import subprocess
    import sys

    ws, _ = recording("spot")
    schedule = tmp_path / "schedule.csv"
    schedule.write_text(
        "t_ms,side,type,tif,price,qty\n1723161300000,BUY,MARKET,IOC,,0.01\n1,HOLD,LIMIT,GTC,1,1\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(ws), "--no-db", "--orders", str(schedule)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "line 3: side must be one of BUY/SELL" in done.stderr
    assert "Traceback" not in done.stderr
