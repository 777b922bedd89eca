"""What the store accepts from the engine, and how each record becomes a row.

Design:
- The writer takes the engine's own values where they exist: `worker.orders.Order`, `worker.orders.Fill`,
  and anything shaped like the broker's `OrderUpdate` (`.order`, `.ts_ns`) or `Markout` (`fill_id`,
  `horizon_ms`, `ts_ns`, `symbol`, `mid`, `markout_bps`). For outputs whose types do not exist yet the small
  frozen dataclasses below are the contract; adapt the engine's outputs to them (or give them these fields).
- Exact numbers stay integers (ticks, lots, 1e-8 money); floats only for statistics.
- `SAMPLE_TYPES` may be dropped under pressure (counted); every other record is never dropped.
- `*_row` functions are pure: they turn one record into the tuple its INSERT takes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.orders import Fill, Order


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order's new value and the engine time of the change (the broker's OrderUpdate fits too)."""

    order: Order
    ts_ns: int
    event: str = ""


@dataclass(frozen=True, slots=True)
class EquitySample:
    """Portfolio value at one instant (sampled once a second). All money in 1e-8 quote units."""

    ts_ns: int
    equity: int
    cash: int
    realized_pnl: int
    unrealized_pnl: int
    fees: int
    exposure: int  # gross notional of open positions


@dataclass(frozen=True, slots=True)
class BookTop:
    """Top of one book at one instant (sampled once a second per symbol). Prices ticks, sizes lots."""

    ts_ns: int
    market: str
    symbol: str
    bid_price: int
    bid_qty: int
    ask_price: int
    ask_qty: int
    microprice: float | None = None
    imbalance: float | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """One strategy decision point. `signal_id` unique and increasing when given (else the DB assigns)."""

    ts_ns: int
    market: str
    symbol: str
    model: str
    value: float
    direction: int  # -1, 0, +1
    confidence: float  # 0..1
    mid: float | None = None
    order_id: int | None = None
    features: Mapping[str, float] = field(default_factory=dict)
    signal_id: int | None = None


@dataclass(frozen=True, slots=True)
class SignalOutcome:
    signal_id: int
    horizon_ms: int
    ts_ns: int
    mid: float
    return_bps: float  # signed in the signal's direction


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """`verdict` is 'approved' | 'adjusted' | 'denied'; `reason` a reason code (e.g. 'storage_lag')."""

    ts_ns: int
    market: str
    symbol: str
    verdict: str
    reason: str
    order_id: int | None = None
    side: int | None = None
    qty_requested: int | None = None
    qty_approved: int | None = None
    price: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TradingStateChange:
    """ACTIVE / REDUCING / HALTED / PAUSED, why, and who decided ('risk', 'calendar', 'operator', ...)."""

    ts_ns: int
    state: str
    previous: str | None
    reason: str
    source: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BreakerChange:
    """A breaker tripped (or was cleared); persisted so a restart cannot silently re-arm trading."""

    ts_ns: int
    breaker: str
    tripped: bool
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """start, stop, gap, resync, reconnect, pause, resume, error, storage_lag, position_mismatch, ..."""

    ts_ns: int
    kind: str
    severity: str = "info"  # info | warning | error
    market: str = ""
    symbol: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """The portfolio's own view of one position, including fills up to `last_fill_id`."""

    ts_ns: int
    market: str
    symbol: str
    qty: int
    cost: int
    realized_pnl: int
    fees: int
    last_fill_id: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The worker's liveness and state; the writer stamps wall time and its own lag when writing."""

    ts_ns: int
    trading_state: str
    state_reason: str = ""
    sync: Mapping[str, str] = field(default_factory=dict)  # {"spot:BTCUSDT": "live"}
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OperatorActionApplied:
    """The worker applied an operator action (e.g. a breaker reset) at engine time `ts_ns`."""

    action_id: int
    ts_ns: int


@dataclass(frozen=True, slots=True)
class RiskState:
    """The risk engine's whole state (`RiskEngine.export_state()`) at engine time `ts_ns`; one row, replaced
    on every change, read back on restart (peak since the last reset, day anchor, order-count windows)."""

    ts_ns: int
    state: Mapping[str, Any]


SAMPLE_TYPES: tuple[type, ...] = (EquitySample, BookTop, Heartbeat)
SAMPLE_KINDS = frozenset({"equity", "book_top", "heartbeat"})
_KINDS: dict[type, str] = {}


def classify(record: Any) -> str:
    """What kind of row a record becomes; cached per type, so the hot path pays one dict lookup.

    Accepts this module's types and the worker's own shapes with the same fields (risk's
    `RiskDecisionEvent`/`TradingStateChanged`/`BreakerChanged`, the trader's `EquitySample`/`TopSample`/
    `Incident`/`PauseChange`, the engine's `SyncChange`, `events.FeedStatus`, the broker's
    `OrderUpdate`/`Markout`, the portfolio's `FundingPayment`)."""
    kind = _KINDS.get(type(record))
    if kind is None:
        kind = _KINDS[type(record)] = _classify(record)
    return kind


def _classify(r: Any) -> str:
    def has(*names: str) -> bool:
        return all(hasattr(r, n) for n in names)

    if isinstance(r, Fill):
        return "fill"
    if isinstance(r, Order):
        return "order"
    if isinstance(getattr(r, "order", None), Order):
        return "order_update"
    if isinstance(r, OperatorActionApplied):
        return "action"
    if isinstance(r, RiskState):
        return "risk_state"
    if isinstance(r, PositionSnapshot):
        return "snapshot"
    if has("equity", "cash", "exposure", "ts_ns"):
        return "equity"
    if has("ts_ns", "bid_qty", "ask_qty") and (has("bid_price", "ask_price") or has("bid", "ask")):
        return "book_top"
    if has("trading_state", "sync", "ts_ns"):
        return "heartbeat"
    if has("verdict", "reason"):
        return "risk"
    if has("breaker", "tripped"):
        return "breaker"
    if has("state", "previous", "source"):
        return "state"
    if has("signal_id", "return_bps"):
        return "signal_outcome"
    if has("confidence", "direction", "symbol"):
        return "signal"
    if has("funding_ns", "amount"):
        return "funding"
    if has("markout_bps", "horizon_ms"):
        return "markout"
    if has("kind", "severity"):
        return "system"
    if has("kind", "detail", "ts_ns"):
        return "incident"
    if has("paused", "reason"):
        return "pause"
    if has("state", "reason", "recv_ns", "symbol"):
        state = str(getattr(r.state, "value", r.state))
        return "sync" if state in ("syncing", "live") else "feed"
    return "unknown"


def dumps(value: Mapping[str, Any] | None) -> str:
    """Canonical JSON (sorted keys) so identical inputs give identical bytes."""
    return orjson.dumps(dict(value or {}), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def status_reason(order: Order) -> str | None:
    return getattr(order.status, "reason", None)


def order_row(order: Order, market: str, run_id: int, ts_ns: int) -> tuple:
    return (
        order.order_id,
        run_id,
        market,
        order.symbol,
        int(order.side),
        str(order.type),
        str(order.tif),
        order.qty,
        order.price,
        order.tag,
        order.status_name,
        order.filled_qty,
        status_reason(order),
        order.created_ns,
        ts_ns,
        0,
        getattr(order, "stop_price", None),
        int(getattr(order, "reduce_only", False)),
        getattr(order, "oco", 0),
    )


def order_event_row(order: Order, ts_ns: int, run_id: int) -> tuple:
    return (
        order.order_id,
        ts_ns,
        order.status_name,
        order.filled_qty,
        status_reason(order),
        run_id,
        order.order_id,
    )


def equity_row(s: EquitySample, peak: int) -> tuple:
    drawdown = s.equity - peak
    return (
        1,
        s.ts_ns // 1_000_000_000,
        s.equity,
        s.equity,
        s.equity,
        s.equity,
        s.cash,
        s.realized_pnl,
        s.unrealized_pnl,
        s.fees,
        s.exposure,
        peak,
        drawdown,
        drawdown,
        1,
        s.ts_ns,
    )


def _bid_ask(b: Any) -> tuple[int, int]:
    """`BookTop` says bid_price/ask_price, the trader's `TopSample` bid/ask."""
    bid = getattr(b, "bid_price", None)
    return (b.bid, b.ask) if bid is None else (bid, b.ask_price)


def book_top_row(b: Any) -> tuple:
    bid, ask = _bid_ask(b)
    mid2 = bid + ask
    spread = ask - bid
    return (
        str(b.market),
        b.symbol,
        1,
        b.ts_ns // 1_000_000_000,
        mid2,
        mid2,
        mid2,
        mid2,
        bid,
        b.bid_qty,
        ask,
        b.ask_qty,
        spread,
        spread,
        spread,
        1,
        b.ts_ns,
    )


def book_latest_row(b: Any) -> tuple:
    bid, ask = _bid_ask(b)
    microprice = getattr(b, "microprice", None)
    imbalance = getattr(b, "imbalance", None)
    return (
        str(b.market),
        b.symbol,
        b.ts_ns,
        bid,
        b.bid_qty,
        ask,
        b.ask_qty,
        None if microprice is None else float(microprice),
        None if imbalance is None else float(imbalance),
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    """Features as a dict: a Mapping as is, a FeatureVector via its `as_dict` (the derived features, not
    its internal window starts), any other NamedTuple via `_asdict`."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return value
    as_dict = getattr(value, "as_dict", None) or getattr(value, "_asdict", None)
    return as_dict() if as_dict else {"value": repr(value)}


def signal_row(s: Any, run_id: int, market: str = "") -> tuple:
    mid = getattr(s, "mid", None)
    value = getattr(s, "value", None)
    if value is None:
        value = getattr(s, "score", 0.0)
    return (
        getattr(s, "signal_id", None),
        s.ts_ns,
        run_id,
        str(getattr(s, "market", "") or market),
        s.symbol,
        str(getattr(s, "model", "") or type(s).__name__),
        float(value),
        int(s.direction),
        float(s.confidence),
        None if mid is None else float(mid),
        getattr(s, "order_id", None),
        dumps(_mapping(getattr(s, "features", None))),
    )


def risk_row(d: Any, run_id: int) -> tuple:
    side = getattr(d, "side", None)
    detail = dict(_mapping(getattr(d, "detail", None)))
    tag = getattr(d, "tag", "")
    if tag:
        detail.setdefault("tag", tag)
    return (
        d.ts_ns,
        run_id,
        str(d.market),
        d.symbol,
        str(d.verdict),
        d.reason,
        getattr(d, "order_id", None),
        None if side is None else int(side),
        getattr(d, "qty_requested", None),
        getattr(d, "qty_approved", None),
        getattr(d, "price", None),
        dumps(detail),
    )
