"""Binance combined-stream WebSocket connections: reconnect, watch every stream, rotate before 24 h.

Design and invariants:
- A `StreamClient` owns one `ConnectionSpec` (one combined-stream URL). It runs one or, while rotating,
  two `Lane`s. A lane is one generation of the connection: websockets' reconnecting iterator
  (`async for ws in connect(...)`), which retries failed connects with our capped exponential backoff
  with full jitter (`reconnect_delays=`). A connection that opened and then dropped also waits a
  full-jitter delay (reset after `stable_s` of uptime), so a server that accepts and drops at once is
  not hammered.
- Connect failures are retried (`process_connect_error`) except a refused handshake whose status
  says the URL or a stream name is wrong (400, 404, ...): that raises out of `StreamClient.run`, and
  the source hands it to its consumer, so a misconfigured worker stops loudly instead of idling.
- Pings: websockets answers the server's pings with pongs by itself (Binance pings every 20 s on spot,
  3 min on USD-M, and drops a client that does not pong); our own keepalive pings (`ping_interval`)
  detect a dead TCP path.
- Watchdog per STREAM, not per connection: each stream name has its own last-frame time; a depth stream
  silent for `watchdog_s[kind]` while trades still flow is stale. The lane reports it and reconnects.
- Rotation: Binance cuts a connection at 24 h. At `rotate_after_s` of uptime the client opens lane
  n+1 beside lane n; both deliver frames (tagged with their lane) until the consumer calls
  `handoff_complete(n+1)` (the source does so once every book's sequence continues on the new lane),
  or `handoff_timeout_s` passes; only then is lane n closed. Nothing is lost in between.
- A `serverShutdown` event (spot announces a server going down) starts a rotation at once.
- Frames are handed over raw with `recv_ns = time.time_ns()` taken at receipt; parsing is the consumer's.
  Nothing a frame contains can raise out of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from enum import StrEnum

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from worker.binance.endpoints import ConnectionSpec

log = logging.getLogger(__name__)

# Seconds of silence per stream kind before the connection is replaced. Depth diffs come every 100 ms
# while anything changes; trades on a quiet symbol can pause for minutes (raise these for illiquid ones);
# the USD-M mark price is pushed every second whatever the market does.
DEFAULT_WATCHDOG_S = {"depth": 15.0, "trade": 300.0, "bookTicker": 60.0, "markPrice": 30.0}
ROTATE_AFTER_S = 23 * 3600.0  # Binance disconnects at 24 h; rotate with an hour to spare


def full_jitter_delays(base: float, cap: float) -> Callable[[], Generator[float]]:
    """A `reconnect_delays` factory for websockets: uniform in [0, min(cap, base·2^n)]."""

    def delays() -> Generator[float]:
        attempt = 0
        while True:
            yield random.uniform(0.0, min(cap, base * (2**attempt)))
            attempt += 1

    return delays


def stream_kind(stream: str) -> str:
    """`btcusdt@depth@100ms` -> `depth`; `btcusdt@trade` -> `trade`."""
    parts = stream.split("@")
    return parts[1] if len(parts) > 1 else stream


def envelope_stream(text: str | bytes) -> str | None:
    """The `stream` name of a combined-stream envelope without parsing the whole frame (it leads)."""
    if isinstance(text, bytes):
        start = text.find(b'"stream":"')
        if start < 0:
            return None
        end = text.find(b'"', start + 10)
        return text[start + 10 : end].decode("ascii", "replace") if end > 0 else None
    start = text.find('"stream":"')
    if start < 0:
        return None
    end = text.find('"', start + 10)
    return text[start + 10 : end] if end > 0 else None


FATAL_HANDSHAKE_STATUSES = frozenset({400, 401, 403, 404, 405, 410, 414})


def process_connect_error(exc: Exception) -> Exception | None:
    """websockets' retry policy, widened: everything is retried (with our backoff) except a handshake
    refused with a status that says the URL or the stream names are wrong; retrying those cannot help,
    so the error surfaces and the worker stops with a clear message. 429/418 on the handshake (too
    many connections) are retried, and the capped backoff keeps us from pressing on."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code in FATAL_HANDSHAKE_STATUSES:
        return exc
    return None


def _is_server_shutdown(message: str | bytes) -> bool:
    return (b'"serverShutdown"' if isinstance(message, bytes) else '"serverShutdown"') in message


class LaneEvent(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"
    STALE = "stale"


FrameSink = Callable[[str | bytes, int, "Lane"], Awaitable[None]]
StateSink = Callable[["Lane", LaneEvent, str], Awaitable[None]]


@dataclass(slots=True)
class StreamCounters:
    connects: int = 0
    reconnects: int = 0
    drops: int = 0
    stale: int = 0
    rotations: int = 0
    handoff_timeouts: int = 0
    server_shutdowns: int = 0
    handler_errors: int = 0
    frames: int = 0
    stale_by_stream: dict[str, int] = field(default_factory=dict)


class Lane:
    """One generation of a connection: reconnecting loop + per-stream watchdog."""

    def __init__(self, client: StreamClient, gen: int) -> None:
        self.client = client
        self.gen = gen
        self.spec = client.spec
        self.ws: ClientConnection | None = None
        self.connected_at: float | None = None  # monotonic
        self.connects = 0
        self.last_frame: dict[str, float] = {}
        self.retiring = False
        self.stale_reason = ""
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Lane {self.spec.name}#{self.gen}>"

    @property
    def connected(self) -> bool:
        return self.ws is not None

    async def run(self) -> None:
        c = self.client
        drop_delays = c.delays()
        async for ws in connect(
            self.spec.url,
            reconnect_delays=c.delays,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            open_timeout=c.open_timeout,
            close_timeout=c.close_timeout,
            max_size=c.max_size,
            max_queue=c.max_queue,
            compression=None,  # Binance does not compress; skipping deflate saves CPU
            proxy=None,
            process_exception=process_connect_error,
        ):
            if self.retiring:
                await ws.close()
                return
            opened = time.monotonic()
            self.ws, self.connected_at = ws, opened
            self.last_frame = dict.fromkeys(self.spec.streams, opened)
            self.connects += 1
            c.counters.connects += 1
            if self.connects > 1:
                c.counters.reconnects += 1
            log.info("%s#%d connected (%d streams)", self.spec.name, self.gen, len(self.spec.streams))
            await c.on_state(self, LaneEvent.OPENED, "connected")
            watchdog = asyncio.create_task(self._watchdog(ws), name=f"watchdog {self.spec.name}#{self.gen}")
            reason = "closed"
            self.stale_reason = ""
            try:
                async for message in ws:
                    recv_ns = time.time_ns()
                    c.counters.frames += 1
                    if len(message) < 256 and _is_server_shutdown(message):
                        # Binance announces a server going down: move to a new connection before it
                        # does, exactly as for the 24 h cut-off (open, hand over, close).
                        log.warning("%s#%d: serverShutdown announced; rotating", self.spec.name, self.gen)
                        c.counters.server_shutdowns += 1
                        c.rotate_now()
                        continue
                    stream = envelope_stream(message)
                    if stream is not None:
                        self.last_frame[stream] = time.monotonic()
                    try:
                        await c.on_frame(message, recv_ns, self)
                    except Exception:  # a bug downstream must not cost us the connection
                        c.counters.handler_errors += 1
                        if c.counters.handler_errors <= 10 or c.counters.handler_errors % 1000 == 0:
                            log.exception("%s#%d frame handler failed", self.spec.name, self.gen)
                rcvd = ws.close_code
                reason = f"closed by {'us' if self.retiring else 'server'} (code {rcvd})"
            except ConnectionClosed as exc:
                reason = f"connection lost: {exc}"
            finally:
                reason = self.stale_reason or reason
                watchdog.cancel()
                self.ws = None
            if self.retiring:
                return
            c.counters.drops += 1
            log.warning("%s#%d %s; reconnecting", self.spec.name, self.gen, reason)
            await c.on_state(self, LaneEvent.CLOSED, reason)
            if time.monotonic() - opened >= c.stable_s:
                drop_delays = c.delays()
            await asyncio.sleep(next(drop_delays))

    async def _watchdog(self, ws: ClientConnection) -> None:
        c = self.client
        limits = {s: c.watchdog_s.get(stream_kind(s)) for s in self.spec.streams}
        limits = {s: v for s, v in limits.items() if v}
        if not limits:
            return
        tick = max(0.01, min(limits.values()) / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            silent = [s for s, limit in limits.items() if now - self.last_frame.get(s, now) > limit]
            if silent:
                for s in silent:
                    c.counters.stale += 1
                    c.counters.stale_by_stream[s] = c.counters.stale_by_stream.get(s, 0) + 1
                    log.warning("%s#%d stream %s silent for %.1f s", self.spec.name, self.gen, s, limits[s])
                    await c.on_state(self, LaneEvent.STALE, s)
                self.stale_reason = f"reconnect: {', '.join(silent)} silent"
                await ws.close(code=1000, reason="stale stream")  # the run loop reconnects
                return

    async def retire(self) -> None:
        self.retiring = True
        if self.ws is not None:
            await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def _ignore_state(lane: Lane, event: LaneEvent, detail: str) -> None:
    return None


class StreamClient:
    """One combined-stream connection, kept alive, watched per stream and rotated before 24 h."""

    def __init__(
        self,
        spec: ConnectionSpec,
        on_frame: FrameSink,
        on_state: StateSink = _ignore_state,
        *,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        stable_s: float = 30.0,
        watchdog_s: dict[str, float] | None = None,
        rotate_after_s: float = ROTATE_AFTER_S,
        handoff_timeout_s: float = 30.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_size: int = 2**22,
        max_queue: int = 64,
    ) -> None:
        self.spec = spec
        self.on_frame = on_frame
        self.on_state = on_state
        self.delays = full_jitter_delays(backoff_base, backoff_cap)
        self.stable_s = stable_s
        self.watchdog_s = DEFAULT_WATCHDOG_S | (watchdog_s or {})
        self.rotate_after_s = rotate_after_s
        self.handoff_timeout_s = handoff_timeout_s
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.counters = StreamCounters()
        self.lanes: dict[int, Lane] = {}
        self.primary_gen = 0
        self._handoff = asyncio.Event()
        self._handoff_gen = 0
        self._rotate_due = asyncio.Event()

    @property
    def primary(self) -> Lane:
        return self.lanes[self.primary_gen]

    @property
    def rotating(self) -> bool:
        return len(self.lanes) > 1

    def _start_lane(self) -> Lane:
        gen = max(self.lanes, default=0) + 1
        lane = Lane(self, gen)
        lane.task = asyncio.create_task(lane.run(), name=f"ws {self.spec.name}#{gen}")
        self.lanes[gen] = lane
        return lane

    def handoff_complete(self, gen: int) -> None:
        """Called by the consumer: every sequence it tracks continues on lane `gen`; retire the old."""
        if gen == self._handoff_gen:
            self._handoff.set()

    def rotate_now(self) -> None:
        """Start a rotation at once (operator action, and tests)."""
        self._rotate_due.set()

    async def run(self) -> None:
        self.primary_gen = self._start_lane().gen
        try:
            while True:
                await self._wait_rotation_due()
                await self._rotate()
        finally:
            for lane in list(self.lanes.values()):
                await lane.retire()

    async def _wait_rotation_due(self) -> None:
        """Return when the primary connection is due for rotation (or `rotate_now`); raise when its lane
        died of a fatal error."""
        while True:
            lane = self.primary
            assert lane.task is not None
            if lane.task.done():
                lane.task.result()  # a fatal connect error (e.g. HTTP 404) surfaces here
                raise RuntimeError(f"{lane!r} ended")
            age = time.monotonic() - lane.connected_at if lane.connected_at is not None else 0.0
            left = self.rotate_after_s - age
            if left <= 0:
                return
            waiter = asyncio.ensure_future(self._rotate_due.wait())
            try:
                await asyncio.wait({waiter, lane.task}, timeout=min(left, 60.0), return_when=FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if self._rotate_due.is_set():
                self._rotate_due.clear()
                return

    async def _rotate(self) -> None:
        old = self.primary
        self._handoff.clear()
        new = self._start_lane()
        self._handoff_gen = new.gen
        log.info("%s rotating: lane %d opens beside lane %d", self.spec.name, new.gen, old.gen)
        try:
            await asyncio.wait_for(self._handoff.wait(), timeout=self.handoff_timeout_s)
        except TimeoutError:
            self.counters.handoff_timeouts += 1
            log.warning(
                "%s rotation: no handoff within %.0f s; switching anyway",
                self.spec.name,
                self.handoff_timeout_s,
            )
        self.primary_gen = new.gen
        del self.lanes[old.gen]
        await old.retire()
        self.counters.rotations += 1
        log.info("%s rotated to lane %d", self.spec.name, new.gen)
