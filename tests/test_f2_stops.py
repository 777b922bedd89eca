"""Stop orders and one-cancels-the-other lists at the paper venue, and risk's view of them.

- A STOP_MARKET rests untriggered; a trade at or through its trigger (after it arrived) turns it into a
  market order that walks the book held at that trade; one the market already reached is rejected.
- The first fill of one order of an OCO list cancels the others at that instant (never both execute).
- Risk: a stop must be reduce-only, on the right side of the market; the orders of one list count once
  against the position.
"""

from __future__ import annotations

from dataclasses import replace

from tests.test_broker import ARRIVE, ASKS, BIDS, INST, MS, SYM, Venue
from tests.test_portfolio import mkfill
from worker.broker import REJECT_STOP_TRIGGER, OrderUpdate
from worker.orders import Cancelled, OrderType, Side, TimeInForce, new_order
from worker.portfolio import Portfolio
from worker.risk import Denied as RiskDenied
from worker.risk import OrderIntent, RiskConfig, RiskEngine, order_for


def stop(v: Venue, side: Side, qty: int, trigger: int, ts: int = 0, oco: int = 0):
    order = new_order(
        v.next_id, SYM, side, OrderType.STOP_MARKET, TimeInForce.GTC, qty, None, ts, "protect",
        stop_price=trigger, reduce_only=True, oco=oco,
    )  # fmt: skip
    v.next_id += 1
    assert v.broker.submit(order, None, ts) == []
    return order


def limit(v: Venue, side: Side, qty: int, price: int, ts: int = 0, oco: int = 0):
    order = new_order(
        v.next_id,
        SYM,
        side,
        OrderType.LIMIT,
        TimeInForce.GTC,
        qty,
        price,
        ts,
        "protect",
        reduce_only=True,
        oco=oco,
    )
    v.next_id += 1
    v.broker.submit(order, None, ts)
    return order


def started() -> Venue:
    v = Venue.make()
    v.snapshot(BIDS, ASKS, 0)
    return v


def test_a_sell_stop_waits_then_a_trade_through_its_trigger_sells_into_the_bids() -> None:
    v = started()
    s = stop(v, Side.SELL, 40, 9999)
    v.trade(ARRIVE - MS, 9998, 1, True)  # before it arrived: nothing
    v.tick(ARRIVE)
    assert v.last(s.order_id).status_name == "Pending" and v.broker.stops(SYM)
    v.trade(ARRIVE + MS, 10000, 1, True)  # above the trigger: nothing
    assert not v.fills(s.order_id)
    v.trade(ARRIVE + 2 * MS, 9999, 1, True)  # at the trigger: a market sell on the book held now
    fills = v.fills(s.order_id)
    assert [(f.price, f.qty) for f in fills] == [(10000, 10), (9999, 20), (9998, 10)]
    assert all(f.liquidity.value == "taker" for f in fills)
    assert v.last(s.order_id).status_name == "Filled" and not v.broker.stops(SYM)


def test_a_buy_stop_triggers_at_or_above_and_a_stop_already_reached_is_rejected() -> None:
    v = started()
    reached = stop(v, Side.BUY, 5, 10001)  # the best ask is already there
    ok = stop(v, Side.BUY, 5, 10003)
    v.tick(ARRIVE)
    assert v.last(reached.order_id).status.reason == REJECT_STOP_TRIGGER
    v.trade(ARRIVE + MS, 10002, 1, False)
    assert not v.fills(ok.order_id)
    v.trade(ARRIVE + 2 * MS, 10004, 1, False)  # through the trigger
    assert [(f.price, f.qty) for f in v.fills(ok.order_id)] == [(10001, 5)]


def test_a_stop_can_be_cancelled_and_then_never_triggers() -> None:
    v = started()
    s = stop(v, Side.SELL, 5, 9990)
    v.tick(ARRIVE)
    v.broker.cancel(s.order_id, ARRIVE)
    v.tick(ARRIVE + 30 * MS)
    assert isinstance(v.last(s.order_id).status, Cancelled)
    v.trade(ARRIVE + 40 * MS, 9980, 1, True)
    assert not v.fills(s.order_id)


def test_oco_take_profit_fill_cancels_the_stop_at_once() -> None:
    v = started()
    s = stop(v, Side.SELL, 5, 9990, oco=7)
    t = limit(v, Side.SELL, 5, 10005, oco=7)
    v.tick(ARRIVE)
    v.trade(ARRIVE + MS, 10006, 5, False)  # through the take-profit
    assert v.last(t.order_id).status_name == "Filled"
    cancelled = v.last(s.order_id)
    assert isinstance(cancelled.status, Cancelled) and cancelled.status.reason == "OCO"
    update = [o for o in v.out if isinstance(o, OrderUpdate) and o.order.order_id == s.order_id][-1]
    assert update.ts_ns == ARRIVE + MS
    v.trade(ARRIVE + 2 * MS, 9980, 5, True)
    assert not v.fills(s.order_id), "the cancelled stop never triggers"


def test_oco_stop_fill_cancels_the_resting_take_profit() -> None:
    v = started()
    s = stop(v, Side.SELL, 5, 9999, oco=3)
    t = limit(v, Side.SELL, 5, 10010, oco=3)
    v.tick(ARRIVE)
    v.trade(ARRIVE + MS, 9999, 1, True)
    assert v.last(s.order_id).status_name == "Filled"
    assert v.last(t.order_id).status.reason == "OCO" and not v.broker.resting(SYM)
    v.diff(ARRIVE + 2 * MS, bids=[(10020, 50)])  # a book crossing the old take-profit fills nothing
    assert not v.fills(t.order_id)


def test_risk_stop_rules_and_an_oco_list_counts_once() -> None:
    risk = RiskEngine(RiskConfig(), [INST])
    p = Portfolio([INST], 10**12)
    p.apply_fill(mkfill(SYM, Side.BUY, 10000, 10))
    top = (10000, 10001)

    def intent(type_, price=None, trigger=None, reduce_only=True, qty=10, oco=5):
        return OrderIntent(
            SYM, Side.SELL, type_, TimeInForce.GTC, qty, price, 1, "protect", reduce_only, trigger, oco
        )

    assert risk.check(
        intent(OrderType.STOP_MARKET, trigger=9990, reduce_only=False), p, top, 1
    ) == RiskDenied("invalid_order")
    assert risk.check(intent(OrderType.STOP_MARKET, trigger=10000), p, top, 1) == RiskDenied(
        "stop_would_trigger"
    )
    assert risk.check(intent(OrderType.MARKET, trigger=9990), p, top, 1) == RiskDenied("invalid_order")
    stop_i, take_i = intent(OrderType.STOP_MARKET, trigger=9990), intent(OrderType.LIMIT, price=10100)
    stop_o = order_for(stop_i, risk.check(stop_i, p, top, 1), 1)
    take_o = order_for(take_i, risk.check(take_i, p, top, 1), 2)
    assert stop_o.status_name == take_o.status_name == "Pending" and stop_o.stop_price == 9990
    p.on_order(stop_o)
    p.on_order(take_o)
    assert p.open_sell_qty(SYM) == 10, "the list counts once"
    other = intent(OrderType.LIMIT, price=10100, oco=0, qty=1)
    assert risk.check(other, p, top, 2) == RiskDenied("reduce_only"), "nothing left to reduce"
    p.on_order(replace(take_o, status=Cancelled(0, "x")))
    assert p.open_sell_qty(SYM) == 10, "the stop still holds its lots"
    p.on_order(replace(stop_o, status=Cancelled(0, "x")))
    assert p.open_sell_qty(SYM) == 0


def test_usdm_reduce_only_orders_are_exempt_from_min_notional_spot_ones_are_not() -> None:
    from tests.test_broker import INST_USDM

    # min notional 0.2 quote = 2 lots at 100.00; a 1-lot position can only be closed reduce-only
    for inst, expected in ((INST_USDM, "Approved"), (INST, "Denied")):
        risk = RiskEngine(RiskConfig(), [inst])
        p = Portfolio([inst], 10**12)
        p.apply_fill(mkfill(SYM, Side.BUY, 10000, 1))
        flatten = OrderIntent(SYM, Side.SELL, OrderType.MARKET, TimeInForce.IOC, 1, None, 1, "flatten", True)
        assert type(risk.check(flatten, p, (10000, 10001), 1)).__name__ == expected
        plain = OrderIntent(SYM, Side.SELL, OrderType.MARKET, TimeInForce.IOC, 1, None, 1, "strategy", False)
        assert risk.check(plain, p, (10000, 10001), 1) == RiskDenied("min_notional")
    # and the venue agrees: a USD-M reduce-only order below min notional is not rejected
    v = Venue.make(inst=INST_USDM)
    v.snapshot(BIDS, ASKS, 0)
    o = new_order(
        1, SYM, Side.SELL, OrderType.MARKET, TimeInForce.IOC, 1, None, 0, "flatten", reduce_only=True
    )
    v.broker.submit(o, None, 0)
    v.tick(ARRIVE)
    assert v.last(1).status_name == "Filled"
