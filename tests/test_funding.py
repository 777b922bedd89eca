"""USD-M funding end to end: the mark price stream -> `MarkPrice` -> settlement -> store -> restart."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.fakes.binance import FakeBinance
from worker import config, shell
from worker.app import App
from worker.binance.endpoints import Endpoints, connection_specs
from worker.binance.parse import FrameParser, ParseError
from worker.binance.rest import BinanceRest
from worker.binance.source import LiveSource
from worker.engine import Engine
from worker.events import Market, MarkPrice
from worker.instruments import DEFAULT_INSTRUMENTS, MONEY_SCALE
from worker.orders import Fill, Liquidity, Side
from worker.portfolio import FundingPayment
from worker.risk import RiskConfig, TradingState, TradingStateChanged
from worker.store.adapt import StoreSink
from worker.store.db import connect_readonly
from worker.trader import Trader

pytestmark = pytest.mark.timeout(60)

USDM, SPOT = Market.USDM, Market.SPOT
BTC = DEFAULT_INSTRUMENTS[(USDM, "BTCUSDT")]
HOUR_MS = 3_600_000
T8 = 1_723_161_600_000  # 2024-08-09 00:00 UTC, a funding time
MS = 1_000_000


def mark_frame(mark: str, rate: str, next_ms: int, event_ms: int, symbol: str = "BTCUSDT") -> bytes:
    data = {"e": "markPriceUpdate", "E": event_ms, "s": symbol, "p": mark, "i": mark, "P": mark}
    data |= {"r": rate, "T": next_ms}
    return orjson.dumps({"stream": f"{symbol.lower()}@markPrice@1s", "data": data})


def fill(fill_id: int, side: Side, price: int, qty: int, ts_ns: int, symbol: str = "BTCUSDT") -> Fill:
    return Fill(
        fill_id, fill_id, symbol, side, price, qty, 0, "USDT", Liquidity.TAKER, ts_ns, "test", 0, 0.0,
        float(price), float(price), 0.0,
    )  # fmt: skip


def payments_in(outputs: list[Any]) -> list[FundingPayment]:
    return [o for o in outputs if type(o) is FundingPayment]


def usdm_engine() -> tuple[Engine, Trader]:
    trader = Trader([BTC])
    return Engine({(USDM, "BTCUSDT"): BTC}, trader=trader), trader


# --- parsing -----------------------------------------------------------------------------------------


def test_mark_price_frames_parse_exactly_and_bad_ones_are_refused_by_reason() -> None:
    parser = FrameParser({(USDM, "BTCUSDT"): BTC})
    ev = parser.parse_frame(mark_frame("59830.43260870", "0.00010000", T8, T8 - 1000), 5)
    assert ev == MarkPrice("BTCUSDT", USDM, 598_304, 10_000, T8 * MS, (T8 - 1000) * MS, 5)
    # half-even to the 0.1 tick; negative rates are exact too
    ev = parser.parse_frame(mark_frame("59830.45000000", "-0.00002345", T8, T8), 6)
    assert (ev.mark_price, ev.funding_rate_e8) == (598_304, -2_345)
    for mark, rate, why in [
        ("59830.4", "0.000100001", "1e-8 steps"),  # finer than Binance's 8 decimals
        ("0", "0.0001", "positive mark"),
        ("-5", "0.0001", "positive mark"),
        ("abc", "0.0001", "bad markPriceUpdate"),
        ("59830.4", "", "bad markPriceUpdate"),
        ("NaN", "0.0001", "positive mark"),
    ]:
        with pytest.raises(ParseError, match=why):
            parser.parse_frame(mark_frame(mark, rate, T8, T8), 7)
    with pytest.raises(ParseError, match="bad markPriceUpdate T="):
        parser.parse_frame(mark_frame("1", "0", "soon", T8), 7)  # type: ignore[arg-type]
    with pytest.raises(ParseError, match="unknown symbol"):
        parser.parse_frame(mark_frame("1", "0", T8, T8, symbol="ETHUSDT"), 7)
    # the stream name and the event must agree
    frame = orjson.loads(mark_frame("1", "0", T8, T8))
    frame["stream"] = "btcusdt@trade"
    with pytest.raises(ParseError, match="expected trade"):
        parser.parse_frame(orjson.dumps(frame), 7)


def test_usdm_subscribes_the_mark_price_on_the_market_route_and_spot_does_not() -> None:
    public, market = connection_specs(Endpoints(), USDM, ["BTCUSDT"])
    assert "btcusdt@markPrice@1s" in market.streams and "/market/" in market.url
    assert not any("markPrice" in s for s in public.streams)
    (spot,) = connection_specs(Endpoints(), SPOT, ["BTCUSDT"])
    assert not any("markPrice" in s for s in spot.streams)


# --- settlement in the core ------------------------------------------------------------------------


def mark(mark_ticks: int, rate_e8: int, next_ms: int, event_ms: int, recv_ns: int | None = None) -> MarkPrice:
    recv = event_ms * MS + 1 if recv_ns is None else recv_ns
    return MarkPrice("BTCUSDT", USDM, mark_ticks, rate_e8, next_ms * MS, event_ms * MS, recv)


def test_a_long_pays_once_at_the_funding_time_with_the_last_rate_and_mark_before_it() -> None:
    engine, trader = usdm_engine()
    pf = trader.portfolio
    pf.apply_fill(fill(1, Side.BUY, 600_000, 2_000, (T8 - HOUR_MS) * MS))  # 2 BTC long at 60000.0
    cash = pf.cash
    assert not payments_in(engine.on_event(mark(600_100, 10_000, T8, T8 - 2000)))
    assert not payments_in(engine.on_event(mark(600_123, 12_345, T8, T8 - 1000)))  # the rate that applies
    out = engine.on_event(mark(600_500, 7_000, T8 + 8 * HOUR_MS, T8 + 5))
    payments = payments_in(out)
    # 2 BTC x 60012.3 x 0.00012345 = 14.81703... USDT paid by the long, exact to 1e-8
    expected = -(Decimal("2") * Decimal("60012.3") * Decimal("0.00012345") * MONEY_SCALE).to_integral_value()
    assert payments == [FundingPayment("BTCUSDT", T8 * MS, 12_345, 600_123, 2_000, int(expected))]
    assert pf.cash == cash + int(expected) and pf.funding == int(expected)
    assert pf.equity - pf.starting_cash == pf.realized_pnl + pf.unrealized_pnl - pf.fees + pf.funding
    # a later update (or the same one again from a rotation lane) settles nothing more
    assert not [
        o
        for o in engine.on_event(mark(600_400, 7_000, T8 + 8 * HOUR_MS, T8 + 1005))
        if type(o) is FundingPayment
    ]
    assert not [
        o
        for o in engine.on_event(mark(600_500, 7_000, T8 + 8 * HOUR_MS, T8 + 5))
        if type(o) is FundingPayment
    ]
    assert pf.funding == int(expected)
    assert engine.summary()["per_symbol"]["usdm:BTCUSDT"]["mark_prices"] == 5


def test_a_short_receives_a_positive_rate_flat_and_spot_pay_nothing_and_stale_updates_are_ignored() -> None:
    engine, trader = usdm_engine()
    pf = trader.portfolio
    engine.on_event(mark(600_000, 10_000, T8, T8 - 10))
    flat = engine.on_event(mark(600_000, 10_000, T8 + 8 * HOUR_MS, T8 + 10))
    assert not [o for o in flat if type(o) is FundingPayment] and pf.funding == 0  # flat: nothing to pay
    pf.apply_fill(fill(1, Side.SELL, 600_000, 1_000, (T8 + 1000) * MS))  # 1 BTC short
    t16 = T8 + 8 * HOUR_MS
    engine.on_event(mark(600_000, 10_000, t16, t16 - 10))
    engine.on_event(mark(700_000, 99_999, t16 + 8 * HOUR_MS, t16 - 500))  # older than what we have: ignored
    out = engine.on_event(mark(600_010, 10_000, t16 + 8 * HOUR_MS, t16 + 10))
    (payment,) = [o for o in out if type(o) is FundingPayment]
    assert (payment.funding_ns, payment.position_qty, payment.amount) == (t16 * MS, -1_000, 6 * MONEY_SCALE)
    # spot: the trader has no USD-M position to settle, and a spot symbol's marks are not its business
    spot_trader = Trader([DEFAULT_INSTRUMENTS[(SPOT, "BTCUSDT")]])
    spot_out: list[Any] = []
    spot_trader.on_mark_price(mark(600_000, 10_000, T8, T8 - 1), spot_out)
    spot_trader.on_mark_price(mark(600_000, 10_000, t16, T8 + 1), spot_out)
    assert spot_out == [] and spot_trader.portfolio.funding == 0


def test_a_funding_loss_counts_toward_the_daily_loss_breaker() -> None:
    trader = Trader([BTC], risk=RiskConfig(daily_loss_limit=Decimal(5)))
    engine = Engine({(USDM, "BTCUSDT"): BTC}, trader=trader)
    pf = trader.portfolio
    t16 = T8 + 8 * HOUR_MS  # 08:00 UTC: the same UTC day as the fill (the daily limit resets at 00:00)
    pf.apply_fill(fill(1, Side.BUY, 600_000, 1_000, (T8 + HOUR_MS) * MS))
    pf.mark("BTCUSDT", 600_000, 600_001)
    trader.risk.update(pf, (T8 + HOUR_MS) * MS)  # what every book event does: the day's anchor is set
    engine.on_event(mark(600_000, 10_000, t16, t16 - 1))
    assert trader.risk.state is TradingState.ACTIVE
    equity = pf.equity
    out = engine.on_event(mark(600_000, 10_000, t16 + 8 * HOUR_MS, t16 + 1))
    assert pf.equity == equity - 6 * MONEY_SCALE  # 1 BTC x 60000 x 0.0001 paid, more than the 5 USDT limit
    assert trader.risk.state is not TradingState.ACTIVE and "daily" in trader.risk.state_reason()
    assert any(type(o) is TradingStateChanged for o in out)  # persisted and notified like any trip


# --- persisted, and not paid twice after a restart --------------------------------------------------


async def test_settled_funding_is_stored_and_a_restart_neither_loses_nor_repeats_it(tmp_path: Path) -> None:
    cfg = config.load(None, env={})
    traded = {(USDM, "BTCUSDT"): BTC}
    db_path = tmp_path / "funding.db"
    engine = shell.make_engine(cfg, traded)
    writer, state = await shell.open_store(cfg, traded, "test", db_path)
    sink = StoreSink(writer)
    long = fill(1, Side.BUY, 600_000, 3_000, (T8 - HOUR_MS) * MS)
    engine.trader.portfolio.apply_fill(long)
    sink.submit_outputs([long])
    outputs = engine.on_event(mark(600_000, 10_000, T8, T8 - 1)) + engine.on_event(
        mark(600_000, 10_000, T8 + 8 * HOUR_MS, T8 + 1)
    )
    sink.submit_outputs(outputs)
    paid = engine.trader.portfolio.funding
    assert paid == -18 * MONEY_SCALE  # 3 BTC x 60000 x 0.0001
    await writer.close("crash")

    conn = connect_readonly(db_path)
    try:
        assert conn.execute("SELECT funding_ns, amount FROM funding_payments").fetchall() == [(T8 * MS, paid)]
        assert conn.execute("SELECT funding FROM positions").fetchone() == (paid,)
    finally:
        conn.close()

    again = shell.make_engine(cfg, traded)
    writer, state = await shell.open_store(cfg, traded, "test", db_path)
    shell.restore(again, state, (T8 + 5) * MS, lambda outs: None, db_path)
    await writer.close("stop")
    pf = again.trader.portfolio
    assert (pf.qty("BTCUSDT"), pf.funding, pf.cash) == (3_000, paid, engine.trader.portfolio.cash)
    # the first marks after the restart still announce the funding time already settled: no second payment
    again.on_event(mark(600_000, 10_000, T8, T8 - 1, recv_ns=(T8 + 6) * MS))
    out = again.on_event(mark(600_000, 10_000, T8 + 8 * HOUR_MS, T8 + 7))
    assert not [o for o in out if type(o) is FundingPayment] and pf.funding == paid


# --- live, through the stand-in's WebSocket routes -------------------------------------------------


async def test_live_usdm_worker_settles_funding_from_the_mark_price_stream() -> None:
    async with FakeBinance([(USDM, "BTCUSDT")], interval=0.01) as fake:
        endpoints = fake.endpoints()
        rest = BinanceRest(USDM, endpoints, backoff_base=0.02, backoff_cap=0.1, timeout=2.0)
        instruments = await rest.instruments(["BTCUSDT"])
        trader = Trader(list(instruments.values()))
        engine = Engine(instruments, trader=trader)
        trader.portfolio.apply_fill(fill(1, Side.BUY, 600_000, 1_000, time.time_ns()))
        fake.set_funding("BTCUSDT", "0.00030000", time.time_ns() // MS + 300)
        payments: list[FundingPayment] = []
        settled = asyncio.Event()

        def collect(event: object, outputs: list[Any]) -> None:
            for o in outputs:
                if type(o) is FundingPayment:
                    payments.append(o)
                    settled.set()

        source = LiveSource(
            engine,
            USDM,
            ["BTCUSDT"],
            endpoints=endpoints,
            instruments=instruments,
            rest=rest,
            stream_options={"backoff_base": 0.02, "backoff_cap": 0.1, "stable_s": 0.05, "close_timeout": 0.5},
        )
        app = App(source, engine, [collect])
        task = asyncio.create_task(app.run())
        try:
            await asyncio.wait_for(settled.wait(), 10)
        finally:
            app.stop.set()
            await asyncio.wait_for(task, 5)
            await rest.aclose()
        (payment,) = payments
        assert payment.rate_e8 == 30_000 and payment.position_qty == 1_000
        owed = payment.mark_price * BTC.tick_size * Decimal("1.000") * Decimal("0.0003") * MONEY_SCALE
        assert payment.amount == -owed == int(-owed)  # exact: no rounding was needed at these values
        assert trader.portfolio.funding == payment.amount
