"""Funding from the stream only with a fresh rate; the promised interfaces of the trading core.

- After a long disconnect the stale mark in hand does not settle a funding time with an hours-old rate:
  the time is reported `funding_unsettled` (and so are later ones the gap swallowed) for the REST history.
- `Trader.settle_funding` applies one funding event once; `check_limits_at_prices` refuses limits no
  order can meet at a price; the first LIVE book checks the same (`config_unusable`); every book event
  that computed features carries the symbol's `FeatureVector` in the outputs.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.test_f2_shabbat import SPOT, SPOT_ONLY, ThinMarket
from tests.test_funding import BTC, HOUR_MS, MS, T8, fill, mark, payments_in, usdm_engine
from worker.engine import Engine
from worker.errors import ConfigError
from worker.features import FeatureVector
from worker.orders import Side
from worker.portfolio import FundingRate
from worker.risk import RiskConfig, SymbolLimits, check_limits_at_prices
from worker.trader import Incident, Trader

NS = 1_000_000_000


def incidents(outputs: list, kind: str) -> list[Incident]:
    return [o for o in outputs if type(o) is Incident and o.kind == kind]


def test_a_stale_mark_after_a_long_disconnect_does_not_settle_funding() -> None:
    engine, trader = usdm_engine()
    trader.portfolio.apply_fill(fill(1, Side.BUY, 600_000, 2_000, (T8 - 5 * HOUR_MS) * MS))
    engine.on_event(mark(600_000, 10_000, T8, T8 - 3 * HOUR_MS))  # then the stream was away for hours
    out = engine.on_event(mark(610_000, 30_000, T8 + 8 * HOUR_MS, T8 + 2 * HOUR_MS))
    assert not payments_in(out) and trader.portfolio.funding == 0
    reported = incidents(out, "funding_unsettled")
    assert str(T8 * MS) in reported[0].detail and "10800 s" in reported[0].detail
    assert reported[0].at_ns == T8 * MS  # the shell settles exactly that time from the REST history
    # 2 h after T8 a 1 h funding interval would have passed too: that is reported as well (the REST
    # history, which skips what is settled, decides)
    assert len(reported) == 2 and "passed unseen" in reported[1].detail and reported[1].at_ns is None


def test_a_fresh_mark_settles_and_funding_times_swallowed_by_a_gap_are_reported() -> None:
    engine, trader = usdm_engine()
    trader.portfolio.apply_fill(fill(1, Side.BUY, 600_000, 2_000, (T8 - 5 * HOUR_MS) * MS))
    t0 = T8 - 16 * HOUR_MS
    engine.on_event(mark(600_000, 10_000, t0, t0 - 30_000))  # 30 s before: fresh
    out = engine.on_event(mark(600_000, 10_000, t0 + 8 * HOUR_MS, t0 + 1_000))  # clean crossing: 8 h learnt
    assert [p.funding_ns for p in payments_in(out)] == [t0 * MS]
    engine.on_event(mark(600_000, 20_000, T8 - 8 * HOUR_MS, T8 - 8 * HOUR_MS - 10_000))  # fresh, 10 s before
    # ... then a disconnect of 20 h: T8-8h settles with the fresh rate; T8 and T8+8h passed unseen
    out = engine.on_event(mark(600_000, 50_000, T8 + 16 * HOUR_MS, T8 + 12 * HOUR_MS))
    assert [(p.funding_ns, p.rate_e8) for p in payments_in(out)] == [((T8 - 8 * HOUR_MS) * MS, 20_000)]
    (incident,) = incidents(out, "funding_unsettled")
    assert "passed unseen" in incident.detail
    # no gap: no incident
    out = engine.on_event(mark(600_000, 50_000, T8 + 16 * HOUR_MS, T8 + 12 * HOUR_MS + 1_000))
    assert not incidents(out, "funding_unsettled")


def test_settle_funding_applies_once_and_updates_risk() -> None:
    trader = Trader([BTC], risk=RiskConfig(daily_loss_limit=Decimal(5)))
    t = T8 - 8 * HOUR_MS  # 16:00 UTC: the same day as the anchor below
    trader.portfolio.apply_fill(fill(1, Side.BUY, 600_000, 2_000, (t - HOUR_MS) * MS))
    trader.portfolio.mark("BTCUSDT", 600_000, 600_001)
    trader.risk.update(trader.portfolio, (t - HOUR_MS) * MS)
    rate = FundingRate("BTCUSDT", 100_000, 600_000, t * MS, t * MS + 5)  # 0.1 %: 120 USDT paid
    out: list = []
    trader.settle_funding(rate, out)
    (payment,) = payments_in(out)
    assert payment.amount == -120 * 10**8 and trader.portfolio.funding == -120 * 10**8
    assert trader.risk.state.value == "HALTED", "the loss reached the daily limit through risk.update"
    again: list = []
    trader.settle_funding(rate, again)
    assert not payments_in(again) and trader.portfolio.funding == -120 * 10**8


def test_check_limits_at_prices_refuses_sizes_below_min_notional() -> None:
    # BTCUSDT spot: min notional 5 USDT; 0.00005 BTC x 60000 = 3 USDT: no order could ever pass
    tiny = RiskConfig(default_limits=SymbolLimits(max_order_qty=Decimal("0.00005")))
    with pytest.raises(ConfigError, match=r"risk\.BTCUSDT\.max_order_qty"):
        check_limits_at_prices(tiny, {"BTCUSDT": SPOT}, {"BTCUSDT": Decimal(60_000)})
    check_limits_at_prices(tiny, {"BTCUSDT": SPOT}, {"BTCUSDT": Decimal(200_000)})  # 10 USDT: fine
    check_limits_at_prices(tiny, {"BTCUSDT": SPOT}, {})  # no price: nothing to say
    pos = RiskConfig(symbols={"BTCUSDT": SymbolLimits(max_position=Decimal("0.00001"))})
    with pytest.raises(ConfigError, match=r"risk\.BTCUSDT\.max_position"):
        check_limits_at_prices(pos, {"BTCUSDT": SPOT}, {"BTCUSDT": Decimal(60_000)})
    check_limits_at_prices(RiskConfig(), {"BTCUSDT": SPOT}, {"BTCUSDT": Decimal(60_000)})


def test_first_live_book_checks_the_limits_once_and_book_events_carry_feature_vectors() -> None:
    tiny = RiskConfig(default_limits=SymbolLimits(max_order_qty=Decimal("0.00005")))
    engine = Engine(SPOT_ONLY, trader=Trader([SPOT], risk=tiny))
    market = ThinMarket()
    t0 = 1_700_000_000 * NS
    out = engine.on_event(market.snapshot(t0))
    out += engine.on_event(market.diff(t0 + NS))  # LIVE from here
    (incident,) = incidents(out, "config_unusable")
    assert "max_order_qty" in incident.detail and incident.ts_ns == t0 + NS
    more: list = []
    for i in range(2, 6):
        more += engine.on_event(market.diff(t0 + i * NS))
    assert not incidents(more, "config_unusable"), "checked once"
    vectors = [o for o in more if type(o) is FeatureVector]
    assert len(vectors) == 4 and [v.ts_ns for v in vectors] == [t0 + i * NS for i in range(2, 6)]
    assert vectors[-1] is engine.trader.symbols["BTCUSDT"].vector
    fine_market = ThinMarket()
    fine = Engine(SPOT_ONLY, trader=Trader([SPOT]))
    fine_out = fine.on_event(fine_market.snapshot(t0)) + fine.on_event(fine_market.diff(t0 + NS))
    assert not incidents(fine_out, "config_unusable") and fine.trader.symbols["BTCUSDT"].book is not None
