"""Risk engine: each limit, adjust vs deny, rate limits under bursts, exact breaker thresholds, restore."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal as D
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import MONEY_SCALE, Instrument
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, new_order
from worker.portfolio import Portfolio
from worker.risk import (
    Adjusted,
    Approved,
    BreakerChanged,
    Denied,
    OrderIntent,
    RiskConfig,
    RiskDecisionEvent,
    RiskEngine,
    SymbolLimits,
    TradingState,
    TradingStateChanged,
    order_for,
)

BTC = Instrument("BTCUSDT", Market.SPOT, D("0.01"), D("0.00001"), D("5"), "BTC")  # 10 money/tick-lot
ETH = Instrument("ETHUSDT", Market.USDM, D("0.01"), D("0.001"), D("20"), "ETH")  # 1000 money/tick-lot
INSTS = [BTC, ETH]
USDT = MONEY_SCALE
START = 10_000 * USDT
BTC_TOP = (5_999_999, 6_000_000)  # 59,999.99 / 60,000.00
ETH_TOP = (299_999, 300_000)  # 2,999.99 / 3,000.00
S = 1_000_000_000
T0 = 1_700_000_000 * S  # 2023-11-14T22:13:20Z, far from a day boundary in the tests below

# Loose config so that each test switches on only the limit it exercises.
LOOSE = RiskConfig(
    max_leverage=D(100),
    max_price_deviation_bps=None,
    orders_per_second=D(1_000_000),
    orders_burst=1_000_000,
    binance_orders_10s=1_000_000,
    binance_orders_day=10**9,
    drawdown_reduce_bps=None,
    drawdown_halt_bps=None,
)


def engine(**changes) -> RiskEngine:
    return RiskEngine(replace(LOOSE, **changes), INSTS)


def intent(
    sym="BTCUSDT", side=Side.BUY, qty=1_000, price=6_000_000, typ=OrderType.LIMIT, **kw
) -> OrderIntent:
    tif = kw.pop("tif", TimeInForce.GTC if typ is OrderType.LIMIT else TimeInForce.IOC)
    return OrderIntent(sym, side, typ, tif, qty, price, kw.pop("ts", T0), **kw)


_fid = iter(range(1, 10**9))


def fill_at(pf: Portfolio, sym: str, side: Side, price: int, qty: int) -> None:
    f = Fill(next(_fid), 0, sym, side, price, qty, 0, "USDT", Liquidity.TAKER, T0, "t", 0, 0, 0.0, 0.0, 0.0)
    pf.apply_fill(f)


def top(sym: str) -> tuple[int, int]:
    return BTC_TOP if sym == "BTCUSDT" else ETH_TOP


# --- configuration -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "param"),
    [
        (
            RiskConfig(default_limits=SymbolLimits(max_order_notional=D("4"))),
            "risk.BTCUSDT.max_order_notional",
        ),
        (RiskConfig(symbols={"ETHUSDT": SymbolLimits(max_notional=D("19.99"))}), "risk.ETHUSDT.max_notional"),
        (RiskConfig(default_limits=SymbolLimits(max_position=D("-1"))), "risk.BTCUSDT.max_position"),
        (RiskConfig(default_limits=SymbolLimits(max_order_qty=D("0.000001"))), "risk.BTCUSDT.max_order_qty"),
        (RiskConfig(default_limits=SymbolLimits(max_position=0.5)), "risk.BTCUSDT.max_position"),  # float
        (RiskConfig(symbols={"DOGEUSDT": SymbolLimits()}), "risk.symbols.DOGEUSDT"),
        (RiskConfig(max_total_notional=D("-5")), "max_total_notional"),
        (RiskConfig(max_leverage=D(0)), "max_leverage"),
        (RiskConfig(orders_per_second=D(-1)), "orders_per_second"),
        (RiskConfig(orders_burst=0), "orders_burst"),
        (RiskConfig(binance_orders_10s=-50), "binance_orders_10s"),
        (RiskConfig(drawdown_reduce_bps=600, drawdown_halt_bps=500), "drawdown_reduce_bps"),
        (RiskConfig(drawdown_halt_bps=0), "drawdown_halt_bps"),
        (RiskConfig(daily_loss_limit=D("-100")), "daily_loss_limit"),
        (RiskConfig(daily_loss_limit=D("0.000000001")), "daily_loss_limit"),
        (RiskConfig(cooldown_s=-1), "cooldown_s"),
    ],
)
def test_configurations_that_cannot_work_are_refused(config: RiskConfig, param: str) -> None:
    with pytest.raises(ConfigError) as err:
        RiskEngine(config, INSTS)
    assert err.value.parameter == param
    assert param in str(err.value)


def test_default_configuration_is_valid() -> None:
    r = RiskEngine(RiskConfig(), INSTS)
    assert r.state is TradingState.ACTIVE


# --- bad intents never raise ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (intent(sym="DOGEUSDT"), "unknown_symbol"),
        (intent(qty=0), "invalid_qty"),
        (intent(qty=-3), "invalid_qty"),
        (intent(qty=1.5), "invalid_qty"),
        (intent(qty=True), "invalid_qty"),
        (intent(price=None), "invalid_price"),
        (intent(price=6_000_000.5), "invalid_price"),
        (intent(price=0), "invalid_price"),
        (intent(typ=OrderType.MARKET, price=6_000_000), "invalid_order"),
        (intent(typ=OrderType.MARKET, price=None, tif=TimeInForce.GTX), "invalid_order"),
        (intent(side=1), "invalid_order"),
        (SimpleNamespace(symbol=["not", "hashable"], qty=1), "internal_error"),
        (None, "internal_error"),
    ],
)
def test_bad_intents_are_denied_with_a_reason(bad, reason: str) -> None:
    r = engine()
    pf = Portfolio(INSTS, START)
    assert r.check(bad, pf, BTC_TOP, T0) == Denied(reason)
    (rec,) = r.drain()
    assert isinstance(rec, RiskDecisionEvent) and rec.verdict == "denied" and rec.reason == reason


def test_no_book_and_price_band() -> None:
    r = engine(max_price_deviation_bps=100)
    pf = Portfolio(INSTS, START)
    assert r.check(intent(), pf, None, T0) == Denied("no_book")
    assert r.check(intent(price=6_060_001), pf, BTC_TOP, T0) == Denied("price_band")  # > 1% from mid
    assert r.check(intent(price=6_059_999), pf, BTC_TOP, T0) == Approved()


def test_min_notional() -> None:
    r = engine()
    pf = Portfolio(INSTS, START)
    # 5 USDT at 60,000 = 8.33 lots of 1e-5: 8 lots is 4.80, 9 lots 5.40
    assert r.check(intent(qty=8), pf, BTC_TOP, T0) == Denied("min_notional")
    assert r.check(intent(qty=9), pf, BTC_TOP, T0) == Approved()


# --- limits: adjust vs deny ----------------------------------------------------------------------------
def test_max_order_qty_and_notional_adjust_then_deny() -> None:
    r = engine(default_limits=SymbolLimits(max_order_qty=D("0.01"), max_order_notional=D("300")))
    pf = Portfolio(INSTS, START)
    assert r.check(intent(qty=2_000), pf, BTC_TOP, T0) == Adjusted(500, "max_order_notional")  # 300/60000
    r2 = engine(default_limits=SymbolLimits(max_order_qty=D("0.01")))
    assert r2.check(intent(qty=2_000), pf, BTC_TOP, T0) == Adjusted(1_000, "max_order_qty")
    assert r2.check(intent(qty=1_000), pf, BTC_TOP, T0) == Approved()


def test_position_limit_counts_resting_orders_and_adjusts_or_denies() -> None:
    r = engine(default_limits=SymbolLimits(max_position=D("0.02")))  # 2,000 lots
    pf = Portfolio(INSTS, START)
    fill_at(pf, "BTCUSDT", Side.BUY, 6_000_000, 1_200)
    pf.on_order(new_order(9, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 500, 5_990_000, T0))
    assert r.check(intent(qty=1_000), pf, BTC_TOP, T0) == Adjusted(300, "max_position")
    # 5 lots would fit but are below min notional: denied, not adjusted
    pf.on_order(new_order(10, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 295, 5_990_000, T0))
    assert r.check(intent(qty=1_000), pf, BTC_TOP, T0) == Denied("max_position")
    # selling (reducing) is never cut by the position limit
    assert r.check(intent(side=Side.SELL, qty=1_200), pf, BTC_TOP, T0) == Approved()


def test_usdm_short_within_position_limit_across_zero() -> None:
    r = engine(default_limits=SymbolLimits(max_position=D("1")))  # 1,000 lots of 0.001 ETH
    pf = Portfolio(INSTS, START)
    fill_at(pf, "ETHUSDT", Side.BUY, 300_000, 400)
    # long 400: a sell may close 400 and open a 1,000 short
    d = r.check(intent("ETHUSDT", Side.SELL, 2_000, 300_000), pf, ETH_TOP, T0)
    assert d == Adjusted(1_400, "max_position")


def test_notional_limits_per_symbol_and_total() -> None:
    r = engine(default_limits=SymbolLimits(max_notional=D("1200")))
    pf = Portfolio(INSTS, START)
    assert r.check(intent(qty=5_000), pf, BTC_TOP, T0) == Adjusted(2_000, "max_notional")  # 1200/0.6
    r = engine(max_total_notional=D("1500"))
    fill_at(pf, "ETHUSDT", Side.SELL, 300_000, 100)  # 300 USDT short
    pf.mark("ETHUSDT", *ETH_TOP)
    assert r.check(intent(qty=5_000), pf, BTC_TOP, T0) == Adjusted(2_000, "max_total_notional")


def test_usdm_leverage_against_equity() -> None:
    r = engine(max_leverage=D(2))
    pf = Portfolio(INSTS, 1_000 * USDT)
    d = r.check(intent("ETHUSDT", Side.SELL, 1_000, 300_000), pf, ETH_TOP, T0)
    assert d == Adjusted(666, "leverage")  # 2,000 USDT / 3 USDT per lot


def test_spot_is_long_only_and_buys_need_quote() -> None:
    r = engine()
    pf = Portfolio(INSTS, 1_000 * USDT)
    assert r.check(intent(side=Side.SELL, qty=100), pf, BTC_TOP, T0) == Denied("spot_long_only")
    fill_at(pf, "BTCUSDT", Side.BUY, 6_000_000, 100)  # 60 USDT
    assert r.check(intent(side=Side.SELL, qty=300), pf, BTC_TOP, T0) == Adjusted(100, "spot_long_only")
    # 940 USDT left, 1% buffer: 940 / (0.6 * 1.01) = 1551.2 lots
    assert r.check(intent(qty=5_000), pf, BTC_TOP, T0) == Adjusted(1_551, "insufficient_quote")
    pf.on_order(new_order(3, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1_550, 6_000_000, T0))
    assert r.check(intent(qty=100), pf, BTC_TOP, T0) == Denied("insufficient_quote")  # 0.69 left


def test_reducing_orders_pass_even_when_over_every_limit() -> None:
    pf = Portfolio(INSTS, START)
    fill_at(pf, "ETHUSDT", Side.BUY, 300_000, 2_000)
    pf.mark("ETHUSDT", *ETH_TOP)
    r = engine(
        default_limits=SymbolLimits(max_position=D("1"), max_notional=D("100")),
        max_total_notional=D("100"),
        max_leverage=D("0.01"),
    )
    assert r.check(intent("ETHUSDT", Side.BUY, 10, 300_000), pf, ETH_TOP, T0) == Denied("max_position")
    assert r.check(intent("ETHUSDT", Side.SELL, 500, 300_000), pf, ETH_TOP, T0) == Approved()


def test_reduce_only_intents() -> None:
    r = engine()
    pf = Portfolio(INSTS, START)
    fill_at(pf, "ETHUSDT", Side.SELL, 300_000, 50)
    assert r.check(intent("ETHUSDT", Side.SELL, 10, 300_000, reduce_only=True), pf, ETH_TOP, T0) == Denied(
        "reduce_only"
    )
    d = r.check(intent("ETHUSDT", Side.BUY, 80, 300_000, reduce_only=True), pf, ETH_TOP, T0)
    assert d == Adjusted(50, "reduce_only")


# --- rate limits -----------------------------------------------------------------------------------------
def test_token_bucket_burst_then_steady_rate() -> None:
    r = engine(orders_per_second=D(10), orders_burst=5)
    pf = Portfolio(INSTS, START)
    got = [r.check(intent(), pf, BTC_TOP, T0) for _ in range(7)]
    assert got[:5] == [Approved()] * 5
    assert got[5:] == [Denied("rate_limit:orders_per_second")] * 2
    assert r.check(intent(), pf, BTC_TOP, T0 + 99_999_999) == Denied("rate_limit:orders_per_second")
    assert r.check(intent(), pf, BTC_TOP, T0 + 100_000_000) == Approved()  # one token per 100 ms
    # a long quiet spell refills to the burst, never beyond
    later = T0 + 60 * S
    assert [r.check(intent(), pf, BTC_TOP, later) for _ in range(6)].count(Approved()) == 5


def test_binance_windows_are_aligned_fixed_windows() -> None:
    r = engine(binance_orders_10s=50)
    pf = Portfolio(INSTS, START)
    w = T0 - T0 % (10 * S)  # start of a 10 s window
    late = w + 10 * S - 1
    got = [r.check(intent(), pf, BTC_TOP, late) for _ in range(51)]
    assert got.count(Approved()) == 50 and got[-1] == Denied("rate_limit:binance_orders_10s")
    assert r.check(intent(), pf, BTC_TOP, w + 10 * S) == Approved()  # the next window


def test_binance_daily_limit_and_denials_spend_no_tokens() -> None:
    r = engine(binance_orders_day=3)
    pf = Portfolio(INSTS, START)
    for _ in range(10):
        assert r.check(intent(qty=1), pf, BTC_TOP, T0) == Denied("min_notional")  # never sent: free
    assert [r.check(intent(), pf, BTC_TOP, T0 + i * S) for i in range(4)] == [Approved()] * 3 + [
        Denied("rate_limit:binance_orders_day")
    ]
    next_day = T0 - T0 % (86_400 * S) + 86_400 * S
    assert r.check(intent(), pf, BTC_TOP, next_day) == Approved()


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.integers(0, 300_000_000), min_size=1, max_size=200))
def test_no_window_ever_exceeds_binance_limits(gaps: list[int]) -> None:
    r = engine(orders_per_second=D(20), orders_burst=30, binance_orders_10s=50)
    pf = Portfolio(INSTS, START)
    t = T0
    sent: list[int] = []
    for g in gaps:
        t += g
        if r.check(intent(), pf, BTC_TOP, t) == Approved():
            sent.append(t)
    per_window: dict[int, int] = {}
    for ts in sent:
        per_window[ts // (10 * S)] = per_window.get(ts // (10 * S), 0) + 1
    assert max(per_window.values(), default=0) <= 50
    for i in range(len(sent)):  # token bucket: at most burst + rate * span in any span
        for j in range(i, min(len(sent), i + 80)):
            assert j - i + 1 <= 30 + (sent[j] - sent[i]) * 20 // S


# --- breakers ------------------------------------------------------------------------------------------
def breaker_setup(**changes) -> tuple[RiskEngine, Portfolio]:
    r = engine(drawdown_reduce_bps=300, drawdown_halt_bps=500, **changes)
    pf = Portfolio(INSTS, START)
    fill_at(pf, "BTCUSDT", Side.BUY, 6_000_000, 10_000)  # 0.1 BTC for 6,000 USDT; 1 tick = 0.001 USDT
    pf.mark("BTCUSDT", 6_000_000, 6_000_001)
    r.update(pf, T0)
    r.drain()
    return r, pf


def test_drawdown_trips_at_exactly_the_threshold_on_unrealized_loss() -> None:
    r, pf = breaker_setup()
    assert pf.realized_pnl == 0 and pf.equity == START
    pf.mark("BTCUSDT", 5_700_001, 5_700_002)  # 2,999.999 USDT down: 1 money unit short of 3 %
    r.update(pf, T0 + 1)
    assert r.state is TradingState.ACTIVE and r.drain() == []
    pf.mark("BTCUSDT", 5_700_000, 5_700_001)  # exactly 3 % of 10,000
    r.update(pf, T0 + 2)
    assert r.state is TradingState.REDUCING
    recs = r.drain()
    assert [type(x) for x in recs] == [BreakerChanged, TradingStateChanged]
    assert recs[0].breaker == "drawdown" and recs[0].reason == "drawdown_reduce" and recs[0].tripped
    assert recs[1].state == "REDUCING" and recs[1].previous == "ACTIVE"
    # recovering equity does not silently re-arm
    pf.mark("BTCUSDT", 6_100_000, 6_100_001)
    r.update(pf, T0 + 3)
    assert r.state is TradingState.REDUCING and r.drain() == []


def test_reducing_lets_only_reducing_orders_through() -> None:
    r, pf = breaker_setup()
    pf.mark("BTCUSDT", 5_700_000, 5_700_001)
    top_ = (5_700_000, 5_700_001)
    assert r.check(intent(qty=100, price=5_700_001), pf, top_, T0) == Denied("reducing")
    assert r.check(intent(side=Side.SELL, qty=4_000, price=5_700_000), pf, top_, T0) == Approved()
    fill_at(pf, "ETHUSDT", Side.SELL, 300_000, 100)
    pf.mark("ETHUSDT", *ETH_TOP)
    assert r.check(intent("ETHUSDT", Side.SELL, 10, 300_000), pf, ETH_TOP, T0) == Denied("reducing")
    d = r.check(intent("ETHUSDT", Side.BUY, 150, 300_000), pf, ETH_TOP, T0)
    assert d == Adjusted(100, "reducing")  # a reversal is cut to the close


def test_halt_denies_everything_but_flatten() -> None:
    r, pf = breaker_setup(flatten_on_halt=True)
    pf.mark("BTCUSDT", 5_500_000, 5_500_001)  # exactly 5 %
    intents = r.update(pf, T0 + 5)
    assert r.state is TradingState.HALTED
    assert r.take_flatten() == intents and r.take_flatten() == []
    (flat,) = intents
    assert (flat.side, flat.qty, flat.type, flat.reduce_only, flat.tag) == (
        Side.SELL,
        10_000,
        OrderType.MARKET,
        True,
        "flatten",
    )
    top_ = (5_500_000, 5_500_001)
    assert r.check(intent(side=Side.SELL, qty=100, price=5_500_000), pf, top_, T0 + 6) == Denied("halted")
    assert r.check(flat, pf, top_, T0 + 6) == Approved()
    states = [x.state for x in r.drain() if isinstance(x, TradingStateChanged)]
    assert states == ["HALTED"]


def test_trip_inside_check_queues_flatten_intents() -> None:
    r, pf = breaker_setup(flatten_on_halt=True)
    pf.mark("BTCUSDT", 5_400_000, 5_400_001)
    assert r.check(intent(qty=100), pf, (5_400_000, 5_400_001), T0 + 1) == Denied("halted")
    assert len(r.take_flatten()) == 1


def test_daily_loss_limit_and_day_anchor() -> None:
    r, pf = breaker_setup(daily_loss_limit=D("100"))
    pf.mark("BTCUSDT", 5_900_001, 5_900_002)  # -99.999
    r.update(pf, T0 + 1)
    assert r.state is TradingState.ACTIVE
    pf.mark("BTCUSDT", 5_900_000, 5_900_001)  # -100 exactly
    r.update(pf, T0 + 2)
    assert r.state is TradingState.HALTED
    assert any(isinstance(x, BreakerChanged) and x.breaker == "daily_loss" for x in r.drain())
    # a new day moves the anchor but never clears the trip
    next_day = T0 - T0 % (86_400 * S) + 86_400 * S
    r.update(pf, next_day)
    assert r.state is TradingState.HALTED and r.day_open_equity == pf.equity


def test_operator_reset_and_cooldown_are_recorded() -> None:
    r, pf = breaker_setup()
    pf.mark("BTCUSDT", 5_600_000, 5_600_001)
    r.update(pf, T0 + 1)
    assert r.state is TradingState.REDUCING
    r.drain()
    r.reset(T0 + 2, "operator checked the strategy", pf.equity)
    assert r.state is TradingState.ACTIVE
    recs = r.drain()
    assert any(isinstance(x, BreakerChanged) and not x.tripped for x in recs)
    assert any(isinstance(x, TradingStateChanged) and x.source == "operator" for x in recs)
    r.update(pf, T0 + 3)  # peak re-anchored: no immediate re-trip
    assert r.state is TradingState.ACTIVE

    r, pf = breaker_setup(cooldown_s=60)
    pf.mark("BTCUSDT", 5_600_000, 5_600_001)
    r.update(pf, T0 + S)
    r.update(pf, T0 + 60 * S)
    assert r.state is TradingState.REDUCING  # 59 s after the trip
    r.drain()
    r.update(pf, T0 + 61 * S)
    assert r.state is TradingState.ACTIVE
    recs = r.drain()
    assert [(type(x).__name__, x.reason) for x in recs] == [
        ("BreakerChanged", "cooldown"),
        ("TradingStateChanged", "cooldown"),
    ]


def test_pause_and_storage_lag_gates() -> None:
    r = engine()
    pf = Portfolio(INSTS, START)
    fill_at(pf, "BTCUSDT", Side.BUY, 6_000_000, 1_000)
    r.set_pause("shabbat", T0)
    assert r.state is TradingState.PAUSED and r.state_reason() == "shabbat"
    assert r.check(intent(side=Side.SELL), pf, BTC_TOP, T0) == Denied("shabbat")
    r.clear_pause(T0 + 1)
    assert r.state is TradingState.ACTIVE
    r.set_storage_lag(True, T0 + 2, {"lag_ms": 900})
    assert r.check(intent(), pf, BTC_TOP, T0 + 2) == Denied("storage_lag")
    assert r.check(intent(side=Side.SELL, qty=1_000), pf, BTC_TOP, T0 + 2) == Approved()
    r.set_storage_lag(False, T0 + 3)
    assert r.check(intent(), pf, BTC_TOP, T0 + 3) == Approved()
    kinds = [(type(x).__name__, getattr(x, "state", getattr(x, "breaker", ""))) for x in r.drain()]
    assert ("TradingStateChanged", "PAUSED") in kinds and ("TradingStateChanged", "ACTIVE") in kinds
    assert kinds.count(("BreakerChanged", "storage_lag")) == 2


def test_halt_outranks_pause() -> None:
    r, pf = breaker_setup()
    r.set_pause("shabbat", T0)
    pf.mark("BTCUSDT", 5_000_000, 5_000_001)
    r.update(pf, T0 + 1)
    assert r.state is TradingState.HALTED
    r.clear_pause(T0 + 2)
    assert r.state is TradingState.HALTED


def test_state_survives_a_restart() -> None:
    r, pf = breaker_setup(daily_loss_limit=D("1000"))
    pf.mark("BTCUSDT", 5_650_000, 5_650_001)
    r.update(pf, T0 + 7)
    r.set_pause("shabbat", T0 + 8)
    saved = json.loads(json.dumps(r.export_state()))
    fresh = engine(drawdown_reduce_bps=300, drawdown_halt_bps=500, daily_loss_limit=D("1000"))
    fresh.restore_state(saved, T0 + 9)
    assert fresh.state is TradingState.PAUSED and fresh.level is TradingState.REDUCING
    assert fresh.breakers["drawdown"].reason == "drawdown_reduce"
    assert fresh.peak == START and fresh.day_open_equity == r.day_open_equity
    assert fresh.export_state() == saved
    (rec,) = fresh.drain()
    assert rec.source == "restart" and rec.state == "PAUSED"
    fresh.clear_pause(T0 + 10)
    assert fresh.state is TradingState.REDUCING  # the trip is still there


def test_restore_from_store_breaker_rows() -> None:
    rows = [
        SimpleNamespace(
            breaker="drawdown", tripped=True, reason="drawdown_halt", since_ns=5, detail={"level": "HALTED"}
        ),
        SimpleNamespace(breaker="storage_lag", tripped=True, reason="storage_lag", since_ns=5, detail={}),
        SimpleNamespace(breaker="daily_loss", tripped=False, reason="x", since_ns=5, detail={}),
    ]
    r = engine()
    r.restore_breakers(rows, T0, peak=START)
    assert r.state is TradingState.HALTED and set(r.breakers) == {"drawdown"}
    assert not r.storage_lag and r.peak == START


def test_order_for_builds_the_order_the_decision_allows() -> None:
    i = intent(qty=700)
    assert order_for(i, Adjusted(500, "max_position"), 42).qty == 500
    assert order_for(i, Approved(), 43).status_name == "Pending"
    denied = order_for(i, Denied("halted"), 44)
    assert denied.status_name == "Denied" and denied.status.reason == "halted" and denied.is_terminal


# --- property: whatever is approved and fills, the limits hold -----------------------------------------
@settings(max_examples=120, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["BTCUSDT", "ETHUSDT"]),
            st.sampled_from([Side.BUY, Side.SELL]),
            st.integers(-5, 6_000),
            st.booleans(),
            st.integers(-3_000, 3_000),
        ),
        max_size=40,
    )
)
def test_approved_orders_never_break_limits(steps: list[tuple]) -> None:
    r = engine(
        default_limits=SymbolLimits(max_position=D("0.02"), max_notional=D("1000"), max_order_qty=D("0.01")),
        symbols={"ETHUSDT": SymbolLimits(max_position=D("0.5"), max_notional=D("1200"))},
        max_total_notional=D("2000"),
        max_leverage=D(2),
    )
    pf = Portfolio(INSTS, 1_500 * USDT)
    for sym, side, qty, market, move in steps:
        bid, ask = top(sym)
        bid, ask = bid + move, ask + move
        pf.mark(sym, bid, ask)
        price = None if market else (ask if side is Side.BUY else bid)
        typ = OrderType.MARKET if market else OrderType.LIMIT
        i = intent(sym, side, qty, price, typ)
        d = r.check(i, pf, (bid, ask), T0)
        assert isinstance(d, Approved | Adjusted | Denied)
        if isinstance(d, Denied):
            continue
        n = d.new_qty if isinstance(d, Adjusted) else qty
        assert 1 <= n <= qty and n <= 1_000
        before = abs(pf.qty(sym))
        fill_at(pf, sym, side, ask if side is Side.BUY else bid, n)  # never raises ImpossibleFill
        pf.mark(sym, bid, ask)
        after = abs(pf.qty(sym))
        inst = BTC if sym == "BTCUSDT" else ETH
        limit = 2_000 if sym == "BTCUSDT" else 500
        assert after <= max(limit, before - 1)  # within the limit, or at least smaller than before
        assert pf.qty("BTCUSDT") >= 0
        if after > before:
            ref = ask if side is Side.BUY else bid
            assert inst.notional(ref, after) <= (1_000 if sym == "BTCUSDT" else 1_200) * USDT
            assert pf.exposure <= 2_000 * USDT + 10 * USDT  # marks may move it slightly past


@settings(max_examples=150, deadline=None)
@given(
    pos=st.integers(-3_000, 3_000),
    resting=st.integers(0, 3_000),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    qty=st.integers(1, 8_000),
    reduce_only=st.booleans(),
)
def test_in_reducing_every_approved_order_shrinks_the_position(
    pos: int, resting: int, side: Side, qty: int, reduce_only: bool
) -> None:
    r = engine(drawdown_reduce_bps=100)
    pf = Portfolio(INSTS, START)
    if pos:
        fill_at(pf, "ETHUSDT", Side.BUY if pos > 0 else Side.SELL, 300_000, abs(pos))
    if resting:
        pf.on_order(new_order(1, "ETHUSDT", side, OrderType.LIMIT, TimeInForce.GTC, resting, 300_000, T0))
    r.restore_state(
        {**r.export_state(), "breakers": {"drawdown": {"level": "REDUCING", "reason": "x", "since_ns": T0}}},
        T0,
    )
    assert r.state is TradingState.REDUCING
    d = r.check(intent("ETHUSDT", side, qty, 300_000, reduce_only=reduce_only), pf, ETH_TOP, T0)
    if isinstance(d, Denied):
        return
    n = d.new_qty if isinstance(d, Adjusted) else qty
    worst_after = pos + int(side) * (resting + n)
    assert pos * int(side) < 0 and abs(worst_after) < abs(pos) and worst_after * pos >= 0


junk = st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3), st.floats(allow_nan=True), st.booleans())


@settings(max_examples=200, deadline=None)
@given(
    symbol=st.one_of(st.sampled_from(["BTCUSDT", "ETHUSDT", "X"]), junk),
    side=st.one_of(st.sampled_from(list(Side)), junk),
    typ=st.one_of(st.sampled_from(list(OrderType)), junk),
    tif=st.one_of(st.sampled_from(list(TimeInForce)), junk),
    qty=st.one_of(st.integers(-10, 10**6), junk),
    price=st.one_of(st.integers(-10, 10**7), junk),
    top_=st.one_of(st.none(), st.tuples(st.integers(1, 10**7), st.integers(1, 10**7))),
)
def test_check_never_raises(symbol, side, typ, tif, qty, price, top_) -> None:
    r = RiskEngine(RiskConfig(), INSTS)
    pf = Portfolio(INSTS, START)
    d = r.check(OrderIntent(symbol, side, typ, tif, qty, price, T0), pf, top_, T0)
    assert isinstance(d, Approved | Adjusted | Denied)
    (rec,) = r.drain()
    assert rec.verdict in ("approved", "adjusted", "denied") and rec.reason == d.reason
    if not isinstance(d, Denied):
        assert symbol in ("BTCUSDT", "ETHUSDT") and type(qty) is int and qty > 0


def test_escalation_reducing_then_halted_is_recorded_each_time() -> None:
    r, pf = breaker_setup()
    pf.mark("BTCUSDT", 5_650_000, 5_650_001)  # 3.5 %
    r.update(pf, T0 + 1)
    pf.mark("BTCUSDT", 5_450_000, 5_450_001)  # 5.5 %
    r.update(pf, T0 + 2)
    recs = r.drain()
    assert [(type(x).__name__, getattr(x, "reason", "")) for x in recs] == [
        ("BreakerChanged", "drawdown_reduce"),
        ("TradingStateChanged", "drawdown:drawdown_reduce"),
        ("BreakerChanged", "drawdown_halt"),
        ("TradingStateChanged", "drawdown:drawdown_halt"),
    ]
    assert recs[-1].previous == "REDUCING" and recs[-1].state == "HALTED"
    assert r.export_state()["breakers"]["drawdown"]["detail"]["drawdown"] == 550 * USDT


def test_an_account_without_equity_does_not_trip_on_a_meaningless_percentage() -> None:
    r = engine(drawdown_reduce_bps=100, drawdown_halt_bps=200)
    pf = Portfolio(INSTS, 0)
    r.update(pf, T0)
    assert r.state is TradingState.ACTIVE
    assert r.check(intent(), pf, BTC_TOP, T0) == Denied("insufficient_quote")
