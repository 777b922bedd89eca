"""Scripted orders for replay: read a schedule CSV, write one result row per order.

Schedule columns (header required): `t_ms` (exchange time, ms since the epoch, when the order is
decided), `side` (BUY/SELL), `type` (LIMIT/MARKET), `tif` (GTC, IOC, GTX = post-only), `price` (a
number, or `bid`/`ask` with an optional `+N`/`-N` in ticks, read from the book at decision time; empty for
MARKET), `qty` (base asset), optional `cancel_after_ms`, optional `symbol`.

Every bad row is reported with its line number and column, and nothing is placed: a half-read schedule
would test something other than what was written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.broker import OrderUpdate
from worker.instruments import Instrument, money_text
from worker.orders import Fill, Order, OrderType, Side, TimeInForce
from worker.trader import ScheduledOrder

REQUIRED = ("t_ms", "side", "type", "tif", "price", "qty")
OPTIONAL = ("cancel_after_ms", "symbol")
_REF = re.compile(r"^(bid|ask)\s*(?:([+-])\s*(\d+))?$", re.IGNORECASE)
RESULT_COLUMNS = (
    "order_id",
    "row",
    "symbol",
    "side",
    "type",
    "tif",
    "decision_ns",
    "arrival_ns",
    "price",
    "qty",
    "status",
    "reason",
    "filled_qty",
    "avg_fill_price",
    "first_fill_ns",
    "last_fill_ns",
    "liquidity",
    "fees",
)


class ScheduleError(ValueError):
    """A schedule that cannot be placed as written; the message names the line and the column."""


def _enum(kind: Any, text: str, line: int, column: str) -> Any:
    try:
        return kind[text.strip().upper()]
    except KeyError:
        allowed = "/".join(m.name for m in kind)
        raise ScheduleError(f"line {line}: {column} must be one of {allowed}, got {text!r}") from None


def _decimal(text: str, line: int, column: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ScheduleError(f"line {line}: {column} must be a number, got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise ScheduleError(f"line {line}: {column} must be a positive number, got {text!r}")
    return value


def _int(text: str, line: int, column: str, low: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ScheduleError(f"line {line}: {column} must be an integer, got {text!r}") from None
    if value < low:
        raise ScheduleError(f"line {line}: {column} must be >= {low}, got {value}")
    return value


def parse_row(row: dict[str, str], line: int) -> ScheduledOrder:
    side = _enum(Side, row["side"], line, "side")
    type_ = _enum(OrderType, row["type"], line, "type")
    tif = _enum(TimeInForce, row["tif"], line, "tif")
    qty = _decimal(row["qty"], line, "qty")
    price_text = (row.get("price") or "").strip()
    price, ref, offset = None, None, 0
    if type_ is OrderType.MARKET:
        if price_text:
            raise ScheduleError(f"line {line}: price must be empty for a MARKET order")
        if tif is TimeInForce.GTX:
            raise ScheduleError(f"line {line}: a MARKET order cannot be GTX (post-only)")
    elif match := _REF.match(price_text):
        ref = match.group(1).lower()
        if match.group(3):
            offset = int(match.group(3)) * (-1 if match.group(2) == "-" else 1)
    else:
        price = _decimal(price_text, line, "price")
    cancel_text = (row.get("cancel_after_ms") or "").strip()
    cancel_after = _int(cancel_text, line, "cancel_after_ms", 1) if cancel_text else None
    symbol = (row.get("symbol") or "").strip().upper() or None
    return ScheduledOrder(
        _int(row["t_ms"], line, "t_ms", 0), side, type_, tif, qty, price, ref, offset, cancel_after, symbol
    )


def read_schedule(path: Path) -> list[ScheduledOrder]:
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ScheduleError(f"cannot read the schedule {path}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
        if missing or unknown:
            raise ScheduleError(
                f"{path}: columns {', '.join(REQUIRED)} are required and {', '.join(OPTIONAL)} optional"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        reader.fieldnames = header
        return [parse_row(row, number) for number, row in enumerate(reader, start=2)]


@dataclass(slots=True)
class _Result:
    order: Order
    decision_ns: int
    arrival_ns: int | None = None
    fills: int = 0
    filled_qty: int = 0
    notional_ticks: int = 0  # Σ price × qty, for the average price
    first_fill_ns: int | None = None
    last_fill_ns: int | None = None
    fees: int = 0
    liquidity: set[str] | None = None


class ScheduleResults:
    """Collects scripted orders' outcomes from the engine's outputs (a replay sink)."""

    def __init__(self) -> None:
        self._orders: dict[int, _Result] = {}

    def __call__(self, _event: Any, outputs: Iterable[Any]) -> None:
        for item in outputs:
            if isinstance(item, OrderUpdate):
                order = item.order
                if not order.tag.startswith("script:"):
                    continue
                result = self._orders.get(order.order_id)
                if result is None:
                    self._orders[order.order_id] = _Result(order, item.ts_ns)
                else:
                    result.order = order
                    if result.arrival_ns is None and item.event != "new":
                        result.arrival_ns = item.ts_ns
            elif isinstance(item, Fill):
                result = self._orders.get(item.order_id)
                if result is None:
                    continue
                result.fills += 1
                result.filled_qty += item.qty
                result.notional_ticks += item.price * item.qty
                result.first_fill_ns = result.first_fill_ns or item.ts_ns
                result.last_fill_ns = item.ts_ns
                result.fees += item.fee
                result.liquidity = (result.liquidity or set()) | {item.liquidity.value}

    def rows(self, instruments: dict[str, Instrument]) -> list[dict[str, Any]]:
        out = []
        for order_id in sorted(self._orders):
            r = self._orders[order_id]
            o = r.order
            inst = instruments[o.symbol]
            avg = None
            if r.filled_qty:
                avg = inst.price_decimal(1) * Decimal(r.notional_ticks) / Decimal(r.filled_qty)
            out.append(
                {
                    "order_id": order_id,
                    "row": o.tag.split(":", 1)[1],
                    "symbol": o.symbol,
                    "side": o.side.name,
                    "type": o.type.value,
                    "tif": o.tif.value,
                    "decision_ns": r.decision_ns,
                    "arrival_ns": r.arrival_ns if r.arrival_ns is not None else "",
                    "price": inst.price_decimal(o.price) if o.price is not None else "",
                    "qty": inst.qty_decimal(o.qty),
                    "status": o.status_name,
                    "reason": getattr(o.status, "reason", ""),
                    "filled_qty": inst.qty_decimal(r.filled_qty),
                    "avg_fill_price": "" if avg is None else f"{avg:.{_places(inst) + 4}f}",
                    "first_fill_ns": r.first_fill_ns or "",
                    "last_fill_ns": r.last_fill_ns or "",
                    "liquidity": "+".join(sorted(r.liquidity or ())),
                    "fees": money_text(r.fees),
                }
            )
        return out

    def write(self, path: Path, instruments: dict[str, Instrument]) -> int:
        rows = self.rows(instruments)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=RESULT_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)


def _places(inst: Instrument) -> int:
    exponent = inst.tick_size.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0
