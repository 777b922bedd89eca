"""The order state machine: a table of every (state, action) pair, and random histories that stay valid."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.orders import (
    INITIAL_STATES,
    TERMINAL,
    TRANSITIONS,
    Cancelled,
    Denied,
    Filled,
    IllegalTransition,
    Order,
    OrderType,
    PartiallyFilled,
    Pending,
    Rejected,
    Side,
    TimeInForce,
    cancel,
    denied_order,
    fill,
    new_order,
    reject,
)

QTY = 10


def pending() -> Order:
    return new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, QTY, 6_000_000, 0)


def in_state(name: str) -> Order:
    o = pending()
    if name == "Pending":
        return o
    if name == "PartiallyFilled":
        return fill(o, 4)
    if name == "Filled":
        return fill(o, QTY)
    if name == "Cancelled":
        return cancel(fill(o, 4), "CANCELED")
    if name == "Rejected":
        return reject(o, "MIN_NOTIONAL")
    if name == "Denied":
        b, lim, gtc = Side.BUY, OrderType.LIMIT, TimeInForce.GTC
        return denied_order(1, "BTCUSDT", b, lim, gtc, QTY, 1, 0, "max_position")
    raise AssertionError(name)


ACTIONS = {
    "fill_1": lambda o: fill(o, 1),
    "fill_rest": lambda o: fill(o, o.qty - o.filled_qty),
    "overfill": lambda o: fill(o, o.qty - o.filled_qty + 1),
    "fill_0": lambda o: fill(o, 0),
    "fill_neg": lambda o: fill(o, -1),
    "fill_float": lambda o: fill(o, 1.0),
    "fill_bool": lambda o: fill(o, True),
    "cancel": lambda o: cancel(o, "CANCELED"),
    "reject": lambda o: reject(o, "PRICE_FILTER"),
}

# (state, action) -> resulting status name, or None when the move is illegal.
TABLE = {
    ("Pending", "fill_1"): "PartiallyFilled",
    ("Pending", "fill_rest"): "Filled",
    ("Pending", "cancel"): "Cancelled",
    ("Pending", "reject"): "Rejected",
    ("PartiallyFilled", "fill_1"): "PartiallyFilled",
    ("PartiallyFilled", "fill_rest"): "Filled",
    ("PartiallyFilled", "cancel"): "Cancelled",
}
STATES = ["Pending", "PartiallyFilled", "Filled", "Cancelled", "Rejected", "Denied"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", list(ACTIONS))
def test_transition_table(state: str, action: str) -> None:
    order = in_state(state)
    assert order.status_name == state
    expected = TABLE.get((state, action))
    if expected is None:
        with pytest.raises(IllegalTransition):
            ACTIONS[action](order)
        return
    new = ACTIONS[action](order)
    assert new.status_name == expected
    assert expected in TRANSITIONS[state]
    assert order.status_name == state  # values are immutable: the old order is unchanged
    assert new.filled_qty >= order.filled_qty


def test_table_matches_transitions_constant() -> None:
    legal = {(s, TABLE[(s, a)]) for (s, a) in TABLE}
    declared = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert legal == declared
    assert all(not TRANSITIONS[cls.__name__] for cls in TERMINAL)
    assert {"Pending", "Denied"} == INITIAL_STATES


def test_cancel_keeps_what_was_filled() -> None:
    o = cancel(fill(pending(), 3), "restart")
    assert o.status == Cancelled(3, "restart")
    assert o.remaining_qty == 0 and o.is_terminal and not o.is_open


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"qty": 0}, "quantity"),
        ({"qty": -5}, "quantity"),
        ({"qty": 1.5}, "quantity"),
        ({"qty": True}, "quantity"),
        ({"price": None}, "price"),
        ({"price": 0}, "price"),
        ({"price": -1}, "price"),
        ({"price": 100.5}, "price"),  # a fraction of a tick is off the grid
        ({"type": OrderType.MARKET}, "market order has no price"),
        ({"type": OrderType.MARKET, "price": None, "tif": TimeInForce.GTX}, "post-only"),
        ({"side": 1}, "unknown side"),
    ],
)
def test_new_order_refuses_impossible_values(kwargs: dict, message: str) -> None:
    args = {
        "order_id": 1,
        "symbol": "BTCUSDT",
        "side": Side.SELL,
        "type": OrderType.LIMIT,
        "tif": TimeInForce.GTC,
        "qty": 3,
        "price": 100,
        "created_ns": 0,
    }
    args.update(kwargs)
    with pytest.raises(IllegalTransition, match=message):
        new_order(**args)


def test_market_order_without_price_is_fine() -> None:
    o = new_order(2, "BTCUSDT", Side.SELL, OrderType.MARKET, TimeInForce.IOC, 3, None, 5)
    assert o.status == Pending() and o.remaining_qty == 3 and o.is_open


def _valid(order: Order) -> None:
    status = order.status
    assert 0 <= order.filled_qty <= order.qty
    if isinstance(status, Pending):
        assert order.filled_qty == 0
    elif isinstance(status, PartiallyFilled):
        assert 0 < status.filled_qty < order.qty
    elif isinstance(status, Filled):
        assert status.filled_qty == order.qty
    elif isinstance(status, Rejected | Denied):
        assert status.filled_qty == 0
    assert order.remaining_qty == (0 if order.is_terminal else order.qty - order.filled_qty)


actions = st.lists(
    st.one_of(
        st.tuples(st.just("fill"), st.integers(-3, 12)),
        st.tuples(st.just("cancel"), st.just(0)),
        st.tuples(st.just("reject"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(qty=st.integers(1, 10), steps=actions)
def test_random_histories_never_produce_an_invalid_order(qty: int, steps: list[tuple[str, int]]) -> None:
    order = new_order(7, "ETHUSDT", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, qty, 300_000, 0)
    filled_by_fills = 0
    for action, n in steps:
        before = order
        try:
            if action == "fill":
                order = fill(order, n)
                filled_by_fills += n
            elif action == "cancel":
                order = cancel(order, "CANCELED")
            else:
                order = reject(order, "MIN_NOTIONAL")
        except IllegalTransition:
            order = before  # refused: nothing changed
        else:
            assert order.status_name in TRANSITIONS[before.status_name]
        _valid(order)
        assert order.filled_qty == filled_by_fills  # the order agrees with the fills it accepted
        if before.is_terminal:
            assert order is before  # nothing leaves a terminal state
