"""Exact rendering of integers as decimal strings, and timestamps as RFC 3339.

- Prices are ticks x tick_size and quantities lots x step_size, from the `instruments` table; money is
  integer 1e-8 units (`meta.money_scale`). All are rendered with integer arithmetic: no float, no
  rounding, the same digits the exchange would print ("60000.01", "0.00100", "12.34567890").
- Floats (mids, slippage, markouts, signal values) are statistics and stay JSON numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

MONEY_DECIMALS = 8
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def scaled(units: int, decimals: int) -> str:
    """`units` x 10^-decimals as exact decimal text."""
    if decimals <= 0:
        return str(units)
    q, r = divmod(abs(units), 10**decimals)
    return f"{'-' if units < 0 else ''}{q}.{r:0{decimals}d}"


def money(units: int | None) -> str | None:
    return None if units is None else scaled(units, MONEY_DECIMALS)


def _grid(step_text: str) -> tuple[int, int]:
    """step = mantissa x 10^-decimals with integers."""
    _sign, digits, exponent = Decimal(step_text).normalize().as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    if not isinstance(exponent, int):
        return 1, 0
    if exponent >= 0:
        return mantissa * 10**exponent, 0
    return mantissa, -exponent


@dataclass(frozen=True, slots=True)
class InstrumentView:
    market: str
    symbol: str
    tick_size: str
    step_size: str
    base_asset: str
    quote_asset: str
    price_grid: tuple[int, int]
    qty_grid: tuple[int, int]

    @classmethod
    def from_row(cls, row: tuple) -> InstrumentView:
        market, symbol, tick, step, base, quote = row
        return cls(market, symbol, tick, step, base, quote, _grid(tick), _grid(step))

    def price(self, ticks: int | None) -> str | None:
        if ticks is None:
            return None
        m, d = self.price_grid
        return scaled(ticks * m, d)

    def qty(self, lots: int | None) -> str | None:
        if lots is None:
            return None
        m, d = self.qty_grid
        return scaled(lots * m, d)

    def price_float(self, ticks: float | None) -> float | None:
        """A float tick value (a mid, a microprice) as a float price: statistics only."""
        if ticks is None:
            return None
        m, d = self.price_grid
        return round(ticks * m / 10**d, d + 2)

    def money_per_tick_lot_e(self) -> tuple[int, int]:
        """(numerator, decimals): money units of one tick x one lot = numerator x 10^-decimals."""
        (pm, pd), (qm, qd) = self.price_grid, self.qty_grid
        return pm * qm * 10**MONEY_DECIMALS, pd + qd


FALLBACK = InstrumentView("", "", "1", "1", "", "", (1, 0), (1, 0))

INSTRUMENTS_SQL = (
    "SELECT market, symbol, tick_size, step_size, base_asset, quote_asset FROM instruments "
    "ORDER BY market, symbol"
)


def instruments(rows: list[tuple]) -> dict[tuple[str, str], InstrumentView]:
    return {(r[0], r[1]): InstrumentView.from_row(r) for r in rows}


def iso(ns: int | None) -> str | None:
    """Integer ns since the epoch as RFC 3339 UTC with nanoseconds (exact)."""
    if ns is None:
        return None
    seconds, frac = divmod(ns, 10**9)
    moment = _EPOCH + dt.timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def iso_s(seconds: int | None) -> str | None:
    if seconds is None:
        return None
    return f"{_EPOCH + dt.timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}Z"
