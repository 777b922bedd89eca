"""The local L2 order book of one symbol, and Binance's documented procedure that keeps it exact.

`OrderBook` is the book and nothing else:
- Each side is a dict price -> quantity (integer ticks -> integer lots), the whole truth, plus a sorted
  key list that covers only a BAND of the best levels (`_BAND_TARGET`, refilled from the dict when
  deletes at the top shrink it below `_BAND_MIN`, trimmed when it grows past `_BAND_MAX`). A quantity
  change is one dict store; a level appearing or disappearing costs one `bisect` only inside the band.
  Binance diffs touch far levels all the time (on the spot recording ~70% of the level adds/removes
  in the largest diffs are more than 64 levels deep); those now cost a dict operation alone.
- Both key lists keep the BEST price at the END (bids ascending; asks as negated prices ascending), so the
  common insert/delete near the top moves few list items. `consistent()` checks the band invariants.
- A level with quantity 0 does not exist. Levels beyond the snapshot's depth stay as Binance last told
  us until a diff touches them (Binance documents the same).
- Top-N metrics (imbalance, microprice, top levels) are cached and invalidated only when a change lands
  at or better than the N-th level of its side (`depth`): a change deeper down cannot alter them.

`SymbolBook` adds the sync procedure (Binance: "How to manage a local order book correctly"):
- SYNCING: diffs are buffered (bounded; the oldest is dropped and counted on overflow) until a REST
  snapshot arrives. `wants_snapshot` is True while SYNCING with diffs buffered and no request in flight.
- A snapshot older than the first buffered diff cannot be bridged: spot `lastUpdateId + 1 < U`, USD-M
  `lastUpdateId < pu` (and `< U`). It is counted (`stale_snapshots`) and must be refetched (`wants_snapshot`).
- Bridging, spot: drop diffs with `u <= lastUpdateId`; the first applied has
  `U <= lastUpdateId + 1 <= u`. USD-M: drop `u < lastUpdateId`; the first applied has
  `U <= lastUpdateId <= u`, or `pu <= lastUpdateId < U` (USD-M ids are venue-wide, so a snapshot id
  may fall between two events of the symbol; the book did not change in between). A snapshot that
  arrives before any bridging diff is held (PENDING) and the next diffs are checked the same way.
- LIVE, both markets: a diff with `u <=` the book's id is old (a duplicate or late frame) and ignored.
  Spot: `U > id + 1` is a gap (`U <= id + 1 < u`, an overlap, is applied: levels carry absolute
  quantities as of `u`). USD-M: update ids are venue-wide, so continuity is `pu == id`; else a gap.
- A gap resyncs THIS symbol only: back to SYNCING, the gap diff becomes the first buffered one.
  A diff that leaves the book crossed (best bid >= best ask) also resyncs; so does `resync(reason)`
  (reconnect, bad data).
- What SYNCING guarantees: nothing downstream may read `book` (it may be empty, half-loaded or
  pre-snapshot); the engine emits no book tops, features or fills for the symbol until it is LIVE again.
  When LIVE, the book equals Binance's book as of `book.last_update_id`.
- Pure and synchronous: no I/O, no clock. Requests are the caller's job (`snapshot_requested` /
  `snapshot_failed` mark one in flight so a slow snapshot is never requested twice).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from enum import StrEnum
from operator import neg

from worker.events import DepthDiff, DepthSnapshot, Level, Market
from worker.instruments import Instrument

DEFAULT_DEPTH = 5
DEFAULT_MAX_BUFFER = 5000
_NO_FLOOR = 0  # prices are > 0: every bid change touches the top when the side has < N levels
_NO_CEILING = 1 << 62
# The sorted band: refilled from the dict when it falls below _BAND_MIN levels, trimmed back to
# _BAND_TARGET when it grows past _BAND_MAX. _BAND_MIN must stay above any metrics depth in use.
_BAND_TARGET = 256
_BAND_MIN = 32
_BAND_MAX = 1024


class OrderBook:
    """One symbol's L2 book; no sync logic. `apply` reports whether the top `depth` levels changed."""

    __slots__ = (
        "_ask_ceiling",
        "_ask_high",
        "_ask_keys",
        "_asks",
        "_bid_floor",
        "_bid_keys",
        "_bid_low",
        "_bids",
        "_cache",
        "band_refills",
        "depth",
        "instrument",
        "last_update_id",
        "top_version",
    )

    def __init__(self, instrument: Instrument, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.instrument = instrument
        self.depth = depth
        self.last_update_id = 0
        self.top_version = 0  # bumps whenever the top `depth` levels of either side may have changed
        self.band_refills = 0
        self._bids: dict[int, int] = {}
        self._asks: dict[int, int] = {}
        # Sorted keys cover only the band near the top: bids >= _bid_low, asks <= _ask_high.
        self._bid_keys: list[int] = []  # ascending: best bid last
        self._ask_keys: list[int] = []  # negated ask prices ascending: best ask last
        self._bid_low = _NO_FLOOR
        self._ask_high = _NO_CEILING
        self._bid_floor = _NO_FLOOR
        self._ask_ceiling = _NO_CEILING
        self._cache: dict[tuple[str, int], float | None] = {}

    # --- mutation ---
    def clear(self) -> None:
        self._bids.clear()
        self._asks.clear()
        self._bid_keys.clear()
        self._ask_keys.clear()
        self._bid_low = _NO_FLOOR
        self._ask_high = _NO_CEILING
        self.last_update_id = 0
        self._touched()

    def load(self, bids: list[Level], asks: list[Level], last_update_id: int) -> None:
        """Replace the whole book (a snapshot). Zero quantities are skipped; later duplicates win."""
        self._bids = {p: q for p, q in bids if q}
        self._asks = {p: q for p, q in asks if q}
        self._rebuild_bids()
        self._rebuild_asks()
        self.last_update_id = last_update_id
        self._touched()

    def apply(self, bids: list[Level], asks: list[Level]) -> bool:
        """Apply absolute level quantities (0 deletes). True when the top `depth` of a side changed.

        Per level: one dict operation, plus one bisect only when a level inside the band appears or
        disappears. Levels outside the band live in the dict alone.
        """
        touched = False
        if bids:
            book, keys, floor, low = self._bids, self._bid_keys, self._bid_floor, self._bid_low
            for price, qty in bids:
                if qty:
                    if price >= low and price not in book:  # cheap test first: most adds are deep
                        insort(keys, price)
                    book[price] = qty
                    if price >= floor:
                        touched = True
                elif book.pop(price, 0) and price >= low:
                    del keys[bisect_left(keys, price)]
                    if price >= floor:
                        touched = True
            size = len(keys)
            if size < _BAND_MIN and len(book) > size:
                self._rebuild_bids()
            elif size > _BAND_MAX:
                cut = size - _BAND_TARGET
                self._bid_low = keys[cut]
                del keys[:cut]
        if asks:
            book, keys, ceiling, high = self._asks, self._ask_keys, self._ask_ceiling, self._ask_high
            for price, qty in asks:
                if qty:
                    if price <= high and price not in book:
                        insort(keys, -price)
                    book[price] = qty
                    if price <= ceiling:
                        touched = True
                elif book.pop(price, 0) and price <= high:
                    del keys[bisect_left(keys, -price)]
                    if price <= ceiling:
                        touched = True
            size = len(keys)
            if size < _BAND_MIN and len(book) > size:
                self._rebuild_asks()
            elif size > _BAND_MAX:
                cut = size - _BAND_TARGET
                self._ask_high = -keys[cut]
                del keys[:cut]
        if touched:
            self._touched()
        return touched

    def _rebuild_bids(self) -> None:
        """Refill the band from the dict (after a snapshot, or when deletes at the top emptied it)."""
        keys = sorted(self._bids)
        if len(keys) > _BAND_TARGET:
            keys = keys[-_BAND_TARGET:]
            self._bid_low = keys[0]
        else:
            self._bid_low = _NO_FLOOR
        self._bid_keys = keys
        self.band_refills += 1

    def _rebuild_asks(self) -> None:
        keys = sorted(self._asks)
        if len(keys) > _BAND_TARGET:
            keys = keys[:_BAND_TARGET]
            self._ask_high = keys[-1]
        else:
            self._ask_high = _NO_CEILING
        self._ask_keys = [-p for p in reversed(keys)]
        self.band_refills += 1

    def _touched(self) -> None:
        n = self.depth
        bk, ak = self._bid_keys, self._ask_keys
        self._bid_floor = bk[-n] if len(bk) >= n else _NO_FLOOR
        self._ask_ceiling = -ak[-n] if len(ak) >= n else _NO_CEILING
        self.top_version += 1
        if self._cache:
            self._cache.clear()

    def consistent(self) -> bool:
        """The band invariants hold (tests call this; it is O(n log n), never on the hot path)."""
        low, high = self._bid_low, self._ask_high
        bids_ok = self._bid_keys == sorted(p for p in self._bids if p >= low)
        asks_ok = self._ask_keys == sorted(-p for p in self._asks if p <= high)
        filled = all(
            len(keys) >= min(len(side), _BAND_MIN)
            for keys, side in ((self._bid_keys, self._bids), (self._ask_keys, self._asks))
        )
        no_zero = 0 not in self._bids.values() and 0 not in self._asks.values()
        return bids_ok and asks_ok and filled and no_zero

    # --- reads ---
    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    @property
    def bid_levels(self) -> int:
        return len(self._bids)

    @property
    def ask_levels(self) -> int:
        return len(self._asks)

    def best_bid(self) -> Level | None:
        keys = self._bid_keys
        if not keys:
            return None
        price = keys[-1]
        return price, self._bids[price]

    def best_ask(self) -> Level | None:
        keys = self._ask_keys
        if not keys:
            return None
        price = -keys[-1]
        return price, self._asks[price]

    def top(self) -> tuple[int, int, int, int] | None:
        """(bid, bid_qty, ask, ask_qty) or None when a side is empty: one call for the hot path."""
        bk, ak = self._bid_keys, self._ask_keys
        if not bk or not ak:
            return None
        bid, ask = bk[-1], -ak[-1]
        return bid, self._bids[bid], ask, self._asks[ask]

    def is_crossed(self) -> bool:
        bk, ak = self._bid_keys, self._ask_keys
        return bool(bk and ak and bk[-1] >= -ak[-1])

    def top_bids(self, n: int) -> list[Level]:
        book = self._bids
        if n <= 0:
            return []
        if n > len(self._bid_keys) and len(book) > len(self._bid_keys):  # beyond the band: sort all
            return [(p, book[p]) for p in sorted(book, reverse=True)[:n]]
        return [(p, book[p]) for p in reversed(self._bid_keys[-n:])]

    def top_asks(self, n: int) -> list[Level]:
        book = self._asks
        if n <= 0:
            return []
        if n > len(self._ask_keys) and len(book) > len(self._ask_keys):
            return [(p, book[p]) for p in sorted(book)[:n]]
        return [(-k, book[-k]) for k in reversed(self._ask_keys[-n:])]

    def bids(self) -> list[Level]:
        """Every bid level, best first (for checks and tests, not the hot path)."""
        return self.top_bids(len(self._bids))

    def asks(self) -> list[Level]:
        return self.top_asks(len(self._asks))

    def bid_qty(self, price: int) -> int:
        return self._bids.get(price, 0)

    def ask_qty(self, price: int) -> int:
        return self._asks.get(price, 0)

    def mid2(self) -> int | None:
        """Best bid + best ask in ticks: twice the mid, exact."""
        bk, ak = self._bid_keys, self._ask_keys
        return bk[-1] - ak[-1] if bk and ak else None

    def spread(self) -> int | None:
        bk, ak = self._bid_keys, self._ask_keys
        return -ak[-1] - bk[-1] if bk and ak else None

    def imbalance(self, n: int) -> float | None:
        """(bid volume - ask volume) / (sum) over the top n levels of each side; None if both empty."""
        key = ("imbalance", n)
        cache = self._cache
        if key in cache:
            return cache[key]
        if n <= 0:
            bid_vol = ask_vol = 0
        elif n <= _BAND_MIN:  # C-level loops: this runs on most depth events
            bid_vol = sum(map(self._bids.__getitem__, self._bid_keys[-n:]))
            ask_vol = sum(map(self._asks.__getitem__, map(neg, self._ask_keys[-n:])))
        else:
            bid_vol = sum(q for _, q in self.top_bids(n))
            ask_vol = sum(q for _, q in self.top_asks(n))
        total = bid_vol + ask_vol
        value = (bid_vol - ask_vol) / total if total else None
        if n <= self.depth:  # deeper values are not covered by the invalidation rule
            cache[key] = value
        return value

    def microprice(self) -> float | None:
        """Size-weighted mid in ticks: (bid × ask_qty + ask × bid_qty) / (bid_qty + ask_qty)."""
        key = ("microprice", 1)
        cache = self._cache
        if key in cache:
            return cache[key]
        top = self.top()
        value = None
        if top is not None:
            bid, bid_qty, ask, ask_qty = top
            value = (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
        cache[key] = value
        return value


class SyncState(StrEnum):
    SYNCING = "syncing"
    LIVE = "live"


class DiffResult(StrEnum):
    APPLIED = "applied"  # the book changed (and is LIVE)
    BUFFERED = "buffered"  # SYNCING: kept for the snapshot to bridge
    IGNORED_OLD = "ignored_old"  # already covered (duplicate, late frame, or older than the snapshot)
    GAP = "gap"  # a missed update: the symbol is SYNCING again and wants a snapshot
    CROSSED = "crossed"  # applied, but the book crossed: the symbol is SYNCING again


class SnapshotResult(StrEnum):
    SYNCED = "synced"  # bridged to the buffered diffs: LIVE
    PENDING = "pending"  # loaded, but no buffered diff reaches it yet: the next diff must bridge it
    STALE = "stale"  # older than the first buffered diff (or the buffer had a gap): refetch
    INVALID = "invalid"  # the snapshot itself is crossed: refetch
    UNNEEDED = "unneeded"  # already LIVE: ignored


class SymbolBook:
    """An `OrderBook` plus Binance's sync procedure (see the module docstring)."""

    def __init__(
        self, instrument: Instrument, max_buffer: int = DEFAULT_MAX_BUFFER, depth: int = DEFAULT_DEPTH
    ) -> None:
        if max_buffer < 1:
            raise ValueError("max_buffer must be >= 1")
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.market = instrument.market
        self._spot = instrument.market is Market.SPOT
        self.book = OrderBook(instrument, depth)
        self.state = SyncState.SYNCING
        self._buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self._requested = False
        self._pending = False  # a snapshot is loaded and waits for its bridging diff
        # counters
        self.diffs = 0
        self.applied = 0
        self.gaps = 0
        self.resyncs = 0
        self.ignored_old = 0
        self.dropped_before_sync = 0
        self.crossed = 0
        self.snapshots = 0
        self.syncs = 0
        self.stale_snapshots = 0
        self.invalid_snapshots = 0
        self.unneeded_snapshots = 0
        self.buffer_overflows = 0
        self.resync_reasons: dict[str, int] = {}

    # --- requests ---
    @property
    def wants_snapshot(self) -> bool:
        return (
            self.state is SyncState.SYNCING
            and not self._pending
            and not self._requested
            and bool(self._buffer)
        )

    @property
    def snapshot_in_flight(self) -> bool:
        return self._requested

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def snapshot_requested(self) -> None:
        """The source sent a REST request; no second one until it answers or fails."""
        self._requested = True

    def snapshot_failed(self) -> None:
        """The request failed (HTTP error, timeout): a new one may be sent (the caller paces it)."""
        self._requested = False

    # --- events ---
    def on_diff(self, diff: DepthDiff) -> DiffResult:
        self.diffs += 1
        if self.state is SyncState.LIVE:
            return self._apply_live(diff)
        if self._pending:
            return self._bridge(diff)
        self._push(diff)
        return DiffResult.BUFFERED

    def on_snapshot(self, snap: DepthSnapshot) -> SnapshotResult:
        self._requested = False
        self.snapshots += 1
        if self.state is SyncState.LIVE:
            self.unneeded_snapshots += 1
            return SnapshotResult.UNNEEDED
        last = snap.last_update_id
        buffer = self._buffer
        if buffer:
            first = buffer[0]
            if self._spot:
                stale = last + 1 < first.first_id
            else:
                pu = first.prev_final_id
                stale = last < first.first_id and (pu is None or last < pu)
            if stale:
                self.stale_snapshots += 1
                self._pending = False
                return SnapshotResult.STALE
        self.book.load(snap.bids, snap.asks, last)
        if self.book.is_crossed():
            self.invalid_snapshots += 1
            self.book.clear()
            self._pending = False
            return SnapshotResult.INVALID
        self._pending = True
        buffered = list(buffer)
        buffer.clear()
        for diff in buffered:
            if self.state is SyncState.LIVE:
                self._apply_live(diff)
            elif self._pending:
                self._bridge(diff)
            else:  # a gap or crossing inside the buffer: keep the rest for the next snapshot
                self._push(diff)
        if self.state is SyncState.LIVE:
            return SnapshotResult.SYNCED
        if self._pending:
            return SnapshotResult.PENDING
        return SnapshotResult.STALE

    def resync(self, reason: str) -> None:
        """Back to SYNCING: drop the book and the buffer (reconnect, crossed book, gap, bad data)."""
        self.resyncs += 1
        self.resync_reasons[reason] = self.resync_reasons.get(reason, 0) + 1
        self.state = SyncState.SYNCING
        self._pending = False
        self._buffer.clear()
        self.book.clear()

    # --- internals ---
    def _push(self, diff: DepthDiff) -> None:
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.buffer_overflows += 1
        buffer.append(diff)

    def _bridge(self, diff: DepthDiff) -> DiffResult:
        last = self.book.last_update_id
        if self._spot:
            if diff.final_id <= last:
                self.dropped_before_sync += 1
                return DiffResult.IGNORED_OLD
            bridges = diff.first_id <= last + 1
        else:
            if diff.final_id < last:
                self.dropped_before_sync += 1
                return DiffResult.IGNORED_OLD
            # Binance: U <= lastUpdateId. Also pu <= lastUpdateId < U: ids are venue-wide, so a snapshot
            # id can fall between two of this symbol's events; nothing changed between pu and U, so the
            # snapshot equals the book as of pu and this event continues it (no needless refetch).
            pu = diff.prev_final_id
            bridges = diff.first_id <= last or (pu is not None and pu <= last)
        if not bridges:  # the held snapshot is older than this diff: it can never be bridged
            self.stale_snapshots += 1
            self._pending = False
            self.book.clear()
            self._push(diff)
            return DiffResult.BUFFERED
        self._pending = False
        self.state = SyncState.LIVE
        self.syncs += 1
        return self._commit(diff)

    def _apply_live(self, diff: DepthDiff) -> DiffResult:
        last = self.book.last_update_id
        if diff.final_id <= last:
            self.ignored_old += 1
            return DiffResult.IGNORED_OLD
        prev = diff.prev_final_id
        if (diff.first_id > last + 1) if (self._spot or prev is None) else (prev != last):
            self.gaps += 1
            self.resync("gap")
            self._push(diff)
            return DiffResult.GAP
        return self._commit(diff)

    def _commit(self, diff: DepthDiff) -> DiffResult:
        book = self.book
        touched = book.apply(diff.bids, diff.asks)
        book.last_update_id = diff.final_id
        self.applied += 1
        if touched and book.is_crossed():
            self.crossed += 1
            self.resync("crossed")
            return DiffResult.CROSSED
        return DiffResult.APPLIED

    def counters(self) -> dict[str, int]:
        return {
            "diffs": self.diffs,
            "applied": self.applied,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "ignored_old": self.ignored_old,
            "dropped_before_sync": self.dropped_before_sync,
            "crossed": self.crossed,
            "snapshots": self.snapshots,
            "syncs": self.syncs,
            "stale_snapshots": self.stale_snapshots,
            "invalid_snapshots": self.invalid_snapshots,
            "unneeded_snapshots": self.unneeded_snapshots,
            "buffer_overflows": self.buffer_overflows,
        }
