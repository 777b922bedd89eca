"""The live market-data source: Binance streams + REST snapshots -> one bounded queue of events.

Design and invariants:
- One `StreamClient` per combined-stream connection (spot: one; USD-M: `/public` depth + `/market`
  trades). Frames are stamped `recv_ns = time.time_ns()` at receipt, parsed at once (the shell may read
  the clock; the Engine never does) and put on ONE bounded `asyncio.Queue`. When the consumer falls
  behind, `put` waits: back-pressure reaches the sockets instead of memory growing without bound.
- The consumer iterates the source (`async for event in source`). Before handing out each event the
  source asks `engine.snapshots_wanted()` (so it runs right after the previous event was applied) and
  starts one REST fetch per symbol named; the snapshot returns through the same queue, so the Engine
  sees snapshot and diffs in arrival order. Fetches retry until they succeed (the REST client honours
  weight, 429 and 418); at most `max_concurrent_snapshots` run at once, and repeated requests for one
  symbol are paced with a growing jittered delay (`_pace`), so a stale-snapshot loop is no storm.
- A malformed frame (bad JSON, unknown stream, off-grid price) is counted and logged in one line, and
  dropped. Nothing in a frame can stop the source. A dropped DEPTH frame that names one of our symbols
  also puts `FeedStatus(MALFORMED)` for it: the Engine resyncs that book at once instead of leaving it
  LIVE without the diff until the next one reveals the gap (`malformed_depth_resyncs`).
- What the books refuse without an output (a snapshot that does not cover the buffered diffs, a crossed
  snapshot, a SYNCING buffer overflow) arrives as the Engine's `BookNotice`s; the consumer side logs
  each in one warning line (rate-limited like malformed frames) and `stats()` carries the counters
  (`stale_snapshots`, `invalid_snapshots`, `buffer_overflows`).
- A dropped connection (or one the per-stream watchdog closed) emits `FeedStatus(DISCONNECTED)` for
  every symbol it carried, so the Engine resyncs exactly those books; the book's own sequence check
  catches whatever else was lost.
- Rotation (see `stream.py`): while two lanes of a connection overlap, a per-(symbol, kind) `_Gate`
  passes the old lane's events until the new lane's sequence joins on (spot depth `U <= last+1`, USD-M
  `pu == last`, trade id `<= last+1`), then only the new lane's; duplicates are dropped by id. When
  every symbol has joined, the client closes the old lane: no gap, nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from worker.binance.endpoints import ConnectionSpec, Endpoints, connection_specs
from worker.binance.parse import FrameParser, ParseError
from worker.binance.rest import BinanceRest, RestError
from worker.binance.stream import Lane, LaneEvent, StreamClient, stream_kind
from worker.events import BookTicker, DepthDiff, Event, FeedState, FeedStatus, Market, Trade
from worker.instruments import Instrument

log = logging.getLogger(__name__)

MAX_HELD = 2000  # new-lane events held while the old lane catches up; past this, switch and let books check


class SourceFailed(RuntimeError):
    """A stream can never work as configured (e.g. the venue refused the URL): the worker must stop."""


_FAILED: Any = object()  # queue sentinel: the consumer raises `failure`


class EngineLike(Protocol):
    def snapshots_wanted(self) -> list[tuple[Market, str]]: ...


class Recorder(Protocol):
    """What `record.py` plugs in to keep raw frames and snapshot bodies."""

    def frame(self, text: str | bytes, recv_ns: int) -> None: ...
    def snapshot(self, symbol: str, market: Market, body: bytes, recv_ns: int) -> None: ...


@dataclass(slots=True)
class SourceCounters:
    frames: int = 0
    events: int = 0
    malformed: int = 0
    malformed_snapshots: int = 0
    snapshot_requests: int = 0
    snapshot_failures: int = 0
    snapshot_paced: int = 0
    disconnects: int = 0
    rotation_duplicates: int = 0
    rotation_held: int = 0
    queue_full: int = 0
    malformed_depth_resyncs: int = 0
    book_notices: int = 0
    malformed_by_reason: dict[str, int] = field(default_factory=dict)


def _sequence(event: Event) -> tuple[str, int] | None:
    if isinstance(event, DepthDiff):
        return "depth", event.final_id
    if isinstance(event, Trade):
        return "trade", event.trade_id
    if isinstance(event, BookTicker):
        return "bookTicker", event.update_id
    return None


class _Gate:
    """Which lane one (symbol, kind) sequence follows, and the handover between lanes (see module doc)."""

    __slots__ = ("gen", "held", "held_gen", "kind", "last")

    def __init__(self, kind: str, gen: int) -> None:
        self.kind = kind
        self.gen = gen
        self.last: int | None = None
        self.held: list[Event] = []
        self.held_gen = gen

    @staticmethod
    def _joins(event: Event, last: int) -> bool:
        if isinstance(event, DepthDiff):
            if event.prev_final_id is not None:  # USD-M: the pu chain
                return event.prev_final_id == last
            return event.first_id <= last + 1
        if isinstance(event, Trade):
            return event.trade_id <= last + 1
        return True  # bookTicker carries no chain: the newest is simply the truth

    def admit(self, event: Event, seq: int, gen: int, primary_gen: int) -> list[Event]:
        """Events to pass on, in order (empty: dropped or held)."""
        if gen == self.gen:
            self.last = seq if self.last is None else max(self.last, seq)
            return [event]
        if gen < self.gen:
            return []  # an old lane after the switch
        if gen <= primary_gen or self.last is None:  # the old lane is gone, or never carried this
            return self._switch(gen, [event])
        if seq < self.last:
            return []  # the new lane repeats what the old one already gave
        if seq == self.last:  # both lanes stand at the same event: follow the new one from here
            self._switch(gen, [])
            return []
        if not self.held and self._joins(event, self.last):
            return self._switch(gen, [event])
        self.held.append(event)
        self.held_gen = gen
        if len(self.held) > MAX_HELD:
            return self._switch(gen, [])
        return []

    def catch_up(self) -> list[Event]:
        """After the old lane advanced `last`: release the held new-lane events once they join on."""
        if not self.held or self.last is None:
            return []
        last = self.last
        self.held = [e for e in self.held if _seq_of(e) > last]
        if self.held and self._joins(self.held[0], last):
            return self._switch(self.held_gen, [])
        return []

    def _switch(self, gen: int, events: list[Event]) -> list[Event]:
        pending, self.held, self.gen = [*self.held, *events], [], gen
        keep = []
        for e in pending:
            seq = _seq_of(e)
            if self.last is None or seq > self.last:
                keep.append(e)
                self.last = seq
        return keep


def _seq_of(event: Event) -> int:
    seq = _sequence(event)
    return -1 if seq is None else seq[1]


class LiveSource:
    """Binance streams and snapshots for `symbols` on `market`, as one async iterator of events."""

    def __init__(
        self,
        engine: EngineLike,
        market: Market,
        symbols: Iterable[str],
        *,
        endpoints: Endpoints | None = None,
        instruments: Mapping[tuple[Market, str], Instrument] | None = None,
        parser: FrameParser | None = None,
        rest: BinanceRest | None = None,
        book_ticker: bool = False,
        queue_size: int = 10_000,
        max_concurrent_snapshots: int = 2,
        snapshot_retry_cap: float = 30.0,
        snapshot_pace_base: float = 0.25,
        snapshot_pace_reset_s: float = 60.0,
        stream_options: Mapping[str, Any] | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.engine = engine
        self.market = Market(market)
        self.symbols = sorted({s.upper() for s in symbols})
        self._symbol_set = frozenset(self.symbols)
        self.endpoints = endpoints or Endpoints()
        self._instruments = instruments
        self.parser = parser
        self.rest = rest
        self._own_rest = rest is None
        self.book_ticker = book_ticker
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=queue_size)
        self._snapshot_slots = asyncio.Semaphore(max_concurrent_snapshots)
        self.snapshot_retry_cap = snapshot_retry_cap
        self.snapshot_pace_base = snapshot_pace_base
        self.snapshot_pace_reset_s = snapshot_pace_reset_s
        self._episodes: dict[tuple[Market, str], tuple[int, float]] = {}
        self.stream_options = dict(stream_options or {})
        self.recorder = recorder
        self.counters = SourceCounters()
        self.specs: list[ConnectionSpec] = connection_specs(
            self.endpoints, self.market, self.symbols, book_ticker=book_ticker
        )
        self.clients: dict[str, StreamClient] = {}
        self._gates: dict[tuple[str, str, str], _Gate] = {}
        self._fetching: set[tuple[Market, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._malformed_logged = 0
        self._notices_logged = 0
        self._engine_notices = getattr(engine, "notices", None)  # the Engine's BookNotice queue
        self.failure: SourceFailed | None = None

    # --- lifecycle ---
    async def start(self) -> None:
        if self.rest is None:
            self.rest = BinanceRest(self.market, self.endpoints)
        if self.parser is None:
            instruments = self._instruments or await self.rest.instruments(self.symbols)
            self.parser = FrameParser(instruments)
        for spec in self.specs:
            client = StreamClient(spec, self._on_frame, self._on_state, **self.stream_options)
            self.clients[spec.name] = client
            self._spawn(client.run(), f"stream {spec.name}")

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._own_rest and self.rest is not None:
            await self.rest.aclose()

    async def __aenter__(self) -> LiveSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("source task %s failed: %r", task.get_name(), exc)
        if self.failure is None:
            self.failure = SourceFailed(f"{task.get_name()}: {exc}")
            self.failure.__cause__ = exc
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(_FAILED)  # wake the consumer; a full queue wakes it anyway

    # --- the consumer side ---
    def __aiter__(self) -> LiveSource:
        return self

    async def __anext__(self) -> Event:
        if self.failure is not None:
            raise self.failure
        if self._engine_notices:
            self._log_notices()
        self.request_snapshots()
        event = await self.queue.get()
        if event is _FAILED:
            raise self.failure  # type: ignore[misc]
        return event

    def _log_notices(self) -> None:
        """One warning line per `BookNotice` the Engine queued; a flood is summarised (like `_malformed`)."""
        notices = self._engine_notices
        while notices:
            notice = notices.popleft()
            self.counters.book_notices += 1
            if self._notices_logged < 100 or self.counters.book_notices % 1000 == 0:
                self._notices_logged += 1
                log.warning(
                    "%s %s %s (#%d): %s",
                    notice.market,
                    notice.symbol,
                    notice.kind,
                    self.counters.book_notices,
                    notice.detail,
                )

    def request_snapshots(self) -> None:
        """Start a REST fetch for every symbol the Engine says needs a snapshot now."""
        for market, symbol in self.engine.snapshots_wanted():
            key = (Market(market), symbol.upper())
            if key[0] is not self.market:
                # The Engine marked it requested; silently skipping would leave that book SYNCING forever.
                raise SourceFailed(
                    f"the engine wants a {key[0]} snapshot of {key[1]}; this source serves {self.market}: "
                    "one LiveSource per market needs its own Engine (or a source that serves both)"
                )
            if key in self._fetching:
                continue
            self._fetching.add(key)
            self._spawn(self._fetch_snapshot(*key), f"snapshot {key[0]} {key[1]}")

    def _pace(self, key: tuple[Market, str]) -> float:
        """Seconds to wait before the next snapshot request of `key`.

        Requests of one symbol in quick succession (a refetch after STALE, a retry after an error, a
        gap soon after a sync) form an episode; each waits "equal jitter" in [b/2, b] with
        b = min(cap, base·2^(n-1)), measured from the previous request. An episode ends after
        `snapshot_pace_reset_s` without a request. This bounds a snapshot storm per symbol, so one bad
        symbol cannot spend the weight every other symbol needs.
        """
        count, last = self._episodes.get(key, (0, float("-inf")))
        since = time.monotonic() - last
        if since > self.snapshot_pace_reset_s or count == 0:
            self._episodes[key] = (0, last)
            return 0.0
        bound = min(self.snapshot_retry_cap, self.snapshot_pace_base * 2 ** (count - 1))
        return max(0.0, random.uniform(bound / 2, bound) - since)

    async def _fetch_snapshot(self, market: Market, symbol: str) -> None:
        assert self.rest is not None and self.parser is not None
        key = (market, symbol)
        try:
            while True:
                delay = self._pace(key)
                if delay > 0:
                    self.counters.snapshot_paced += 1
                    await asyncio.sleep(delay)
                async with self._snapshot_slots:
                    count, _ = self._episodes.get(key, (0, 0.0))
                    self._episodes[key] = (count + 1, time.monotonic())
                    self.counters.snapshot_requests += 1
                    try:
                        body, recv_ns = await self.rest.depth(symbol)
                        snapshot = self.parser.parse_snapshot(body, symbol, market, recv_ns)
                    except RestError as exc:
                        self.counters.snapshot_failures += 1
                        log.warning("%s %s snapshot failed: %s", market, symbol, exc)
                    except ParseError as exc:
                        self.counters.malformed_snapshots += 1
                        log.warning("%s %s snapshot unreadable: %s", market, symbol, exc)
                    else:
                        if self.recorder is not None:
                            self.recorder.snapshot(symbol, market, body, recv_ns)
                        await self._put(snapshot)
                        return
        finally:
            # Cleared before the Engine can see the snapshot: `put` hands it over without yielding
            # afterwards, so a STALE result always finds this symbol free to be fetched again.
            self._fetching.discard(key)

    async def _put(self, event: Event) -> None:
        if self.queue.full():
            self.counters.queue_full += 1
        await self.queue.put(event)
        self.counters.events += 1

    # --- the stream side ---
    async def _on_frame(self, text: str | bytes, recv_ns: int, lane: Lane) -> None:
        self.counters.frames += 1
        if self.recorder is not None:
            self.recorder.frame(text, recv_ns)
        assert self.parser is not None
        try:
            event = self.parser.parse_frame(text, recv_ns, lane.spec.market)
        except ParseError as exc:
            self._malformed(lane, text, exc)
            symbol = exc.symbol.upper() if exc.event == "depthUpdate" and exc.symbol else None
            if symbol in self._symbol_set:
                self.counters.malformed_depth_resyncs += 1
                market = exc.market or lane.spec.market
                reason = f"dropped a malformed depth frame: {exc.reason[:100]}"
                await self._put(FeedStatus(symbol, market, FeedState.MALFORMED, reason, recv_ns))  # type: ignore[arg-type]
            return
        if event is None:
            return
        seq = _sequence(event)
        if seq is None:
            await self._put(event)
            return
        client = lane.client
        key = (lane.spec.name, event.symbol, seq[0])
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(seq[0], lane.gen)
        before = gate.gen
        out = gate.admit(event, seq[1], lane.gen, client.primary_gen)
        if not out and lane.gen != before:
            if gate.held and gate.held[-1] is event:
                self.counters.rotation_held += 1
            else:
                self.counters.rotation_duplicates += 1
        if lane.gen == gate.gen and gate.held:
            out += gate.catch_up()
        for e in out:
            await self._put(e)
        if gate.gen != before and client.rotating:
            self._check_handoff(client, gate.gen)

    def _check_handoff(self, client: StreamClient, gen: int) -> None:
        kinds = {stream_kind(s) for s in client.spec.streams}
        kind = "depth" if "depth" in kinds else "trade" if "trade" in kinds else next(iter(kinds))
        for symbol in client.spec.symbols:
            gate = self._gates.get((client.spec.name, symbol, kind))
            if gate is None or gate.gen < gen:
                return
        log.info(
            "%s: every %s sequence continues on lane %d; closing the old lane", client.spec.name, kind, gen
        )
        client.handoff_complete(gen)

    def _malformed(self, lane: Lane, text: str | bytes, exc: ParseError) -> None:
        self.counters.malformed += 1
        reason = exc.reason.split(":")[0][:60]
        by = self.counters.malformed_by_reason
        by[reason] = by.get(reason, 0) + 1
        # One line per bad frame, but a flood is summarised rather than filling the disk.
        if self._malformed_logged < 100 or self.counters.malformed % 1000 == 0:
            self._malformed_logged += 1
            snippet = text[:120] if isinstance(text, str) else text[:120].decode("utf-8", "replace")
            log.warning(
                "%s#%d dropped malformed frame #%d (%s): %r",
                lane.spec.name,
                lane.gen,
                self.counters.malformed,
                exc,
                snippet,
            )

    async def _on_state(self, lane: Lane, event: LaneEvent, detail: str) -> None:
        client = lane.client
        if lane.gen != client.primary_gen:
            return  # a rotation lane: the books still follow the old one
        if not any("@depth" in s for s in lane.spec.streams):
            return  # a trades-only connection (USD-M /market): no book depends on its continuity
        now = time.time_ns()
        if event is LaneEvent.CLOSED:
            self.counters.disconnects += 1
            for symbol in lane.spec.symbols:
                await self._put(FeedStatus(symbol, lane.spec.market, FeedState.DISCONNECTED, detail, now))
        # LaneEvent.STALE needs nothing here: the lane closes the connection, and CLOSED resyncs.
        elif event is LaneEvent.OPENED and lane.connects > 1:
            for symbol in lane.spec.symbols:
                await self._put(FeedStatus(symbol, lane.spec.market, FeedState.CONNECTED, detail, now))

    # --- numbers for health, logs and tests ---
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self.counters)
        out["reconnects"] = sum(c.counters.reconnects for c in self.clients.values())
        out["drops"] = sum(c.counters.drops for c in self.clients.values())
        out["stale"] = sum(c.counters.stale for c in self.clients.values())
        out["rotations"] = sum(c.counters.rotations for c in self.clients.values())
        out["handoff_timeouts"] = sum(c.counters.handoff_timeouts for c in self.clients.values())
        if self.rest is not None:
            rc = self.rest.counters
            out.update(
                http_429=rc.http_429,
                http_418=rc.http_418,
                http_5xx=rc.http_5xx,
                rest_timeouts=rc.timeouts,
                rest_requests=rc.requests,
                weight_waits=self.rest.budget.waits,
            )
        symbol_books = getattr(self.engine, "symbol_books", None)
        if symbol_books is not None:
            books = symbol_books()
            for name in ("gaps", "resyncs", "stale_snapshots", "invalid_snapshots", "buffer_overflows"):
                out[name] = sum(getattr(b, name) for b in books)
        out["queue_depth"] = self.queue.qsize()
        return out
