"""Worker health: an event-loop lag monitor, the health verdict, a tiny `/health` HTTP server, a heartbeat.

Design:
- The worker's state arrives through a provider callable returning `HealthInputs` (per-symbol sync
  state and counters, writer lag, trading state), so this module depends on no other worker module.
- `Health.report()` is the verdict: healthy only when EVERY symbol is LIVE with a recent message, the
  SQLite writer keeps up, and the event loop is responsive. Each failed condition is named in
  `problems`, so a 503 says why. A provider that raises is itself a problem (503), never a crash.
- `LoopLagMonitor` sleeps `interval_s` in a loop and records how late it wakes; the lag it reports is
  the worst of the last `window_s` seconds, or how overdue the current wake-up already is.
- `HealthServer` is a minimal asyncio HTTP/1.0-style responder (one request per connection, bounded
  read, timeout) for Fly's checks: `GET /health` -> 200 or 503 with the JSON report; anything else 404.
  It adds no dependency to the worker image.
- `Heartbeat` calls `sink(record)` every `interval_s` with the same report as a
  `worker.store.records.Heartbeat` (for `StoreWriter.submit`), so the API can show the worker's health
  from the replica. The sink must not block (a queue's offer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from worker.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SymbolHealth:
    """One stream's state as the worker sees it."""

    symbol: str  # e.g. "spot:BTCUSDT"
    state: str  # "live" | "syncing" (worker.book.SyncState values)
    last_msg_age_s: float | None  # seconds since the last frame for this symbol; None: none yet
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What the worker reports to the health check; built by the provider from its live state."""

    symbols: Sequence[SymbolHealth]
    writer_lag_s: float | None  # age of the oldest row not yet committed; None: no writer
    writer_queue: int = 0
    trading_state: str = "running"  # e.g. "running", "paused", "halted"
    state_reason: str = ""  # e.g. "shabbat", "breaker:daily_loss"
    ts_ns: int = 0  # engine clock: receive time of the latest event
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthLimits:
    max_msg_age_s: float = 10.0
    max_writer_lag_s: float = 5.0
    max_loop_lag_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_msg_age_s", "max_writer_lag_s", "max_loop_lag_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"health.{name}", "a positive number of seconds")


@dataclass(frozen=True, slots=True)
class HealthReport:
    ok: bool
    problems: tuple[str, ...]
    body: dict[str, Any]
    inputs: HealthInputs | None = None  # None when the provider failed

    @property
    def status_code(self) -> int:
        return 200 if self.ok else 503


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _cancel(task: asyncio.Task | None) -> None:
    """Stop a background loop and wait for it: its CancelledError is the expected end, not an error."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: the loop's responsiveness."""

    def __init__(self, interval_s: float = 0.1, window_s: float = 10.0) -> None:
        if not interval_s > 0 or window_s < interval_s:
            raise ConfigError("health.loop_lag_interval_s", "positive and no longer than the window")
        self.interval_s = interval_s
        self.window_s = window_s
        self.max_lag_s = 0.0  # worst ever
        self.samples = 0
        self._recent: deque[tuple[float, float]] = deque()  # (loop time, lag)
        self._expected: float | None = None
        self._task: asyncio.Task | None = None
        self._sampled = asyncio.Event()

    @property
    def lag_s(self) -> float:
        """Worst lag in the window, or how overdue the pending wake-up is, whichever is larger."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        worst = max((lag for _, lag in self._recent), default=0.0)
        overdue = now - self._expected if self._expected is not None else 0.0
        return max(worst, overdue, 0.0)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._expected = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            lag = max(now - self._expected, 0.0)
            self._recent.append((now, lag))
            self.max_lag_s = max(self.max_lag_s, lag)
            self.samples += 1
            self._sampled.set()

    async def next_sample(self, timeout: float = 5.0) -> None:
        """Wait for the next measurement (tests)."""
        self._sampled.clear()
        await asyncio.wait_for(self._sampled.wait(), timeout)

    async def close(self) -> None:
        await _cancel(self._task)
        self._task = None


class Health:
    """Combines the provider's state, the loop monitor and the limits into a `HealthReport`."""

    def __init__(
        self,
        provider: Callable[[], HealthInputs],
        monitor: LoopLagMonitor | None = None,
        limits: HealthLimits | None = None,
    ) -> None:
        self.provider = provider
        self.monitor = monitor
        self.limits = limits or HealthLimits()
        self.started = time.monotonic()

    def report(self) -> HealthReport:
        limits = self.limits
        problems: list[str] = []
        loop_lag = self.monitor.lag_s if self.monitor is not None else None
        body: dict[str, Any] = {
            "ts": time.time(),
            "uptime_s": round(time.monotonic() - self.started, 3),
            "rss_bytes": rss_bytes(),
            "loop_lag_s": None if loop_lag is None else round(loop_lag, 4),
        }
        if loop_lag is not None and loop_lag > limits.max_loop_lag_s:
            problems.append(f"event loop lag {loop_lag:.3f}s > {limits.max_loop_lag_s}s")
        try:
            inputs = self.provider()
        except Exception as exc:  # the check must answer even when the worker's state is broken
            log.exception("health provider failed")
            problems.append(f"state provider failed: {type(exc).__name__}")
            body.update(status="unhealthy", problems=problems)
            return HealthReport(False, tuple(problems), body)
        if not inputs.symbols:
            problems.append("no symbols configured")
        for s in inputs.symbols:
            if s.state != "live":
                problems.append(f"{s.symbol} {s.state}")
            if s.last_msg_age_s is None:
                problems.append(f"{s.symbol} no message yet")
            elif s.last_msg_age_s > limits.max_msg_age_s:
                problems.append(f"{s.symbol} last message {s.last_msg_age_s:.1f}s ago")
        if inputs.writer_lag_s is not None and inputs.writer_lag_s > limits.max_writer_lag_s:
            problems.append(f"writer lag {inputs.writer_lag_s:.1f}s > {limits.max_writer_lag_s}s")
        body.update(
            symbols={s.symbol: {k: v for k, v in asdict(s).items() if k != "symbol"} for s in inputs.symbols},
            writer={"lag_s": inputs.writer_lag_s, "queue": inputs.writer_queue},
            trading=inputs.trading_state,
            trading_reason=inputs.state_reason,
            **dict(inputs.extra),
        )
        body["status"] = "ok" if not problems else "unhealthy"
        body["problems"] = problems
        return HealthReport(not problems, tuple(problems), body, inputs)


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


class HealthServer:
    """`GET /health` for Fly's checks. Lifecycle: `await start()` (ConfigError if unbindable), `close()`."""

    def __init__(self, health: Health, port: int, host: str = "0.0.0.0") -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError("health.port", "an integer port from 0 to 65535")
        self.health = health
        self.host = host
        self.port = port
        self.requests = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError("health.port", f"a free port on {self.host} ({exc.strerror})") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoint listening", extra={"port": self.port})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5.0):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError):
            writer.close()
            return
        self.requests += 1
        path = target.split("?", 1)[0]
        if path != "/health":
            status, body = 404, {"error": "not found", "path": path}
        elif method not in ("GET", "HEAD"):
            status, body = 405, {"error": "method not allowed"}
        else:
            report = self.health.report()
            status, body = report.status_code, report.body
        data = orjson.dumps(body, default=str)
        header = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'X')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(header.encode() + (b"" if method == "HEAD" else data))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def store_heartbeat(report: HealthReport) -> Any:
    """The SQLite writer's `worker.store.records.Heartbeat` for one report (the `heartbeat` table row).

    `sync` maps each symbol to its state; `detail` carries the whole report (ok, problems, counters,
    loop lag, RSS) so the API can serve the same health the worker's `/health` does.
    """
    from worker.store.records import Heartbeat as HeartbeatRecord  # the shell's store, imported late

    inputs = report.inputs
    detail = {k: v for k, v in report.body.items() if k not in ("trading", "trading_reason")}
    detail["ok"] = report.ok
    if inputs is None:
        return HeartbeatRecord(time.time_ns(), "unknown", "health provider failed", {}, detail)
    return HeartbeatRecord(
        ts_ns=inputs.ts_ns,
        trading_state=inputs.trading_state,
        state_reason=inputs.state_reason,
        sync={s.symbol: s.state for s in inputs.symbols},
        detail=detail,
    )


class Heartbeat:
    """Every `interval_s`, hands `sink` one heartbeat record (by default `store_heartbeat(report)`,
    for `StoreWriter.submit`). The sink must not block; a sink that raises is logged and counted."""

    def __init__(
        self,
        health: Health,
        sink: Callable[[Any], Any],
        interval_s: float = 1.0,
        to_record: Callable[[HealthReport], Any] = store_heartbeat,
    ) -> None:
        if not interval_s > 0:
            raise ConfigError("health.heartbeat_interval_s", "a positive number of seconds")
        self.health = health
        self.sink = sink
        self.interval_s = interval_s
        self.to_record = to_record
        self.beats = 0
        self.errors = 0
        self._task: asyncio.Task | None = None

    def row(self) -> Any:
        return self.to_record(self.health.report())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            try:
                self.sink(self.row())
                self.beats += 1
            except Exception:  # a failing sink must not stop the heartbeat or the worker
                self.errors += 1
                log.exception("heartbeat sink failed")
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        await _cancel(self._task)
        self._task = None
