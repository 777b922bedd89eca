"""Pre-trade risk: every order intent passes `RiskEngine.check`, which approves, shrinks or denies it.

Design and invariants:
- `check(intent, portfolio, book_top, ts_ns) -> Approved | Adjusted(new_qty, reason) | Denied(reason)`.
  It never raises: bad intents (unknown symbol, zero or non-integer size, off-grid price) are `Denied`
  with a reason code; an unexpected error is `Denied("internal_error")` and counted.
- We deny, the venue rejects (nautilus_trader's split): a denied intent never reaches the broker.
- STOP_MARKET intents (protective exits) must be reduce-only with a trigger on the protective side of
  the touch (a sell stop below the bid, a buy stop above the ask; else `stop_would_trigger`); their
  notional is valued at the trigger. The orders of one OCO list are checked before either is booked
  and count once against the position (`Portfolio`), since only one of them can execute.
- `check_limits_at_prices` refuses size limits that no order could meet at a given price (below the
  symbol's min notional); the shell runs it at start with REST prices, the trader at each first LIVE mid.
- Limits hold for the worst case where every resting order fills: position (lots) and notional per
  symbol, total gross notional, USD-M leverage against equity, spot long-only and spot quote (with a
  buffer for price protection and fees). An intent that breaks one is cut to the largest quantity that
  fits (`Adjusted`, reason = the binding limit) when that is still a valid order (>= 1 lot and the
  symbol's min notional), else `Denied`. An order that only reduces exposure is never cut by exposure
  limits, so the account can always get smaller. Min notional does not apply to USD-M reduce-only
  orders (Binance waives it there), so a small futures position can always be flattened.
- Rate limits driven by event time, consumed only by orders that pass: a token bucket (GCRA form, exact
  integer ns) for the configured orders/s with its burst, and Binance's own ORDERS limits as the fixed
  windows Binance counts in (50 per aligned 10 s, 160,000 per UTC day). A continuously refilling bucket
  would let up to twice the limit into one of Binance's windows; paper must stay within what live could do.
- Trading state: ACTIVE -> REDUCING (only exposure-reducing orders pass) -> HALTED (nothing passes except
  `flatten` intents, which are reduce-only). Breakers: `drawdown` on mark-to-market equity (unrealized
  included) against the peak since the last reset, REDUCING at `drawdown_reduce_bps`, HALTED at
  `drawdown_halt_bps`; `daily_loss` (equity below the UTC day's opening equity by the limit) -> HALTED.
  Thresholds trip when reached exactly (integer comparisons, no floats).
- Breakers only escalate by themselves. They clear by `reset()` (the operator action behind
  `python -m worker risk reset`) or by the configured cool-down, each with a record; never silently.
  A reset re-anchors peak and day-opening equity at the current equity (the loss is acknowledged).
- External gates: PAUSED(reason) (e.g. `shabbat`, set by the calendar: nothing passes, and the denial
  carries that reason), a lead gate (`set_lead("shabbat_lead")`: the minutes before a pause, only
  exposure-reducing orders pass, so nothing new is opened or left resting into the window; the state
  reads REDUCING with that reason) and `storage_lag` (the store is behind: only reducing orders pass).
  Effective state: HALTED > PAUSED > REDUCING (breaker or lead) > ACTIVE.
- State (breakers, trip reasons, peak, day anchor, pause, rate windows) exports to a JSON-able dict and
  restores from it (or from the store's `breakers` rows), so a trip survives a restart.
- Every decision (`RiskDecisionEvent`) and every change (`TradingStateChanged`, `BreakerChanged`) is
  appended to an outbox the engine drains (`drain()`) for persistence and notifications.

Wiring (the engine's side of the contract):
- every top-of-book change: `portfolio.mark(sym, bid, ask)` then `risk.update(portfolio, ts)`; every fill:
  `portfolio.apply_fill(f)` then `risk.update(portfolio, ts)` (the breaker's peak is sampled there);
- every intent: `d = risk.check(intent, portfolio, (bid, ask), ts)`, `order = order_for(intent, d, id)`;
  unless denied `portfolio.on_order(order, ref_price)` before `broker.submit`; every broker OrderUpdate:
  `portfolio.on_order(update.order)`; after each event: `risk.drain()` and `risk.take_flatten()`;
- operator reset (`python -m worker risk reset` row): `risk.reset(ts, reason, portfolio.equity)`;
  calendar: `set_pause("shabbat", ts)` / `clear_pause(ts)`; store writer lag: `set_storage_lag(flag, ts)`;
- restart: `restore_state(saved, ts)` or `restore_breakers(store_rows, ts, peak)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, NamedTuple

from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import MONEY_SCALE, Instrument
from worker.orders import Order, OrderType, Side, TimeInForce, denied_order, new_order
from worker.portfolio import Portfolio

NS = 1_000_000_000
DAY_NS = 86_400 * NS
BPS = 10_000

# Reason codes (stable strings: persisted and counted).
OK = "ok"
UNKNOWN_SYMBOL = "unknown_symbol"
INVALID_QTY = "invalid_qty"
INVALID_PRICE = "invalid_price"  # PRICE_FILTER: not a positive whole number of ticks
INVALID_ORDER = "invalid_order"  # side/type/tif that cannot be sent
STOP_WOULD_TRIGGER = "stop_would_trigger"  # a stop already reached by the market
NO_BOOK = "no_book"
PRICE_BAND = "price_band"
MIN_NOTIONAL = "min_notional"
MAX_ORDER_QTY = "max_order_qty"
MAX_ORDER_NOTIONAL = "max_order_notional"
MAX_POSITION = "max_position"
MAX_NOTIONAL = "max_notional"
MAX_TOTAL_NOTIONAL = "max_total_notional"
LEVERAGE = "leverage"
SPOT_LONG_ONLY = "spot_long_only"
INSUFFICIENT_QUOTE = "insufficient_quote"
REDUCING = "reducing"
REDUCE_ONLY = "reduce_only"
STORAGE_LAG = "storage_lag"
HALTED = "halted"
PAUSED = "paused"
RATE_LIMIT_OPS = "rate_limit:orders_per_second"
RATE_LIMIT_10S = "rate_limit:binance_orders_10s"
RATE_LIMIT_DAY = "rate_limit:binance_orders_day"
INTERNAL_ERROR = "internal_error"

BREAKER_DRAWDOWN = "drawdown"
BREAKER_DAILY_LOSS = "daily_loss"
BREAKER_STORAGE_LAG = "storage_lag"
FLATTEN_TAG = "flatten"
# Scripted orders test the venue: one below min notional goes out and the broker rejects it with
# Binance's reason (`MIN_NOTIONAL`), as the venue would; risk's own limits still apply to them.
SCRIPT_TAG_PREFIX = "script:"


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"
    PAUSED = "PAUSED"


_LEVEL_RANK = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


# --- intents and decisions -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What the strategy (or an operator script, or the flattener) wants to send. Integers: lots, ticks."""

    symbol: str
    side: Side
    type: OrderType
    tif: TimeInForce
    qty: int
    price: int | None
    ts_ns: int
    tag: str = ""
    reduce_only: bool = False
    stop_price: int | None = None  # STOP_MARKET: the trigger (ticks)
    oco: int = 0  # one-cancels-the-other list id (see worker.orders)


@dataclass(frozen=True, slots=True)
class Approved:
    reason: str = OK


@dataclass(frozen=True, slots=True)
class Adjusted:
    new_qty: int
    reason: str


@dataclass(frozen=True, slots=True)
class Denied:
    reason: str


Decision = Approved | Adjusted | Denied


# --- output records (field names match worker.store.records) -------------------------------------------
class RiskDecisionEvent(NamedTuple):
    """One decision. A NamedTuple, not a frozen dataclass: one is built per check on the hot path and a
    frozen dataclass's `__init__` costs several times more."""

    ts_ns: int
    market: str
    symbol: str
    verdict: str  # approved | adjusted | denied
    reason: str
    side: int | None
    qty_requested: int | None
    qty_approved: int | None
    price: int | None
    tag: str = ""
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TradingStateChanged:
    ts_ns: int
    state: str
    previous: str | None
    reason: str
    source: str  # risk | calendar | operator | cooldown | restart | storage
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BreakerChanged:
    ts_ns: int
    breaker: str
    tripped: bool
    reason: str
    detail: Mapping[str, Any] = field(default_factory=dict)


RiskRecord = RiskDecisionEvent | TradingStateChanged | BreakerChanged


# --- configuration -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SymbolLimits:
    """Per-symbol limits in human units: base asset for sizes, quote asset for notionals. None = no limit."""

    max_position: Decimal | None = None
    max_notional: Decimal | None = None
    max_order_qty: Decimal | None = None
    max_order_notional: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RiskConfig:
    """Limits and breaker settings. Quote amounts are Decimals of the quote asset (USDT)."""

    default_limits: SymbolLimits = SymbolLimits()
    symbols: Mapping[str, SymbolLimits] = field(default_factory=dict)
    max_total_notional: Decimal | None = None
    max_leverage: Decimal = Decimal(3)  # USD-M gross notional / equity
    spot_buy_buffer_bps: int = 100  # quote a spot buy must leave for protection slippage and fees
    max_price_deviation_bps: int | None = 500  # a limit price this far from mid is a fat finger
    orders_per_second: Decimal = Decimal(10)
    orders_burst: int = 20
    binance_orders_10s: int = 50
    binance_orders_day: int = 160_000
    drawdown_reduce_bps: int | None = 300
    drawdown_halt_bps: int | None = 500
    daily_loss_limit: Decimal | None = None
    cooldown_s: int | None = None  # None: only an operator reset clears a trip
    flatten_on_halt: bool = False

    def compile(self, instruments: Iterable[Instrument] | Mapping[str, Instrument]) -> CompiledLimits:
        """Validate against the traded instruments; raise `ConfigError` for anything that cannot work."""
        items = list(instruments.values() if isinstance(instruments, Mapping) else instruments)
        by_symbol = {i.symbol: i for i in items}
        for sym in self.symbols:
            if sym not in by_symbol:
                raise ConfigError(f"risk.symbols.{sym}", f"a traded symbol ({', '.join(sorted(by_symbol))})")
        per: dict[str, _SymLimits] = {}
        for inst in items:
            lim = self.symbols.get(inst.symbol, self.default_limits)
            per[inst.symbol] = _compile_symbol(inst, lim)
        total = _money("max_total_notional", self.max_total_notional)
        lev = _dec("max_leverage", self.max_leverage)
        if lev is None or lev <= 0:
            raise ConfigError("max_leverage", f"a positive number, got {self.max_leverage!r}")
        _int_range("spot_buy_buffer_bps", self.spot_buy_buffer_bps, 0, BPS)
        if self.max_price_deviation_bps is not None:
            _int_range("max_price_deviation_bps", self.max_price_deviation_bps, 1, BPS)
        ops = _dec("orders_per_second", self.orders_per_second)
        if ops is None or ops <= 0:
            raise ConfigError("orders_per_second", f"a positive number, got {self.orders_per_second!r}")
        _int_range("orders_burst", self.orders_burst, 1, 10**9)
        _int_range("binance_orders_10s", self.binance_orders_10s, 1, 10**9)
        _int_range("binance_orders_day", self.binance_orders_day, 1, 10**12)
        for name in ("drawdown_reduce_bps", "drawdown_halt_bps"):
            value = getattr(self, name)
            if value is not None:
                _int_range(name, value, 1, BPS)
        if (
            self.drawdown_reduce_bps is not None
            and self.drawdown_halt_bps is not None
            and self.drawdown_reduce_bps > self.drawdown_halt_bps
        ):
            raise ConfigError("drawdown_reduce_bps", f"<= drawdown_halt_bps ({self.drawdown_halt_bps})")
        daily = _money("daily_loss_limit", self.daily_loss_limit)
        if daily == 0:
            raise ConfigError("daily_loss_limit", "positive (or None for no limit)")
        if self.cooldown_s is not None:
            _int_range("cooldown_s", self.cooldown_s, 1, 10**9)
        if total is not None:
            smallest = min((i.min_notional_money for i in items), default=0)
            if total < max(smallest, 1):
                raise ConfigError("max_total_notional", f">= the smallest min notional ({smallest})")
        return CompiledLimits(
            per_symbol=per,
            instruments=by_symbol,
            max_total_notional=total,
            max_leverage_num=lev.as_integer_ratio()[0],
            max_leverage_den=lev.as_integer_ratio()[1],
            spot_buy_buffer_bps=self.spot_buy_buffer_bps,
            max_price_deviation_bps=self.max_price_deviation_bps,
            emission_ns=int((Decimal(NS) / ops).to_integral_value()),
            orders_burst=self.orders_burst,
            binance_orders_10s=self.binance_orders_10s,
            binance_orders_day=self.binance_orders_day,
            drawdown_reduce_bps=self.drawdown_reduce_bps,
            drawdown_halt_bps=self.drawdown_halt_bps,
            daily_loss_limit=daily,
            cooldown_ns=None if self.cooldown_s is None else self.cooldown_s * NS,
            flatten_on_halt=bool(self.flatten_on_halt),
        )


@dataclass(frozen=True, slots=True)
class _SymLimits:
    max_position: int | None  # lots
    max_notional: int | None  # money
    max_order_qty: int | None  # lots
    max_order_notional: int | None  # money


@dataclass(frozen=True, slots=True)
class CompiledLimits:
    per_symbol: dict[str, _SymLimits]
    instruments: dict[str, Instrument]
    max_total_notional: int | None
    max_leverage_num: int
    max_leverage_den: int
    spot_buy_buffer_bps: int
    max_price_deviation_bps: int | None
    emission_ns: int
    orders_burst: int
    binance_orders_10s: int
    binance_orders_day: int
    drawdown_reduce_bps: int | None
    drawdown_halt_bps: int | None
    daily_loss_limit: int | None
    cooldown_ns: int | None
    flatten_on_halt: bool


def _dec(name: str, value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ConfigError(name, f"a decimal number (int, str or Decimal, not float), got {value!r}")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise ConfigError(name, f"a decimal number, got {value!r}") from None
    if not d.is_finite():
        raise ConfigError(name, f"a finite number, got {value!r}")
    return d


def _money(name: str, value: Any) -> int | None:
    d = _dec(name, value)
    if d is None:
        return None
    if d < 0:
        raise ConfigError(name, f"non-negative, got {value}")
    units = d * MONEY_SCALE
    if units != units.to_integral_value():
        raise ConfigError(name, f"a multiple of 1e-8, got {value}")
    return int(units)


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(name, f"an integer in [{lo}, {hi}], got {value!r}")


def _compile_symbol(inst: Instrument, lim: SymbolLimits) -> _SymLimits:
    pre = f"risk.{inst.symbol}"

    def lots(name: str, value: Any) -> int | None:
        d = _dec(f"{pre}.{name}", value)
        if d is None:
            return None
        if d < 0:
            raise ConfigError(f"{pre}.{name}", f"non-negative, got {value}")
        n = int(d / inst.step_size)
        if n < 1:
            raise ConfigError(f"{pre}.{name}", f">= one step ({inst.step_size}), got {value}")
        return n

    out = _SymLimits(
        max_position=lots("max_position", lim.max_position),
        max_notional=_money(f"{pre}.max_notional", lim.max_notional),
        max_order_qty=lots("max_order_qty", lim.max_order_qty),
        max_order_notional=_money(f"{pre}.max_order_notional", lim.max_order_notional),
    )
    floor = inst.min_notional_money
    for name in ("max_notional", "max_order_notional"):
        value = getattr(out, name)
        if value is not None and (value < floor or value == 0):
            raise ConfigError(
                f"{pre}.{name}", f">= the symbol's min notional {inst.min_notional} (no order could pass)"
            )
    return out


def check_limits_at_prices(
    config: RiskConfig, instruments: Mapping[Any, Instrument], prices: Mapping[str, Decimal]
) -> None:
    """Refuse limits that make every order impossible at these prices (quote per base, e.g. REST last
    prices at start, or a first live mid): a `max_order_qty` or `max_position` (rounded down to the lot
    grid, as `compile` does) whose notional at the price is below the symbol's min notional.

    `instruments` is keyed by symbol (a `(market, symbol)` key works too); symbols without a price are
    skipped. Raises `ConfigError(param, allowed)` naming the smallest size that would work.
    """
    for inst in instruments.values():
        sym = inst.symbol
        price = prices.get(sym)
        if price is None or price <= 0:
            continue
        lim = config.symbols.get(sym, config.default_limits)
        for name in ("max_order_qty", "max_position"):
            d = _dec(f"risk.{sym}.{name}", getattr(lim, name))
            if d is None:
                continue
            size = int(d / inst.step_size) * inst.step_size
            if size * price < inst.min_notional:
                need = inst.min_notional / price
                raise ConfigError(
                    f"risk.{sym}.{name}",
                    f">= {need:.8f} {inst.base_asset or 'base'} at the price {price} (the symbol's min "
                    f"notional {inst.min_notional} per order); {size} allows no order at all",
                )


# --- rate limiting -------------------------------------------------------------------------------------
class TokenBucket:
    """A token bucket in GCRA form: exact integer nanoseconds, O(1), driven by the caller's clock.

    `tat` is the theoretical arrival time; an order conforms when `now >= tat - (burst - 1) * T`.
    """

    __slots__ = ("emission_ns", "tat", "tolerance_ns")

    def __init__(self, emission_ns: int, burst: int) -> None:
        self.emission_ns = emission_ns
        self.tolerance_ns = (burst - 1) * emission_ns
        self.tat = 0

    def allows(self, now: int) -> bool:
        return now >= self.tat - self.tolerance_ns

    def take(self, now: int) -> None:
        self.tat = max(self.tat, now) + self.emission_ns


class FixedWindow:
    """Binance's way of counting: at most `limit` per window aligned to the epoch (10 s, UTC day)."""

    __slots__ = ("count", "interval_ns", "limit", "window")

    def __init__(self, limit: int, interval_ns: int) -> None:
        self.limit = limit
        self.interval_ns = interval_ns
        self.window = -1
        self.count = 0

    def allows(self, now: int) -> bool:
        return now // self.interval_ns != self.window or self.count < self.limit

    def take(self, now: int) -> None:
        w = now // self.interval_ns
        if w != self.window:
            self.window = w
            self.count = 0
        self.count += 1


# --- the engine ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Breaker:
    level: TradingState
    reason: str
    since_ns: int
    detail: dict[str, Any]


class RiskEngine:
    """Limits, rate limits, breakers and gates. Pure: time only from the arguments."""

    def __init__(
        self, config: RiskConfig, instruments: Iterable[Instrument] | Mapping[str, Instrument]
    ) -> None:
        self.config = config
        self.limits = config.compile(instruments)
        self.outbox: list[RiskRecord] = []
        self.breakers: dict[str, _Breaker] = {}
        self.paused: str | None = None
        self.lead: str | None = None  # a pause is near: only reducing orders pass, with this reason
        self.storage_lag = False
        self.peak: int | None = None  # equity peak since the last reset (breaker anchor)
        self.day: int | None = None
        self.day_open_equity: int | None = None
        self._state = TradingState.ACTIVE
        self._level = TradingState.ACTIVE
        self._seen_ts = self._seen_equity = -1
        self.ops_bucket = TokenBucket(self.limits.emission_ns, self.limits.orders_burst)
        self.win_10s = FixedWindow(self.limits.binance_orders_10s, 10 * NS)
        self.win_day = FixedWindow(self.limits.binance_orders_day, DAY_NS)
        self.counts: dict[str, int] = {}
        self.errors = 0
        self.flatten_pending: list[OrderIntent] = []

    # --- state ---------------------------------------------------------------------------------------
    @property
    def level(self) -> TradingState:
        """The breakers' level alone (ACTIVE / REDUCING / HALTED), ignoring pauses."""
        return self._level

    def _refresh_level(self) -> None:
        """Recompute the cached level; called whenever `breakers` changes."""
        lvl = TradingState.ACTIVE
        for b in self.breakers.values():
            if _LEVEL_RANK[b.level] > _LEVEL_RANK[lvl]:
                lvl = b.level
        self._level = lvl

    @property
    def state(self) -> TradingState:
        return self._state

    def state_reason(self, state: TradingState | None = None) -> str:
        """Why trading is in `state` (default: the current one): the pause reason or `breaker:reason`."""
        state = state or self._state
        if state is TradingState.PAUSED:
            return self.paused or ""
        tripped = [f"{n}:{b.reason}" for n, b in sorted(self.breakers.items()) if b.level is state]
        if state is TradingState.REDUCING and self.lead is not None:
            tripped.append(self.lead)
        return ",".join(tripped)

    def _recompute(
        self, ts_ns: int, reason: str, source: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        lvl = self.level
        new = lvl if lvl is TradingState.HALTED or self.paused is None else TradingState.PAUSED
        if new is TradingState.ACTIVE and self.lead is not None:
            new = TradingState.REDUCING
        if new is not self._state:
            prev = self._state
            self._state = new
            self.outbox.append(
                TradingStateChanged(ts_ns, new.value, prev.value, reason, source, dict(detail or {}))
            )

    def drain(self) -> list[RiskRecord]:
        out, self.outbox = self.outbox, []
        return out

    # --- breakers ------------------------------------------------------------------------------------
    def update(self, portfolio: Portfolio, ts_ns: int) -> list[OrderIntent]:
        """Re-evaluate breakers on the current mark-to-market equity; call after every mark and fill.

        Returns flatten intents when a breaker just HALTED trading and `flatten_on_halt` is set; they are
        also queued for `take_flatten()`, which is the one place the engine should collect them from.
        """
        lim = self.limits
        eq = portfolio.equity
        self._seen_ts, self._seen_equity = ts_ns, eq
        day = ts_ns // DAY_NS
        if day != self.day:
            self.day = day
            self.day_open_equity = eq
        if self.peak is None or eq > self.peak:
            self.peak = eq
        if lim.cooldown_ns is not None and self.breakers:
            for name, b in list(self.breakers.items()):
                if name != BREAKER_STORAGE_LAG and ts_ns - b.since_ns >= lim.cooldown_ns:
                    self._clear(name, ts_ns, "cooldown", eq)
            self._recompute(ts_ns, "cooldown", "cooldown")
        before = self.level
        peak = self.peak
        dd = peak - eq
        halt, reduce = lim.drawdown_halt_bps, lim.drawdown_reduce_bps
        current = self.breakers.get(BREAKER_DRAWDOWN)
        current_rank = _LEVEL_RANK[current.level] if current else 0
        # (A peak <= 0 is an account that never had equity: a percentage of it means nothing.)
        if peak > 0 and dd > 0:
            if halt is not None and current_rank < 2 and dd * BPS >= halt * peak:
                detail = {"equity": eq, "peak": peak, "drawdown": dd, "bps": halt}
                self._trip(BREAKER_DRAWDOWN, TradingState.HALTED, "drawdown_halt", ts_ns, detail)
            elif reduce is not None and current_rank < 1 and dd * BPS >= reduce * peak:
                detail = {"equity": eq, "peak": peak, "drawdown": dd, "bps": reduce}
                self._trip(BREAKER_DRAWDOWN, TradingState.REDUCING, "drawdown_reduce", ts_ns, detail)
        loss_limit = lim.daily_loss_limit
        if (
            loss_limit is not None
            and BREAKER_DAILY_LOSS not in self.breakers
            and self.day_open_equity is not None
            and self.day_open_equity - eq >= loss_limit
        ):
            self._trip(
                BREAKER_DAILY_LOSS,
                TradingState.HALTED,
                "daily_loss_limit",
                ts_ns,
                {"equity": eq, "day_open_equity": self.day_open_equity, "limit": loss_limit},
            )
        after = self.level
        if after is before:
            return []
        self._recompute(ts_ns, self.state_reason(after) or after.value.lower(), "risk", {"equity": eq})
        if after is TradingState.HALTED and lim.flatten_on_halt:
            intents = self.flatten_intents(portfolio, ts_ns)
            self.flatten_pending.extend(intents)
            return intents
        return []

    def take_flatten(self) -> list[OrderIntent]:
        """Flatten intents produced by a HALT (also when the trip happened inside `check`)."""
        out, self.flatten_pending = self.flatten_pending, []
        return out

    def _trip(self, name: str, level: TradingState, reason: str, ts_ns: int, detail: dict[str, Any]) -> None:
        detail = {**detail, "level": level.value}
        self.breakers[name] = _Breaker(level, reason, ts_ns, detail)
        self._refresh_level()
        self.outbox.append(BreakerChanged(ts_ns, name, True, reason, detail))

    def _clear(self, name: str, ts_ns: int, why: str, equity: int | None) -> None:
        b = self.breakers.pop(name, None)
        if b is None:
            return
        self._refresh_level()
        self.outbox.append(BreakerChanged(ts_ns, name, False, why, {"was": b.reason, "level": b.level.value}))
        if equity is not None:
            self.peak = equity
            self.day_open_equity = equity

    def reset(self, ts_ns: int, reason: str, equity: int, source: str = "operator") -> None:
        """The operator reset (`python -m worker risk reset`): clear the breakers, re-anchor at `equity`."""
        for name in sorted(self.breakers):
            if name != BREAKER_STORAGE_LAG:
                self._clear(name, ts_ns, reason, equity)
        self.peak = equity
        self.day_open_equity = equity
        self._seen_ts = -1
        self._recompute(ts_ns, reason, source)

    def flatten_intents(self, portfolio: Portfolio, ts_ns: int) -> list[OrderIntent]:
        """Reduce-only market orders closing every open position (tag `flatten`)."""
        return [flatten_intent(sym, p.qty, ts_ns) for sym, p in sorted(portfolio.positions.items()) if p.qty]

    # --- external gates ------------------------------------------------------------------------------
    def set_pause(self, reason: str, ts_ns: int, source: str = "calendar") -> None:
        """PAUSED(reason): nothing passes until `clear_pause` (the calendar owns both calls)."""
        self.paused = reason
        self._recompute(ts_ns, reason, source)

    def clear_pause(self, ts_ns: int, reason: str = "resume", source: str = "calendar") -> None:
        self.paused = None
        self._recompute(ts_ns, reason, source)

    def set_lead(self, reason: str, ts_ns: int, source: str = "calendar") -> None:
        """A pause is near: from now on only exposure-reducing orders pass, denied ones carry `reason`."""
        self.lead = reason
        self._recompute(ts_ns, reason, source)

    def clear_lead(self, ts_ns: int, reason: str = "resume", source: str = "calendar") -> None:
        self.lead = None
        self._recompute(ts_ns, reason, source)

    def set_storage_lag(self, lagging: bool, ts_ns: int, detail: Mapping[str, Any] | None = None) -> None:
        """While set, only orders that reduce exposure pass (reason `storage_lag`)."""
        if lagging == self.storage_lag:
            return
        self.storage_lag = lagging
        self.outbox.append(
            BreakerChanged(
                ts_ns,
                BREAKER_STORAGE_LAG,
                lagging,
                STORAGE_LAG if lagging else "caught_up",
                dict(detail or {}),
            )
        )

    # --- persistence ---------------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """JSON-able state: what must survive a restart."""
        return {
            "version": 1,
            "state": self._state.value,
            "breakers": {
                n: {"level": b.level.value, "reason": b.reason, "since_ns": b.since_ns, "detail": b.detail}
                for n, b in sorted(self.breakers.items())
            },
            "paused": self.paused,
            "lead": self.lead,
            "peak": self.peak,
            "day": self.day,
            "day_open_equity": self.day_open_equity,
            "rate": {
                "tat": self.ops_bucket.tat,
                "w10": [self.win_10s.window, self.win_10s.count],
                "wday": [self.win_day.window, self.win_day.count],
            },
        }

    def restore_state(self, state: Mapping[str, Any], ts_ns: int) -> None:
        """Load `export_state()` output; records the restored state (source `restart`)."""
        if state.get("version") != 1:
            raise ConfigError("risk state version", f"1, got {state.get('version')!r}")
        self.breakers = {
            n: _Breaker(
                TradingState(b["level"]), b["reason"], int(b["since_ns"]), dict(b.get("detail") or {})
            )
            for n, b in state.get("breakers", {}).items()
            if n != BREAKER_STORAGE_LAG
        }
        self._refresh_level()
        self.paused = state.get("paused")
        self.lead = state.get("lead")
        self.peak = state.get("peak")
        self.day = state.get("day")
        self.day_open_equity = state.get("day_open_equity")
        rate = state.get("rate") or {}
        self.ops_bucket.tat = int(rate.get("tat", 0))
        self.win_10s.window, self.win_10s.count = rate.get("w10", [-1, 0])
        self.win_day.window, self.win_day.count = rate.get("wday", [-1, 0])
        self._seen_ts = -1
        self._recompute(ts_ns, "restored", "restart", {"breakers": sorted(self.breakers)})

    def restore_breakers(self, rows: Iterable[Any], ts_ns: int, peak: int | None = None) -> None:
        """Load the store's `breakers` rows (objects with breaker, tripped, reason, since_ns, detail)."""
        for row in rows:
            if not row.tripped or row.breaker == BREAKER_STORAGE_LAG:
                continue
            detail = dict(row.detail or {})
            level = TradingState(detail.get("level", TradingState.HALTED.value))
            self.breakers[row.breaker] = _Breaker(level, row.reason, int(row.since_ns), detail)
        self._refresh_level()
        if peak is not None:
            self.peak = peak if self.peak is None else max(self.peak, peak)
        self._seen_ts = -1
        self._recompute(ts_ns, "restored", "restart", {"breakers": sorted(self.breakers)})

    # --- the check -----------------------------------------------------------------------------------
    def check(
        self, intent: OrderIntent, portfolio: Portfolio, book_top: tuple[int, int] | None, ts_ns: int
    ) -> Decision:
        """Approve, shrink or deny one intent. `book_top` is (best bid, best ask) in ticks, or None."""
        try:
            decision, market = self._check(intent, portfolio, book_top, ts_ns)
        except Exception as exc:  # the hot path never dies from one intent
            self.errors += 1
            decision, market = Denied(INTERNAL_ERROR), ""
            self._record(intent, decision, market, ts_ns, {"error": repr(exc)[:200]})
            return decision
        self._record(intent, decision, market, ts_ns, None)
        return decision

    def _record(
        self, intent: Any, decision: Decision, market: str, ts_ns: int, detail: dict[str, Any] | None
    ) -> None:
        reason = decision.reason
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if type(decision) is Approved:
            verdict, qty = "approved", getattr(intent, "qty", None)
        elif type(decision) is Adjusted:
            verdict, qty = "adjusted", decision.new_qty
        else:
            verdict, qty = "denied", 0
        if type(intent) is OrderIntent:  # the normal case, without the defensive getattrs
            side = intent.side
            self.outbox.append(
                RiskDecisionEvent(
                    ts_ns,
                    market,
                    intent.symbol if type(intent.symbol) is str else str(intent.symbol),
                    verdict,
                    reason,
                    int(side) if isinstance(side, Side) else None,
                    _int_or_none(intent.qty),
                    _int_or_none(qty),
                    _int_or_none(intent.price),
                    intent.tag,
                    detail,
                )
            )
            return
        side = getattr(intent, "side", None)
        self.outbox.append(
            RiskDecisionEvent(
                ts_ns,
                market,
                str(getattr(intent, "symbol", "")),
                verdict,
                reason,
                int(side) if isinstance(side, Side) else None,
                _int_or_none(getattr(intent, "qty", None)),
                _int_or_none(qty),
                _int_or_none(getattr(intent, "price", None)),
                str(getattr(intent, "tag", "")),
                detail,
            )
        )

    def _check(
        self, intent: OrderIntent, portfolio: Portfolio, book_top: tuple[int, int] | None, ts_ns: int
    ) -> tuple[Decision, str]:
        lim = self.limits
        inst = lim.instruments.get(intent.symbol)
        if inst is None:
            return Denied(UNKNOWN_SYMBOL), ""
        market = inst.market.value
        qty = intent.qty
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            return Denied(INVALID_QTY), market
        side = intent.side
        if not isinstance(side, Side) or intent.type not in _TYPES or intent.tif not in _TIFS:
            return Denied(INVALID_ORDER), market
        price = intent.price
        otype = intent.type
        if otype is OrderType.LIMIT:
            if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
                return Denied(INVALID_PRICE), market
            if intent.stop_price is not None:
                return Denied(INVALID_ORDER), market
        elif price is not None or intent.tif is TimeInForce.GTX:
            return Denied(INVALID_ORDER), market
        elif otype is OrderType.STOP_MARKET:
            stop = intent.stop_price
            if not isinstance(stop, int) or isinstance(stop, bool) or stop <= 0:
                return Denied(INVALID_PRICE), market
            if not intent.reduce_only:  # stops exist here only as protective exits
                return Denied(INVALID_ORDER), market
        elif intent.stop_price is not None:
            return Denied(INVALID_ORDER), market
        # Breakers first, on current equity, so a check never passes on a stale state (skipped when
        # `update` already saw this very equity at this very time).
        if ts_ns != self._seen_ts or portfolio.equity != self._seen_equity:
            self.update(portfolio, ts_ns)
        state = self._state
        is_flatten = intent.tag == FLATTEN_TAG and intent.reduce_only
        if state is TradingState.HALTED and not is_flatten:
            return Denied(HALTED), market
        if state is TradingState.PAUSED:
            return Denied(self.paused or PAUSED), market  # the pause's own reason, e.g. `shabbat`
        if book_top is None:
            return Denied(NO_BOOK), market
        bid, ask = book_top
        if otype is OrderType.MARKET:
            ref = ask if side is Side.BUY else bid
        elif otype is OrderType.STOP_MARKET:
            ref = intent.stop_price
            if (side is Side.SELL and ref >= bid) or (side is Side.BUY and ref <= ask):
                return Denied(STOP_WOULD_TRIGGER), market
        else:
            ref = price
            band = lim.max_price_deviation_bps
            if band is not None:
                mid2 = bid + ask
                if abs(2 * price - mid2) * BPS > band * mid2:
                    return Denied(PRICE_BAND), market
        if ref is None or ref <= 0:
            return Denied(NO_BOOK), market

        pos = portfolio.qty(intent.symbol)
        s = int(side)
        open_same = portfolio.open_buy_qty(intent.symbol) if s > 0 else portfolio.open_sell_qty(intent.symbol)
        reducible = max(0, abs(pos) - open_same) if pos * s < 0 else 0

        # Each limit is "at most c lots"; the smallest wins and names the reason. (Inline, not a helper:
        # this is the hot path and a closure per call costs more than the arithmetic.)
        allowed, reason = qty, OK
        # Gates that let only reducing orders through.
        if state is TradingState.REDUCING and reducible < allowed:
            lead_only = self._level is not TradingState.REDUCING and self.lead is not None
            allowed, reason = reducible, self.lead if lead_only else REDUCING
        if intent.reduce_only and reducible < allowed:
            allowed, reason = reducible, REDUCE_ONLY
        if self.storage_lag and reducible < allowed:
            allowed, reason = reducible, STORAGE_LAG

        unit = inst.notional(ref, 1)  # money per lot at the reference price
        sl = lim.per_symbol[intent.symbol]
        c = sl.max_order_qty
        if c is not None and c < allowed:
            allowed, reason = c, MAX_ORDER_QTY
        if sl.max_order_notional is not None:
            c = sl.max_order_notional // unit
            if c < allowed:
                allowed, reason = c, MAX_ORDER_NOTIONAL
        # Exposure limits: worst case after this order and every resting one on this side fill.
        # `dir_pos` = position measured along the order's direction (negative when reducing); a
        # reducing quantity is always allowed (`max(..., reducible)`).
        dir_pos = s * pos + open_same
        if inst.market is Market.SPOT and s < 0 and reducible < allowed:
            allowed, reason = reducible, SPOT_LONG_ONLY
        if sl.max_position is not None:
            c = max(sl.max_position - dir_pos, reducible)
            if c < allowed:
                allowed, reason = c, MAX_POSITION
        if sl.max_notional is not None:
            c = max(sl.max_notional // unit - dir_pos, reducible)
            if c < allowed:
                allowed, reason = c, MAX_NOTIONAL
        if lim.max_total_notional is not None:
            here = portfolio.positions[intent.symbol].exposure
            room = lim.max_total_notional - (portfolio.exposure - here)
            c = max(room // unit - dir_pos, reducible)
            if c < allowed:
                allowed, reason = c, MAX_TOTAL_NOTIONAL
        if inst.market is Market.USDM:
            eq = portfolio.equity
            here = portfolio.positions[intent.symbol].exposure
            others = portfolio.usdm_exposure() - here
            budget = eq * lim.max_leverage_num // lim.max_leverage_den if eq > 0 else 0
            c = max((budget - others) // unit - dir_pos, reducible)
            if c < allowed:
                allowed, reason = c, LEVERAGE
        elif s > 0:
            # Resting buys hold their notional; the buffer (slippage, fees) applies to them too.
            spendable = portfolio.spot_cash() * BPS // (BPS + lim.spot_buy_buffer_bps)
            c = (spendable - portfolio.reserved_quote) // unit
            if c < allowed:
                allowed, reason = c, INSUFFICIENT_QUOTE

        # USD-M waives min notional for reduce-only orders (so a small position can always be closed).
        min_money = 0 if intent.reduce_only and inst.market is Market.USDM else inst.min_notional_money
        if allowed < qty:
            if allowed < 1 or inst.notional(ref, allowed) < min_money:
                return Denied(reason), market
        elif inst.notional(ref, qty) < min_money and not intent.tag.startswith(SCRIPT_TAG_PREFIX):
            return Denied(MIN_NOTIONAL), market

        # Rate limits last: only orders that will be sent spend a token.
        if not self.ops_bucket.allows(ts_ns):
            return Denied(RATE_LIMIT_OPS), market
        if not self.win_10s.allows(ts_ns):
            return Denied(RATE_LIMIT_10S), market
        if not self.win_day.allows(ts_ns):
            return Denied(RATE_LIMIT_DAY), market
        self.ops_bucket.take(ts_ns)
        self.win_10s.take(ts_ns)
        self.win_day.take(ts_ns)
        if allowed < qty:
            return Adjusted(allowed, reason), market
        return _APPROVED, market


_APPROVED = Approved()
_TYPES = frozenset(OrderType)
_TIFS = frozenset(TimeInForce)


def _int_or_none(value: Any) -> int | None:
    return value if type(value) is int else None


def flatten_intent(symbol: str, position_qty: int, ts_ns: int) -> OrderIntent:
    """A reduce-only market order (tag `flatten`) closing a position of `position_qty` lots (signed)."""
    side = Side.SELL if position_qty > 0 else Side.BUY
    return OrderIntent(
        symbol, side, OrderType.MARKET, TimeInForce.IOC, abs(position_qty), None, ts_ns, FLATTEN_TAG, True
    )


def order_for(intent: OrderIntent, decision: Decision, order_id: int) -> Order:
    """The order a decision leads to: Pending with the approved quantity, or a `Denied` record."""
    if isinstance(decision, Denied):
        return denied_order(
            order_id,
            intent.symbol,
            intent.side,
            intent.type,
            intent.tif,
            intent.qty,
            intent.price,
            intent.ts_ns,
            decision.reason,
            intent.tag,
            stop_price=intent.stop_price,
            reduce_only=intent.reduce_only,
            oco=intent.oco,
        )
    qty = decision.new_qty if isinstance(decision, Adjusted) else intent.qty
    i = intent
    return new_order(
        order_id,
        i.symbol,
        i.side,
        i.type,
        i.tif,
        qty,
        i.price,
        i.ts_ns,
        i.tag,
        stop_price=i.stop_price,
        reduce_only=i.reduce_only,
        oco=i.oco,
    )
