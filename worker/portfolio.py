"""Positions, cash and P&L in exact integers, built only from fills, marks and funding.

Design and invariants:
- Money is integer units of 1e-8 quote (`MONEY_SCALE`); quantities are signed lots; prices are ticks.
- Average cost is kept as an exact integer cost basis (`cost`, signed money paid for the open quantity),
  never as a rounded average price. Closing `c` of `q` lots releases `cost * c / q` truncated toward zero;
  the truncation is deterministic, so a rebuild from the same fills gives the same integers. This is the
  same arithmetic as `worker.store.ledger.apply_fill`, so the store's `positions` rows equal ours.
- A fill that crosses zero closes the old position entirely and opens the rest at the fill price.
  `Position.opened_ns` is the time of the fill that opened the current position (a rebuild from the
  fills gives it back, so a strategy's time stop survives a restart or a resync).
- `cash` moves by the notional of every fill (- on buys, + on sells), fees and funding. For USD-M the
  notional flow is a bookkeeping device: `cash + cost` is the wallet balance. With it, for every sequence:
    equity = cash + Σ marked value                     (marked value = exit-side value of each position)
    equity - starting_cash = realized + unrealized - fees + funding
- Marks go to the side we would exit on: a long is worth `bid × qty`, a short `-(ask × |qty|)`. A position
  with no mark yet is worth its cost (unrealized 0) until the first top of book arrives; a missing side
  later keeps the last mark (a stale price is a better risk input than the cost).
- Peak equity and drawdown follow every mark and fill, so the risk breaker sees unrealized losses.
- Spot is long-only and pays in full: a fill that sells more than the position or spends more quote than
  the spot cash holds raises `ImpossibleFill` (risk refuses such orders first; this is the last guard).
  USD-M may be short; its leverage limit is enforced by risk on new orders (marks may move it).
- Funding (USD-M only): at each funding time a position pays `qty × mark × rate` (longs pay when the rate is
  positive), rounded half away from zero to 1e-8; one payment per symbol and funding time.
- Fees: in quote money; a fee charged in the base asset is valued at the fill price (half-even, as the
  store does); a fee in another asset (BNB) has no price here and is counted in `unpriced_fees` only.
- Open orders are tracked (remaining lots per side, quote reserved by spot buys) so risk limits hold
  for the worst case where everything resting fills. The orders of one OCO list (`Order.oco`) count
  once, as their largest remainder: at most one of them can execute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS, MONEY_SCALE, Instrument
from worker.orders import Fill, Order, Side

RATE_SCALE = 10**8  # funding rates in 1e-8 units: Binance's "0.00010000" is 10_000


class ImpossibleFill(ValueError):
    """A fill that cannot have happened on the account (unknown symbol, spot oversell or overdraft)."""


@dataclass(frozen=True, slots=True)
class FundingRate:
    """A USD-M funding event: at `funding_ns` every open position pays or receives `rate_e8` of its notional.

    `mark_price` is the mark price (ticks) Binance settles at; `rate_e8` is the rate in 1e-8 units.
    """

    symbol: str
    rate_e8: int
    mark_price: int
    funding_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """What one funding event did to one position. `amount` is credited (negative = paid)."""

    symbol: str
    funding_ns: int
    rate_e8: int
    mark_price: int
    position_qty: int
    amount: int


@dataclass(slots=True)
class Position:
    """One symbol's position. `value` is the exit-side marked value (signed), `cost` the signed basis."""

    symbol: str
    market: Market
    qty: int = 0
    cost: int = 0
    realized_pnl: int = 0  # gross of fees
    fees: int = 0  # quote money
    funding: int = 0  # credited (negative = paid)
    fills: int = 0
    last_fill_id: int = 0
    bid: int | None = None
    ask: int | None = None
    value: int = 0
    opened_ns: int = 0  # time of the fill that opened the current position (0 when flat)

    @property
    def unrealized_pnl(self) -> int:
        return self.value - self.cost

    @property
    def exposure(self) -> int:
        """Gross marked notional (>= 0)."""
        return abs(self.value)


@dataclass(frozen=True, slots=True)
class PortfolioSummary:
    """A consistent view for samples and snapshots (all money in 1e-8 quote units)."""

    equity: int
    cash: int
    realized_pnl: int
    unrealized_pnl: int
    fees: int
    funding: int
    exposure: int
    peak_equity: int
    drawdown: int


def _release(cost: int, closed: int, qty: int) -> int:
    """Cost basis of `closed` lots out of `qty` (same sign as `cost`), truncated toward zero."""
    magnitude = abs(cost) * closed // abs(qty)
    return magnitude if cost >= 0 else -magnitude


def average_cost(qty: int, cost: int, side: int, lots: int, notional: int) -> tuple[int, int, int]:
    """One fill on an average-cost position: the new (qty, cost) and the P&L it realized (gross of fees).

    `qty` signed lots, `cost` the signed money paid for them, `side` +1/-1, `notional` the fill's money.
    Growing adds the notional to the cost; shrinking releases `cost * closed / qty` (truncated toward
    zero) and realizes `proceeds - released`; crossing zero closes everything and opens the rest at the
    fill price. The one implementation the portfolio and the store's ledger share.
    """
    if qty == 0 or (qty > 0) == (side > 0):
        return qty + side * lots, cost + side * notional, 0
    closing = min(lots, abs(qty))
    released = _release(cost, closing, qty)
    proceeds = notional * closing // lots if closing != lots else notional
    # A long closed by a sell realizes proceeds - cost; a short (negative cost) closed by a buy, -cost - paid.
    realized = proceeds - released if qty > 0 else -released - proceeds
    cost -= released
    qty += side * closing
    rest = lots - closing
    if rest:
        return qty + side * rest, cost + side * (notional - proceeds), realized
    return qty, (0 if qty == 0 else cost), realized


def _div_half_away(n: int, d: int) -> int:
    """n / d (d > 0) rounded half away from zero."""
    q = (abs(n) * 2 + d) // (2 * d)
    return q if n >= 0 else -q


def fee_in_quote(inst: Instrument, f: Fill) -> int:
    """The fee in quote money; 0 for an asset we cannot price (see `unpriced_fees`)."""
    if f.fee_asset == inst.quote_asset or not f.fee:
        return f.fee
    if f.fee_asset == inst.base_asset:
        value = Decimal(f.fee) * inst.price_decimal(f.price)
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return 0


class Portfolio:
    """The account: one quote wallet, positions per symbol (spot and/or USD-M), marks and open orders."""

    def __init__(
        self,
        instruments: Iterable[Instrument] | Mapping[str, Instrument],
        starting_cash: int,
        *,
        check_cash: bool = True,
    ) -> None:
        items = instruments.values() if isinstance(instruments, Mapping) else instruments
        self.instruments: dict[str, Instrument] = {}
        for inst in items:
            if inst.symbol in self.instruments and self.instruments[inst.symbol] != inst:
                raise ConfigError("instruments", f"one per symbol (fills carry no market): {inst.symbol}")
            self.instruments[inst.symbol] = inst
        if not isinstance(starting_cash, int) or starting_cash < 0:
            raise ConfigError("starting_cash", f"a non-negative int (money units), got {starting_cash!r}")
        self.starting_cash = starting_cash
        self.check_cash = check_cash
        self.positions: dict[str, Position] = {
            s: Position(s, inst.market) for s, inst in self.instruments.items()
        }
        self.cash = starting_cash
        self.realized_pnl = 0
        self.fees = 0
        self.funding = 0
        self.unpriced_fees = 0
        self.fills = 0
        self.last_fill_id = 0
        self._value_total = 0  # Σ position.value
        self._exposure_total = 0  # Σ |position.value|
        self.peak_equity = starting_cash
        self.max_drawdown = 0
        self._funding_seen: set[tuple[str, int]] = set()
        # open orders: id -> (symbol, side, remaining lots, reserved spot quote, oco list id)
        self._open: dict[int, tuple[str, int, int, int, int]] = {}
        self._oco: dict[int, dict[int, int]] = {}  # oco list id -> {order id: remaining lots}
        self._open_buy: dict[str, int] = {}
        self._open_sell: dict[str, int] = {}
        self._reserved_quote = 0

    # --- views ---------------------------------------------------------------------------------------
    @property
    def equity(self) -> int:
        return self.cash + self._value_total

    @property
    def unrealized_pnl(self) -> int:
        return sum(p.value - p.cost for p in self.positions.values())

    @property
    def exposure(self) -> int:
        """Gross marked notional of every open position."""
        return self._exposure_total

    @property
    def drawdown(self) -> int:
        """Peak equity minus equity (>= 0), mark-to-market."""
        return self.peak_equity - self.equity

    def position(self, symbol: str) -> Position | None:
        return self.positions.get(symbol)

    def qty(self, symbol: str) -> int:
        p = self.positions.get(symbol)
        return p.qty if p else 0

    def open_buy_qty(self, symbol: str) -> int:
        return self._open_buy.get(symbol, 0)

    def open_sell_qty(self, symbol: str) -> int:
        return self._open_sell.get(symbol, 0)

    @property
    def reserved_quote(self) -> int:
        return self._reserved_quote

    def spot_cash(self) -> int:
        """Quote held for spot: the wallet minus what USD-M notional flows borrowed in `cash`."""
        usdm_cost = 0
        for p in self.positions.values():
            if p.market is Market.USDM:
                usdm_cost += p.cost
        return self.cash + usdm_cost

    def usdm_exposure(self) -> int:
        return sum(abs(p.value) for p in self.positions.values() if p.market is Market.USDM)

    def summary(self) -> PortfolioSummary:
        eq = self.equity
        return PortfolioSummary(
            equity=eq,
            cash=self.cash,
            realized_pnl=self.realized_pnl,
            unrealized_pnl=self.unrealized_pnl,
            fees=self.fees,
            funding=self.funding,
            exposure=self._exposure_total,
            peak_equity=self.peak_equity,
            drawdown=self.peak_equity - eq,
        )

    # --- marks ---------------------------------------------------------------------------------------
    def _revalue(self, p: Position) -> None:
        inst = self.instruments[p.symbol]
        if p.qty > 0:
            new = p.cost if p.bid is None else inst.notional(p.bid, p.qty)
        elif p.qty < 0:
            new = p.cost if p.ask is None else -inst.notional(p.ask, -p.qty)
        else:
            new = 0
        self._value_total += new - p.value
        self._exposure_total += abs(new) - abs(p.value)
        p.value = new

    def _track_peak(self) -> None:
        eq = self.cash + self._value_total
        if eq > self.peak_equity:
            self.peak_equity = eq
        dd = self.peak_equity - eq
        if dd > self.max_drawdown:
            self.max_drawdown = dd

    def mark(self, symbol: str, bid: int | None, ask: int | None) -> int:
        """New top of book for `symbol`; returns equity. Unknown symbols are ignored (equity unchanged).

        A side given as None keeps its last mark: a book that goes back to SYNCING must not make a losing
        position look flat (valued at cost) to the drawdown breaker.
        """
        p = self.positions.get(symbol)
        if p is None:
            return self.cash + self._value_total
        if bid is not None:
            p.bid = bid
        if ask is not None:
            p.ask = ask
        if p.qty:
            self._revalue(p)
            self._track_peak()
        return self.cash + self._value_total

    # --- fills ---------------------------------------------------------------------------------------
    def apply_fill(self, f: Fill) -> int:
        """Apply one fill; return the P&L it realized (gross of fees). Raises `ImpossibleFill`."""
        inst = self.instruments.get(f.symbol)
        if inst is None:
            raise ImpossibleFill(f"fill {f.fill_id}: unknown symbol {f.symbol!r}")
        if not (isinstance(f.qty, int) and f.qty > 0 and isinstance(f.price, int) and f.price > 0):
            raise ImpossibleFill(f"fill {f.fill_id}: qty and price must be positive integers")
        side = int(f.side)
        if side not in (1, -1):
            raise ImpossibleFill(f"fill {f.fill_id}: side must be +1 or -1")
        p = self.positions[f.symbol]
        qty = f.qty
        notional = inst.notional(f.price, qty)
        fee = fee_in_quote(inst, f)
        if fee == 0 and f.fee and f.fee_asset not in (inst.quote_asset, inst.base_asset):
            self.unpriced_fees += f.fee
        if inst.market is Market.SPOT:
            if side < 0 and qty > p.qty:
                raise ImpossibleFill(
                    f"fill {f.fill_id}: spot sell of {qty} lots {f.symbol} exceeds the position of {p.qty}"
                )
            if side > 0 and self.check_cash and self.spot_cash() - notional - fee < 0:
                raise ImpossibleFill(
                    f"fill {f.fill_id}: spot buy of {notional} + fee {fee} exceeds the quote held "
                    f"({self.spot_cash()})"
                )
        before = p.qty
        p.qty, p.cost, realized = average_cost(p.qty, p.cost, side, qty, notional)
        if not p.qty:
            p.opened_ns = 0
        elif not before or (before > 0) != (p.qty > 0):  # opened from flat, or crossed zero
            p.opened_ns = f.ts_ns
        p.realized_pnl += realized
        p.fees += fee
        p.fills += 1
        if f.fill_id > p.last_fill_id:
            p.last_fill_id = f.fill_id
        self.cash -= side * notional + fee
        self.realized_pnl += realized
        self.fees += fee
        self.fills += 1
        if f.fill_id > self.last_fill_id:
            self.last_fill_id = f.fill_id
        self._revalue(p)
        self._track_peak()
        self._consume_open(f.order_id, qty)
        return realized

    # --- funding -------------------------------------------------------------------------------------
    def apply_funding(self, ev: FundingRate) -> FundingPayment | None:
        """Settle one funding event; None when there is nothing to pay (spot, flat, unknown, seen)."""
        p = self.positions.get(ev.symbol)
        if p is None or p.market is not Market.USDM or p.qty == 0:
            return None
        if (ev.symbol, ev.funding_ns) in self._funding_seen:
            return None
        notional = self.instruments[ev.symbol].notional(ev.mark_price, p.qty)  # signed with qty
        amount = -_div_half_away(notional * ev.rate_e8, RATE_SCALE)
        payment = FundingPayment(ev.symbol, ev.funding_ns, ev.rate_e8, ev.mark_price, p.qty, amount)
        self.apply_funding_payment(payment)
        return payment

    def apply_funding_payment(self, payment: FundingPayment) -> bool:
        """Apply a settled payment as is (rebuilds replay persisted payments through this).

        Idempotent per (symbol, funding time): a payment seen before is ignored and False returned.
        """
        p = self.positions.get(payment.symbol)
        if p is None:
            raise ImpossibleFill(f"funding for unknown symbol {payment.symbol!r}")
        key = (payment.symbol, payment.funding_ns)
        if key in self._funding_seen:
            return False
        self._funding_seen.add(key)
        p.funding += payment.amount
        self.funding += payment.amount
        self.cash += payment.amount
        self._track_peak()
        return True

    def restore_peak(self, peak: int) -> None:
        """After a rebuild, carry the persisted equity peak over (a rebuild only sees fill-time marks)."""
        if peak > self.peak_equity:
            self.peak_equity = peak
            self._track_peak()

    # --- open orders ---------------------------------------------------------------------------------
    def on_order(self, order: Order, ref_price: int | None = None) -> None:
        """Track an order's latest value: terminal orders release what they held.

        `ref_price` (ticks) prices the quote a spot MARKET buy reserves; limit orders use their price.
        """
        self._drop_open(order.order_id)
        if order.is_terminal:
            return
        remaining = order.remaining_qty
        if remaining <= 0:
            return
        inst = self.instruments.get(order.symbol)
        reserved = 0
        if inst is not None and inst.market is Market.SPOT and order.side is Side.BUY:
            price = order.price if order.price is not None else ref_price
            if price is None:
                pos = self.positions[order.symbol]
                price = pos.ask or 0
            reserved = inst.notional(price, remaining)
        self._add_open(order.order_id, order.symbol, int(order.side), remaining, reserved, order.oco)

    def _add_open(
        self, order_id: int, symbol: str, side: int, remaining: int, reserved: int, oco: int
    ) -> None:
        self._open[order_id] = (symbol, side, remaining, reserved, oco)
        added = remaining
        if oco:  # the list counts as its largest remainder
            group = self._oco.setdefault(oco, {})
            before = max(group.values(), default=0)
            group[order_id] = remaining
            added = max(before, remaining) - before
        book = self._open_buy if side > 0 else self._open_sell
        book[symbol] = book.get(symbol, 0) + added
        self._reserved_quote += reserved

    def _drop_open(self, order_id: int) -> None:
        held = self._open.pop(order_id, None)
        if held is None:
            return
        symbol, side, remaining, reserved, oco = held
        removed = remaining
        if oco:
            group = self._oco[oco]
            before = max(group.values())
            del group[order_id]
            removed = before - max(group.values(), default=0)
            if not group:
                del self._oco[oco]
        book = self._open_buy if side > 0 else self._open_sell
        left = book.get(symbol, 0) - removed
        if left:
            book[symbol] = left
        else:
            book.pop(symbol, None)
        self._reserved_quote -= reserved

    def _consume_open(self, order_id: int, qty: int) -> None:
        """A fill reduces what its order still holds, even before the order's own update arrives."""
        held = self._open.get(order_id)
        if held is None:
            return
        symbol, side, remaining, reserved, oco = held
        self._drop_open(order_id)
        left = remaining - qty
        if left > 0:
            self._add_open(order_id, symbol, side, left, reserved * left // remaining, oco)

    def open_order_ids(self) -> list[int]:
        return sorted(self._open)


def rebuild_from_fills(
    fills: Iterable[Fill],
    instruments: Iterable[Instrument] | Mapping[str, Instrument] | None = None,
    *,
    starting_cash: int | None = None,
    market: Market = Market.SPOT,
    funding: Iterable[FundingPayment] = (),
    marks: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> Portfolio:
    """The portfolio that these fills (and funding payments) produce, from nothing.

    Fills are applied in `fill_id` order and funding payments at their time (a payment at `t` settles after
    every fill with `ts_ns <= t`). Without `instruments`, the default filters of `market` are used (fills
    carry no market). Without `starting_cash` the cash check is off (the balance is unknown), and cash
    starts at 0. `marks` (symbol -> (bid, ask)) values the rebuilt positions.
    """
    if instruments is None:
        instruments = [inst for (m, _), inst in DEFAULT_INSTRUMENTS.items() if m is market]
    portfolio = Portfolio(instruments, starting_cash or 0, check_cash=starting_cash is not None)
    ordered = sorted(fills, key=lambda f: f.fill_id)
    pays = sorted(funding, key=lambda x: x.funding_ns)
    i = 0
    for f in ordered:
        while i < len(pays) and pays[i].funding_ns < f.ts_ns:
            portfolio.apply_funding_payment(pays[i])
            i += 1
        portfolio.apply_fill(f)
    for pay in pays[i:]:
        portfolio.apply_funding_payment(pay)
    for symbol, (bid, ask) in (marks or {}).items():
        portfolio.mark(symbol, bid, ask)
    return portfolio


__all__ = [
    "MONEY_SCALE",
    "FundingPayment",
    "FundingRate",
    "ImpossibleFill",
    "Portfolio",
    "PortfolioSummary",
    "Position",
    "fee_in_quote",
    "rebuild_from_fills",
]
