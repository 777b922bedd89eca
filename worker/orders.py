"""The order model: a closed set of states and the only functions that move between them.

Invariants:
- Status is one of `Pending`, `PartiallyFilled(filled_qty)`, `Filled`, `Cancelled(filled_qty, reason)`,
  `Rejected(reason)` (the venue refused it) or `Denied(reason)` (our risk engine refused it).
- `Filled`, `Cancelled`, `Rejected` and `Denied` are terminal: every transition out of them raises
  `IllegalTransition`, so an order can never be filled twice or revived.
- `0 < filled_qty < qty` for `PartiallyFilled`; a fill beyond the order's quantity is refused.
- Prices and quantities are integer ticks and lots; quantities are strictly positive, limit prices too
  (a non-int price, e.g. 100.5 ticks, is off the tick grid and refused; bools are not quantities).
- Every `Order` and status checks itself on construction (`__post_init__`, a few type/int comparisons),
  so a row read back from the database or a hand-built value cannot hold an impossible state: the
  order's quantity and prices as above (a `Denied` order is exempt: it records the refused intent as
  asked), `PartiallyFilled` strictly between 0 and the quantity, `Filled` equal to it, `Cancelled`
  below it, nothing filled for `Pending`, `Rejected` and `Denied`. Violations raise `InvalidOrder`.
- `STOP_MARKET` (Binance's STOP_LOSS / STOP_MARKET) has no limit price and a trigger `stop_price`: it
  rests untriggered at the venue and becomes a market order when a trade prints at or through it.
  `reduce_only` orders may only shrink a position; `oco` > 0 links orders where a fill of one cancels
  the others (Binance's OCO list: a stop-loss and a take-profit protecting one position).
- `TRANSITIONS` is the state machine as data, shared with the offline checker.
- Orders are frozen values: a transition returns a new `Order`, so history is a list of values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum


class IllegalTransition(ValueError):
    """A move the order state machine does not allow."""


class InvalidOrder(IllegalTransition):
    """An order or status value that cannot exist (built directly, e.g. from a database row)."""


class Side(int, Enum):
    """The sign of the position change a fill of this side makes."""

    BUY = 1
    SELL = -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    STOP_MARKET = "STOP_MARKET"  # a market order armed at `stop_price` (Binance STOP_LOSS / STOP_MARKET)


class TimeInForce(StrEnum):
    GTC = "GTC"  # rests until filled or cancelled
    IOC = "IOC"  # takes what it can on arrival, the rest is cancelled
    GTX = "GTX"  # post-only: rejected if it would take liquidity


def _lots(value: object, low: int, what: str) -> None:
    if type(value) is not int or value < low:
        raise InvalidOrder(f"{what} must be an integer number of lots >= {low}, got {value!r}")


def _reason(value: object, what: str) -> None:
    if type(value) is not str:
        raise InvalidOrder(f"{what} reason must be a string, got {value!r}")


@dataclass(frozen=True, slots=True)
class Pending:
    """Accepted by risk, sent to (or resting at) the venue, nothing filled yet."""

    filled_qty: int = 0

    def __post_init__(self) -> None:
        if self.filled_qty != 0 or type(self.filled_qty) is not int:
            raise InvalidOrder(f"a Pending order has filled nothing, got filled_qty={self.filled_qty!r}")


@dataclass(frozen=True, slots=True)
class PartiallyFilled:
    filled_qty: int

    def __post_init__(self) -> None:
        _lots(self.filled_qty, 1, "PartiallyFilled.filled_qty")


@dataclass(frozen=True, slots=True)
class Filled:
    filled_qty: int

    def __post_init__(self) -> None:
        _lots(self.filled_qty, 1, "Filled.filled_qty")


@dataclass(frozen=True, slots=True)
class Cancelled:
    filled_qty: int
    reason: str

    def __post_init__(self) -> None:
        _lots(self.filled_qty, 0, "Cancelled.filled_qty")
        _reason(self.reason, "Cancelled")


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused by the venue (Binance's reason, e.g. `PRICE_FILTER`, `MIN_NOTIONAL`, `GTX_WOULD_TAKE`)."""

    reason: str
    filled_qty: int = 0

    def __post_init__(self) -> None:
        _reason(self.reason, "Rejected")
        if self.filled_qty != 0 or type(self.filled_qty) is not int:
            raise InvalidOrder(f"a Rejected order filled nothing, got filled_qty={self.filled_qty!r}")


@dataclass(frozen=True, slots=True)
class Denied:
    """Refused by our own risk engine before it reached the venue."""

    reason: str
    filled_qty: int = 0

    def __post_init__(self) -> None:
        _reason(self.reason, "Denied")
        if self.filled_qty != 0 or type(self.filled_qty) is not int:
            raise InvalidOrder(f"a Denied order filled nothing, got filled_qty={self.filled_qty!r}")


OrderStatus = Pending | PartiallyFilled | Filled | Cancelled | Rejected | Denied
TERMINAL = (Filled, Cancelled, Rejected, Denied)

# The whole state machine, by status name: what each status may become (first states: Pending, Denied).
# `fill` moves Pending/PartiallyFilled to PartiallyFilled/Filled, `cancel` to Cancelled, `reject` only
# from Pending. Readers that check persisted histories (`worker check`) use this same table.
TRANSITIONS: dict[str, frozenset[str]] = {
    "Pending": frozenset({"PartiallyFilled", "Filled", "Cancelled", "Rejected"}),
    "PartiallyFilled": frozenset({"PartiallyFilled", "Filled", "Cancelled"}),
    "Filled": frozenset(),
    "Cancelled": frozenset(),
    "Rejected": frozenset(),
    "Denied": frozenset(),
}
INITIAL_STATES = frozenset({"Pending", "Denied"})


def _positive_int(value: object) -> bool:
    """A strictly positive int that is not a bool (True would silently mean one lot)."""
    return type(value) is int and value > 0


@dataclass(frozen=True, slots=True)
class Order:
    """One order. `price` is None for market orders; `created_ns` is the decision time."""

    order_id: int
    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    qty: int
    price: int | None
    created_ns: int
    status: OrderStatus = Pending()
    tag: str = ""  # who asked for it: "strategy", "exit", "script", "flatten", "protect:..."
    stop_price: int | None = None  # STOP_MARKET only: the trigger, ticks
    reduce_only: bool = False
    oco: int = 0  # > 0: one-cancels-the-other list id shared with the sibling order(s)

    def __post_init__(self) -> None:
        """Refuse values no transition could produce; cheap (runs on every transition)."""
        status = self.status
        kind = type(status)
        if kind is Denied:
            return  # the refused intent is recorded as it was asked, whatever it held
        qty = self.qty
        if type(qty) is not int or qty <= 0:
            raise InvalidOrder(
                f"order {self.order_id}: quantity must be a positive number of lots, got {qty!r}"
            )
        if type(self.side) is not Side or type(self.tif) is not TimeInForce:
            raise InvalidOrder(f"order {self.order_id}: unknown side or time in force")
        otype, price, stop = self.type, self.price, self.stop_price
        if otype is OrderType.LIMIT:
            if type(price) is not int or price <= 0:
                raise InvalidOrder(
                    f"order {self.order_id}: a LIMIT price must be positive ticks, got {price!r}"
                )
        elif otype is OrderType.MARKET or otype is OrderType.STOP_MARKET:
            if price is not None:
                raise InvalidOrder(f"order {self.order_id}: a {otype} order has no limit price")
        else:
            raise InvalidOrder(f"order {self.order_id}: unknown order type {otype!r}")
        if otype is OrderType.STOP_MARKET:
            if type(stop) is not int or stop <= 0:
                raise InvalidOrder(
                    f"order {self.order_id}: a stop price must be positive ticks, got {stop!r}"
                )
        elif stop is not None:
            raise InvalidOrder(f"order {self.order_id}: only a STOP_MARKET order has a stop price")
        filled = status.filled_qty
        if kind is PartiallyFilled:
            ok = filled < qty
        elif kind is Filled:
            ok = filled == qty
        elif kind is Cancelled:
            ok = filled < qty
        elif kind is Pending or kind is Rejected:
            ok = True  # their own checks hold filled at 0
        else:
            raise InvalidOrder(f"order {self.order_id}: unknown status {status!r}")
        if not ok:
            raise InvalidOrder(
                f"order {self.order_id}: {kind.__name__} with filled_qty {filled} of quantity {qty}"
            )

    @property
    def filled_qty(self) -> int:
        return self.status.filled_qty

    @property
    def remaining_qty(self) -> int:
        return 0 if self.is_terminal else self.qty - self.status.filled_qty

    @property
    def is_terminal(self) -> bool:
        return isinstance(self.status, TERMINAL)

    @property
    def is_open(self) -> bool:
        """Pending or PartiallyFilled: it may still fill."""
        return not isinstance(self.status, TERMINAL)

    @property
    def status_name(self) -> str:
        return type(self.status).__name__


def new_order(
    order_id: int,
    symbol: str,
    side: Side,
    type: OrderType,
    tif: TimeInForce,
    qty: int,
    price: int | None,
    created_ns: int,
    tag: str = "",
    *,
    stop_price: int | None = None,
    reduce_only: bool = False,
    oco: int = 0,
) -> Order:
    """Build a Pending order, refusing quantities and prices that cannot exist.

    Prices are whole ticks, so "off the tick grid" means anything that is not a positive int (a float,
    a Decimal, a string): the conversion from decimals happens at the edge (`Instrument.price_ticks`).
    """
    if not isinstance(side, Side) or not isinstance(type, OrderType) or not isinstance(tif, TimeInForce):
        raise IllegalTransition(f"unknown side/type/time-in-force: {side!r} {type!r} {tif!r}")
    if not _positive_int(qty):
        raise IllegalTransition(f"order quantity must be a positive number of lots, got {qty!r}")
    if type is OrderType.LIMIT:
        if not _positive_int(price):
            raise IllegalTransition(f"limit price must be a positive number of ticks, got {price!r}")
    elif price is not None:
        raise IllegalTransition("a market order has no price")
    if type is not OrderType.LIMIT and tif is TimeInForce.GTX:
        raise IllegalTransition("a market order cannot be post-only")
    if type is OrderType.STOP_MARKET:
        if not _positive_int(stop_price):
            raise IllegalTransition(f"stop price must be a positive number of ticks, got {stop_price!r}")
    elif stop_price is not None:
        raise IllegalTransition("only a STOP_MARKET order has a stop price")
    return Order(
        order_id,
        symbol,
        side,
        type,
        tif,
        qty,
        price,
        created_ns,
        Pending(),
        tag,
        stop_price,
        reduce_only,
        oco,
    )


def denied_order(
    order_id: int,
    symbol: str,
    side: Side,
    type: OrderType,
    tif: TimeInForce,
    qty: int,
    price: int | None,
    created_ns: int,
    reason: str,
    tag: str = "",
    *,
    stop_price: int | None = None,
    reduce_only: bool = False,
    oco: int = 0,
) -> Order:
    """An intent the risk engine refused, recorded as an order so it is visible and persisted."""
    return Order(
        order_id,
        symbol,
        side,
        type,
        tif,
        qty,
        price,
        created_ns,
        Denied(reason),
        tag,
        stop_price,
        reduce_only,
        oco,
    )


def _with_status(o: Order, status: OrderStatus) -> Order:
    """`replace(o, status=...)` without its per-call field introspection (transitions are on the hot path)."""
    return Order(
        o.order_id, o.symbol, o.side, o.type, o.tif, o.qty, o.price, o.created_ns, status, o.tag,
        o.stop_price, o.reduce_only, o.oco,
    )  # fmt: skip


def _require_open(order: Order, action: str) -> None:
    if order.is_terminal:
        raise IllegalTransition(f"cannot {action} order {order.order_id}: it is {order.status_name}")


def fill(order: Order, qty: int) -> Order:
    """Apply a fill of `qty` lots: PartiallyFilled while some remains, Filled when none does."""
    _require_open(order, "fill")
    if not _positive_int(qty):
        raise IllegalTransition(f"fill quantity must be a positive number of lots, got {qty!r}")
    filled = order.status.filled_qty + qty
    if filled > order.qty:
        raise IllegalTransition(
            f"fill of {qty} on order {order.order_id} exceeds its quantity ({filled} > {order.qty})"
        )
    status = Filled(filled) if filled == order.qty else PartiallyFilled(filled)
    return _with_status(order, status)


def cancel(order: Order, reason: str) -> Order:
    """Cancel what remains; what was filled stays filled."""
    _require_open(order, "cancel")
    return _with_status(order, Cancelled(order.status.filled_qty, reason))


def reject(order: Order, reason: str) -> Order:
    """The venue refuses an order on arrival; only an untouched order can be rejected."""
    if not isinstance(order.status, Pending):
        raise IllegalTransition(
            f"only a pending order can be rejected; order {order.order_id} is {order.status_name}"
        )
    return _with_status(order, Rejected(reason))


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution of one of our orders, with what is needed to judge its quality later.

    Exact fields: `price` (ticks), `qty` (lots), `fee` (money units, 1e-8 of `fee_asset`).
    Statistics (floats): mids, slippage; markouts arrive later as their own records.
    """

    fill_id: int
    order_id: int
    symbol: str
    side: Side
    price: int
    qty: int
    fee: int
    fee_asset: str
    liquidity: Liquidity
    ts_ns: int  # engine time of the fill (receive clock)
    model: str  # fill model name and version, e.g. "conservative/1"
    latency_ns: int  # order-entry latency this order was given
    queue_ahead: int  # lots ahead of us at entry (0 for takers)
    decision_mid: float
    fill_mid: float
    slippage_bps: float  # signed: positive is worse than the decision mid
