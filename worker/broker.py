"""The paper venue: fills our orders against the same book and trades the strategy sees, honestly.

Clock and latency (all times are the engine's receive clock, ns):
- An order decided at `t` reaches the venue `entry` later; the venue's state at that moment reaches us
  `md` after it, so the order acts on the book we hold at `t + entry + md` (defaults: ~140 ms + ~135 ms
  for a worker in São Paulo and Binance in Tokyo, RTT ~270 ms; see `worker.fillmodels`). Fills are
  reported at that same instant. A cancel acts at `t + cancel + md`.
- Messages on one connection arrive in the order sent: an action's due time is never earlier than
  the previous action's. A cancel that arrives after the order filled loses the race (`CancelRejected`).
- An action due at `D` sees every market event with `recv_ns <= D`. The engine calls `advance(ts)`
  BEFORE it applies an event at `ts` to the book, so actions due earlier see the book as it stood then.

Taking liquidity (MARKET, and the marketable part of a LIMIT on arrival):
- Walk the opposite side best first, one taker `Fill` per level at that level's price (their VWAP is the
  order's average), until the order, the book, or the bound runs out: the limit price, or for MARKET the
  price protection `decision_mid ± market_protection_bps`. IOC and MARKET remainders expire
  (`Cancelled(reason="EXPIRED")`); a GTC remainder rests at its limit.
- Liquidity we took is subtracted from that level until a diff touches the level (or a snapshot
  arrives): our own later orders cannot take it twice.

Resting orders (maker, at the limit price):
- Queue ahead at entry = the book's depth at our price on our side. Trades at our price by the other
  side advance it; depth changes at our price go to the queue model (`conservative`: cap only;
  `probabilistic`: power-law share of cancels ahead of us).
- Fills: (a) a trade at our price by the other side, for the part beyond the queue ahead; (b) a trade
  strictly through our price, up to its quantity; (c) the book crossing our price (opposite available
  liquidity at or through it), up to the crossing quantity, which we then consume. Several of our
  orders share one trade's quantity, best price then oldest first. Partial fills when the traded or
  crossing quantity is smaller than what remains.

Stop orders (`STOP_MARKET`, Binance's STOP_LOSS / STOP_MARKET), always reduce-only protective exits here:
- On arrival a stop whose trigger the market already reached (a sell stop at or above the best bid, a
  buy stop at or below the best ask) is rejected `STOP_WOULD_TRIGGER` (Binance -2021); otherwise it rests
  untriggered, invisible to the book.
- It triggers when a public trade prints at or through the trigger (sell: trade price <= stop; buy:
  >=) after the stop arrived; it then walks the book held at that trade like a MARKET order (price
  protection around the mid at the trigger), the remainder expiring. No book at the trigger: it expires.
- One-cancels-the-other (`Order.oco` > 0, Binance's OCO list): the first fill of one order of the list
  cancels the others at that same instant at the venue (reason `OCO`), so a stop-loss and a take-profit
  protecting one position can never both execute.

Venue rejections (`Rejected`, never filled), Binance's reasons: `MIN_NOTIONAL` (price × qty below the
symbol's filter; MARKET uses the mid at arrival), `PRICE_FILTER` / `LOT_SIZE` (off the grid, see
`submit_decimal`), `GTX_WOULD_TAKE` (post-only that would cross on arrival; USD-M calls it EXPIRED, we
keep it `Rejected` as a refusal), `NO_BOOK` (no live book). The text after the code is Binance's message
for that market (`venue_reason`), so consumers match on the code before the colon.

Fees: maker/taker rates per market, exact; fee = notional × rate rounded half up to 1e-8 of the fee
asset, per fill (Binance rounds commission to 8 decimals). Fee asset is the quote asset, or with
`fee_asset_mode="received"` Binance spot's default: the asset received (base on buys).

Quality: every fill records model name/version, entry latency, queue ahead at entry, decision and fill
mids, signed slippage vs the decision mid (positive = worse) and maker/taker; `Markout` records follow
once the 1 s / 5 s / 30 s mids are known.

Purity: no I/O, no wall clock; randomness only from seeded generators; same events -> same outputs.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from worker.errors import ConfigError
from worker.events import DepthDiff, Level, Market, Trade
from worker.fillmodels import (
    DEFAULT_CANCEL_LATENCY,
    DEFAULT_ENTRY_LATENCY,
    DEFAULT_FEES,
    DEFAULT_MD_LATENCY,
    QUEUE_MODELS,
    FeeSchedule,
    LatencyModel,
    LatencySpec,
    QueueModel,
    QueuePos,
    fee_units,
    make_queue_model,
)
from worker.instruments import MONEY_SCALE, Instrument, OffGridError
from worker.orders import (
    Fill,
    IllegalTransition,
    Liquidity,
    Order,
    OrderType,
    Pending,
    Side,
    TimeInForce,
    cancel,
    fill,
    new_order,
    reject,
)

# Venue rejection reasons: our code, then Binance's message.
REJECT_MIN_NOTIONAL = "MIN_NOTIONAL: Filter failure: NOTIONAL"
REJECT_PRICE_FILTER = "PRICE_FILTER: Filter failure: PRICE_FILTER"
REJECT_LOT_SIZE = "LOT_SIZE: Filter failure: LOT_SIZE"
REJECT_GTX = "GTX_WOULD_TAKE: Order would immediately match and take."
REJECT_NO_BOOK = "NO_BOOK: no live order book for the symbol at arrival"
REJECT_STOP_TRIGGER = "STOP_WOULD_TRIGGER: Order would immediately trigger."
# USD-M words the same refusals differently (-4164, -5022, -4014, -1111).
_USDM_REASONS = {
    REJECT_GTX: "GTX_WOULD_TAKE: Due to the order could not be executed as maker, the Post Only order "
    "will be rejected. The order will not be recorded in the order history",
    REJECT_PRICE_FILTER: "PRICE_FILTER: Price not increased by tick size.",
    REJECT_LOT_SIZE: "LOT_SIZE: Precision is over the maximum defined for this asset.",
}


def venue_reason(reason: str, instrument: Instrument) -> str:
    """Binance's wording of a rejection on the instrument's market; the code before ':' is stable."""
    if instrument.market is not Market.USDM:
        return reason
    if reason == REJECT_MIN_NOTIONAL:
        return (
            f"MIN_NOTIONAL: Order's notional must be no smaller than {instrument.min_notional.normalize():f} "
            "(unless you choose reduce only)."
        )
    return _USDM_REASONS.get(reason, reason)


EXPIRED = "EXPIRED"
EXPIRED_PROTECTION = "EXPIRED: price protection bound reached"
EXPIRED_NO_BOOK = "EXPIRED: stop triggered with no live book"
CANCELED = "CANCELED"
CANCELED_OCO = "OCO"  # the other order of a one-cancels-the-other list filled
UNKNOWN_ORDER = "Unknown order sent."  # Binance -2011


class Book(Protocol):
    """The part of `worker.book.OrderBook` the broker reads."""

    instrument: Instrument

    def best_bid(self) -> Level | None: ...
    def best_ask(self) -> Level | None: ...
    def top_bids(self, n: int) -> list[Level]: ...
    def top_asks(self, n: int) -> list[Level]: ...
    def bid_qty(self, price: int) -> int: ...
    def ask_qty(self, price: int) -> int: ...
    def mid2(self) -> int | None: ...


# --- outputs -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order's new value; `event` says why: accepted, rejected, fill, cancelled, expired."""

    order: Order
    ts_ns: int
    event: str


@dataclass(frozen=True, slots=True)
class CancelRejected:
    """A cancel that reached the venue after the order was already done (or before it existed)."""

    order_id: int
    ts_ns: int
    reason: str = UNKNOWN_ORDER


@dataclass(frozen=True, slots=True)
class Markout:
    """The mid `horizon_ms` after a fill. Positive bps = the move favoured our side."""

    fill_id: int
    order_id: int
    symbol: str
    side: Side
    horizon_ms: int
    fill_ts_ns: int
    ts_ns: int
    fill_price: int
    fill_mid: float
    mid: float | None  # None when no book was live at the horizon
    mid_move_bps: float | None  # side * (mid - fill_mid) / fill_mid
    markout_bps: float | None  # side * (mid - fill_price) / fill_price


BrokerOutput = OrderUpdate | Fill | Markout | CancelRejected


# --- configuration -----------------------------------------------------------------------------------
FEE_ASSET_MODES = ("quote", "received")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    queue_model: str = "conservative"
    power_n: float = 3.0
    entry_latency: LatencySpec = DEFAULT_ENTRY_LATENCY
    cancel_latency: LatencySpec = DEFAULT_CANCEL_LATENCY
    md_latency: LatencySpec = DEFAULT_MD_LATENCY
    seed: int = 1
    fees: dict[Market, FeeSchedule] = field(default_factory=lambda: dict(DEFAULT_FEES))
    fee_asset_mode: str = "quote"
    market_protection_bps: int = 50  # MARKET orders never trade beyond decision mid ± this
    markout_horizons_ms: tuple[int, ...] = (1_000, 5_000, 30_000)

    def validate(self) -> BrokerConfig:
        if self.queue_model not in QUEUE_MODELS:
            raise ConfigError("queue_model", f"one of {', '.join(QUEUE_MODELS)}, got {self.queue_model!r}")
        if not (isinstance(self.power_n, int | float) and math.isfinite(self.power_n) and self.power_n > 0):
            raise ConfigError("power_n", f"a positive number, got {self.power_n!r}")
        self.entry_latency.validate("entry_latency")
        self.cancel_latency.validate("cancel_latency")
        self.md_latency.validate("md_latency")
        if not isinstance(self.seed, int):
            raise ConfigError("seed", f"an integer, got {self.seed!r}")
        for market in Market:
            if market not in self.fees:
                raise ConfigError(f"fees[{market.value}]", "a FeeSchedule for every market")
            self.fees[market].validate(f"fees[{market.value}]")
        if self.fee_asset_mode not in FEE_ASSET_MODES:
            raise ConfigError("fee_asset_mode", f"one of {', '.join(FEE_ASSET_MODES)}")
        if not isinstance(self.market_protection_bps, int) or not 0 < self.market_protection_bps <= 10_000:
            raise ConfigError(
                "market_protection_bps", f"an integer in (0, 10000], got {self.market_protection_bps!r}"
            )
        hs = self.markout_horizons_ms
        if not hs or any(not isinstance(h, int) or h <= 0 for h in hs) or list(hs) != sorted(set(hs)):
            raise ConfigError("markout_horizons_ms", f"increasing positive integers, got {hs!r}")
        return self

    @property
    def model_label(self) -> str:
        return make_queue_model(self.queue_model, self.power_n).label

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> BrokerConfig:
        """Build from plain values (a config file or CLI flags); unknown keys are refused, not ignored.

        Keys: queue_model, power_n, seed, fee_asset_mode, market_protection_bps, markout_horizons_ms
        (list or "1000,5000,30000"), entry_latency / cancel_latency / md_latency ("lognormal:140ms:0.1"),
        and fees as "spot_maker", "spot_taker", "usdm_maker", "usdm_taker" (decimal text, 0.001 = 0.1%).
        """
        kw: dict[str, Any] = {}
        fees = dict(DEFAULT_FEES)
        for key, value in values.items():
            if key in ("entry_latency", "cancel_latency", "md_latency"):
                kw[key] = value if isinstance(value, LatencySpec) else LatencySpec.parse(str(value), key)
            elif key in ("queue_model", "fee_asset_mode"):
                kw[key] = str(value)
            elif key in ("seed", "market_protection_bps"):
                kw[key] = _as_int(key, value)
            elif key == "power_n":
                kw[key] = _as_float(key, value)
            elif key == "markout_horizons_ms":
                items = value.split(",") if isinstance(value, str) else value
                kw[key] = tuple(_as_int(key, v) for v in items)
            elif key.endswith(("_maker", "_taker")) and key.split("_")[0] in {m.value for m in Market}:
                market, kind = Market(key.split("_")[0]), key.split("_")[1]
                try:
                    rate = Decimal(str(value))
                except InvalidOperation:
                    raise ConfigError(key, f"a decimal rate like 0.001, got {value!r}") from None
                old = fees[market]
                maker, taker = (rate, old.taker) if kind == "maker" else (old.maker, rate)
                fees[market] = FeeSchedule(maker, taker)
            else:
                raise ConfigError(key, "a known broker setting (see BrokerConfig.from_mapping)")
        return cls(fees=fees, **kw).validate()


def _as_int(key: str, value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise ConfigError(key, f"an integer, got {value!r}") from None


def _as_float(key: str, value: Any) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise ConfigError(key, f"a number, got {value!r}") from None


# --- internal state ----------------------------------------------------------------------------------
class _Resting:
    """A live order at the venue: its latest value plus the queue bookkeeping."""

    __slots__ = ("decision_mid", "latency_ns", "level_qty", "order", "pos", "queue_at_entry", "seq")

    def __init__(
        self, order: Order, pos: QueuePos, level_qty: int, decision_mid: float, latency: int, seq: int
    ):
        self.order = order
        self.pos = pos
        self.level_qty = level_qty
        self.queue_at_entry = level_qty
        self.decision_mid = decision_mid
        self.latency_ns = latency
        self.seq = seq


@dataclass(slots=True)
class _Arrival:
    order: Order
    decision_mid: float | None
    latency_ns: int
    reject_reason: str | None = None


@dataclass(slots=True)
class _CancelReq:
    order_id: int
    reason: str


@dataclass(slots=True)
class _PendingMarkout:
    fill: Fill
    due_ns: int
    horizon_ms: int


@dataclass(slots=True)
class BrokerStats:
    submitted: int = 0
    rejected: int = 0
    fills: int = 0
    maker_fills: int = 0
    taker_fills: int = 0
    cancels_lost: int = 0


class Broker:
    """The simulated venue. Feed it every book change and trade; it returns what happened to our orders."""

    def __init__(self, config: BrokerConfig | None = None) -> None:
        self.config = (config or BrokerConfig()).validate()
        self.queue: QueueModel = make_queue_model(self.config.queue_model, self.config.power_n)
        self.model_label = self.queue.label
        seed = self.config.seed
        self._entry = LatencyModel(self.config.entry_latency, seed * 3 + 0)
        self._cancel = LatencyModel(self.config.cancel_latency, seed * 3 + 1)
        self._md = LatencyModel(self.config.md_latency, seed * 3 + 2)
        self._fee_rates = {m: (f.rate_units(True), f.rate_units(False)) for m, f in self.config.fees.items()}
        self._books: dict[str, Book] = {}  # live books only
        self._instruments: dict[str, Instrument] = {}
        self._pending: list[tuple[int, int, _Arrival | _CancelReq]] = []  # (due_ns, seq, action) heap
        self._last_due = 0
        self._seq = 0
        self._orders: dict[int, Order] = {}  # latest value of every order not yet terminal
        self._resting: dict[str, list[_Resting]] = {}  # per symbol, in priority order
        self._stops: dict[str, list[_Arrival]] = {}  # untriggered stop orders per symbol, oldest first
        self._consumed: dict[str, dict[tuple[int, int], int]] = {}  # symbol -> (book side, price) -> lots
        self._markouts: list[tuple[int, int, _PendingMarkout]] = []  # (due_ns, fill_id, ...) heap
        self._fill_id = 0
        self.stats = BrokerStats()

    # --- queries -------------------------------------------------------------------------------------
    def order(self, order_id: int) -> Order | None:
        return self._orders.get(order_id)

    def open_orders(self) -> list[Order]:
        return list(self._orders.values())

    def resting(self, symbol: str) -> list[Order]:
        return [r.order for r in self._resting.get(symbol, ())]

    def stops(self, symbol: str) -> list[Order]:
        """Untriggered stop orders resting at the venue."""
        return [a.order for a in self._stops.get(symbol, ())]

    def queue_ahead(self, order_id: int) -> float | None:
        for rs in self._resting.values():
            for r in rs:
                if r.order.order_id == order_id:
                    return r.pos.front
        return None

    def resume_ids(self, last_fill_id: int) -> None:
        """Continue fill ids after `last_fill_id`: on a restart the store skips a repeated id."""
        self._fill_id = max(self._fill_id, last_fill_id)

    def pending_count(self) -> int:
        return len(self._pending)

    # --- commands (from the strategy side) -----------------------------------------------------------
    def submit(self, order: Order, decision_mid: float | None, ts_ns: int) -> list[BrokerOutput]:
        """Send an order accepted by risk; it acts on the book `entry + md` later.

        `decision_mid` (ticks) is the mid the strategy decided on; None takes the mid of the book held now.
        """
        return self._submit(order, decision_mid, ts_ns, None)

    def _submit(
        self, order: Order, decision_mid: float | None, ts_ns: int, reason: str | None
    ) -> list[BrokerOutput]:
        if not isinstance(order.status, Pending) or order.filled_qty:
            raise IllegalTransition(f"only a fresh pending order can be sent, got {order.status_name}")
        if order.order_id in self._orders:
            raise IllegalTransition(f"order id {order.order_id} is already live")
        self._orders[order.order_id] = order
        self.stats.submitted += 1
        if decision_mid is None:
            book = self._books.get(order.symbol)
            mid2 = book.mid2() if book is not None else None
            decision_mid = mid2 / 2 if mid2 is not None else None
        latency = self._entry.draw()
        self._schedule(ts_ns + latency + self._md.draw(), _Arrival(order, decision_mid, latency, reason))
        return []

    def submit_decimal(
        self,
        order_id: int,
        symbol: str,
        side: Side,
        type: OrderType,
        tif: TimeInForce,
        qty: Decimal,
        price: Decimal | None,
        decision_mid: float | None,
        ts_ns: int,
        instrument: Instrument,
        tag: str = "",
    ) -> tuple[Order, list[BrokerOutput]]:
        """Send an order given in decimals (scripted orders): off-grid values are rejected by the venue.

        The order keeps the nearest grid values below so it can be represented; it is `Rejected` with
        `PRICE_FILTER` or `LOT_SIZE` when it arrives, exactly as Binance would answer.
        """
        reason = None
        try:
            lots = instrument.qty_lots(_plain(qty))
        except (OffGridError, InvalidOperation):
            lots, reason = max(int(qty / instrument.step_size), 1), REJECT_LOT_SIZE
        ticks = None
        if price is not None:
            try:
                ticks = instrument.price_ticks(_plain(price))
            except (OffGridError, InvalidOperation):
                ticks, reason = max(int(price / instrument.tick_size), 1), REJECT_PRICE_FILTER
        if lots <= 0:
            lots, reason = 1, REJECT_LOT_SIZE
        if ticks is not None and ticks <= 0:
            ticks, reason = 1, REJECT_PRICE_FILTER
        order = new_order(order_id, symbol, side, type, tif, lots, ticks, ts_ns, tag)
        outputs = self._submit(order, decision_mid, ts_ns, reason)
        return order, outputs

    def cancel(self, order_id: int, ts_ns: int, reason: str = CANCELED) -> list[BrokerOutput]:
        """Ask the venue to cancel; it acts `cancel + md` later and may find the order already filled."""
        self._schedule(ts_ns + self._cancel.draw() + self._md.draw(), _CancelReq(order_id, reason))
        return []

    # --- market events -------------------------------------------------------------------------------
    def advance(self, ts_ns: int) -> list[BrokerOutput]:
        """Run what is due strictly before `ts_ns`; call it before the book takes the event at `ts_ns`."""
        out: list[BrokerOutput] = []
        pending = self._pending
        while pending and pending[0][0] < ts_ns:
            due, _, action = heapq.heappop(pending)
            self._run_action(action, due, out)
        markouts = self._markouts
        while markouts and markouts[0][0] < ts_ns:
            out.append(self._markout(heapq.heappop(markouts)[2]))
        return out

    def on_time(self, ts_ns: int) -> list[BrokerOutput]:
        """A timer tick: run everything due at or before `ts_ns` (the book does not change with time)."""
        return self.advance(ts_ns + 1)

    def on_book(self, symbol: str, book: Book, diff: DepthDiff | None, ts_ns: int) -> list[BrokerOutput]:
        """The book of `symbol` changed by `diff` (None: a snapshot replaced it). Book is after the change."""
        out = self.advance(ts_ns) if self._pending or self._markouts else []
        self._books[symbol] = book
        self._instruments[symbol] = book.instrument
        consumed = self._consumed.get(symbol)
        if consumed:
            if diff is None:
                consumed.clear()
            else:
                for price, _ in diff.bids:
                    consumed.pop((1, price), None)
                for price, _ in diff.asks:
                    consumed.pop((-1, price), None)
        resting = self._resting.get(symbol)
        if resting:
            self._book_changed(symbol, book, resting, ts_ns, out)
        return out

    def book_lost(self, symbol: str, ts_ns: int) -> list[BrokerOutput]:
        """The symbol's book stopped being live (gap, reconnect): nothing may act on it until `on_book`.

        Orders arriving meanwhile are rejected `NO_BOOK` (the simulator cannot fill against a book it
        does not have); resting orders stay and still fill on trades; the next snapshot re-reads their
        levels and clears consumed liquidity.
        """
        out = self.advance(ts_ns) if self._pending or self._markouts else []
        self._books.pop(symbol, None)
        self._consumed.pop(symbol, None)
        return out

    def on_trade(self, trade: Trade) -> list[BrokerOutput]:
        """A public trade: it may advance our queues, or fill us when it reaches our price."""
        ts = trade.recv_ns
        out = self.advance(ts) if self._pending or self._markouts else []
        resting = self._resting.get(trade.symbol)
        if resting:
            self._trade_fills(trade, resting, ts, out)
        if self._stops.get(trade.symbol):
            self._trigger_stops(trade, ts, out)
        return out

    def _trigger_stops(self, trade: Trade, ts: int, out: list[BrokerOutput]) -> None:
        """Stops the trade reached become market orders on the book held now."""
        stops = self._stops[trade.symbol]
        price = trade.price
        hit = [
            a
            for a in stops
            if (a.order.stop_price or 0) * a.order.side <= price * a.order.side  # buy: >=, sell: <=
        ]
        if not hit:
            return
        self._stops[trade.symbol] = [a for a in stops if a not in hit]
        book = self._books.get(trade.symbol)
        for a in hit:
            order = self._orders.get(a.order.order_id)
            if order is None or order.is_terminal:
                continue  # cancelled (OCO) by an earlier stop of this same trade
            mid2 = book.mid2() if book is not None else None
            if book is None or mid2 is None:
                self._update(cancel(order, EXPIRED_NO_BOOK), ts, "expired", out)
                continue
            order, hit_bound = self._take(order, book, mid2 / 2, a.latency_ns, ts, out)
            if not order.is_terminal:
                self._update(cancel(order, EXPIRED_PROTECTION if hit_bound else EXPIRED), ts, "expired", out)

    def _trade_fills(self, trade: Trade, resting: list[_Resting], ts: int, out: list[BrokerOutput]) -> None:
        left = trade.qty
        seller_aggressor = trade.buyer_is_maker
        book = self._books.get(trade.symbol)
        done = False
        for r in resting:
            order = r.order
            price = order.price
            assert price is not None
            if order.side is Side.BUY:
                through = trade.price < price
                at_price = trade.price == price and seller_aggressor
            else:
                through = trade.price > price
                at_price = trade.price == price and not seller_aggressor
            if through:
                qty = min(order.remaining_qty, left)
            elif at_price:
                front = r.pos.front
                self.queue.on_trade(r.pos, trade.qty)
                qty = (
                    min(order.remaining_qty, left, math.floor(trade.qty - front)) if trade.qty > front else 0
                )
            else:
                continue
            if qty > 0:
                left -= qty
                self._maker_fill(r, price, qty, book, ts, out)
                done = done or r.order.is_terminal
        if done:
            self._resting[trade.symbol] = [r for r in resting if not r.order.is_terminal]

    # --- internals -----------------------------------------------------------------------------------
    def _schedule(self, due: int, action: _Arrival | _CancelReq) -> None:
        # One connection delivers in order: never before the previous message.
        due = max(due, self._last_due)
        self._last_due = due
        self._seq += 1
        heapq.heappush(self._pending, (due, self._seq, action))

    def _run_action(self, action: _Arrival | _CancelReq, due: int, out: list[BrokerOutput]) -> None:
        if isinstance(action, _Arrival):
            self._arrive(action, due, out)
            return
        order = self._orders.get(action.order_id)
        if order is None or order.is_terminal:
            self.stats.cancels_lost += 1
            out.append(CancelRejected(action.order_id, due))
            return
        self._finish(order, cancel(order, action.reason), due, "cancelled", out)

    def _update(self, new: Order, ts: int, event: str, out: list[BrokerOutput]) -> None:
        if new.is_terminal:
            self._orders.pop(new.order_id, None)
        else:
            self._orders[new.order_id] = new
        out.append(OrderUpdate(new, ts, event))

    def _finish(self, old: Order, new: Order, ts: int, event: str, out: list[BrokerOutput]) -> None:
        self._update(new, ts, event, out)
        oid = old.order_id
        resting = self._resting.get(old.symbol)
        if resting:
            for r in resting:
                if r.order.order_id == oid:
                    r.order = new  # a loop walking the old list sees it is done
            self._resting[old.symbol] = [r for r in resting if r.order.order_id != oid]
        stops = self._stops.get(old.symbol)
        if stops:
            self._stops[old.symbol] = [a for a in stops if a.order.order_id != oid]

    def _cancel_oco(self, filled: Order, ts: int, out: list[BrokerOutput]) -> None:
        """The first fill of an OCO list cancels its other orders, at the venue, at once."""
        for other in [
            o for o in self._orders.values() if o.oco == filled.oco and o.order_id != filled.order_id
        ]:
            self._finish(other, cancel(other, CANCELED_OCO), ts, "cancelled", out)

    def _arrive(self, a: _Arrival, ts: int, out: list[BrokerOutput]) -> None:
        order = a.order
        if order.order_id not in self._orders:
            return  # cancelled in flight (its OCO sibling filled first)
        book = self._books.get(order.symbol)
        mid2 = book.mid2() if book is not None else None
        reason = a.reject_reason
        if reason is None and (book is None or mid2 is None):
            reason = REJECT_NO_BOOK
        if reason is None:
            assert book is not None and mid2 is not None
            inst = book.instrument
            if order.price is not None:
                notional = inst.notional(order.price, order.qty)
            elif order.stop_price is not None:
                notional = inst.notional(order.stop_price, order.qty)
            else:
                notional = inst.notional(mid2, order.qty) // 2
            # USD-M waives the filter for reduce-only orders ("unless you choose reduce only").
            exempt = order.reduce_only and inst.market is Market.USDM
            if notional < inst.min_notional_money and not exempt:
                reason = REJECT_MIN_NOTIONAL
            elif order.tif is TimeInForce.GTX and self._would_take(order, book):
                reason = REJECT_GTX
            elif order.type is OrderType.STOP_MARKET and self._would_trigger(order, book):
                reason = REJECT_STOP_TRIGGER
        if reason is not None:
            self.stats.rejected += 1
            if book is not None:
                reason = venue_reason(reason, book.instrument)
            self._update(reject(order, reason), ts, "rejected", out)
            return
        assert book is not None and mid2 is not None
        decision_mid = a.decision_mid if a.decision_mid is not None else mid2 / 2
        self._update(order, ts, "accepted", out)
        if order.type is OrderType.STOP_MARKET:  # armed, untriggered: waits for a trade
            self._stops.setdefault(order.symbol, []).append(_Arrival(order, decision_mid, a.latency_ns))
            return
        order, hit_bound = self._take(order, book, decision_mid, a.latency_ns, ts, out)
        if order.is_terminal:
            return
        if order.type is OrderType.MARKET or order.tif is TimeInForce.IOC:
            self._update(cancel(order, EXPIRED_PROTECTION if hit_bound else EXPIRED), ts, "expired", out)
            return
        price = order.price
        assert price is not None
        depth = book.bid_qty(price) if order.side is Side.BUY else book.ask_qty(price)
        self._seq += 1
        r = _Resting(order, QueuePos(depth), depth, decision_mid, a.latency_ns, self._seq)
        resting = self._resting.setdefault(order.symbol, [])
        resting.append(r)
        # Priority for sharing one trade among our orders: best price first, then oldest.
        resting.sort(key=lambda x: (-x.order.side * (x.order.price or 0), x.seq))

    def _levels(self, book: Book, book_side: int):
        """Opposite levels best first, fetched in growing pages (the book API gives top N)."""
        n = 16
        start = 0
        while True:
            levels = book.top_bids(n) if book_side == 1 else book.top_asks(n)
            yield from levels[start:]
            if len(levels) < n:
                return
            start, n = len(levels), n * 4

    @staticmethod
    def _would_trigger(order: Order, book: Book) -> bool:
        """The market is already at or through the trigger (judged on the touch the stop would hit)."""
        stop = order.stop_price
        assert stop is not None
        if order.side is Side.SELL:
            bid = book.best_bid()
            return bid is not None and bid[0] <= stop
        ask = book.best_ask()
        return ask is not None and ask[0] >= stop

    def _would_take(self, order: Order, book: Book) -> bool:
        book_side = -order.side  # a buy meets the asks (-1)
        consumed = self._consumed.get(order.symbol) or {}
        price = order.price
        assert price is not None
        for lp, lq in self._levels(book, book_side):
            if (lp - price) * order.side > 0:
                return False
            if lq - consumed.get((book_side, lp), 0) > 0:
                return True
        return False

    def _take(
        self, order: Order, book: Book, decision_mid: float, latency: int, ts: int, out: list[BrokerOutput]
    ) -> tuple[Order, bool]:
        """Walk the opposite side up to the limit (or protection bound); one taker fill per level.

        Returns the order and whether a MARKET order stopped at its protection bound.
        """
        side = order.side
        book_side = -side
        if order.price is not None:
            bound = float(order.price)
        else:
            bound = decision_mid * (1 + side * self.config.market_protection_bps / 10_000)
        hit_bound = False
        consumed = self._consumed.setdefault(order.symbol, {})
        for lp, lq in self._levels(book, book_side):
            if (lp - bound) * side > 0:
                hit_bound = order.price is None
                break
            avail = lq - consumed.get((book_side, lp), 0)
            if avail <= 0:
                continue
            qty = min(order.remaining_qty, avail)
            consumed[(book_side, lp)] = consumed.get((book_side, lp), 0) + qty
            order = self._emit_fill(order, lp, qty, Liquidity.TAKER, book, decision_mid, latency, 0, ts, out)
            if order.is_terminal:
                break
        return order, hit_bound

    def _book_changed(self, symbol: str, book: Book, resting: list[_Resting], ts: int, out: list) -> None:
        queue = self.queue
        done = False
        consumed = self._consumed.setdefault(symbol, {})
        best_bid = book.best_bid()
        best_ask = book.best_ask()
        for r in resting:
            order = r.order
            price = order.price
            assert price is not None
            if order.side is Side.BUY:
                depth = book.bid_qty(price)
                crossed = best_ask is not None and best_ask[0] <= price
            else:
                depth = book.ask_qty(price)
                crossed = best_bid is not None and best_bid[0] >= price
            if depth != r.level_qty:
                queue.on_depth(r.pos, r.level_qty, depth)
                r.level_qty = depth
            if not crossed:
                continue
            # The opposite side reached our price: whoever sits there would have traded with us.
            book_side = -order.side
            for lp, lq in self._levels(book, book_side):
                if (lp - price) * order.side > 0 or r.order.is_terminal:
                    break
                avail = lq - consumed.get((book_side, lp), 0)
                if avail <= 0:
                    continue
                qty = min(r.order.remaining_qty, avail)
                consumed[(book_side, lp)] = consumed.get((book_side, lp), 0) + qty
                self._maker_fill(r, price, qty, book, ts, out)
            done = done or r.order.is_terminal
        if done:
            self._resting[symbol] = [r for r in resting if not r.order.is_terminal]

    def _maker_fill(self, r: _Resting, price: int, qty: int, book: Book | None, ts: int, out: list) -> None:
        r.order = self._emit_fill(
            r.order,
            price,
            qty,
            Liquidity.MAKER,
            book,
            r.decision_mid,
            r.latency_ns,
            r.queue_at_entry,
            ts,
            out,
        )

    def _emit_fill(
        self,
        order: Order,
        price: int,
        qty: int,
        liquidity: Liquidity,
        book: Book | None,
        decision_mid: float,
        latency: int,
        queue_ahead: int,
        ts: int,
        out: list[BrokerOutput],
    ) -> Order:
        book = book or self._books.get(order.symbol)
        inst = self._instruments[order.symbol]
        maker = liquidity is Liquidity.MAKER
        rate = self._fee_rates[inst.market][0 if maker else 1]
        if self.config.fee_asset_mode == "received" and inst.market is Market.SPOT and order.side is Side.BUY:
            base_units = int(inst.step_size * MONEY_SCALE) * qty
            fee, fee_asset = fee_units(base_units, rate), inst.base_asset or order.symbol
        else:
            fee, fee_asset = fee_units(inst.notional(price, qty), rate), inst.quote_asset
        mid2 = book.mid2() if book is not None else None
        fill_mid = mid2 / 2 if mid2 is not None else float(price)
        slip = order.side * (price - decision_mid) / decision_mid * 10_000 if decision_mid else 0.0
        self._fill_id += 1
        f = Fill(
            self._fill_id, order.order_id, order.symbol, order.side, price, qty, fee, fee_asset, liquidity,
            ts, self.model_label, latency, queue_ahead, decision_mid, fill_mid, slip,
        )  # fmt: skip
        new = fill(order, qty)
        out.append(f)
        self._update(new, ts, "fill", out)
        if new.oco and order.filled_qty == 0:
            self._cancel_oco(new, ts, out)
        st = self.stats
        st.fills += 1
        if maker:
            st.maker_fills += 1
        else:
            st.taker_fills += 1
        for h in self.config.markout_horizons_ms:
            heapq.heappush(
                self._markouts, (ts + h * 1_000_000, self._fill_id, _PendingMarkout(f, ts + h * 1_000_000, h))
            )
        return new

    def _markout(self, m: _PendingMarkout) -> Markout:
        f = m.fill
        book = self._books.get(f.symbol)
        mid2 = book.mid2() if book is not None else None
        if mid2 is None:
            return Markout(f.fill_id, f.order_id, f.symbol, f.side, m.horizon_ms, f.ts_ns, m.due_ns,
                           f.price, f.fill_mid, None, None, None)  # fmt: skip
        mid = mid2 / 2
        move = f.side * (mid - f.fill_mid) / f.fill_mid * 10_000
        mark = f.side * (mid - f.price) / f.price * 10_000
        return Markout(f.fill_id, f.order_id, f.symbol, f.side, m.horizon_ms, f.ts_ns, m.due_ns,
                       f.price, f.fill_mid, mid, move, mark)  # fmt: skip


def _plain(value: Decimal) -> str:
    """Decimal as plain positional text for the instrument's exact parser."""
    return format(Decimal(value), "f")


def vwap(fills: list[Fill]) -> float | None:
    """Volume-weighted average price (ticks) of fills, for reports."""
    qty = sum(f.qty for f in fills)
    return sum(f.price * f.qty for f in fills) / qty if qty else None
