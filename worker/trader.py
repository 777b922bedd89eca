"""The trading half of the engine: features -> strategy -> risk -> broker -> portfolio, per event.

Design and invariants:
- Pure and synchronous like the rest of the core: time is the event's `recv_ns`, randomness is the
  broker's seeded RNG, so the same events in give the same outputs out (replay is deterministic).
- The market half (`worker/engine.py`) calls in only for LIVE books: a SYNCING symbol is invisible here,
  and `book_lost` tells the strategy to forget its state and the broker to stop acting on that book.
- Order of work per book event: the broker first runs what was due *before* this event (arrivals act on
  the book as it was), then sees the new book; fills update the portfolio; the portfolio is marked;
  risk re-checks its breakers on the marked equity; only then may the strategy decide, and its intent
  passes `RiskEngine.check` before the broker sees it. A Denied intent is recorded as a `Denied` order.
- One working order per symbol at a time: the strategy does not stack intents while one is in flight.
- Scripted orders (`ScheduledOrder`) replace the strategy when given: decided at exchange time `t_ms`,
  priced from the book at decision time, still subject to risk.
- Shabbat / Yom Tov (`CalendarClock`): from `pause_lead_s` before a window risk lets only exposure-
  reducing orders through (reason `shabbat_lead`), resting orders are cancelled, and positions are
  flattened (`flatten_before_pause`) or held with protective exits: per position a reduce-only
  STOP_MARKET stop-loss and a LIMIT GTC take-profit in one OCO list (`protect_stop_bps`,
  `protect_take_profit_bps` from the exit-side price), placed once the symbol's cancels have landed so
  they match the position held. At the window start whatever else still rests is cancelled and (flatten
  mode) what is still open is flattened again; inside it risk is PAUSED (reason `shabbat`: no new
  order, cancels still go out; the venue's OCO cancels the other exit when one fills). At havdalah the
  exits still resting are cancelled and trading resumes. Market data keeps flowing throughout.
- HALTED with `flatten_on_halt`: a flatten that was denied or filled only in part is re-issued (reduce-
  only, after cancelling the symbol's other orders) at most once per symbol per second of event time
  until the position is closed.
- Each symbol's limits are checked at its first LIVE mid (`risk.check_limits_at_prices`): limits no
  order could meet are reported `Incident("config_unusable")` (the live shell stops on it).
- Every book event that computed features appends the symbol's `FeatureVector` to the outputs (the
  feed publishes it as `features`; the store ignores it). The strategy gets the position's opening
  time (`Position.opened_ns`), so its time stop survives a resync and a restart.
- USD-M funding: each symbol keeps its latest `MarkPrice`; an update whose exchange time reaches the
  previous one's `next_funding_ns` settles that funding time with the previous update's rate and mark
  (the last the venue published before settling), but only when that previous update is recent (at
  most 60 s before the funding time). After a longer gap (a disconnect) the funding time, and any later
  one the gap swallowed, is reported `Incident("funding_unsettled")` and left to the REST history that
  the shell feeds through `settle_funding`. The portfolio pays once per (symbol, funding time), also
  across a restart (`restore` takes the persisted payments).
- Samples: every `sample_interval_s` of event time, one `EquitySample` and a `TopSample` per live symbol,
  plus a `TopSample` the moment a symbol's book goes LIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from worker.book import OrderBook
from worker.broker import Broker, BrokerConfig, CancelRejected, Markout, OrderUpdate
from worker.calendar import CalendarClock
from worker.errors import ConfigError
from worker.events import DepthDiff, Market, MarkPrice, Trade
from worker.features import FeatureConfig, Features, FeatureVector
from worker.instruments import MONEY_SCALE, Instrument
from worker.orders import Fill, Order, OrderType, Side, TimeInForce
from worker.portfolio import FundingPayment, FundingRate, ImpossibleFill, Portfolio, rebuild_from_fills
from worker.risk import (
    FLATTEN_TAG,
    SCRIPT_TAG_PREFIX,
    OrderIntent,
    RiskConfig,
    RiskEngine,
    TradingState,
    check_limits_at_prices,
    flatten_intent,
    order_for,
)
from worker.strategy import Signal, SignalKind, Strategy, StrategyConfig

NS = 1_000_000_000
SHABBAT = "shabbat"
SHABBAT_LEAD = "shabbat_lead"  # the minutes before a window: only exposure-reducing orders pass
FUNDING_FRESH_NS = 60 * NS  # a mark update this close before a funding time carries the rate that applies
MIN_FUNDING_INTERVAL_NS = 3600 * NS  # Binance's shortest funding interval (1 h; usually 8 h, some 4 h)
ORDER_STYLES = ("taker", "maker")


@dataclass(frozen=True, slots=True)
class EquitySample:
    """The account at one instant (money in 1e-8 quote units)."""

    ts_ns: int
    equity: int
    cash: int
    realized_pnl: int
    unrealized_pnl: int
    fees: int
    exposure: int


@dataclass(frozen=True, slots=True)
class TopSample:
    """One live book's top at one instant (ticks, lots)."""

    ts_ns: int
    market: str
    symbol: str
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int
    imbalance: float | None
    microprice: float | None


@dataclass(frozen=True, slots=True)
class PauseChange:
    """Trading paused (`paused=True`, until `until_ns`) or resumed, with the holy days as the reason."""

    ts_ns: int
    paused: bool
    reason: str
    until_ns: int | None


@dataclass(frozen=True, slots=True)
class Incident:
    """Something the core refused or could not do; persisted as a system event, never raised."""

    ts_ns: int
    kind: str
    detail: str
    at_ns: int | None = None  # the time it is about when not `ts_ns` (funding_unsettled: the funding time)


@dataclass(frozen=True, slots=True)
class ScheduledOrder:
    """One row of a scripted order schedule (see `worker/schedule.py` for the CSV form)."""

    t_ms: int
    side: Side
    type: OrderType
    tif: TimeInForce
    qty: Decimal
    price: Decimal | None = None  # a number
    ref: str | None = None  # "bid" | "ask": price taken from the book at decision time
    offset_ticks: int = 0
    cancel_after_ms: int | None = None
    symbol: str | None = None  # None: the only traded symbol


@dataclass(frozen=True, slots=True)
class TradingConfig:
    """How signals become orders, and the account they trade. Defaults documented in config.example."""

    starting_cash: Decimal = Decimal(10_000)
    order_style: str = "taker"  # taker: IOC limit through the touch; maker: post-only at the touch
    taker_slippage_ticks: int = 2  # how far through the touch a taker IOC may trade
    maker_ttl_ms: int = 2_000  # an unfilled maker order is cancelled after this long
    sample_interval_s: int = 1
    pause_lead_s: int = 300  # cancel resting orders this long before a Shabbat / Yom Tov window
    flatten_before_pause: bool = True  # else hold positions through the window
    # Hold mode: each open position gets a reduce-only stop-loss (STOP_MARKET) and take-profit (LIMIT
    # GTC), one cancelling the other, this far from the exit-side price at the lead time.
    protect_positions: bool = True
    protect_stop_bps: int = 100
    protect_take_profit_bps: int = 200
    strategy_enabled: bool = True

    def validate(self) -> TradingConfig:
        if self.starting_cash <= 0:
            raise ConfigError("trading.starting_cash", f"> 0, got {self.starting_cash}")
        if self.order_style not in ORDER_STYLES:
            raise ConfigError("trading.order_style", f"one of {ORDER_STYLES}, got {self.order_style!r}")
        for name, low in (
            ("taker_slippage_ticks", 0),
            ("maker_ttl_ms", 1),
            ("sample_interval_s", 1),
            ("pause_lead_s", 0),
            ("protect_stop_bps", 1),
            ("protect_take_profit_bps", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"trading.{name}", f"an integer >= {low}, got {value!r}")
        for name in ("protect_stop_bps", "protect_take_profit_bps"):
            if getattr(self, name) >= 10_000:
                raise ConfigError(f"trading.{name}", f"an integer in [1, 9999], got {getattr(self, name)!r}")
        return self


@dataclass(slots=True)
class _SymbolState:
    instrument: Instrument
    features: Features
    strategy: Strategy
    book: OrderBook | None = None
    vector: FeatureVector | None = None
    working: set[int] = field(default_factory=set)  # our orders on this symbol not yet terminal
    mark: MarkPrice | None = None  # the latest USD-M mark price / funding rate
    funding_interval_ns: int = 0  # learnt from the stream (0: not yet known)


class Trader:
    """Owns features, strategy, risk, broker and portfolio for the traded symbols."""

    def __init__(
        self,
        instruments: Sequence[Instrument],
        *,
        trading: TradingConfig | None = None,
        features: FeatureConfig | None = None,
        strategy: StrategyConfig | None = None,
        risk: RiskConfig | None = None,
        broker: BrokerConfig | None = None,
        calendar: CalendarClock | None = None,
        schedule: Sequence[ScheduledOrder] | None = None,
    ) -> None:
        self.config = (trading or TradingConfig()).validate()
        by_symbol: dict[str, Instrument] = {}
        for inst in instruments:
            if inst.symbol in by_symbol:
                raise ConfigError("symbols", f"traded on one market each; {inst.symbol} is listed twice")
            by_symbol[inst.symbol] = inst
        self.instruments = by_symbol
        feature_config = features or FeatureConfig()
        strategy_config = strategy or StrategyConfig()
        self.symbols = {
            s: _SymbolState(
                inst, Features(s, feature_config), Strategy(s, feature_config.windows_ms, strategy_config)
            )
            for s, inst in by_symbol.items()
        }
        self.portfolio = Portfolio(by_symbol, int(self.config.starting_cash * MONEY_SCALE))
        self.risk = RiskEngine(risk or RiskConfig(), by_symbol)
        band = self.risk.limits.max_price_deviation_bps
        if self.config.protect_positions and band is not None and self.config.protect_take_profit_bps >= band:
            raise ConfigError(
                "trading.protect_take_profit_bps",
                f"< risk.max_price_deviation_bps ({band}): a take-profit that far would be denied",
            )
        self.broker = Broker(broker)
        self.calendar = calendar
        self.schedule = sorted(schedule or (), key=lambda row: row.t_ms)
        self._next_scheduled = 0
        self._cancel_at: list[tuple[int, int]] = []  # (due ns, order id), kept sorted by due time
        self._next_order_id = 1
        self._next_sample_ns = 0
        self._exchange_ns = 0
        self._paused_until: int | None = None
        self._calendar_due = 0  # event time of the next calendar boundary worth looking at
        self._prepared_for: int | None = None  # window start we already cancelled / flattened for
        self._protect_pending = False  # hold mode, lead time: positions still waiting for their exits
        self._protective: dict[int, str] = {}  # protective exit order id -> symbol (while open)
        self._next_oco = 1
        self._flatten_due: dict[str, int] = {}  # symbol -> event time of the next flatten retry (HALTED)
        self._halt_cancels: set[int] = set()  # orders already asked to cancel because trading HALTED
        self._limits_checked: set[str] = set()  # symbols whose limits were checked at a live price
        self.signals = 0
        self.incidents = 0

    # --- entry points from the engine ------------------------------------------------------------------
    def before(self, ts_ns: int, out: list[Any]) -> None:
        """Run what is due strictly before an event at `ts_ns` (arrivals act on the book as it was)."""
        self._absorb(self.broker.advance(ts_ns), ts_ns, out)
        self._run_cancels(ts_ns, out)
        self._calendar(ts_ns, out)
        if self._protect_pending:
            self._protect(ts_ns, out)
        risk = self.risk
        if risk.state is TradingState.HALTED and risk.limits.flatten_on_halt:
            self._retry_flatten(ts_ns, out)
        if ts_ns >= self._next_sample_ns:
            self._sample(ts_ns, out)

    def on_book(
        self,
        market: Market,
        symbol: str,
        book: OrderBook,
        diff: DepthDiff | None,
        ts_ns: int,
        exchange_ns: int,
        out: list,
    ) -> None:
        """A LIVE book changed (`diff` None: it was just rebuilt from a snapshot)."""
        state = self.symbols.get(symbol)
        if state is None or state.instrument.market is not market:
            return
        if exchange_ns > self._exchange_ns:
            self._exchange_ns = exchange_ns
        went_live = state.book is None
        state.book = book
        if went_live:  # a top sample at once, not only at the next second boundary
            self._sample_top(state, ts_ns, out)
            if symbol not in self._limits_checked:
                self._check_limits(state, book, ts_ns, out)
        self._absorb(self.broker.on_book(symbol, book, diff, ts_ns), ts_ns, out)
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_bid is None or best_ask is None:
            return
        self.portfolio.mark(symbol, best_bid[0], best_ask[0])
        self._risk_update(ts_ns, out)
        state.vector = vector = state.features.on_book(book, ts_ns)
        out.append(vector)  # published as `features` by the feed; the store ignores it
        self._scheduled(ts_ns, out)
        if self.config.strategy_enabled and not self.schedule:
            self._decide(state, ts_ns, out)

    def on_trade(self, trade: Trade, out: list) -> None:
        if trade.exchange_ns > self._exchange_ns:
            self._exchange_ns = trade.exchange_ns
        state = self.symbols.get(trade.symbol)
        if state is None or state.instrument.market is not trade.market:
            return
        self._absorb(self.broker.on_trade(trade), trade.recv_ns, out)
        state.features.on_trade(trade)

    def on_mark_price(self, update: MarkPrice, out: list) -> None:
        """Keep the newest mark; settle funding when the venue's clock passed the announced funding time.

        Only a fresh rate settles: the previous update must be at most `FUNDING_FRESH_NS` older than the
        funding time (the stream publishes every second). After a longer gap the rate in hand may be
        hours old, so the funding time is reported (`Incident("funding_unsettled")`) and left to the REST
        history (`settle_funding`); so are later funding times the gap swallowed whole."""
        state = self.symbols.get(update.symbol)
        if state is None or state.instrument.market is not update.market:
            return
        previous = state.mark
        if previous is not None and update.exchange_ns < previous.exchange_ns:
            return  # an older update (a rotation lane repeating itself): the newer one stays
        state.mark = update
        if previous is None or update.exchange_ns < previous.next_funding_ns:
            return
        due = previous.next_funding_ns
        sym = update.symbol
        age = due - previous.exchange_ns
        if age <= FUNDING_FRESH_NS:
            if update.next_funding_ns > due and update.exchange_ns - due <= FUNDING_FRESH_NS:
                state.funding_interval_ns = update.next_funding_ns - due  # learnt from a clean crossing
            self.settle_funding(
                FundingRate(sym, previous.funding_rate_e8, previous.mark_price, due, update.recv_ns), out
            )
        else:
            detail = f"{sym} funding at {due} ns: the last mark update was {age / NS:.0f} s before it"
            self._incident(
                update.recv_ns, "funding_unsettled", f"{detail}; settle it from the REST history", out, due
            )
        # Funding times after `due` that the gap swallowed (their rates were never seen here).
        interval = state.funding_interval_ns
        missed = (
            update.next_funding_ns - due > interval
            if interval
            else update.exchange_ns - due >= MIN_FUNDING_INTERVAL_NS
        )
        if missed:
            detail = (
                f"{sym} funding times after {due} ns and before {update.next_funding_ns} ns passed unseen"
            )
            self._incident(
                update.recv_ns, "funding_unsettled", f"{detail}; settle them from the REST history", out
            )

    def settle_funding(self, rate: FundingRate, out: list) -> None:
        """Apply one funding event (e.g. from the REST history after a restart or a long disconnect):
        the portfolio pays once per (symbol, funding time), so one already settled is skipped."""
        payment = self.portfolio.apply_funding(rate)
        if payment is not None:
            out.append(payment)
            self._risk_update(rate.recv_ns, out)

    def _check_limits(self, state: _SymbolState, book: OrderBook, ts_ns: int, out: list) -> None:
        """At a symbol's first LIVE book: are its limits usable at this price? (`config_unusable`: the
        live shell stops on it; replay has no REST price to check at start.)"""
        mid2 = book.mid2()
        if mid2 is None:
            return
        inst = state.instrument
        self._limits_checked.add(inst.symbol)
        price = Decimal(mid2) * inst.tick_size / 2
        try:
            check_limits_at_prices(self.risk.config, {inst.symbol: inst}, {inst.symbol: price})
        except ConfigError as exc:
            self._incident(ts_ns, "config_unusable", str(exc), out)

    def book_lost(self, market: Market, symbol: str, ts_ns: int, out: list) -> None:
        state = self.symbols.get(symbol)
        if state is None or state.instrument.market is not market:
            return
        state.book = None
        state.vector = None
        state.features.reset()
        state.strategy.reset()
        self._absorb(self.broker.book_lost(symbol, ts_ns), ts_ns, out)

    def on_time(self, ts_ns: int, out: list) -> None:
        self._absorb(self.broker.on_time(ts_ns), ts_ns, out)

    def restore(
        self,
        fills: Iterable[Fill],
        *,
        last_order_id: int,
        last_fill_id: int,
        breakers: Iterable[Any],
        equity_peak: int | None,
        ts_ns: int,
        funding: Iterable[FundingPayment] = (),
    ) -> list[Any]:
        """Start from what a previous run persisted: ids continue after the stored ones, the portfolio is
        rebuilt from the fills and settled funding (they win over any stored position), tripped breakers
        and the equity peak carry over. Open orders are not reopened: the shell records them cancelled
        (`restart`)."""
        self._next_order_id = max(self._next_order_id, last_order_id + 1)
        self.broker.resume_ids(last_fill_id)
        fills = list(fills)
        payments = list(funding)
        if fills or payments:
            self.portfolio = rebuild_from_fills(
                fills, self.instruments, starting_cash=self.portfolio.starting_cash, funding=payments
            )
        if equity_peak is not None:
            self.portfolio.restore_peak(equity_peak)
        self.risk.restore_breakers(breakers, ts_ns, equity_peak)
        return list(self.risk.drain())

    def set_storage_lag(self, lagging: bool, ts_ns: int, out: list) -> None:
        self.risk.set_storage_lag(lagging, ts_ns)
        out.extend(self.risk.drain())

    # --- internals -------------------------------------------------------------------------------------
    def _absorb(self, outputs: list[Any], ts_ns: int, out: list) -> None:
        """Apply what the broker reports to the portfolio, and pass it on."""
        for item in outputs:
            kind = type(item)
            if kind is Fill:
                try:
                    self.portfolio.apply_fill(item)
                except ImpossibleFill as exc:  # a broker bug must not kill the worker: record it
                    self._incident(ts_ns, "impossible_fill", str(exc), out)
                    continue
            elif kind is OrderUpdate:
                order: Order = item.order
                self.portfolio.on_order(order)
                state = self.symbols.get(order.symbol)
                if state is not None and order.is_terminal:
                    state.working.discard(order.order_id)
                    if order.oco:
                        self._protective.pop(order.order_id, None)
            elif kind is CancelRejected or kind is Markout:
                pass
            out.append(item)
        if outputs:
            self._risk_update(ts_ns, out)

    def _risk_update(self, ts_ns: int, out: list) -> None:
        risk = self.risk
        risk.update(self.portfolio, ts_ns)
        flatten = risk.take_flatten()
        out.extend(risk.drain())
        for intent in flatten:
            self._flatten_due[intent.symbol] = ts_ns + NS
            self._send(intent, None, out)
        if risk.state is TradingState.HALTED and risk.limits.flatten_on_halt:
            self._retry_flatten(ts_ns, out)

    def _retry_flatten(self, ts_ns: int, out: list) -> None:
        """HALTED with flatten_on_halt: keep closing what is still open. A flatten may be denied (no book
        while resyncing, a rate limit) or fill only partly (thin book, price protection); at most one
        reduce-only flatten per symbol per second of event time, after cancelling any other order on
        the symbol (a resting exit would otherwise hold the lots a flatten needs)."""
        portfolio = self.portfolio
        for sym, position in portfolio.positions.items():
            qty = position.qty
            if not qty or ts_ns < self._flatten_due.get(sym, 0):
                continue
            self._flatten_due[sym] = ts_ns + NS
            for order in self.broker.open_orders():
                if (
                    order.symbol == sym
                    and order.tag != FLATTEN_TAG
                    and order.order_id not in self._halt_cancels
                ):
                    self._halt_cancels.add(order.order_id)
                    self._absorb(self.broker.cancel(order.order_id, ts_ns, "halted"), ts_ns, out)
            self._send_flatten(flatten_intent(sym, qty, ts_ns), out)

    def _incident(self, ts_ns: int, kind: str, detail: str, out: list, at_ns: int | None = None) -> None:
        self.incidents += 1
        out.append(Incident(ts_ns, kind, detail, at_ns))

    def _decide(self, state: _SymbolState, ts_ns: int, out: list) -> None:
        if state.vector is None:
            return
        symbol = state.instrument.symbol
        position = self.portfolio.positions[symbol]
        entry = entry_ns = None
        if position.qty:
            entry = round(position.cost / (position.qty * state.instrument.money_per_tick_lot))
            entry_ns = position.opened_ns  # the time stop runs from the opening fill, across resyncs
        signal = state.strategy.on_features(state.vector, position.qty, entry, ts_ns, entry_ns)
        if signal is None:
            return
        self.signals += 1
        out.append(signal)
        if state.working or state.book is None:
            return  # one working order per symbol; the signal is still recorded
        intent = self._intent_for(signal, state, ts_ns)
        if intent is not None:
            self._send(intent, signal, out)

    def _intent_for(self, signal: Signal, state: _SymbolState, ts_ns: int) -> OrderIntent | None:
        book = state.book
        assert book is not None
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None or signal.size_lots <= 0:
            return None
        reduce_only = signal.kind is SignalKind.EXIT
        if self.config.order_style == "maker":
            price = bid[0] if signal.side is Side.BUY else ask[0]
            return OrderIntent(
                state.instrument.symbol,
                signal.side,
                OrderType.LIMIT,
                TimeInForce.GTX,
                signal.size_lots,
                price,
                ts_ns,
                f"strategy:{signal.kind}",
                reduce_only,
            )
        slip = self.config.taker_slippage_ticks
        price = ask[0] + slip if signal.side is Side.BUY else max(bid[0] - slip, 1)
        return OrderIntent(
            state.instrument.symbol,
            signal.side,
            OrderType.LIMIT,
            TimeInForce.IOC,
            signal.size_lots,
            price,
            ts_ns,
            f"strategy:{signal.kind}",
            reduce_only,
        )

    def _send(
        self,
        intent: OrderIntent,
        signal: Signal | None,
        out: list,
        as_written: tuple[Decimal, Decimal | None] | None = None,
    ) -> Order:
        """Risk-check an intent; send what passes, record what does not.

        `as_written` (qty, price as decimals) sends a scripted order exactly as written, so one that is
        off the lot or tick grid reaches the venue and is `Rejected` there with Binance's reason. When
        risk cut its size (`Adjusted`), the cut quantity is what goes out."""
        intent, order, top = self._check(intent)
        return self._dispatch(intent, order, top, signal, out, as_written)

    def _check(self, intent: OrderIntent) -> tuple[OrderIntent, Order, tuple[int, int] | None]:
        """Risk's decision on an intent, as the order it leads to (Pending or Denied) and the top used."""
        state = self.symbols.get(intent.symbol)
        book = state.book if state is not None else None
        top = None
        if book is not None:
            bid, ask = book.best_bid(), book.best_ask()
            if bid is not None and ask is not None:
                top = (bid[0], ask[0])
        decision = self.risk.check(intent, self.portfolio, top, intent.ts_ns)
        order = order_for(intent, decision, self._next_order_id)
        self._next_order_id += 1
        return intent, order, top

    def _dispatch(
        self,
        intent: OrderIntent,
        order: Order,
        top: tuple[int, int] | None,
        signal: Signal | None,
        out: list,
        as_written: tuple[Decimal, Decimal | None] | None = None,
    ) -> Order:
        """Record the decision; book and send an order that passed."""
        state = self.symbols.get(intent.symbol)
        out.extend(self.risk.drain())
        out.append(OrderUpdate(order, intent.ts_ns, "denied" if order.is_terminal else "new"))
        if order.is_terminal:
            return order
        self.portfolio.on_order(order, top[1] if top and intent.side is Side.BUY else None)
        mid = (top[0] + top[1]) / 2 if top else None
        if as_written is not None and state is not None:
            qty, price = as_written
            o = order
            if o.qty != intent.qty:  # Adjusted: never send more than risk approved
                qty = state.instrument.qty_decimal(o.qty)
            _, sent = self.broker.submit_decimal(
                o.order_id,
                o.symbol,
                o.side,
                o.type,
                o.tif,
                qty,
                price,
                mid,
                o.created_ns,
                state.instrument,
                o.tag,
            )
        else:
            sent = self.broker.submit(order, mid, intent.ts_ns)
        self._absorb(sent, intent.ts_ns, out)
        if state is not None:
            state.working.add(order.order_id)
        if intent.tif is TimeInForce.GTX and self.config.order_style == "maker" and signal is not None:
            self._cancel_later(order.order_id, intent.ts_ns + self.config.maker_ttl_ms * 1_000_000)
        return order

    def _cancel_later(self, order_id: int, due_ns: int) -> None:
        self._cancel_at.append((due_ns, order_id))
        self._cancel_at.sort()

    def _run_cancels(self, ts_ns: int, out: list) -> None:
        while self._cancel_at and self._cancel_at[0][0] <= ts_ns:
            due, order_id = self._cancel_at.pop(0)
            if self.broker.order(order_id) is not None:
                self._absorb(self.broker.cancel(order_id, due), due, out)

    def _scheduled(self, ts_ns: int, out: list) -> None:
        """Place scripted orders whose decision time (exchange clock) has come."""
        schedule = self.schedule
        while self._next_scheduled < len(schedule):
            row = schedule[self._next_scheduled]
            if row.t_ms * 1_000_000 > self._exchange_ns:
                return
            self._next_scheduled += 1
            self._place_scheduled(self._next_scheduled, row, ts_ns, out)

    def _place_scheduled(self, number: int, row: ScheduledOrder, ts_ns: int, out: list) -> None:
        symbol = row.symbol or (next(iter(self.symbols)) if len(self.symbols) == 1 else "")
        state = self.symbols.get(symbol)
        if state is None or state.book is None:
            self._incident(ts_ns, "schedule_skipped", f"row {number}: no live book for {symbol!r}", out)
            return
        inst = state.instrument
        lots = max(inst.lots_for_base(row.qty), 1)  # off-grid sizes reach the venue as written (below)
        price: int | None = None
        written_price: Decimal | None = None
        if row.type is OrderType.LIMIT:
            if row.ref is not None:
                level = state.book.best_bid() if row.ref == "bid" else state.book.best_ask()
                if level is None:
                    self._incident(ts_ns, "schedule_skipped", f"row {number}: empty {row.ref} side", out)
                    return
                price = level[0] + row.offset_ticks
                written_price = inst.price_decimal(price)
            else:
                assert row.price is not None
                written_price = row.price
                price = max(int(row.price / inst.tick_size), 1)
        intent = OrderIntent(
            symbol, row.side, row.type, row.tif, lots, price, ts_ns, f"{SCRIPT_TAG_PREFIX}{number}", False
        )
        order = self._send(intent, None, out, (row.qty, written_price))
        if row.cancel_after_ms is not None and not order.is_terminal:
            self._cancel_later(order.order_id, ts_ns + row.cancel_after_ms * 1_000_000)

    def _calendar(self, ts_ns: int, out: list) -> None:
        """Pause, resume and prepare at the calendar's boundaries; O(1) between them."""
        clock = self.calendar
        if clock is None or ts_ns < self._calendar_due:
            return
        change = clock.advance(ts_ns)
        first_call = self._calendar_due == 0
        if first_call and clock.is_paused(ts_ns):  # started inside a window: pause at once
            self._pause(ts_ns, clock.next_window(ts_ns), out)
        elif change is not None:
            if change.paused:
                self._pause(ts_ns, change.window, out)
            else:
                self.risk.clear_pause(ts_ns, "havdalah")
                self.risk.clear_lead(ts_ns, "havdalah")
                self._paused_until = None
                self._protect_pending = False
                for order_id in list(self._protective):  # the strategy manages the position again
                    self._absorb(self.broker.cancel(order_id, ts_ns, "havdalah"), ts_ns, out)
                out.append(PauseChange(ts_ns, False, _holy_days(change.window), None))
                out.extend(self.risk.drain())
        if self._paused_until is not None:
            self._calendar_due = self._paused_until
            return
        upcoming = clock.next_window(ts_ns)
        prepare_at = upcoming.start_ns - self.config.pause_lead_s * NS
        if ts_ns >= prepare_at and upcoming.start_ns != self._prepared_for:
            self._prepared_for = upcoming.start_ns
            self._prepare_for_pause(ts_ns, out)
        self._calendar_due = prepare_at if ts_ns < prepare_at else upcoming.start_ns

    def _pause(self, ts_ns: int, window: Any, out: list) -> None:
        start = getattr(window, "start_ns", None)
        if self._prepared_for != start:  # no lead time (started late): cancel and flatten first
            self._prepared_for = start
            self._prepare_for_pause(ts_ns, out)
        else:  # what the lead time left: anything still resting, and (flatten) what is still open
            self._cancel_resting(ts_ns, out)
            if self.config.flatten_before_pause:
                self._flatten_open(ts_ns, out)
        if self._protect_pending:
            self._protect(ts_ns, out)  # the last chance: the window denies new orders
            self._protect_pending = False
            protected = set(self._protective.values())
            for sym, p in sorted(self.portfolio.positions.items()):
                if p.qty and sym not in protected:
                    self._incident(
                        ts_ns, "unprotected_position", f"{sym}: {p.qty} lots held without exits", out
                    )
        self.risk.set_pause(SHABBAT, ts_ns)
        self._paused_until = window.end_ns if window is not None else None
        out.append(PauseChange(ts_ns, True, _holy_days(window), self._paused_until))
        out.extend(self.risk.drain())

    def _prepare_for_pause(self, ts_ns: int, out: list) -> None:
        """From `pause_lead_s` before a window: only reducing orders pass (risk's lead gate), resting
        orders are cancelled and, in flatten mode, positions are closed."""
        self.risk.set_lead(SHABBAT_LEAD, ts_ns)
        out.extend(self.risk.drain())
        self._cancel_resting(ts_ns, out, keep_protective=False)
        if self.config.flatten_before_pause:
            self._flatten_open(ts_ns, out)
        elif self.config.protect_positions:
            self._protect_pending = True
            self._protect(ts_ns, out)

    def _cancel_resting(self, ts_ns: int, out: list, keep_protective: bool = True) -> None:
        protective = self._protective if keep_protective else {}
        for order in self.broker.open_orders():
            if order.order_id not in protective:
                self._absorb(self.broker.cancel(order.order_id, ts_ns, SHABBAT), ts_ns, out)

    def _protect(self, ts_ns: int, out: list) -> None:
        """Hold mode: give each open position a stop-loss and a take-profit (one OCO list), once the
        symbol has no other order working (the cancels sent at the lead time have landed), so the
        exits are sized to the position that will be held."""
        pending = False
        protected = set(self._protective.values())
        for sym, state in self.symbols.items():
            qty = self.portfolio.qty(sym)
            if not qty or sym in protected:
                continue
            if state.working or state.book is None:
                pending = True
                continue
            bid, ask = state.book.best_bid(), state.book.best_ask()
            if bid is None or ask is None:
                pending = True
                continue
            self._place_exits(state, qty, bid[0], ask[0], ts_ns, out)
        self._protect_pending = pending

    def _place_exits(self, state: _SymbolState, qty: int, bid: int, ask: int, ts_ns: int, out: list) -> None:
        cfg = self.config
        long = qty > 0
        side = Side.SELL if long else Side.BUY
        ref = bid if long else ask  # the side the position would exit on
        stop_gap = max(1, ref * cfg.protect_stop_bps // 10_000)
        take_gap = max(1, ref * cfg.protect_take_profit_bps // 10_000)
        sign = 1 if long else -1
        stop_price = ref - sign * stop_gap
        take_price = ref + sign * take_gap
        if stop_price <= 0 or take_price <= 0:
            self._incident(
                ts_ns, "unprotected_position", f"{state.instrument.symbol}: no valid exit price", out
            )
            return
        oco, self._next_oco = self._next_oco, self._next_oco + 1
        sym, lots = state.instrument.symbol, abs(qty)
        stop = OrderIntent(
            sym, side, OrderType.STOP_MARKET, TimeInForce.GTC, lots, None, ts_ns, "protect:stop_loss", True,
            stop_price, oco,
        )  # fmt: skip
        take = OrderIntent(
            sym, side, OrderType.LIMIT, TimeInForce.GTC, lots, take_price, ts_ns, "protect:take_profit", True,
            None, oco,
        )  # fmt: skip
        # Both are checked before either is booked: the list counts once against the position.
        checked = [self._check(intent) for intent in (stop, take)]
        for intent, order, top in checked:
            if not order.is_terminal:
                self._protective[order.order_id] = sym
            self._dispatch(intent, order, top, None, out)

    def _flatten_open(self, ts_ns: int, out: list) -> None:
        """Reduce-only market orders for what open positions are not already being closed by."""
        for intent in self.risk.flatten_intents(self.portfolio, ts_ns):
            self._send_flatten(intent, out)

    def _send_flatten(self, intent: OrderIntent, out: list) -> None:
        """Send a flatten for the part of the position that open orders on its side do not already close."""
        portfolio, sym = self.portfolio, intent.symbol
        closing = portfolio.open_sell_qty(sym) if intent.side is Side.SELL else portfolio.open_buy_qty(sym)
        if intent.qty > closing:
            self._send(replace(intent, qty=intent.qty - closing), None, out)

    def _sample(self, ts_ns: int, out: list) -> None:
        interval = self.config.sample_interval_s * NS
        self._next_sample_ns = (ts_ns // interval + 1) * interval
        summary = self.portfolio.summary()
        out.append(
            EquitySample(
                ts_ns,
                summary.equity,
                summary.cash,
                summary.realized_pnl,
                summary.unrealized_pnl,
                summary.fees,
                summary.exposure,
            )
        )
        for state in self.symbols.values():
            self._sample_top(state, ts_ns, out)

    def _sample_top(self, state: _SymbolState, ts_ns: int, out: list) -> None:
        book = state.book
        if book is None:
            return
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None:
            return
        market = state.instrument.market.value
        symbol = state.instrument.symbol
        out.append(
            TopSample(
                ts_ns, market, symbol, bid[0], bid[1], ask[0], ask[1], book.imbalance(5), book.microprice()
            )
        )

    # --- reporting -------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        s = self.portfolio.summary()
        return {
            "signals": self.signals,
            "incidents": self.incidents,
            "equity": s.equity,
            "realized_pnl": s.realized_pnl,
            "unrealized_pnl": s.unrealized_pnl,
            "fees": s.fees,
            "max_drawdown": self.portfolio.max_drawdown,
            "trading_state": self.risk.state.value,
            "trading_state_reason": self.risk.state_reason(),
        }


def _holy_days(window: Any) -> str:
    days = getattr(window, "holy_days", ()) if window is not None else ()
    return ",".join(days) if days else SHABBAT
