"""The Shabbat / Yom Tov policy on a replayed clock: the lead time, the window start, hold and flatten mode.

- From `pause_lead_s` before a window only exposure-reducing orders pass (reason `shabbat_lead`), so
  nothing new is opened or left resting into the window.
- At the window start whatever still rests is cancelled and, in flatten mode, what is still open is
  flattened again (a flatten in the lead time may fill only partly on a thin book).
- Hold mode: at the lead time each open position gets a reduce-only stop-loss and take-profit (one
  cancels the other); they rest through the window, and the one a trade reaches closes the position.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from worker.broker import OrderUpdate
from worker.calendar import CalendarClock, CalendarConfig, pause_windows
from worker.engine import Engine
from worker.events import DepthDiff, DepthSnapshot, Market, Trade
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Cancelled, Denied, Fill, OrderType, Side, TimeInForce
from worker.risk import TradingStateChanged
from worker.trader import PauseChange, ScheduledOrder, Trader, TradingConfig

NS = 1_000_000_000
MIN = 60 * NS
SPOT = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
SPOT_ONLY = {(Market.SPOT, "BTCUSDT"): SPOT}


def friday_window() -> tuple[int, int]:
    config = CalendarConfig()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    window = pause_windows(config, start, start + dt.timedelta(days=7))[0]
    return window.start_ns, window.end_ns


class ThinMarket:
    """A spot book of five levels a side around `mid`; every diff rewrites all of them (so liquidity we
    took is back), and `mid` can be moved between diffs. Update ids contiguous."""

    def __init__(self, mid: int = 6_000_000, bid_qty: int = 50_000, ask_qty: int = 50_000) -> None:
        self.mid = mid
        self.bid_qty = bid_qty
        self.ask_qty = ask_qty
        self.u = 100
        self._last: tuple[list, list] = ([], [])

    def _levels(self) -> tuple[list, list]:
        bids = [(self.mid - i, self.bid_qty) for i in range(1, 6)]
        asks = [(self.mid + i, self.ask_qty) for i in range(1, 6)]
        return bids, asks

    def snapshot(self, ts: int) -> DepthSnapshot:
        bids, asks = self._last = self._levels()
        return DepthSnapshot("BTCUSDT", Market.SPOT, self.u, bids, asks, ts)

    def diff(self, ts: int) -> DepthDiff:
        self.u += 1
        bids, asks = self._levels()
        old_bids, old_asks = self._last
        gone_b = [(p, 0) for p, _ in old_bids if p not in {q for q, _ in bids}]
        gone_a = [(p, 0) for p, _ in old_asks if p not in {q for q, _ in asks}]
        self._last = (bids, asks)
        return DepthDiff("BTCUSDT", Market.SPOT, self.u, self.u, None, gone_b + bids, gone_a + asks, ts, ts)

    def trade(self, ts: int, trade_id: int, price: int | None = None, qty: int = 10) -> Trade:
        return Trade("BTCUSDT", Market.SPOT, trade_id, price or self.mid + 1, qty, False, ts, ts)


def row(t_ns: int, side: Side, type_: OrderType, tif: TimeInForce, qty: str, ref=None, offset=0):
    return ScheduledOrder(t_ns // 1_000_000, side, type_, tif, Decimal(qty), None, ref, offset)


def drive(engine: Engine, market: ThinMarket, times: list[int], on_step=None) -> list:
    outputs = engine.on_event(market.snapshot(times[0]))
    for n, ts in enumerate(times[1:], 1):
        if on_step is not None:
            on_step(ts, market)
        outputs += engine.on_event(market.diff(ts))
        outputs += engine.on_event(market.trade(ts + 1, n))
    return outputs


def timeline(start_ns: int, end_ns: int) -> list[int]:
    """Every minute from 30 min before the window to 10 min into it, then every 10 min to 1 h after."""
    fine = list(range(start_ns - 30 * MIN, start_ns + 10 * MIN, MIN))
    coarse = list(range(start_ns + 10 * MIN, end_ns + 60 * MIN, 10 * MIN))
    return fine + coarse


def final_orders(outputs: list) -> list:
    orders = {}
    for o in outputs:
        if isinstance(o, OrderUpdate):
            orders[o.order.order_id] = o.order
    return [orders[i] for i in sorted(orders)]


def engine_with(schedule, **trading) -> Engine:
    trader = Trader(
        [SPOT],
        schedule=schedule,
        calendar=CalendarClock(CalendarConfig()),
        trading=TradingConfig(pause_lead_s=300, **trading),
    )
    return Engine(SPOT_ONLY, trader=trader)


def test_orders_in_the_lead_time_cannot_open_exposure_and_the_state_says_why() -> None:
    start_ns, end_ns = friday_window()
    lead_ns = start_ns - 300 * NS
    schedule = [
        row(start_ns - 20 * MIN, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.01"),  # before: passes
        row(lead_ns + 60 * NS, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, "0.001", "bid", -50),
        row(lead_ns + 120 * NS, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.001"),
    ]
    engine = engine_with(schedule, flatten_before_pause=True)
    outputs = drive(engine, ThinMarket(), timeline(start_ns, end_ns))
    scripted = [o for o in final_orders(outputs) if o.tag.startswith("script:")]
    assert [o.status_name for o in scripted] == ["Filled", "Denied", "Denied"]
    assert all(o.status.reason == "shabbat_lead" for o in scripted[1:])
    lead_states = [o for o in outputs if isinstance(o, TradingStateChanged) and o.reason == "shabbat_lead"]
    assert [(s.state, s.ts_ns >= lead_ns) for s in lead_states] == [("REDUCING", True)]
    flattens = [o for o in final_orders(outputs) if o.tag == "flatten"]
    assert flattens and flattens[0].created_ns < start_ns, "flattened in the lead time"
    assert engine.trader.portfolio.qty("BTCUSDT") == 0
    assert engine.trader.risk.state.value == "ACTIVE", "resumed after havdalah"
    assert [p.paused for p in outputs if isinstance(p, PauseChange)] == [True, False]


def test_flatten_mode_flattens_again_at_the_window_start_when_the_lead_flatten_fell_short() -> None:
    start_ns, end_ns = friday_window()
    # A thin bid side: the lead-time flatten of 10_000 lots finds only 5 x 1_000 lots.
    market = ThinMarket(bid_qty=1_000, ask_qty=4_000)
    schedule = [row(start_ns - 20 * MIN, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.1")]
    engine = engine_with(schedule, flatten_before_pause=True)
    outputs = drive(engine, market, timeline(start_ns, end_ns))
    flattens = [o for o in final_orders(outputs) if o.tag == "flatten"]
    assert len(flattens) >= 2
    lead_flatten, start_flatten = flattens[0], flattens[1]
    assert start_ns - 300 * NS <= lead_flatten.created_ns < start_ns
    assert start_ns <= start_flatten.created_ns < start_ns + MIN, "flattened again at the window start"
    assert lead_flatten.filled_qty == 5_000 and start_flatten.filled_qty == 5_000
    assert engine.trader.portfolio.qty("BTCUSDT") == 0
    inside = [o for o in final_orders(outputs) if start_ns + MIN <= o.created_ns < end_ns]
    assert not [o for o in inside if not isinstance(o.status, Denied)]


def test_an_order_resting_at_the_window_start_is_cancelled_there() -> None:
    """A reduce-only order may pass in the lead time (it reduces); whatever of it still rests at the
    window start is cancelled so nothing is left working through Shabbat."""
    start_ns, end_ns = friday_window()
    lead_ns = start_ns - 300 * NS
    schedule = [
        row(start_ns - 20 * MIN, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.01"),
        row(lead_ns + 60 * NS, Side.SELL, OrderType.LIMIT, TimeInForce.GTC, "0.005", "ask", 80),
    ]
    engine = engine_with(schedule, flatten_before_pause=False, protect_positions=False)
    outputs = drive(engine, ThinMarket(), timeline(start_ns, end_ns))
    scripted = [o for o in final_orders(outputs) if o.tag.startswith("script:")]
    sell = scripted[1]
    assert isinstance(sell.status, Cancelled) and sell.status.reason == "shabbat"
    cancels = [
        o
        for o in outputs
        if isinstance(o, OrderUpdate) and o.order.order_id == sell.order_id and o.event == "cancelled"
    ]
    assert cancels and start_ns <= cancels[0].ts_ns < start_ns + MIN
    assert engine.trader.portfolio.qty("BTCUSDT") == 1_000, "hold mode without exits keeps the position"
    assert not [o for o in outputs if isinstance(o, Fill) and o.order_id == sell.order_id]


# --- hold mode: protective exits ----------------------------------------------------------------------
def hold_run(move_to: int | None, at_ns: int) -> tuple[Engine, list, int, int]:
    """Buy 0.01 BTC before the window, hold it with exits; from `at_ns` the market moves to `move_to`."""
    start_ns, end_ns = friday_window()
    schedule = [row(start_ns - 20 * MIN, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.01")]
    engine = engine_with(
        schedule, flatten_before_pause=False, protect_stop_bps=100, protect_take_profit_bps=200
    )
    market = ThinMarket()

    def move(ts: int, m: ThinMarket) -> None:
        if move_to is not None and ts >= at_ns:
            m.mid = move_to

    return engine, drive(engine, market, timeline(start_ns, end_ns), move), start_ns, end_ns


def protective(outputs: list) -> tuple:
    orders = [o for o in final_orders(outputs) if o.tag.startswith("protect:")]
    stop = next(o for o in orders if o.tag == "protect:stop_loss")
    take = next(o for o in orders if o.tag == "protect:take_profit")
    return stop, take


def test_hold_mode_places_a_stop_and_a_take_profit_in_the_lead_time_and_the_stop_closes_the_position() -> (
    None
):
    start_ns, _ = friday_window()
    engine, outputs, start_ns, end_ns = hold_run(5_900_000, start_ns + 3 * 3600 * NS)  # -1.7 %, inside
    stop, take = protective(outputs)
    assert stop.type is OrderType.STOP_MARKET and stop.reduce_only and stop.oco == take.oco > 0
    assert take.type is OrderType.LIMIT and take.tif is TimeInForce.GTC and take.reduce_only
    assert start_ns - 300 * NS <= stop.created_ns < start_ns and stop.qty == take.qty == 1_000
    bid = 6_000_000 - 1
    assert stop.stop_price == bid - bid // 100 and take.price == bid + bid * 2 // 100
    assert stop.status_name == "Filled"
    stop_fills = [o for o in outputs if isinstance(o, Fill) and o.order_id == stop.order_id]
    assert stop_fills and all(start_ns < f.ts_ns < end_ns for f in stop_fills), "it acted inside the window"
    assert all(f.price < stop.stop_price for f in stop_fills), "triggered through, filled at the book"
    assert isinstance(take.status, Cancelled) and take.status.reason == "OCO"
    assert engine.trader.portfolio.qty("BTCUSDT") == 0
    inside = [o for o in final_orders(outputs) if start_ns <= o.created_ns < end_ns]
    assert not [o for o in inside if not isinstance(o.status, Denied)], "no new order inside the window"


def test_hold_mode_take_profit_fills_and_cancels_the_stop() -> None:
    start_ns, _ = friday_window()
    engine, outputs, *_ = hold_run(6_200_000, start_ns + 3 * 3600 * NS)  # +3.3 %: crosses the take-profit
    stop, take = protective(outputs)
    assert take.status_name == "Filled"
    assert isinstance(stop.status, Cancelled) and stop.status.reason == "OCO"
    assert engine.trader.portfolio.qty("BTCUSDT") == 0
    assert engine.trader.portfolio.realized_pnl > 0


def test_hold_mode_untouched_exits_are_cancelled_at_havdalah_and_the_position_is_held() -> None:
    engine, outputs, _, end_ns = hold_run(None, 0)
    stop, take = protective(outputs)
    for order in (stop, take):
        assert isinstance(order.status, Cancelled) and order.status.reason == "havdalah"
    cancelled_at = [
        o.ts_ns for o in outputs if isinstance(o, OrderUpdate) and o.event == "cancelled" and o.order.oco
    ]
    assert cancelled_at and all(t >= end_ns for t in cancelled_at)
    assert engine.trader.portfolio.qty("BTCUSDT") == 1_000
    assert not [o for o in outputs if getattr(o, "kind", "") == "unprotected_position"]


def test_protective_distances_are_validated() -> None:
    import pytest

    from worker.errors import ConfigError

    for bad in ({"protect_stop_bps": 0}, {"protect_take_profit_bps": 10_000}, {"protect_stop_bps": 1.5}):
        with pytest.raises(ConfigError, match=r"trading\.protect_"):
            TradingConfig(**bad).validate()
    with pytest.raises(ConfigError, match="max_price_deviation_bps"):
        Trader([SPOT], trading=TradingConfig(protect_take_profit_bps=600))
