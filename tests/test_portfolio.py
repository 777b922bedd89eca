"""Portfolio: exact average cost, exit-side marks, funding, and the P&L identities on random fills."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import MONEY_SCALE, Instrument
from worker.orders import (
    Fill,
    Liquidity,
    OrderType,
    Side,
    TimeInForce,
    cancel,
    fill,
    new_order,
)
from worker.portfolio import (
    FundingPayment,
    FundingRate,
    ImpossibleFill,
    Portfolio,
    rebuild_from_fills,
)
from worker.store.ledger import Position as LedgerPosition
from worker.store.ledger import apply_fill as ledger_apply

# money per tick x lot = 1 for both, so hand arithmetic is readable
SPOT = Instrument("AAAUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.000001"), Decimal("0"), "AAA")
PERP = Instrument("BBBUSDT", Market.USDM, Decimal("0.01"), Decimal("0.000001"), Decimal("0"), "BBB")
INSTS = [SPOT, PERP]
START = 1_000_000_000

_ids = iter(range(1, 10**9))


def mkfill(
    symbol: str,
    side: Side,
    price: int,
    qty: int,
    fee: int = 0,
    fee_asset: str = "USDT",
    order_id: int = 0,
    ts: int = 0,
    fill_id: int | None = None,
) -> Fill:
    fid = next(_ids) if fill_id is None else fill_id
    return Fill(
        *(fid, order_id, symbol, side, price, qty, fee, fee_asset, Liquidity.TAKER, ts, "t/1"),
        *(0, 0, 0.0, 0.0, 0.0),
    )


def test_average_cost_is_an_exact_integer_basis() -> None:
    pf = Portfolio(INSTS, START)
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 1))
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 101, 2))
    p = pf.positions["AAAUSDT"]
    assert (p.qty, p.cost) == (3, 302)  # average 100.666..., never rounded
    assert pf.apply_fill(mkfill("AAAUSDT", Side.SELL, 102, 1)) == 102 - 100  # releases 302 // 3
    assert (p.qty, p.cost) == (2, 202)
    assert pf.apply_fill(mkfill("AAAUSDT", Side.SELL, 102, 2)) == 204 - 202
    assert (p.qty, p.cost, p.realized_pnl) == (0, 0, 4)  # = 306 proceeds - 302 paid, exactly
    assert pf.cash == START + 4


def test_crossing_zero_closes_then_opens_at_the_fill_price() -> None:
    pf = Portfolio(INSTS, START)
    pf.apply_fill(mkfill("BBBUSDT", Side.BUY, 100, 2))
    realized = pf.apply_fill(mkfill("BBBUSDT", Side.SELL, 110, 5))
    p = pf.positions["BBBUSDT"]
    assert realized == 20
    assert (p.qty, p.cost) == (-3, -330)


def test_marks_use_the_exit_side() -> None:
    pf = Portfolio(INSTS, START)
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 10))
    pf.apply_fill(mkfill("BBBUSDT", Side.SELL, 200, 10))
    assert pf.equity == START  # no marks yet: valued at cost
    pf.mark("AAAUSDT", 98, 103)
    pf.mark("BBBUSDT", 195, 204)
    assert pf.positions["AAAUSDT"].unrealized_pnl == (98 - 100) * 10  # long at the bid
    assert pf.positions["BBBUSDT"].unrealized_pnl == (200 - 204) * 10  # short at the ask
    assert pf.equity == START - 20 - 40
    assert pf.exposure == 980 + 2040
    assert pf.drawdown == 60 and pf.peak_equity == START
    pf.mark("AAAUSDT", None, None)  # book lost: the last mark stays, the loss stays visible
    assert pf.equity == START - 60


def test_fees_in_quote_base_and_other_assets() -> None:
    pf = Portfolio(INSTS, START)
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 250, 4, fee=7))
    # 3 units (1e-8) of the base asset at price 2.50 quote = 7.5 -> 8 (half-even of 7.5)
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 250, 4, fee=3, fee_asset="AAA"))
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 250, 4, fee=5, fee_asset="BNB"))
    assert pf.fees == 7 + 8
    assert pf.unpriced_fees == 5
    assert pf.cash == START - 3000 - 15


def test_spot_is_long_only_and_cannot_overdraw() -> None:
    pf = Portfolio(INSTS, 1_000)
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 5))
    with pytest.raises(ImpossibleFill, match="exceeds the position"):
        pf.apply_fill(mkfill("AAAUSDT", Side.SELL, 100, 6))
    with pytest.raises(ImpossibleFill, match="exceeds the quote"):
        pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 5, fee=1))
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 5))  # exactly all the cash is fine
    assert pf.cash == 0 and pf.qty("AAAUSDT") == 10
    with pytest.raises(ImpossibleFill, match="unknown symbol"):
        pf.apply_fill(mkfill("ZZZUSDT", Side.BUY, 1, 1))


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        Portfolio(INSTS, -1)
    other = Instrument("AAAUSDT", Market.USDM, Decimal("0.1"), Decimal("0.001"), Decimal("5"), "AAA")
    with pytest.raises(ConfigError):
        Portfolio([SPOT, other], 0)


def test_funding_long_pays_short_receives_once_per_time() -> None:
    pf = Portfolio(INSTS, START)
    pf.apply_fill(mkfill("BBBUSDT", Side.BUY, 1_000, 3_333))
    # notional at mark 1_001: 3_336_333; rate 0.0001 (10_000e-8) -> 333.6333 -> 334 paid
    pay = pf.apply_funding(FundingRate("BBBUSDT", 10_000, 1_001, 8 * 3600 * 10**9, 1))
    assert pay is not None and pay.amount == -334
    assert pf.apply_funding(FundingRate("BBBUSDT", 10_000, 1_001, 8 * 3600 * 10**9, 2)) is None
    assert pf.funding == -334 and pf.cash == START - 3_333_000 - 334
    pf.apply_fill(mkfill("BBBUSDT", Side.SELL, 1_000, 6_666))  # now short 3_333
    pay = pf.apply_funding(FundingRate("BBBUSDT", 10_000, 1_000, 16 * 3600 * 10**9, 3))
    assert pay is not None and pay.amount == 333  # 333.3 received
    # a short paying a negative rate: -0.5 rounds away from zero
    pf.apply_fill(mkfill("BBBUSDT", Side.BUY, 1_000, 3_333))
    pf.apply_fill(mkfill("BBBUSDT", Side.BUY, 1_000, 5))  # long 5: notional 5_000 x -1e-4 = 0.5 received
    pay = pf.apply_funding(FundingRate("BBBUSDT", -10_000, 1_000, 24 * 3600 * 10**9, 4))
    assert pay is not None and pay.amount == 1
    assert not pf.apply_funding_payment(pay)  # a replayed payment is applied once
    assert pf.funding == -334 + 333 + 1
    # spot positions never pay funding
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 10, 10))
    assert pf.apply_funding(FundingRate("AAAUSDT", 10_000, 10, 1, 1)) is None


def test_open_orders_are_tracked_until_terminal() -> None:
    pf = Portfolio(INSTS, START)
    o = new_order(5, "AAAUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10, 100, 0)
    pf.on_order(o)
    assert pf.open_buy_qty("AAAUSDT") == 10 and pf.reserved_quote == 1_000
    pf.apply_fill(mkfill("AAAUSDT", Side.BUY, 100, 4, order_id=5))  # the fill arrives first
    assert pf.open_buy_qty("AAAUSDT") == 6 and pf.reserved_quote == 600
    o = fill(o, 4)
    pf.on_order(o)
    assert pf.open_buy_qty("AAAUSDT") == 6 and pf.reserved_quote == 600
    pf.on_order(cancel(o, "CANCELED"))
    assert pf.open_buy_qty("AAAUSDT") == 0 and pf.reserved_quote == 0
    s = new_order(6, "BBBUSDT", Side.SELL, OrderType.MARKET, TimeInForce.IOC, 3, None, 0)
    pf.on_order(s)
    assert pf.open_sell_qty("BBBUSDT") == 3 and pf.reserved_quote == 0


def test_restore_peak_keeps_the_persisted_high_water_mark() -> None:
    pf = Portfolio(INSTS, START)
    pf.restore_peak(START + 500)
    assert pf.peak_equity == START + 500 and pf.drawdown == 500 and pf.max_drawdown == 500
    pf.restore_peak(START)  # never lowers it
    assert pf.peak_equity == START + 500


def test_rebuild_with_only_fills_uses_default_filters() -> None:
    f1 = mkfill("BTCUSDT", Side.BUY, 6_000_000, 100, fill_id=1)
    f2 = mkfill("BTCUSDT", Side.SELL, 6_100_000, 40, fill_id=2)
    pf = rebuild_from_fills([f2, f1])  # order of the list does not matter: fill ids do
    assert pf.positions["BTCUSDT"].qty == 60
    assert pf.realized_pnl == 40 * 100_000 * 10  # 1_000 USDT x 0.0004 BTC = 0.4 USDT
    assert pf.realized_pnl == 40 * MONEY_SCALE // 100


# --- random sequences ----------------------------------------------------------------------------------
step = st.one_of(
    st.tuples(
        st.just("fill"),
        st.sampled_from(["AAAUSDT", "BBBUSDT"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 2_000),  # price
        st.integers(1, 50),  # qty
        st.integers(0, 30),  # fee
    ),
    st.tuples(
        st.just("mark"),
        st.sampled_from(["AAAUSDT", "BBBUSDT"]),
        st.integers(1, 2_000),
        st.integers(0, 20),
        st.just(0),
        st.just(0),
    ),
    st.tuples(
        st.just("funding"),
        st.just("BBBUSDT"),
        st.integers(-50_000, 50_000),
        st.integers(1, 2_000),
        st.just(0),
        st.just(0),
    ),
)


@settings(max_examples=250, deadline=None)
@given(steps=st.lists(step, max_size=60))
def test_pnl_identities_and_rebuild_on_random_sequences(steps: list[tuple]) -> None:
    pf = Portfolio(INSTS, START)
    ledger = {s: LedgerPosition() for s in ("AAAUSDT", "BBBUSDT")}
    signed = {"AAAUSDT": 0, "BBBUSDT": 0}
    fills: list[Fill] = []
    payments: list[FundingPayment] = []
    ts = 0
    fid = 0
    for kind, sym, a, b, c, d in steps:
        ts += 1
        if kind == "fill":
            side, price, qty, fee = a, b, c, d
            fid += 1
            f = mkfill(sym, side, price, qty, fee=fee, ts=ts, fill_id=fid)
            if sym == "AAAUSDT" and side is Side.SELL and qty > pf.qty(sym):
                with pytest.raises(ImpossibleFill):
                    pf.apply_fill(f)
                fid -= 1
                continue
            realized = pf.apply_fill(f)
            assert realized == ledger_apply(ledger[sym], int(side), qty, price * qty, fee, fid)
            fills.append(f)
            signed[sym] += int(side) * qty
        elif kind == "mark":
            pf.mark(sym, a, a + b)
        else:
            pay = pf.apply_funding(FundingRate(sym, a, b, ts, ts))
            if pay is not None:
                payments.append(pay)
        # identities, exactly
        values = sum(p.value for p in pf.positions.values())
        assert pf.equity == pf.cash + values
        assert pf.equity - START == pf.realized_pnl + pf.unrealized_pnl - pf.fees + pf.funding
        assert pf.peak_equity >= pf.equity and pf.drawdown == pf.peak_equity - pf.equity
        assert pf.qty("AAAUSDT") >= 0
        for s, p in pf.positions.items():
            assert p.qty == signed[s]  # consistent with its fills
            lp = ledger[s]
            assert (p.qty, p.cost, p.realized_pnl, p.fees) == (lp.qty, lp.cost, lp.realized_pnl, lp.fees)
    # everything can be rebuilt from the fills (and the settled funding)
    marks = {s: (p.bid, p.ask) for s, p in pf.positions.items() if p.bid is not None}
    rb = rebuild_from_fills(fills, INSTS, starting_cash=START, funding=payments, marks=marks)
    assert rb.cash == pf.cash and rb.realized_pnl == pf.realized_pnl and rb.fees == pf.fees
    assert rb.funding == pf.funding and rb.equity == pf.equity
    for s, p in pf.positions.items():
        q = rb.positions[s]
        assert (q.qty, q.cost, q.realized_pnl, q.fees) == (p.qty, p.cost, p.realized_pnl, p.fees)
        assert q.fills == p.fills


@settings(max_examples=150, deadline=None)
@given(trades=st.lists(st.tuples(st.integers(1, 1000), st.integers(1, 30)), min_size=1, max_size=20))
def test_round_trip_realizes_exactly_the_cash_difference(trades: list[tuple[int, int]]) -> None:
    """Buy in pieces, sell it all back in pieces: realized P&L = proceeds - payments, no rounding loss."""
    pf = Portfolio(INSTS, START)
    paid = 0
    for price, qty in trades:
        pf.apply_fill(mkfill("BBBUSDT", Side.BUY, price, qty))
        paid += price * qty
    proceeds = 0
    for price, qty in reversed(trades):
        pf.apply_fill(mkfill("BBBUSDT", Side.SELL, price + 7, qty))
        proceeds += (price + 7) * qty
    assert pf.qty("BBBUSDT") == 0 and pf.positions["BBBUSDT"].cost == 0
    assert pf.realized_pnl == proceeds - paid
    assert pf.equity == START + proceeds - paid


lifecycle = st.lists(
    st.tuples(
        st.sampled_from(["new", "fill", "cancel", "reject"]),
        st.integers(0, 5),  # which order
        st.sampled_from([Side.BUY, Side.SELL]),
        st.integers(1, 30),
        st.integers(90, 110),
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(steps=lifecycle)
def test_order_lifecycles_keep_positions_and_open_orders_consistent(steps: list[tuple]) -> None:
    """Fills, cancels and rejections in any order: the position is the sum of the fills, and the open
    quantities and reservations are exactly what the open orders still hold."""
    from worker.orders import IllegalTransition, reject

    pf = Portfolio(INSTS, START)
    orders: dict[int, object] = {}
    filled_signed = 0
    fid = 0
    for action, k, side, qty, price in steps:
        o = orders.get(k)
        try:
            if action == "new" and (o is None or o.is_terminal):
                o = new_order(k, "BBBUSDT", side, OrderType.LIMIT, TimeInForce.GTC, qty, price, 0)
            elif action == "fill" and o is not None:
                n = min(qty, max(o.remaining_qty, 1))
                o2 = fill(o, n)  # raises when the order is done: the venue sends no fill then
                fid += 1
                pf.apply_fill(mkfill("BBBUSDT", o.side, o.price, n, order_id=k, fill_id=fid))
                filled_signed += int(o.side) * n
                o = o2
            elif action == "cancel" and o is not None:
                o = cancel(o, "CANCELED")
            elif action == "reject" and o is not None:
                o = reject(o, "MIN_NOTIONAL")
            else:
                continue
        except IllegalTransition:
            continue
        orders[k] = o
        pf.on_order(o)
        assert pf.qty("BBBUSDT") == filled_signed
        live = [x for x in orders.values() if x.is_open]
        assert pf.open_buy_qty("BBBUSDT") == sum(x.remaining_qty for x in live if x.side is Side.BUY)
        assert pf.open_sell_qty("BBBUSDT") == sum(x.remaining_qty for x in live if x.side is Side.SELL)
        assert sorted(pf.open_order_ids()) == sorted(x.order_id for x in live)
        assert pf.reserved_quote == 0  # USD-M orders reserve no spot quote
