"""Instruments: how a symbol's decimal prices and quantities map to exact integers.

Invariants:
- A price is an integer number of ticks, a quantity an integer number of lots (step size).
- Money (cash, notional, fees, P&L) is an integer number of `MONEY_SCALE`-ths of the quote asset
  (1e-8, Binance's own precision), so sums in Python and in SQLite are exact.
- `notional(price_ticks, qty_lots)` is exact for every instrument we accept: tick × step × 1e8 must be
  an integer, or the instrument is refused at start rather than silently rounded later.
- Text that is off the tick/lot grid raises `OffGridError`; the caller decides (count, log, resync).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from worker.errors import ConfigError
from worker.events import Market

MONEY_SCALE = 10**8
MONEY_DECIMALS = 8


class OffGridError(ValueError):
    """A price or quantity that is not a whole number of ticks or lots."""


def _grid(step: Decimal) -> tuple[int, int]:
    """Write `step` as m × 10^-k with integers m, k: the grid the fast text parser checks against."""
    sign, digits, exponent = step.normalize().as_tuple()
    if sign or step <= 0 or not isinstance(exponent, int):
        raise ConfigError("step", f"a positive decimal, got {step}")
    mantissa = int("".join(map(str, digits)))
    if exponent >= 0:
        return mantissa * 10**exponent, 0
    return mantissa, -exponent


def parse_units(text: str, mantissa: int, decimals: int) -> int:
    """Convert decimal text to an integer count of (mantissa × 10^-decimals) units, exactly.

    Why hand-rolled: `Decimal(text) / step` costs ~1 µs; this is a split and one `int()` for the
    common case, and it is the per-level cost of every depth diff.
    """
    whole, _, frac = text.partition(".")
    if len(frac) > decimals:
        extra = frac[decimals:]
        if extra.strip("0"):
            raise OffGridError(text)
        frac = frac[:decimals]
    elif len(frac) < decimals:
        frac = frac + "0" * (decimals - len(frac))
    try:
        units = int(whole + frac) if whole else int(frac or "0")
    except ValueError as exc:
        raise OffGridError(text) from exc
    if mantissa != 1:
        units, rest = divmod(units, mantissa)
        if rest:
            raise OffGridError(text)
    return units


@dataclass(frozen=True, slots=True)
class Instrument:
    """A tradable symbol and its exchange filters (from exchangeInfo, or the defaults below)."""

    symbol: str
    market: Market
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal
    base_asset: str = ""
    quote_asset: str = "USDT"
    _price_grid: tuple[int, int] = field(init=False, repr=False, compare=False)
    _qty_grid: tuple[int, int] = field(init=False, repr=False, compare=False)
    _money_per_tick_lot: int = field(init=False, repr=False, compare=False)
    _min_notional_money: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_price_grid", _grid(self.tick_size))
        object.__setattr__(self, "_qty_grid", _grid(self.step_size))
        per = self.tick_size * self.step_size * MONEY_SCALE
        if per != per.to_integral_value():
            raise ConfigError(
                f"{self.symbol}.tick_size*step_size",
                f"a multiple of 1e-8 so notionals stay exact, got {self.tick_size}*{self.step_size}",
            )
        object.__setattr__(self, "_money_per_tick_lot", int(per))
        if self.min_notional < 0:
            raise ConfigError(f"{self.symbol}.min_notional", ">= 0")
        # Once, here: risk reads it on every check and a Decimal product costs ~1 µs there.
        object.__setattr__(self, "_min_notional_money", int(self.min_notional * MONEY_SCALE))

    # --- text <-> integers (the exchange edge) ---
    def price_ticks(self, text: str) -> int:
        return parse_units(text, *self._price_grid)

    def qty_lots(self, text: str) -> int:
        return parse_units(text, *self._qty_grid)

    def price_decimal(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    def qty_decimal(self, lots: int) -> Decimal:
        return self.step_size * lots

    # --- money ---
    @property
    def money_per_tick_lot(self) -> int:
        """Money units (1e-8 quote) of one tick times one lot."""
        return self._money_per_tick_lot

    def notional(self, price_ticks: int, qty_lots: int) -> int:
        """Exact notional in money units (1e-8 of the quote asset)."""
        return price_ticks * qty_lots * self._money_per_tick_lot

    @property
    def min_notional_money(self) -> int:
        """The minimum notional in money units (1e-8 quote), truncated as before."""
        return self._min_notional_money

    def lots_for_base(self, base: Decimal) -> int:
        """Whole lots in a base-asset amount, rounded down (never more than asked)."""
        return int(base / self.step_size)


def money_decimal(units: int) -> Decimal:
    """Money units as a Decimal of the quote asset, for display and JSON at the edges."""
    return Decimal(units).scaleb(-MONEY_DECIMALS)


def money_text(units: int) -> str:
    """Money units as plain decimal text with all 8 places ("0.00000000", never "0E-8")."""
    return format(money_decimal(units), "f")


# Filters of the symbols in the recordings, as exchangeInfo reported them in 2024; live runs read
# exchangeInfo instead. Keyed by (market, symbol).
DEFAULT_INSTRUMENTS: dict[tuple[Market, str], Instrument] = {
    (Market.SPOT, "BTCUSDT"): Instrument(
        "BTCUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.00001"), Decimal("5"), "BTC"
    ),
    (Market.SPOT, "ETHUSDT"): Instrument(
        "ETHUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.0001"), Decimal("5"), "ETH"
    ),
    (Market.USDM, "BTCUSDT"): Instrument(
        "BTCUSDT", Market.USDM, Decimal("0.1"), Decimal("0.001"), Decimal("100"), "BTC"
    ),
    (Market.USDM, "ETHUSDT"): Instrument(
        "ETHUSDT", Market.USDM, Decimal("0.01"), Decimal("0.001"), Decimal("20"), "ETH"
    ),
}


def default_instrument(market: Market, symbol: str) -> Instrument:
    try:
        return DEFAULT_INSTRUMENTS[(market, symbol.upper())]
    except KeyError:
        known = ", ".join(f"{m.value}:{s}" for m, s in DEFAULT_INSTRUMENTS)
        raise ConfigError(
            "symbol", f"one with known filters ({known}) or filters from exchangeInfo; got {symbol}"
        ) from None
