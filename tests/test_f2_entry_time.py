"""The strategy's time stop runs from the fill that opened the position, across a resync and a restart.

The trader passes `entry_ts_ns` (the portfolio's `Position.opened_ns`) to `Strategy.on_features`;
without it the strategy re-anchors the entry time after every `reset()` (a resync) and the time stop
restarts.
"""

from __future__ import annotations

from tests.test_f2_shabbat import SPOT, SPOT_ONLY, ThinMarket
from tests.test_portfolio import mkfill
from worker.engine import Engine
from worker.orders import Side
from worker.portfolio import Portfolio
from worker.strategy import Strategy, StrategyConfig
from worker.trader import Trader

NS = 1_000_000_000


class Spy(Strategy):
    """The real strategy, recording the entry time it is given."""

    __slots__ = ("seen",)

    def on_features(self, fv, position_lots, entry_price_ticks, ts_ns=None, entry_ts_ns=None):
        self.seen.append((ts_ns, position_lots, entry_ts_ns))
        return super().on_features(fv, position_lots, entry_price_ticks, ts_ns, entry_ts_ns)


def spy_engine() -> tuple[Engine, Spy]:
    trader = Trader([SPOT])
    state = trader.symbols["BTCUSDT"]
    spy = Spy("BTCUSDT", trader.symbols["BTCUSDT"].features.config.windows_ms, StrategyConfig())
    spy.seen = []
    state.strategy = spy
    return Engine(SPOT_ONLY, trader=trader), spy


def test_position_opened_ns_follows_the_opening_fill() -> None:
    p = Portfolio([SPOT], 10**15)
    p.apply_fill(mkfill("BTCUSDT", Side.BUY, 6_000_000, 100, ts=5))
    p.apply_fill(mkfill("BTCUSDT", Side.BUY, 6_000_000, 100, ts=9))  # adds: still opened at 5
    assert p.positions["BTCUSDT"].opened_ns == 5
    p.apply_fill(mkfill("BTCUSDT", Side.SELL, 6_000_000, 200, ts=12))
    assert p.positions["BTCUSDT"].opened_ns == 0
    p.apply_fill(mkfill("BTCUSDT", Side.BUY, 6_000_000, 10, ts=20))
    assert p.positions["BTCUSDT"].opened_ns == 20


def test_the_entry_time_reaches_the_strategy_across_a_resync_and_a_restart() -> None:
    engine, spy = spy_engine()
    market = ThinMarket()
    t0 = 1_700_000_000 * NS
    engine.on_event(market.snapshot(t0))
    engine.on_event(market.diff(t0 + NS))
    opened = t0 + NS + 1
    fill = mkfill("BTCUSDT", Side.BUY, 6_000_001, 1_000, ts=opened)
    engine.trader.portfolio.apply_fill(fill)
    engine.on_event(market.diff(t0 + 2 * NS))
    assert spy.seen[-1] == (t0 + 2 * NS, 1_000, opened)
    engine.resync(*next(iter(SPOT_ONLY)), "test", t0 + 3 * NS)  # the strategy forgets its state
    market.u += 10
    engine.on_event(market.snapshot(t0 + 4 * NS))
    engine.on_event(market.diff(t0 + 5 * NS))
    assert spy.seen[-1] == (t0 + 5 * NS, 1_000, opened), "not re-anchored at the resync"
    # a restart rebuilds the portfolio from the fills: the entry time comes back with it
    engine2, spy2 = spy_engine()
    engine2.restore(
        [fill], last_order_id=1, last_fill_id=fill.fill_id, breakers=[], equity_peak=None, ts_ns=t0
    )
    m2 = ThinMarket()
    engine2.on_event(m2.snapshot(t0 + 6 * NS))
    engine2.on_event(m2.diff(t0 + 7 * NS))
    assert spy2.seen[-1] == (t0 + 7 * NS, 1_000, opened)
