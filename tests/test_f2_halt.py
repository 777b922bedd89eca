"""Flatten on HALT keeps trying until the position is closed (paced: one flatten per symbol per second).

The first flatten after the breaker trips can fall short: denied (no book while resyncing, a rate limit)
or filled only in part (a thin book, the price protection). The trader re-issues reduce-only flattens
while HALTED and a position is open.
"""

from __future__ import annotations

import itertools

from tests.test_f2_shabbat import SPOT, SPOT_ONLY, ThinMarket, final_orders, row
from worker.engine import Engine
from worker.orders import OrderType, Side, TimeInForce
from worker.risk import RiskConfig
from worker.trader import Trader

NS = 1_000_000_000


def test_flatten_on_halt_is_retried_until_flat_and_paced() -> None:
    t0 = 1_700_000_000 * NS
    market = ThinMarket(bid_qty=1_000, ask_qty=4_000)  # 5 x 1_000 lots on the bid: a flatten finds half
    schedule = [row(t0 + NS, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.1")]
    risk = RiskConfig(drawdown_reduce_bps=None, drawdown_halt_bps=300, flatten_on_halt=True)
    engine = Engine(SPOT_ONLY, trader=Trader([SPOT], schedule=schedule, risk=risk))
    outputs = engine.on_event(market.snapshot(t0))
    ts = t0
    for step in range(1, 60):
        ts = t0 + step * 200_000_000
        if step == 20:
            market.mid = 5_400_000  # -10 %: the drawdown breaker HALTs trading
        outputs += engine.on_event(market.diff(ts))
    trader = engine.trader
    assert trader.risk.state.value == "HALTED"
    flattens = [o for o in final_orders(outputs) if o.tag == "flatten"]
    assert len(flattens) >= 2, "the first flatten fell short and was retried"
    assert flattens[0].filled_qty == 5_000 and flattens[0].status_name == "Cancelled"
    assert trader.portfolio.qty("BTCUSDT") == 0
    times = [o.created_ns for o in flattens]
    assert all(b - a >= NS for a, b in itertools.pairwise(times)), "at most one per second"
    assert sum(o.filled_qty for o in flattens) == 10_000


def test_no_retry_without_flatten_on_halt() -> None:
    t0 = 1_700_000_000 * NS
    market = ThinMarket(bid_qty=1_000, ask_qty=4_000)
    schedule = [row(t0 + NS, Side.BUY, OrderType.MARKET, TimeInForce.IOC, "0.1")]
    risk = RiskConfig(drawdown_reduce_bps=None, drawdown_halt_bps=300, flatten_on_halt=False)
    engine = Engine(SPOT_ONLY, trader=Trader([SPOT], schedule=schedule, risk=risk))
    outputs = engine.on_event(market.snapshot(t0))
    for step in range(1, 40):
        if step == 20:
            market.mid = 5_400_000
        outputs += engine.on_event(market.diff(t0 + step * 200_000_000))
    assert not [o for o in final_orders(outputs) if o.tag == "flatten"]
    assert engine.trader.portfolio.qty("BTCUSDT") == 10_000
