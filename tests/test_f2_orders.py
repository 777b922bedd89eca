"""Order and status values refuse impossible states on construction (recovery builds them from rows)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from worker.orders import (
    Cancelled,
    Denied,
    Filled,
    IllegalTransition,
    InvalidOrder,
    Order,
    OrderType,
    PartiallyFilled,
    Pending,
    Rejected,
    Side,
    TimeInForce,
    fill,
    new_order,
)

LIMIT, MARKET, STOP = OrderType.LIMIT, OrderType.MARKET, OrderType.STOP_MARKET
GTC = TimeInForce.GTC


def order(**kw) -> Order:
    base = dict(
        order_id=1, symbol="BTCUSDT", side=Side.BUY, type=LIMIT, tif=GTC, qty=10, price=100, created_ns=0
    )
    base.update(kw)
    return Order(**base)


@pytest.mark.parametrize(
    "kw",
    [
        {"qty": 0},
        {"qty": -5},
        {"qty": 1.5},
        {"qty": True},
        {"price": -5},
        {"price": 0},
        {"price": None},
        {"price": 100.5},
        {"type": MARKET},  # a market order with a price
        {"type": STOP, "price": None},  # no trigger
        {"type": STOP, "price": None, "stop_price": 0},
        {"type": LIMIT, "stop_price": 90},  # only stops have a trigger
        {"type": "LIMIT"},
        {"side": 1},
        {"tif": "GTC"},
        {"status": PartiallyFilled(99)},  # beyond qty 10
        {"status": PartiallyFilled(10)},  # all of it is Filled, not partial
        {"status": Filled(9)},
        {"status": Filled(11)},
        {"status": Cancelled(10, "x")},  # nothing left to cancel
        {"qty": 0, "price": -5, "status": PartiallyFilled(99)},  # the audit's example
    ],
)
def test_invalid_orders_cannot_be_built(kw: dict) -> None:
    with pytest.raises(InvalidOrder):
        order(**kw)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PartiallyFilled(0),
        lambda: PartiallyFilled(-1),
        lambda: Filled(0),
        lambda: Cancelled(-1, "x"),
        lambda: Cancelled(0, None),
        lambda: Pending(3),
        lambda: Rejected("x", 2),
        lambda: Denied("x", 1),
        lambda: Rejected(None),
    ],
)
def test_invalid_statuses_cannot_be_built(make) -> None:
    with pytest.raises(InvalidOrder):
        make()


def test_valid_values_and_the_denied_exemption() -> None:
    order(status=PartiallyFilled(9))
    order(status=Filled(10))
    order(status=Cancelled(0, "x"))
    order(status=Cancelled(9, "x"))
    order(status=Rejected("MIN_NOTIONAL"))
    order(type=MARKET, price=None, tif=TimeInForce.IOC)
    order(type=STOP, price=None, stop_price=95, reduce_only=True)
    # a Denied order records the refused intent as asked, however wrong it was
    order(qty=0, price=-5, status=Denied("invalid_qty"))


def test_transitions_still_work_and_replace_is_checked() -> None:
    o = new_order(1, "BTCUSDT", Side.SELL, STOP, GTC, 10, None, 0, stop_price=95, reduce_only=True)
    assert fill(fill(o, 4), 6).status == Filled(10)
    with pytest.raises(InvalidOrder):
        replace(o, status=Filled(3))
    with pytest.raises(IllegalTransition):  # InvalidOrder is an IllegalTransition (and a ValueError)
        new_order(1, "BTCUSDT", Side.SELL, STOP, GTC, 10, None, 0)
    assert issubclass(InvalidOrder, ValueError)
