"""The engine: one event in, what happened out. Pure, synchronous, deterministic.

Design and invariants:
- `Engine.on_event(event) -> list[output]` is the whole hot path. It never does I/O and never reads the
  clock: time is the event's `recv_ns`. Live and replay call it the same way, so a replay of the same
  file with the same configuration produces the same outputs.
- One `SymbolBook` per (market, symbol) known to the instruments; events for other symbols are counted
  and ignored (the parser already refuses unknown symbols).
- Outputs (market part): `BookTop` when the top `depth` levels of a LIVE book changed (metrics are
  computed only then, and cached by the book); `SyncChange` when a symbol goes LIVE or back to SYNCING.
  Nothing is emitted from a SYNCING book.
- `FeedStatus` DISCONNECTED / STALE from the source resyncs that symbol (its diff chain is broken);
  so does MALFORMED (the source dropped a depth frame of that symbol it could not parse: the book would
  otherwise stay LIVE without that diff until the next one revealed the gap). CONNECTED changes nothing
  (new diffs buffer and ask for a snapshot).
- Bad input the books refuse without an output (a snapshot that does not reach the buffered diffs, a
  crossed snapshot, the SYNCING buffer overflowing) is counted by the book and queued as a `BookNotice`
  in `notices` (bounded): the core cannot log, so the shell drains `take_notices()` and logs each once.
- bookTicker cross-check: after each applied diff (update id `u`) the book's top is compared with the
  latest bookTicker whose `u' <= u` (bookTicker reports every top change, so the top cannot have moved
  between `u'` and `u`). A check waits until a bookTicker with `u' >= u` proves no later one can still
  qualify, so arrival order between the two streams does not matter. Memory is bounded (short deques).
- The one disagreement Binance's feeds are known to produce (data README): bookTicker shows a better
  level the diff stream never announced, and the next diff deletes that price. Such a mismatch is counted
  as `unannounced_level` only when that next diff confirms it; every other one is `unexplained`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from worker.book import DEFAULT_DEPTH, DEFAULT_MAX_BUFFER, DiffResult, SnapshotResult, SymbolBook, SyncState
from worker.events import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    Event,
    FeedState,
    FeedStatus,
    Market,
    MarkPrice,
    TimerTick,
    Trade,
)
from worker.instruments import Instrument
from worker.trader import Trader

NS = 1_000_000_000
_CHECK_WINDOW = 256  # depth events awaiting their bookTicker; bounded so a dead stream costs nothing
_TICKER_HISTORY = 64
_RECENT_DIFFS = 8
_MISMATCH_LOG = 20

Top = tuple[int, int, int, int]  # bid, bid_qty, ask, ask_qty


class BookTop(NamedTuple):
    """The top of a LIVE book after a change in its top `depth` levels (prices in ticks, qty in lots).

    A NamedTuple, not a frozen dataclass: it is built on most depth events and a frozen dataclass costs
    ~1.2 µs to construct here versus ~0.15 µs; it is just as immutable.
    """

    symbol: str
    market: Market
    update_id: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int
    imbalance: float | None  # over the top `depth` levels
    microprice: float | None  # ticks
    exchange_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class SyncChange:
    """A symbol's book went LIVE (usable) or back to SYNCING (unusable until re-synced)."""

    symbol: str
    market: Market
    state: SyncState
    reason: str
    recv_ns: int


Output = BookTop | SyncChange


@dataclass(frozen=True, slots=True)
class BookNotice:
    """Bad input a book refused or lost data to, for the shell to log (kind: `stale_snapshot`,
    `invalid_snapshot`, `buffer_overflow`). Not an output: nothing downstream acts on it."""

    symbol: str
    market: Market
    kind: str
    detail: str
    recv_ns: int


_NOTICES = 256  # undrained notices kept (tests and benchmarks never drain them)


def _ticker_id(ticker: BookTicker) -> int:
    return ticker.update_id


class _Symbol:
    """Engine-side state of one symbol: its book, sync timing and the bookTicker cross-check."""

    __slots__ = (
        "book",
        "book_ticker_checks",
        "book_ticker_mismatches",
        "book_ticker_unannounced",
        "book_tickers",
        "checks_skipped",
        "first_ns",
        "last_top",
        "live_ns",
        "live_since",
        "mark_prices",
        "market",
        "mismatch_log",
        "overflow_noticed",
        "pending_checks",
        "recent_diffs",
        "stale_seen",
        "suspects",
        "symbol",
        "ticker_history",
        "top_version",
        "trades",
    )

    def __init__(self, book: SymbolBook) -> None:
        self.book = book
        self.symbol = book.symbol
        self.market = book.market
        self.top_version = -1
        self.last_top: Top | None = None
        self.first_ns = 0
        self.live_since: int | None = None
        self.live_ns = 0
        self.trades = 0
        self.mark_prices = 0
        self.book_tickers = 0
        self.book_ticker_checks = 0
        self.book_ticker_mismatches = 0
        self.book_ticker_unannounced = 0
        self.checks_skipped = 0
        self.ticker_history: deque[BookTicker] | None = None  # created on the first bookTicker
        self.pending_checks: deque[tuple[int, Top | None]] = deque(maxlen=_CHECK_WINDOW)
        self.recent_diffs: deque[DepthDiff] = deque(maxlen=_RECENT_DIFFS)
        self.suspects: list[tuple[int, str, int]] = []  # (update id, side, price) awaiting the next diff
        self.mismatch_log: deque[dict[str, Any]] = deque(maxlen=_MISMATCH_LOG)
        self.stale_seen = 0  # the book's stale_snapshots already noticed
        self.overflow_noticed = False  # one buffer_overflow notice per SYNCING episode


class Engine:
    """Books for every symbol, and (with a `Trader`) features -> strategy -> risk -> broker -> portfolio.

    Without a trader the engine is the market part alone (record, bench, book checks); with one, every
    event first lets the trader run what was due before it, then the book takes the event, then the
    trader sees the LIVE book (never a SYNCING one) and the trade flow.
    """

    def __init__(
        self,
        instruments: Mapping[tuple[Market, str], Instrument],
        *,
        depth: int = DEFAULT_DEPTH,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        trader: Trader | None = None,
    ) -> None:
        self.trader = trader
        self._applied: _Symbol | None = None  # the symbol whose LIVE book the current event changed
        self.instruments = dict(instruments)
        self.depth = depth
        self.max_buffer = max_buffer
        self._symbols: dict[Market, dict[str, _Symbol]] = {Market.SPOT: {}, Market.USDM: {}}
        self.events = 0
        self.unknown_symbol_events = 0
        self.notices: deque[BookNotice] = deque(maxlen=_NOTICES)
        self.first_recv_ns: int | None = None
        self.last_recv_ns = 0

    # --- symbols ---
    def _symbol(self, market: Market, symbol: str) -> _Symbol | None:
        state = self._symbols[market].get(symbol)
        if state is None:
            instrument = self.instruments.get((market, symbol))
            if instrument is None:
                return None
            state = _Symbol(SymbolBook(instrument, self.max_buffer, self.depth))
            self._symbols[market][symbol] = state
        return state

    def symbol_book(self, market: Market, symbol: str) -> SymbolBook | None:
        state = self._symbols[Market(market)].get(symbol.upper())
        return state.book if state else None

    def symbol_books(self) -> list[SymbolBook]:
        return [s.book for m in self._symbols.values() for s in m.values()]

    def snapshots_wanted(self) -> list[tuple[Market, str]]:
        """Symbols that need a REST snapshot now; each is marked requested (call once per request)."""
        wanted = []
        for market, states in self._symbols.items():
            for symbol, state in states.items():
                if state.book.wants_snapshot:
                    state.book.snapshot_requested()
                    wanted.append((market, symbol))
        return wanted

    def snapshot_failed(self, market: Market, symbol: str) -> None:
        """The shell's REST request failed: the symbol may ask again (the shell paces retries)."""
        book = self.symbol_book(market, symbol)
        if book is not None:
            book.snapshot_failed()

    def take_notices(self) -> list[BookNotice]:
        """The queued `BookNotice`s, oldest first; the queue is empty afterwards."""
        notices = list(self.notices)
        self.notices.clear()
        return notices

    def resync(self, market: Market, symbol: str, reason: str, recv_ns: int) -> list[Output]:
        state = self._symbols[Market(market)].get(symbol.upper())
        if state is None:
            return []
        was_live = state.book.state is SyncState.LIVE
        state.book.resync(reason)
        return self._went_syncing(state, reason, recv_ns) if was_live else []

    # --- trading hooks (the shell's) ---
    def restore(self, fills: Iterable[Any], **persisted: Any) -> list[Any]:
        """Hand the trader what a previous run persisted (see `Trader.restore`); no-op without one."""
        return self.trader.restore(fills, **persisted) if self.trader is not None else []

    def set_storage_lag(self, lagging: bool, ts_ns: int) -> list[Any]:
        out: list[Any] = []
        if self.trader is not None:
            self.trader.set_storage_lag(lagging, ts_ns, out)
        return out

    # --- events ---
    def on_event(self, event: Event) -> list[Any]:
        trader = self.trader
        if trader is None:
            return self._market_event(event)
        out: list[Any] = []
        trader.before(event.recv_ns, out)
        self._applied = None
        market_out = self._market_event(event)
        if market_out:
            out.extend(market_out)
            for item in market_out:
                if type(item) is SyncChange and item.state is SyncState.SYNCING:
                    trader.book_lost(item.market, item.symbol, item.recv_ns, out)
        kind = type(event)
        applied = self._applied
        if applied is not None:
            exchange_ns = event.exchange_ns if kind is DepthDiff else 0  # type: ignore[union-attr]
            diff = event if kind is DepthDiff else None
            trader.on_book(
                applied.market, applied.symbol, applied.book.book, diff, event.recv_ns, exchange_ns, out
            )  # type: ignore[arg-type]
        elif kind is Trade:
            trader.on_trade(event, out)  # type: ignore[arg-type]
        elif kind is MarkPrice:
            trader.on_mark_price(event, out)  # type: ignore[arg-type]
        elif kind is TimerTick:
            trader.on_time(event.recv_ns, out)
        return out

    def _market_event(self, event: Event) -> list[Output]:
        recv_ns = event.recv_ns
        self.events += 1
        if self.first_recv_ns is None:
            self.first_recv_ns = recv_ns
        self.last_recv_ns = recv_ns
        kind = type(event)
        if kind is DepthDiff:
            return self._on_diff(event)  # type: ignore[arg-type]
        if kind is BookTicker:
            return self._on_book_ticker(event)  # type: ignore[arg-type]
        if kind is Trade or kind is MarkPrice:  # no book change: counted, then the trader's business
            state = self._symbol(event.market, event.symbol)  # type: ignore[union-attr]
            if state is None:
                self.unknown_symbol_events += 1
            elif kind is Trade:
                state.trades += 1
            else:
                state.mark_prices += 1
            return []
        if kind is DepthSnapshot:
            return self._on_snapshot(event)  # type: ignore[arg-type]
        if kind is FeedStatus:
            state = event.state  # type: ignore[union-attr]
            if state is FeedState.MALFORMED:
                return self.resync(event.market, event.symbol, "malformed depth frame", recv_ns)  # type: ignore[union-attr]
            if state is not FeedState.CONNECTED:
                return self.resync(event.market, event.symbol, f"feed {state}", recv_ns)  # type: ignore[union-attr]
            return []
        if kind is TimerTick:
            return []
        raise TypeError(f"not an event: {event!r}")

    def _on_diff(self, diff: DepthDiff) -> list[Output]:
        state = self._symbol(diff.market, diff.symbol)
        if state is None:
            self.unknown_symbol_events += 1
            return []
        if not state.first_ns:
            state.first_ns = diff.recv_ns
        book = state.book
        was_live = book.state is SyncState.LIVE
        result = book.on_diff(diff)
        if result is DiffResult.APPLIED:
            self._applied = state
            out: list[Output] = []
            if not was_live:
                out.append(self._went_live(state, diff.recv_ns))
            self._after_apply(state, diff, out)
            return out
        if result is DiffResult.GAP or result is DiffResult.CROSSED:
            return self._went_syncing(state, result.value, diff.recv_ns) if was_live else []
        if result is DiffResult.BUFFERED:  # SYNCING only: never on the LIVE hot path
            if book.buffer_overflows and not state.overflow_noticed:
                state.overflow_noticed = True
                self._notice(
                    state,
                    "buffer_overflow",
                    f"{book.buffer_overflows} diff(s) dropped from the SYNCING buffer (max "
                    f"{self.max_buffer}) while waiting for a snapshot",
                    diff.recv_ns,
                )
            if book.stale_snapshots != state.stale_seen:
                state.stale_seen = book.stale_snapshots
                self._notice(
                    state,
                    "stale_snapshot",
                    f"the held snapshot does not reach diff U={diff.first_id} (pu={diff.prev_final_id}); "
                    "refetching",
                    diff.recv_ns,
                )
        return []

    def _notice(self, state: _Symbol, kind: str, detail: str, recv_ns: int) -> None:
        self.notices.append(BookNotice(state.symbol, state.market, kind, detail, recv_ns))

    def _on_snapshot(self, snap: DepthSnapshot) -> list[Output]:
        state = self._symbol(snap.market, snap.symbol)
        if state is None:
            self.unknown_symbol_events += 1
            return []
        if not state.first_ns:
            state.first_ns = snap.recv_ns
        book = state.book
        was_live = book.state is SyncState.LIVE
        result = book.on_snapshot(snap)
        if result is SnapshotResult.STALE:
            state.stale_seen = book.stale_snapshots
            self._notice(
                state,
                "stale_snapshot",
                f"snapshot lastUpdateId={snap.last_update_id} does not cover the buffered diffs; refetching",
                snap.recv_ns,
            )
        elif result is SnapshotResult.INVALID:
            self._notice(
                state,
                "invalid_snapshot",
                f"snapshot lastUpdateId={snap.last_update_id} is crossed (best bid >= best ask); refetching",
                snap.recv_ns,
            )
        if book.state is SyncState.LIVE and not was_live:
            self._applied = state
            out: list[Output] = [self._went_live(state, snap.recv_ns)]
            self._emit_top(state, book.book.last_update_id, 0, snap.recv_ns, out)
            if state.ticker_history is not None:  # check the state the buffered diffs left
                self._check_top(state, book.book.last_update_id)
            return out
        return []

    def _after_apply(self, state: _Symbol, diff: DepthDiff, out: list[Output]) -> None:
        if state.book.book.top_version != state.top_version:
            self._emit_top(state, diff.final_id, diff.exchange_ns, diff.recv_ns, out)
        if state.ticker_history is not None:  # only when the bookTicker stream is subscribed
            self._check_point(state, diff)

    def _emit_top(self, state: _Symbol, update_id: int, exchange_ns: int, recv_ns: int, out: list) -> None:
        book = state.book.book
        state.top_version = book.top_version
        top = state.last_top = book.top()
        if top is None:
            return
        out.append(
            BookTop(
                state.symbol,
                state.market,
                update_id,
                top[0],
                top[1],
                top[2],
                top[3],
                book.imbalance(self.depth),
                book.microprice(),
                exchange_ns,
                recv_ns,
            )
        )

    def _went_live(self, state: _Symbol, recv_ns: int) -> SyncChange:
        state.live_since = recv_ns
        state.overflow_noticed = False
        state.top_version = -1
        state.last_top = None
        return SyncChange(state.symbol, state.market, SyncState.LIVE, "synced", recv_ns)

    def _went_syncing(self, state: _Symbol, reason: str, recv_ns: int) -> list[Output]:
        if state.live_since is not None:
            state.live_ns += recv_ns - state.live_since
            state.live_since = None
        state.pending_checks.clear()
        state.recent_diffs.clear()
        state.last_top = None
        return [SyncChange(state.symbol, state.market, SyncState.SYNCING, reason, recv_ns)]

    # --- bookTicker cross-check ---
    def _on_book_ticker(self, ticker: BookTicker) -> list[Output]:
        state = self._symbol(ticker.market, ticker.symbol)
        if state is None:
            self.unknown_symbol_events += 1
            return []
        state.book_tickers += 1
        history = state.ticker_history
        if history is None:
            history = state.ticker_history = deque(maxlen=_TICKER_HISTORY)
        history.append(ticker)
        pending = state.pending_checks
        while pending and pending[0][0] <= ticker.update_id:
            update_id, top = pending.popleft()
            self._resolve(state, update_id, top)
        return []

    def _check_point(self, state: _Symbol, diff: DepthDiff) -> None:
        """After an applied diff: settle suspects it can confirm, then check or queue this top."""
        state.recent_diffs.append(diff)
        if state.suspects:
            self._settle_suspects(state)
        if state.book.state is SyncState.LIVE:
            self._check_top(state, diff.final_id)

    def _check_top(self, state: _Symbol, update_id: int) -> None:
        """Compare the top now (as of `update_id`) once the bookTicker stream has reached it."""
        top = state.last_top if state.top_version == state.book.book.top_version else state.book.book.top()
        history = state.ticker_history
        if history and history[-1].update_id >= update_id:
            self._resolve(state, update_id, top)
        else:
            state.pending_checks.append((update_id, top))

    def _resolve(self, state: _Symbol, update_id: int, top: Top | None) -> None:
        history = state.ticker_history
        ticker = None
        if history:
            at = bisect_right(history, update_id, key=_ticker_id)  # type: ignore[call-overload]
            if at:
                ticker = history[at - 1]
        if ticker is None:  # our history does not reach back that far: no honest comparison possible
            state.checks_skipped += 1
            return
        state.book_ticker_checks += 1
        theirs = (ticker.bid_price, ticker.bid_qty, ticker.ask_price, ticker.ask_qty)
        if top == theirs:
            return
        state.book_ticker_mismatches += 1
        entry: dict[str, Any] = {"update_id": update_id, "book_ticker_u": ticker.update_id, "ours": top}
        entry["theirs"] = theirs
        entry["kind"] = "unexplained"
        book = state.book.book
        if top is not None and state.book.state is SyncState.LIVE:
            bid, _, ask, _ = top
            if theirs[0] > bid and theirs[2:] == top[2:] and not book.bid_qty(theirs[0]):
                state.suspects.append((update_id, "bid", theirs[0]))
                entry["kind"] = "suspect_unannounced_level"
            elif theirs[2] < ask and theirs[:2] == top[:2] and not book.ask_qty(theirs[2]):
                state.suspects.append((update_id, "ask", theirs[2]))
                entry["kind"] = "suspect_unannounced_level"
        state.mismatch_log.append(entry)
        if state.suspects:
            self._settle_suspects(state)

    def _settle_suspects(self, state: _Symbol) -> None:
        """A suspect is confirmed when the first diff after its update id deletes that price."""
        keep = []
        for update_id, side, price in state.suspects:
            following = next((d for d in state.recent_diffs if d.final_id > update_id), None)
            if following is None:
                if state.recent_diffs and state.recent_diffs[0].final_id <= update_id:
                    keep.append((update_id, side, price))  # the next diff has not arrived yet
                continue  # else it scrolled out of the window: stays unexplained
            levels = following.bids if side == "bid" else following.asks
            confirmed = (price, 0) in levels
            if confirmed:
                state.book_ticker_unannounced += 1
            for entry in state.mismatch_log:
                if entry["update_id"] == update_id and entry["kind"] == "suspect_unannounced_level":
                    entry["kind"] = "unannounced_level" if confirmed else "unexplained"
        state.suspects = keep

    # --- reporting ---
    def symbol_summary(self, state: _Symbol) -> dict[str, Any]:
        book = state.book
        live_ns = state.live_ns
        if state.live_since is not None:
            live_ns += self.last_recv_ns - state.live_since
        span = self.last_recv_ns - state.first_ns if state.first_ns else 0
        top = book.book.top() if book.state is SyncState.LIVE else None
        instrument = book.instrument
        return {
            "market": state.market.value,
            "symbol": state.symbol,
            "state": book.state.value,
            **book.counters(),
            "resync_reasons": dict(book.resync_reasons),
            "trades": state.trades,
            "mark_prices": state.mark_prices,
            "book_tickers": state.book_tickers,
            "book_ticker_checks": state.book_ticker_checks,
            "book_ticker_mismatches": state.book_ticker_mismatches,
            "book_ticker_unannounced_levels": state.book_ticker_unannounced,
            "book_ticker_unexplained": state.book_ticker_mismatches - state.book_ticker_unannounced,
            "book_ticker_checks_skipped": state.checks_skipped,
            "mismatch_examples": [
                {**e, "ours": list(e["ours"] or []), "theirs": list(e["theirs"])} for e in state.mismatch_log
            ],
            "time_in_sync_seconds": live_ns / NS,
            "sync_fraction": live_ns / span if span else 0.0,
            "bid_levels": book.book.bid_levels if book.state is SyncState.LIVE else 0,
            "ask_levels": book.book.ask_levels if book.state is SyncState.LIVE else 0,
            "best_bid": str(instrument.price_decimal(top[0])) if top else None,
            "best_ask": str(instrument.price_decimal(top[2])) if top else None,
            "last_update_id": book.book.last_update_id if book.state is SyncState.LIVE else None,
        }

    def summary(self) -> dict[str, Any]:
        """Counters of every symbol plus totals; JSON-ready. The lead adds strategy/broker parts."""
        symbols = {
            f"{state.market.value}:{state.symbol}": self.symbol_summary(state)
            for states in self._symbols.values()
            for state in states.values()
        }
        totals = {
            key: sum(s[key] for s in symbols.values())
            for key in (
                "gaps",
                "resyncs",
                "crossed",
                "stale_snapshots",
                "invalid_snapshots",
                "ignored_old",
                "dropped_before_sync",
                "buffer_overflows",
                "book_ticker_checks",
                "book_ticker_mismatches",
                "book_ticker_unannounced_levels",
                "book_ticker_unexplained",
            )
        }
        trading = {"trading": self.trader.summary()} if self.trader is not None else {}
        return {
            "events": self.events,
            "unknown_symbol_events": self.unknown_symbol_events,
            **totals,
            **trading,
            "time_in_sync_seconds": {k: s["time_in_sync_seconds"] for k, s in symbols.items()},
            "per_symbol": symbols,
        }
