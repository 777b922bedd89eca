"""`python -m worker run`: the live worker loop (source -> Engine -> sinks), and its clean shutdown.

Design and invariants:
- `pump(source, engine, sinks)` is the whole loop: take an event, `engine.on_event(event)` (pure,
  synchronous: the hot path has no awaits), hand the outputs to every sink. A sink is a plain callable
  that must not block: the real ones (SQLite writer, UDS publisher, Telegram, health) put outputs on
  their own bounded queue and drain it in a background task (`App.add_task`).
- One bad event never stops the loop: an exception from the Engine or a sink is logged (once per
  kind, then counted) and the loop goes on.
- A `SourceFailed` (the venue refuses the configured URL) ends `run` with that error: exit code 1 and
  one clear log line, never a worker idling without data.
- SIGINT/SIGTERM set `stop`; the loop task is cancelled, the source closes its sockets, background
  tasks are cancelled and awaited, and `main` returns 0. A second signal during shutdown is ignored
  (the first one is already doing the work).
- `TopLogger` is the placeholder sink until the real ones land: a book-top line per symbol at most
  every `interval_s` seconds of event time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from worker.binance.endpoints import USDM_DEPTH_SPEEDS, Endpoints
from worker.binance.rest import BinanceRest, RestError
from worker.binance.source import LiveSource, SourceFailed
from worker.engine import BookTop, Engine, SyncChange
from worker.errors import ConfigError
from worker.events import Event, Market

log = logging.getLogger("worker.app")

Sink = Callable[[Event, list[Any]], None]
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


class PumpCounters:
    __slots__ = ("engine_errors", "events", "sink_errors")

    def __init__(self) -> None:
        self.events = 0
        self.engine_errors = 0
        self.sink_errors = 0


async def pump(
    source: LiveSource, engine: Engine, sinks: Sequence[Sink] = (), counters: PumpCounters | None = None
) -> None:
    """Feed every event of `source` through `engine` and the outputs to `sinks`, until cancelled."""
    c = counters or PumpCounters()
    async for event in source:
        c.events += 1
        try:
            outputs = engine.on_event(event)
        except Exception:
            c.engine_errors += 1
            if c.engine_errors <= 10 or c.engine_errors % 1000 == 0:
                log.exception(
                    "engine failed on %s (#%d); event dropped", type(event).__name__, c.engine_errors
                )
            continue
        for sink in sinks:
            try:
                sink(event, outputs)
            except Exception:
                c.sink_errors += 1
                if c.sink_errors <= 10 or c.sink_errors % 1000 == 0:
                    log.exception("sink %r failed (#%d)", sink, c.sink_errors)


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


def _symbols(values: list[str]) -> list[str]:
    out = sorted({s.strip().upper() for v in values for s in v.split(",") if s.strip()})
    if not out:
        raise ConfigError("--symbols", "at least one symbol, e.g. btcusdt")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    binance = Endpoints()
    parser.add_argument("--symbols", nargs="+", required=True, help="symbols, e.g. btcusdt ethusdt")
    parser.add_argument("--market", choices=[m.value for m in Market], default="spot")
    parser.add_argument("--db", default=env("QF_DB", "quantumflow.db"), help="SQLite file (sinks: later)")
    parser.add_argument("--usdm-depth-speed", choices=USDM_DEPTH_SPEEDS, default="100ms")
    parser.add_argument("--spot-ws", default=env("QF_SPOT_WS", binance.spot_ws))
    parser.add_argument("--spot-rest", default=env("QF_SPOT_REST", binance.spot_rest))
    parser.add_argument("--usdm-ws", default=env("QF_USDM_WS", binance.usdm_ws))
    parser.add_argument("--usdm-rest", default=env("QF_USDM_REST", binance.usdm_rest))
    parser.add_argument("--top-log-interval", type=float, default=10.0, help="seconds between top lines")
    parser.add_argument("--stats-interval", type=float, default=60.0, help="seconds between stats lines")
    parser.add_argument("--log-level", default=env("QF_LOG_LEVEL", "INFO"))


def endpoints_from(args: argparse.Namespace) -> Endpoints:
    return Endpoints(args.spot_ws, args.spot_rest, args.usdm_ws, args.usdm_rest, args.usdm_depth_speed)


async def build(args: argparse.Namespace) -> App:
    """Read instruments from exchangeInfo, then wire source, engine and sinks."""
    market = Market(args.market)
    symbols = _symbols(args.symbols)
    endpoints = endpoints_from(args)
    rest = BinanceRest(market, endpoints)
    instruments = await rest.instruments(symbols)
    engine = Engine(instruments)
    source = LiveSource(engine, market, symbols, endpoints=endpoints, instruments=instruments, rest=rest)
    return App(source, engine, [TopLogger(engine, args.top_log_interval)])


async def log_stats(app: App, interval_s: float) -> None:
    """One line of feed counters every `interval_s`: reconnects, gaps, 429s... visible without a sink."""
    while True:
        await asyncio.sleep(interval_s)
        stats = {k: v for k, v in app.source.stats().items() if v}
        log.info("feed stats after %d events: %s", app.counters.events, stats)


async def serve(args: argparse.Namespace) -> int:
    app = await build(args)
    app.add_task(log_stats(app, args.stats_interval))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stop.set)
    try:
        await app.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if app.source.rest is not None:
            await app.source.rest.aclose()
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        from worker.logs import setup_logging

        setup_logging(args.log_level)
    except ImportError:  # pragma: no cover - logs.py is optional for this command
        logging.basicConfig(level=args.log_level)
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except RestError as exc:  # exchangeInfo unreachable at start: nothing sensible to run on
        log.error("cannot start: %s", exc)
        return 1
    except SourceFailed as exc:
        log.error("worker stopped: %s", exc)
        return 1
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130
