"""`python -m worker run`: the live worker (source -> Engine -> sinks), its start, and its clean stop.

Design and invariants:
- `pump(source, engine, sinks)` is the whole loop: take an event, `engine.on_event(event)` (pure,
  synchronous: the hot path has no awaits), hand the outputs to every sink. A sink is a plain callable
  `(event, outputs) -> None` that must not block: the store (`StoreSink` -> `StoreWriter.submit`), the
  feed (`FeedSink` -> `Publisher.offer`) and Telegram (`AlertSink` -> `Notifier.offer`) each append to
  their own bounded queue, drained by their own task.
- One bad event never stops the loop: an exception from the Engine or a sink is logged (the first ten,
  then every thousandth) and counted, and the loop goes on; with Telegram on it is also a note
  (`notify.ErrorNotes`: one per place and exception type per cooldown, repeats counted).
- Start order (`Worker.start`): logging with secrets redacted -> configuration (`worker.config`) -> the
  database checked before any network (newer schema, corrupt file, read-only volume: exit 1, file
  untouched; a file holding replay runs, whose fills would become live positions: exit 2) ->
  instruments from exchangeInfo -> risk limits compiled against them -> engine -> store
  opened, run recorded, state recovered (open orders cancelled `restart`, `engine.restore(state, ts_ns)`)
  -> feed socket, Telegram, health endpoint, heartbeat -> stream. Anything failing on the way closes
  what was opened and exits non-zero with one clear log line.
- Time: a `TimerTick` every `tick_interval_s` (on wall-clock boundaries) drives samples, latency queues
  and the calendar; the storage-lag gate tells the engine (`set_storage_lag(lagging, ts_ns)`) when the
  writer falls behind; operator actions (`risk reset`) are polled from the file about once a second.
- SIGTERM/SIGINT: the loop stops, the source closes its sockets, the heartbeat and health endpoint stop,
  a `stop` event and a last heartbeat are written and the writer FLUSHES everything before the process
  exits 0 (Litestream, our parent, makes its final sync after we exit); then the feed closes and the
  stop notice gets a bounded few seconds to reach Telegram.
- A `SourceFailed` (the venue refuses the configured URL) ends the run with exit code 1 and one clear
  log line, never a worker idling without data.
- Limits that no order can meet at the venue's price: refused at start (`ticker_prices` ->
  `check_limits_at_prices`, exit 2); the core checks again at each symbol's first live book and its
  `Incident("config_unusable")` stops the worker cleanly with exit 2.
- USD-M restart: funding Binance applied while the worker was down (`funding_history` from the previous
  run's last event to now) is settled through `Trader.settle_funding` before the stream starts; a
  funding time a disconnect swallowed (the core's `Incident("funding_unsettled")`) is settled the same
  way from a background task, retried until the REST history shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from worker import config, notify, shell
from worker.alerts import TradingNotes, daily_text
from worker.binance.endpoints import Endpoints
from worker.binance.rest import BinanceRest, RestError
from worker.binance.source import LiveSource, SourceFailed
from worker.book import SyncState
from worker.config import WorkerConfig
from worker.engine import BookTop, Engine, SyncChange
from worker.errors import ConfigError
from worker.events import Event, FeedState, FeedStatus, Market, TimerTick
from worker.health import Health, HealthInputs, HealthServer, Heartbeat, LoopLagMonitor, SymbolHealth
from worker.instruments import Instrument
from worker.logs import add_secret, setup_logging
from worker.notify import AlertSink, Notifier
from worker.publish import FeedSink, Publisher
from worker.shell import StorageLagGate
from worker.store.adapt import StoreAdapter, StoreSink
from worker.store.db import MixedRunsError, StoreError
from worker.store.records import OperatorActionApplied, SystemEvent
from worker.store.recovery import RecoveredState
from worker.store.writer import StoreWriter

log = logging.getLogger("worker.app")

Sink = Callable[[Event, list[Any]], None]
YIELD_EVERY = 64
NS = 1_000_000_000


class TopLogger:
    """Log each symbol's book top at most every `interval_s` seconds (event time), and sync changes."""

    def __init__(self, engine: Engine, interval_s: float = 10.0) -> None:
        self.engine = engine
        self.interval_ns = int(interval_s * NS)
        self._last: dict[tuple[Market, str], int] = {}

    def __call__(self, event: Event, outputs: list[Any]) -> None:
        for out in outputs:
            if isinstance(out, SyncChange):
                log.info("%s %s is %s (%s)", out.market, out.symbol, out.state, out.reason)
            elif isinstance(out, BookTop):
                key = (out.market, out.symbol)
                last = self._last.get(key)
                if last is not None and out.recv_ns - last < self.interval_ns:
                    continue
                self._last[key] = out.recv_ns
                inst = self.engine.instruments[key]
                log.info(
                    "%s %s top %s x %s | %s x %s (u=%d, imbalance %.3f)",
                    out.market,
                    out.symbol,
                    inst.price_decimal(out.bid),
                    inst.qty_decimal(out.bid_qty),
                    inst.price_decimal(out.ask),
                    inst.qty_decimal(out.ask_qty),
                    out.update_id,
                    out.imbalance or 0.0,
                )


class IncidentWatch:
    """Sink: hands the core's incidents the shell must act on to their handler, by kind
    (`config_unusable` -> stop with exit 2; `funding_unsettled` -> settle from the REST history)."""

    def __init__(self, handlers: Mapping[str, Callable[[Any], None]]) -> None:
        self.handlers = dict(handlers)

    def __call__(self, event: Event | None, outputs: list[Any]) -> None:
        for out in outputs:
            if type(out).__name__ == "Incident":
                handler = self.handlers.get(out.kind)
                if handler is not None:
                    handler(out)


class PumpCounters:
    """Loop counters; `on_error(where, exc, count)` (optional, e.g. `notify.ErrorNotes`) hears of every
    engine or sink exception (it keys and rate-limits them itself; it must not raise or block)."""

    __slots__ = ("engine_errors", "events", "on_error", "sink_errors")

    def __init__(self, on_error: Callable[[str, BaseException, int], None] | None = None) -> None:
        self.events = 0
        self.engine_errors = 0
        self.sink_errors = 0
        self.on_error = on_error


def deliver(engine: Engine, sinks: Sequence[Sink], c: PumpCounters, event: Event) -> None:
    """One event through the engine and every sink; an error costs that event (logged, counted)."""
    try:
        outputs = engine.on_event(event)
    except Exception as exc:
        c.engine_errors += 1
        if c.engine_errors <= 10 or c.engine_errors % 1000 == 0:
            log.exception("engine failed on %s (#%d); event dropped", type(event).__name__, c.engine_errors)
        if c.on_error is not None:
            c.on_error(f"engine ({type(event).__name__} dropped)", exc, c.engine_errors)
        return
    emit(sinks, c, event, outputs)


def emit(sinks: Sequence[Sink], c: PumpCounters, event: Event | None, outputs: list[Any]) -> None:
    """Hand `outputs` to every sink; `event` is None for outputs the shell produced (restore, gates)."""
    for sink in sinks:
        try:
            sink(event, outputs)  # type: ignore[arg-type]
        except Exception as exc:
            c.sink_errors += 1
            if c.sink_errors <= 10 or c.sink_errors % 1000 == 0:
                log.exception("sink %r failed (#%d)", sink, c.sink_errors)
            if c.on_error is not None:
                c.on_error(f"sink {type(sink).__name__}", exc, c.sink_errors)


async def pump(
    source: LiveSource, engine: Engine, sinks: Sequence[Sink] = (), counters: PumpCounters | None = None
) -> None:
    """Feed every event of `source` through `engine` and the outputs to `sinks`, until cancelled."""
    c = counters or PumpCounters()
    async for event in source:
        c.events += 1
        deliver(engine, sinks, c, event)
        if not c.events % YIELD_EVERY:
            # `Queue.get` does not yield while events are waiting: under a flood, give the writer,
            # feed, Telegram and health tasks their turn so commits stay within ~100 ms.
            await asyncio.sleep(0)


class App:
    """The live worker: one source, one engine, sinks and their background tasks."""

    def __init__(self, source: LiveSource, engine: Engine, sinks: Iterable[Sink] = ()) -> None:
        self.source = source
        self.engine = engine
        self.sinks = list(sinks)
        self.counters = PumpCounters()
        self.stop = asyncio.Event()
        self._background: list[Coroutine[Any, Any, Any]] = []

    def add_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A background task (sink drainer, health server...) that lives as long as the worker."""
        self._background.append(coro)

    async def run(self) -> None:
        """Run until `stop` is set; raises `SourceFailed` when the market data can never flow."""
        try:
            async with self.source, asyncio.TaskGroup() as group:
                tasks = [group.create_task(c) for c in self._background]
                loop_task = group.create_task(pump(self.source, self.engine, self.sinks, self.counters))
                await self.stop.wait()
                log.info("shutting down after %d events", self.counters.events)
                loop_task.cancel()
                for t in tasks:
                    t.cancel()
        except BaseExceptionGroup as group:
            failed = group.subgroup(SourceFailed)
            if failed is None:
                raise
            raise failed.exceptions[0] from None
        finally:
            log.info("stopped; source counters: %s", self.source.stats())


class FeedTracker:
    """Sink that remembers, per symbol, when its last message arrived and how often it reconnected."""

    def __init__(self) -> None:
        self.last_recv_ns: dict[tuple[Market, str], int] = {}
        self.reconnects: dict[tuple[Market, str], int] = {}

    def __call__(self, event: Event | None, outputs: list[Any]) -> None:
        symbol = getattr(event, "symbol", None)
        if symbol is None:
            return
        key = (event.market, symbol)  # type: ignore[union-attr]
        self.last_recv_ns[key] = event.recv_ns  # type: ignore[union-attr]
        if type(event) is FeedStatus and event.state is FeedState.CONNECTED:
            self.reconnects[key] = self.reconnects.get(key, 0) + 1


class Worker:
    """The live worker with its sinks: store, feed socket, Telegram, health. See the module docstring."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.tracker = FeedTracker()
        self.counters = PumpCounters()
        self.started_mono = time.monotonic()
        self.stop_reason = "stop"
        self.rest: BinanceRest | None = None
        self.engine: Engine | None = None
        self.writer: StoreWriter | None = None
        self.state: RecoveredState | None = None
        self.adapter = StoreAdapter()
        self.publisher: Publisher | None = None
        self.notifier: Notifier | None = None
        self.monitor: LoopLagMonitor | None = None
        self.health: Health | None = None
        self.health_server: HealthServer | None = None
        self.heartbeat: Heartbeat | None = None
        self.gate: StorageLagGate | None = None
        self.risk_sink: shell.RiskStateSink | None = None
        self.exit_code = 0  # 2 when the core reported the configuration unusable (config_unusable)
        self.actions_deferred = 0  # operator-action polls that waited for live books
        self._funding_from_ms = 0
        self._funding_due: set[int] = set()  # funding times (ns) reported unsettled, not yet in the history
        self._funding_task: asyncio.Task[None] | None = None
        self.funding_retries = 10
        self.funding_retry_s = 30.0
        self._warned: set[str] = set()
        self.notes: TradingNotes | None = None
        self.app: App | None = None
        self.instruments: dict[tuple[Market, str], Instrument] = {}
        self._applied_actions: set[int] = set()
        self._closed = False
        self.stopping = False
        self.start_task: asyncio.Task[None] | None = None

    # ---- start ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open everything in dependency order; on any failure, close what was opened and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.close(self.stop_reason if self.stopping else "start_failed")
            raise

    async def _start(self) -> None:
        cfg = self.config
        await asyncio.to_thread(shell.preflight, cfg.db)  # a bad file is refused before any network
        self.rest = BinanceRest(cfg.market, cfg.endpoints)
        log.info(
            "fetching instruments",
            extra={
                "market": cfg.market.value,
                "symbols": list(cfg.symbols),
                "rest": cfg.endpoints.rest_base(cfg.market),
            },
        )
        self.instruments = await self.rest.instruments(cfg.symbols)
        cfg.check_risk(self.instruments)
        prices = await self.rest.ticker_prices(list(cfg.symbols))
        log.info("venue prices", extra={"prices": {s: str(p) for s, p in prices.items()}})
        cfg.check_risk_at_prices(self.instruments, prices)  # limits no order can meet: exit 2
        self.adapter.markets = {i.symbol: i.market.value for i in self.instruments.values()}
        engine = self.engine = shell.make_engine(cfg, self.instruments)
        self.writer, self.state = await shell.open_store(cfg, self.instruments, "live")
        self.risk_sink = shell.RiskStateSink(engine, self.writer.submit)
        sinks: list[Sink] = [self.tracker, StoreSink(self.writer, self.adapter), self.risk_sink]
        if cfg.publish.socket_path:
            self.publisher = Publisher(
                cfg.publish.socket_path,
                client_buffer_bytes=cfg.publish.client_buffer_bytes,
                max_queue=cfg.publish.max_queue,
                max_clients=cfg.publish.max_clients,
                hello={"market": cfg.market.value, "instruments": _instrument_info(self.instruments)},
            )
            await self.publisher.start()
            sinks.append(FeedSink(self.publisher))
        if cfg.telegram_enabled:
            self.notifier = Notifier(cfg.telegram)
            await self.notifier.start()
            by_symbol = {inst.symbol: inst for inst in self.instruments.values()}
            sinks.append(AlertSink(self.notifier, by_symbol))
            self.notes = TradingNotes(self.notifier)
            sinks.append(self.notes)
            self.counters.on_error = notify.ErrorNotes(self.notifier)
        elif cfg.telegram.token or cfg.telegram.chat_id:
            log.warning("telegram needs both a bot token and a chat id: notifications off")
        sinks.append(TopLogger(engine, cfg.top_log_interval_s))
        incidents = {"config_unusable": self.config_unusable, "funding_unsettled": self.funding_unsettled}
        sinks.append(IncidentWatch(incidents))
        source = LiveSource(
            engine,
            cfg.market,
            cfg.symbols,
            endpoints=cfg.endpoints,
            instruments=self.instruments,
            rest=self.rest,
            book_ticker=cfg.book_ticker,
        )
        self.app = App(source, engine, sinks)
        self.app.counters = self.counters
        now = time.time_ns()
        shell.restore(engine, self.state, now, self.emit, cfg.db)
        await self._backfill_funding(now)
        self.gate = StorageLagGate(engine, self.writer, self.emit)
        detail = {
            "version": shell.code_version(),
            "config_digest": cfg.digest(),
            "symbols": list(cfg.symbols),
            "market": cfg.market.value,
            "pid": os.getpid(),
        }
        self.emit([SystemEvent(now, "start", "info", "", "", detail)])
        await self._start_health()
        for coro in (self._ticks(), self._storage_gate(), self._operator_actions(), self._log_stats()):
            self.app.add_task(coro)
        if self.notifier is not None:
            self.notifier.offer(notify.started(detail["version"], cfg.symbols, "paper", socket.gethostname()))
        log.info("worker started", extra=detail)

    async def _backfill_funding(self, now_ns: int) -> None:
        """USD-M restart: settle the funding events Binance applied while the worker was down (from the
        previous run's last event to now) through `Trader.settle_funding`; the portfolio skips any it
        already holds. A REST failure is an error event and a log line, not a refused start."""
        cfg, state = self.config, self.state
        self._funding_from_ms = now_ns // 1_000_000  # from here on the stream (or funding_unsettled) settles
        if cfg.market is not Market.USDM or state is None or state.previous_run is None:
            return
        if state.last_event_ns:
            await self._settle_funding_between(state.last_event_ns // 1_000_000, now_ns // 1_000_000)

    async def _settle_funding_between(self, start_ms: int, end_ms: int) -> set[int]:
        """Settle every traded symbol's funding with `start_ms <= fundingTime <= end_ms` from the REST
        history; returns the funding times (ns) the history held. Failures are error events, not raised."""
        cfg, trader = self.config, getattr(self.engine, "trader", None)
        seen: set[int] = set()
        if trader is None or self.rest is None:
            return seen
        for symbol in cfg.symbols:
            try:
                rates = await self.rest.funding_history(symbol, start_ms, end_ms)
            except RestError as exc:
                log.error("funding history failed for %s: %s", symbol, exc)
                detail = {"error": str(exc), "start_ms": start_ms, "end_ms": end_ms}
                self.emit(
                    [
                        SystemEvent(
                            time.time_ns(),
                            "funding_backfill_failed",
                            "error",
                            cfg.market.value,
                            symbol,
                            detail,
                        )
                    ]
                )
                continue
            out: list[Any] = []
            for rate in rates:
                seen.add(rate.funding_ns)
                trader.settle_funding(rate, out)
            paid = sum(1 for o in out if type(o).__name__ == "FundingPayment")
            log.info(
                "funding settled from the REST history",
                extra={
                    "symbol": symbol,
                    "rates": len(rates),
                    "payments": paid,
                    "from_ms": start_ms,
                    "to_ms": end_ms,
                },
            )
            self.emit(out)
        return seen

    def funding_unsettled(self, incident: Any) -> None:
        """A disconnect swallowed a funding time (the core's `funding_unsettled`): settle it from the REST
        history in a background task, retried while the history does not show the funding time yet."""
        if self.config.market is not Market.USDM or self.rest is None:
            return
        if incident.at_ns is not None:  # None: several funding times a gap swallowed whole
            self._funding_due.add(incident.at_ns)
        if self._funding_task is None or self._funding_task.done():
            self._funding_task = asyncio.create_task(self._settle_unsettled_funding(), name="funding-history")

    async def _settle_unsettled_funding(self) -> None:
        for _ in range(self.funding_retries):
            seen = await self._settle_funding_between(self._funding_from_ms, time.time_ns() // 1_000_000)
            newest = max(seen, default=0)
            self._funding_due = {due for due in self._funding_due if due > newest}
            if not self._funding_due:
                return
            await asyncio.sleep(self.funding_retry_s)  # Binance publishes the rate shortly after funding
        log.error("funding times not in the REST history yet: %s", sorted(self._funding_due))

    def config_unusable(self, incident: Any) -> None:
        """The core found, at a symbol's first live book, that the limits make every order impossible:
        stop with exit 2 (a configuration error), like the same check at start."""
        if self.exit_code:
            return
        log.error("configuration unusable at the live price: %s; stopping", incident.detail)
        self.exit_code = 2
        self.request_stop("config_unusable")

    async def _start_health(self) -> None:
        cfg = self.config.health
        self.monitor = LoopLagMonitor(cfg.loop_lag_interval_s, cfg.loop_lag_window_s)
        await self.monitor.start()
        self.health = Health(self.health_inputs, self.monitor, cfg.limits)
        assert self.writer is not None
        self.heartbeat = Heartbeat(self.health, self.writer.submit, cfg.heartbeat_interval_s)
        await self.heartbeat.start()
        if cfg.enabled:
            self.health_server = HealthServer(self.health, cfg.port, cfg.host)
            await self.health_server.start()

    # ---- running -------------------------------------------------------------------------------------
    def emit(self, outputs: list[Any]) -> None:
        """Outputs the shell produced (restore, storage gate, operator actions) go to every sink."""
        if self.app is not None and outputs:
            emit(self.app.sinks, self.counters, None, outputs)

    async def run(self) -> None:
        assert self.app is not None
        await self.app.run()

    def request_stop(self, reason: str) -> None:
        """SIGTERM/SIGINT: stop the loop; during start-up, abandon the start (then close cleanly)."""
        if self.stopping:
            return  # the first signal is already doing the work
        self.stopping = True
        self.stop_reason = reason
        log.info("stop requested", extra={"reason": reason})
        if self.app is not None:
            self.app.stop.set()
        elif self.start_task is not None and not self.start_task.done():
            self.start_task.cancel()

    async def _ticks(self) -> None:
        """A `TimerTick` every `tick_interval_s` on wall-clock boundaries: samples, latency, calendar."""
        assert self.app is not None and self.engine is not None
        interval = self.config.tick_interval_s
        while True:
            await asyncio.sleep(interval - (time.time() % interval))  # pacing, not synchronization
            now = time.time_ns()
            deliver(self.engine, self.app.sinks, self.counters, TimerTick(now))
            day = self.notes.daily_due(now) if self.notes is not None else None
            if day is not None and self.notifier is not None:
                quote = next((i.quote_asset for i in self.instruments.values()), "USDT")
                self.notifier.offer(daily_text(day, self.engine.summary(), quote))

    async def _storage_gate(self) -> None:
        assert self.gate is not None
        while True:
            await asyncio.sleep(self.config.storage_lag_check_s)
            self.gate.check(time.time_ns())

    def books_live(self) -> bool:
        """Every traded book is LIVE, so the portfolio is marked at current prices."""
        engine, market = self.engine, self.config.market
        if engine is None:
            return False
        books = [engine.symbol_book(market, symbol) for symbol in self.config.symbols]
        return all(b is not None and b.state is SyncState.LIVE for b in books)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    async def _operator_actions(self) -> None:
        """Apply operator actions (`python -m worker risk reset`) once the engine can.

        A reset re-anchors the breakers at the marked equity, so it waits until every book is LIVE: at
        start the rebuilt portfolio is marked at its fill prices, and a reset anchored there would trip
        the drawdown breaker again at the first live price (`actions_deferred` counts the waits)."""
        assert self.writer is not None
        while True:
            try:
                actions = await self.writer.pending_operator_actions()
            except Exception:  # a busy or failing file: try again next round
                log.exception("reading operator actions failed")
                actions = []
            for action in actions:
                if action.action_id in self._applied_actions:
                    continue
                if not self.books_live():
                    self.actions_deferred += 1
                    self._warn_once("operator_wait", "operator actions wait until every book is live")
                    break
                ts = time.time_ns()
                outputs = shell.apply_operator_action(self.engine, action, ts)
                if outputs is None:
                    text = f"the engine cannot apply {action.action!r}: left pending"
                    self._warn_once(f"operator:{action.action}", text)
                    continue
                self._applied_actions.add(action.action_id)
                self.emit([*outputs, OperatorActionApplied(action.action_id, ts)])
                if self.risk_sink is not None:
                    self.risk_sink.save(ts)  # a reset re-anchors peak and day even when nothing was tripped
                log.info("operator action applied", extra={"action": action.action, "by": action.operator})
            await asyncio.sleep(1.0)  # polling period, not synchronization

    async def _log_stats(self) -> None:
        assert self.app is not None
        while True:
            await asyncio.sleep(self.config.stats_interval_s)
            stats = {k: v for k, v in self.app.source.stats().items() if v}
            log.info("feed stats after %d events: %s", self.counters.events, stats)

    def health_inputs(self) -> HealthInputs:
        cfg = self.config
        now = time.time_ns()
        symbols = []
        for symbol in cfg.symbols:
            key = (cfg.market, symbol)
            book = self.engine.symbol_book(cfg.market, symbol) if self.engine is not None else None
            last = self.tracker.last_recv_ns.get(key)
            symbols.append(
                SymbolHealth(
                    f"{cfg.market.value}:{symbol}",
                    book.state.value if book is not None else "syncing",
                    None if last is None else max(now - last, 0) / 1e9,
                    book.gaps if book is not None else 0,
                    book.resyncs if book is not None else 0,
                    self.tracker.reconnects.get(key, 0),
                )
            )
        state, reason = shell.trading_state(self.engine)
        writer = self.writer
        extra: dict[str, Any] = {
            "events": self.counters.events,
            "engine_errors": self.counters.engine_errors,
            "sink_errors": self.counters.sink_errors,
        }
        if writer is not None:
            extra["store"] = {
                "rows_written": writer.stats.rows_written,
                "commits": writer.stats.commits,
                "samples_dropped": writer.stats.samples_dropped,
                "write_errors": writer.stats.write_errors,
                "lagging": writer.is_lagging,
            }
        if self.publisher is not None:
            extra["feed_clients"] = self.publisher.client_count
        if self.notifier is not None:
            extra["telegram"] = {"sent": self.notifier.stats.sent, "failed": self.notifier.stats.failed}
        if self.adapter.unknown:
            extra["store_unknown_outputs"] = dict(self.adapter.unknown)
        return HealthInputs(
            symbols=symbols,
            writer_lag_s=None if writer is None else round(writer.lag_seconds(), 3),
            writer_queue=0 if writer is None else writer.queue_depth,
            trading_state=state,
            state_reason=reason,
            ts_ns=self.engine.last_recv_ns if self.engine is not None else 0,
            extra=extra,
        )

    # ---- stop ----------------------------------------------------------------------------------------
    async def close(self, reason: str | None = None) -> None:
        """Stop in the order that loses nothing: probes, then the writer (flushed), feed, Telegram."""
        if self._closed:
            return
        self._closed = True
        reason = reason or self.stop_reason
        if self.app is not None:  # background coroutines of a worker that never ran (start-up abandoned)
            for coro in self.app._background:
                if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                    coro.close()
        if self._funding_task is not None and not self._funding_task.done():
            self._funding_task.cancel()
            with contextlib.suppress(BaseException):
                await self._funding_task
        if self.heartbeat is not None and self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.submit(self.heartbeat.row())  # the last state, as of the stop
        for part in (self.heartbeat, self.health_server, self.monitor):
            if part is not None:
                with contextlib.suppress(Exception):
                    await part.close()
        if self.writer is not None:
            if self.risk_sink is not None:
                with contextlib.suppress(Exception):
                    self.risk_sink.save()  # the peak and day anchor as of the stop
            uptime = time.monotonic() - self.started_mono
            self.writer.submit(
                SystemEvent(
                    time.time_ns(),
                    "stop",
                    "info",
                    "",
                    "",
                    {"reason": reason, "uptime_s": round(uptime, 3), "events": self.counters.events},
                )
            )
            try:
                await self.writer.close(reason)
                log.info("store flushed and closed", extra={"rows_written": self.writer.stats.rows_written})
            except Exception:
                log.exception("store close failed")
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
        if self.notifier is not None:
            self.notifier.offer(notify.stopped(reason, time.monotonic() - self.started_mono))
            with contextlib.suppress(Exception):
                await self.notifier.close(flush_timeout=5.0)
        if self.rest is not None:
            with contextlib.suppress(Exception):
                await self.rest.aclose()


def _instrument_info(instruments: dict[tuple[Market, str], Instrument]) -> dict[str, dict[str, str]]:
    return {
        inst.symbol: {"tick_size": str(inst.tick_size), "step_size": str(inst.step_size)}
        for inst in instruments.values()
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser)


def endpoints_from(args: argparse.Namespace) -> Endpoints:
    """Endpoints from `record`'s flags (`--spot-ws`, ...); `run` reads them through `worker.config`."""
    return Endpoints(args.spot_ws, args.spot_rest, args.usdm_ws, args.usdm_rest, args.usdm_depth_speed)


async def serve(cfg: WorkerConfig) -> int:
    worker = Worker(cfg)
    loop = asyncio.get_running_loop()
    signals = {signal.SIGINT: "sigint", signal.SIGTERM: "sigterm"}
    for sig, name in signals.items():
        loop.add_signal_handler(sig, worker.request_stop, name)
    try:
        worker.start_task = asyncio.create_task(worker.start())
        try:
            await worker.start_task
        except asyncio.CancelledError:
            if not worker.stopping:
                raise
            log.info("stopped during start-up", extra={"reason": worker.stop_reason})
            return 0  # start() closed what it had opened
        if worker.stopping:  # a signal (or config_unusable) arrived in the last instant of start-up
            await worker.close()
            return worker.exit_code
        try:
            await worker.run()
        except SourceFailed:
            worker.stop_reason = "source_failed"
            raise
        except BaseException:
            worker.stop_reason = "error"
            raise
        finally:
            await worker.close()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return worker.exit_code


def main(args: argparse.Namespace) -> int:
    level = str(args.log_level or os.environ.get("QF_LOG_LEVEL") or "INFO").upper()
    # A bad level is reported by the config check below (naming worker.log_level), not by a traceback.
    setup_logging(level if level in config.LOG_LEVELS else "INFO", secrets=[_env_token()])
    try:
        cfg = config.from_args(args)
        logging.getLogger().setLevel(cfg.log_level)
        add_secret(cfg.telegram.token)
        log.info("configuration", extra={"config_digest": cfg.digest(), "origins": dict(cfg.origins)})
        return asyncio.run(serve(cfg))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except MixedRunsError as exc:  # a usage error, like a bad flag: the file is fine, just not for live
        log.error("cannot start: %s", exc)
        return 2
    except (StoreError, RestError) as exc:  # store unusable or exchangeInfo unreachable: nothing to run on
        log.error("cannot start: %s", exc)
        return 1
    except SourceFailed as exc:
        log.error("worker stopped: %s", exc)
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


def _env_token() -> str | None:
    return os.environ.get("TELEGRAM_BOT_TOKEN")
