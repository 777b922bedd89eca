"""`python -m worker replay FILE [--snapshots F] [--pace recorded|max] [--db PATH|--no-db] [--publish SOCK]`.

Design:
- Feeds a recording through the same code as live: raw frame -> `FrameParser.parse_frame` ->
  `Engine.on_event`, snapshots through `parse_snapshot`, merged with the frames by `recv_ns`. Any number
  of symbols; spot and USD-M are told apart by each frame's content (the parser's inference).
- Instruments: the recording's own `.exchangeinfo.json` (what `record` used) when it has one, else
  `--exchange-info PATH`'s, on top of `DEFAULT_INSTRUMENTS` (the fallback for older recordings). Without
  the right filters a symbol's frames are `unknown_symbol` and its book never syncs.
- Deterministic: no wall clock reaches the engine; `--pace recorded` only waits between frames.
- Streams from disk (constant memory). A bad frame costs one log line (the first `LOG_LIMIT` of them,
  then a count) and a counter; the replay keeps going.
- The CLI runs the full engine (trading core included) and writes through the SAME sinks as live:
  `StoreSink` -> `StoreWriter` into `--db` (default `./quantumflow.db`, never `$QF_DB`, so a replay
  cannot land in the live database by accident) and, with `--publish`, the feed socket. A replay may
  block and the live worker never does: every few hundred events the writer and the feed get the loop,
  and the replay waits while the writer's queues are past half their limits or a feed client has more
  than `_CLIENT_BACKLOG` unsent bytes, so nothing is dropped and a replay into a fresh database leaves the
  rows a live run over the same messages would. Hence no storage-lag gate in a replay: the writer's lag
  is wall-clock time, and risk decisions must depend on the recording alone. Its configuration is
  `--config` / `--set` only.
- `--db` must be fresh or hold only replays of the SAME recording with the same config digest (a
  re-run after a crash; the run's `config_json` carries `replay_of` = recording name + size, snapshots,
  scripted orders). Anything else is refused with exit 2: replay ids restart at 1 and the writer skips
  ids already in the file, so another run's rows would silently swallow this replay's orders and fills.
- `replay()` (no database, market engine by default) stays the plain synchronous API for tests and
  benchmarks; `build_summary(engine, stats)` turns the engine's counters and the replay's own into the
  summary, so later engine parts appear in it by extending `Engine.summary()`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker import shell
from worker.app import PumpCounters, emit
from worker.binance.parse import FrameParser, ParseError
from worker.binance.recording import (
    FrameReader,
    RecordedFrame,
    default_exchange_info_path,
    default_snapshots_path,
    merged,
    read_exchange_info,
)
from worker.broker import QUEUE_MODELS
from worker.config import WorkerConfig
from worker.config import add_arguments as add_config_arguments
from worker.config import load as load_config
from worker.engine import Engine, Output
from worker.errors import ConfigError
from worker.events import Event, FeedState, FeedStatus, Market, TimerTick
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument
from worker.publish import FeedSink, Publisher
from worker.schedule import ScheduleError, ScheduleResults, read_schedule
from worker.store.adapt import StoreAdapter, StoreSink
from worker.store.db import DEFAULT_DB_PATH, StoreError
from worker.store.writer import StoreWriter
from worker.tally import TradingTally
from worker.trader import ScheduledOrder

log = logging.getLogger("worker.replay")
# Replays write beside the live default, never into it: a live worker rebuilds its portfolio from every
# fill in its file, so `run` refuses a database holding replay runs (and a replay one holding live runs).
DEFAULT_REPLAY_DB_PATH = "quantumflow-replay.db"
LOG_LIMIT = 20
_STREAM_PREFIX = b'{"stream":"'


@dataclass
class ReplayStats:
    """What the replay itself saw (the engine keeps the market counters)."""

    file: str
    snapshots_file: str | None
    pace: str
    messages: dict[str, int] = field(default_factory=dict)  # by stream name
    frames: int = 0
    snapshots: int = 0
    ticks: int = 0  # TimerTicks the replay synthesized (the live worker's 1 s ticks)
    outputs: int = 0
    bad_frames: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    bad_snapshots: int = 0
    bad_lines: int = 0
    malformed_depth_resyncs: int = 0  # dropped depth frames of a known symbol, each resyncing it
    book_notices: int = 0  # stale/crossed snapshots and buffer overflows the books reported
    truncated: bool = False
    first_recv_ns: int | None = None
    last_recv_ns: int | None = None
    wall_seconds: float = 0.0
    parser_counters: dict[str, int] = field(default_factory=dict)


def _reason_kind(reason: str) -> str:
    for kind in ("malformed JSON", "unknown stream", "unknown symbol", "unknown event", "off-grid"):
        if kind in reason:
            return kind.replace(" ", "_").replace("-", "_").lower()
    return "bad_frame"


def _stream_of(frame: bytes) -> str:
    if frame.startswith(_STREAM_PREFIX):
        end = frame.find(b'"', 11)
        if end > 11:
            return frame[11:end].decode("utf-8", "replace")
    return "(bare)"


class _Replay:
    """One pass over a recording: `steps()` yields `(event, outputs)` for each event the engine took."""

    def __init__(
        self,
        frames_path: str | Path,
        snapshots_path: str | Path | None,
        instruments: dict[tuple[Market, str], Instrument],
        pace: str,
        engine: Engine,
        progress: bool,
    ) -> None:
        self.parser = FrameParser(instruments)
        self.engine = engine
        self.frames_path = frames_path
        self.snapshots_path = snapshots_path
        self.stats = ReplayStats(str(frames_path), str(snapshots_path) if snapshots_path else None, pace)
        self.reader = FrameReader(frames_path)
        self.bar = _Progress(self.reader) if progress else None
        self.started = time.perf_counter()

    def steps(self, sleep: bool = True, tick_ns: int = 0) -> Iterator[tuple[Event, list[Output]]]:
        """`sleep=False`: the caller paces `--pace recorded` itself (the async driver awaits instead).
        `tick_ns` > 0: a `TimerTick` at every multiple of it that the recording's time crosses, before
        the first event at or after it, as the live worker's tick task feeds them."""
        stats = self.stats
        next_tick = 0
        messages = stats.messages
        on_event = self.engine.on_event
        parse_frame = self.parser.parse_frame
        parser = self.parser
        bar = self.bar
        paced = sleep and stats.pace == "recorded"
        notices = getattr(self.engine, "notices", ())
        self.started = time.perf_counter()
        for item in merged(self.reader, self.snapshots_path):
            recv_ns = item.recv_ns
            if stats.first_recv_ns is None:
                stats.first_recv_ns = recv_ns
            stats.last_recv_ns = recv_ns
            if paced:
                _wait_until(self.started, stats.first_recv_ns, recv_ns)
            try:
                if type(item) is RecordedFrame:
                    stats.frames += 1
                    stream = _stream_of(item.frame)
                    messages[stream] = messages.get(stream, 0) + 1
                    event = parse_frame(item.frame, recv_ns)
                else:
                    stats.snapshots += 1
                    event = parser.parse_snapshot(item.body, item.symbol, item.market, recv_ns)
            except ParseError as exc:
                _bad(stats, item, exc)
                status = self._malformed_depth(exc, recv_ns)
                if status is None:
                    continue
                event = status  # live resynced that symbol here (`LiveSource`): so does the replay
            if event is None:
                continue
            if tick_ns:
                if not next_tick:
                    next_tick = (recv_ns // tick_ns + 1) * tick_ns
                while recv_ns >= next_tick:
                    tick = TimerTick(next_tick)
                    next_tick += tick_ns
                    stats.ticks += 1
                    yield tick, on_event(tick)
            outputs = on_event(event)
            if outputs:
                stats.outputs += len(outputs)
            if notices:
                self._log_notices()
            yield event, outputs
            if bar is not None and not stats.frames & 1023:
                bar.update(stats.frames)

    def _malformed_depth(self, exc: ParseError, recv_ns: int) -> FeedStatus | None:
        """A dropped depth frame of a known symbol: the `FeedStatus(MALFORMED)` live put for it."""
        if exc.event != "depthUpdate" or not exc.symbol or exc.market is None:
            return None
        symbol = exc.symbol.upper()
        if (exc.market, symbol) not in self.engine.instruments:
            return None
        self.stats.malformed_depth_resyncs += 1
        return FeedStatus(symbol, exc.market, FeedState.MALFORMED, exc.reason[:100], recv_ns)

    def _log_notices(self) -> None:
        """The books' `BookNotice`s (stale/crossed snapshot, buffer overflow): a line each, then a count."""
        stats = self.stats
        for notice in self.engine.take_notices():
            stats.book_notices += 1
            if stats.book_notices <= LOG_LIMIT:
                log.warning(
                    "%s %s %s at recv_ns=%d: %s",
                    notice.market,
                    notice.symbol,
                    notice.kind,
                    notice.recv_ns,
                    notice.detail,
                )
                if stats.book_notices == LOG_LIMIT:
                    log.warning("further book notices are only counted (see the summary)")

    def finish(self) -> ReplayStats:
        stats = self.stats
        stats.wall_seconds = time.perf_counter() - self.started
        stats.bad_lines = self.reader.bad_lines
        stats.truncated = self.reader.truncated
        if self.reader.truncated:
            log.warning("%s ends in a truncated gzip stream: replayed what was readable", self.frames_path)
        if self.bar is not None:
            self.bar.done(stats.frames)
        stats.parser_counters = self.parser.counters
        return stats


def recording_instruments(
    frames_path: str | Path, exchange_info: str | Path | None = None
) -> dict[tuple[Market, str], Instrument]:
    """`DEFAULT_INSTRUMENTS` overlaid with `exchange_info` (default: the file `record` wrote beside
    `frames_path`, when present). Raises `ConfigError` on an unreadable file."""
    path = exchange_info if exchange_info is not None else default_exchange_info_path(frames_path)
    instruments = dict(DEFAULT_INSTRUMENTS)
    if path is not None:
        instruments.update(read_exchange_info(path))
    return instruments


def replay(
    frames_path: str | Path,
    snapshots_path: str | Path | None = None,
    *,
    instruments: dict[tuple[Market, str], Instrument] | None = None,
    pace: str = "max",
    engine: Engine | None = None,
    on_outputs: Callable[[list[Output]], None] | None = None,
    progress: bool = False,
    tick_ns: int = 0,
) -> tuple[Engine, ReplayStats]:
    """Replay one recording into `engine` (a fresh market engine by default); no database.
    `tick_ns` > 0 feeds `TimerTick`s as the live worker does (see `_Replay.steps`). `instruments`
    default: `recording_instruments(frames_path)`."""
    instruments = dict(instruments or recording_instruments(frames_path))
    engine = engine or Engine(instruments)
    run = _Replay(frames_path, snapshots_path, instruments, pace, engine, progress)
    for _, outputs in run.steps(tick_ns=tick_ns):
        if outputs and on_outputs is not None:
            on_outputs(outputs)
    return engine, run.finish()


@dataclass
class ReplayOutcome:
    engine: Engine
    stats: ReplayStats
    store: dict[str, Any] | None = None  # writer figures when a database was written


async def replay_async(
    frames_path: str | Path,
    snapshots_path: str | Path | None = None,
    *,
    config: WorkerConfig | None = None,
    db_path: str | Path | None = None,
    publish_socket: str | Path | None = None,
    instruments: dict[tuple[Market, str], Instrument] | None = None,
    pace: str = "max",
    progress: bool = False,
    publisher_ready: Callable[[Publisher], Any] | None = None,
    ticks: bool = True,
    schedule: Sequence[ScheduledOrder] | None = None,
    observers: Sequence[Callable[[Any, list[Any]], None]] = (),
) -> ReplayOutcome:
    """Replay through the same sinks as live: the store writer (`db_path`) and the feed (`publish_socket`).

    Backpressure: every `_YIELD_EVERY` events the writer and the feed get the loop; when the writer's
    queues pass half their limits (or a feed client's unsent bytes pass `_CLIENT_BACKLOG`) the replay
    waits for them. A replay may block; nothing is dropped, so a replay into a fresh database leaves the
    rows a live run over the same messages would. `ticks`: feed the live worker's `TimerTick`s at
    every `tick_interval_s` boundary of the recording's time (samples, latency queues, calendar).

    Deterministic with or without a database: there is no storage-lag gate (live's `StorageLagGate`
    reads the writer's wall-clock lag, so a slow disk would change risk decisions). The replay instead
    waits for the writer (`_make_room`), which loses nothing; a writer that stops for good raises
    `StoreError` from there.
    """
    cfg = config or load_config(env={})
    instruments = dict(instruments or recording_instruments(frames_path))
    traded = _store_instruments(frames_path, instruments)  # one market per symbol: what the file holds
    engine = shell.make_engine(cfg, instruments, traded, schedule)
    counters = PumpCounters()
    sinks: list[Any] = list(observers)
    writer: StoreWriter | None = None
    publisher: Publisher | None = None
    try:
        if db_path is not None:
            identity = recording_identity(frames_path, snapshots_path, schedule)
            check_replay_target(db_path, identity, cfg.digest())
            writer, _ = await shell.open_store(cfg, traded, "replay", db_path, {"replay_of": identity})
            markets = {i.symbol: i.market.value for i in traded.values()}
            sinks.append(StoreSink(writer, StoreAdapter(markets)))
            # No engine restore: a replay rebuilds its state from the recording itself, and a re-run
            # after a crash regenerates the same ids, which the writer skips as already written.
            # No `StorageLagGate` either: it reads the writer's wall-clock lag, so a slow disk would change
            # risk decisions; a replay waits for the writer instead (`_make_room`) and never drops.
        if publish_socket is not None:
            publisher = Publisher(
                publish_socket,
                client_buffer_bytes=max(cfg.publish.client_buffer_bytes, _CLIENT_BACKLOG * 4),
                max_queue=cfg.publish.max_queue,
                max_clients=cfg.publish.max_clients,
            )
            await publisher.start()
            sinks.append(FeedSink(publisher))
            if publisher_ready is not None:
                await publisher_ready(publisher)
        run = _Replay(frames_path, snapshots_path, instruments, pace, engine, progress)
        paced = pace == "recorded"
        tick_ns = int(cfg.tick_interval_s * 1e9) if ticks else 0
        for n, (event, outputs) in enumerate(run.steps(sleep=False, tick_ns=tick_ns), 1):
            if outputs:
                emit(sinks, counters, event, outputs)
            if paced:
                delay = (event.recv_ns - (run.stats.first_recv_ns or 0)) / 1e9 - (
                    time.perf_counter() - run.started
                )
                if delay > 0:
                    await asyncio.sleep(delay)  # recorded pace, not synchronization
            if n % _YIELD_EVERY == 0:
                await _make_room(writer, publisher)
        stats = run.finish()
        store = None
        if writer is not None:
            await writer.flush()
            store = {
                "db": str(db_path),
                "run_id": writer.run_id,
                "rows_written": writer.stats.rows_written,
                "commits": writer.stats.commits,
                "samples_dropped": writer.stats.samples_dropped,
                "duplicates_skipped": writer.stats.duplicates_skipped,
                "max_commit_latency_s": round(writer.stats.max_commit_latency_s, 4),
            }
        return ReplayOutcome(engine, stats, store)
    finally:
        if writer is not None:
            await writer.close("replay_end")
        if publisher is not None:
            await publisher.close()


_YIELD_EVERY = 512
_CLIENT_BACKLOG = 1 << 20


class ReplayTargetError(RuntimeError):
    """The `--db` file holds a run this replay must not be mixed with (exit 2)."""


def recording_identity(
    frames_path: str | Path,
    snapshots_path: str | Path | None = None,
    schedule: Sequence[ScheduledOrder] | None = None,
) -> dict[str, Any]:
    """What makes two replays the same input: the files by name and size, and the scripted orders."""
    frames = Path(frames_path)
    identity: dict[str, Any] = {"recording": frames.name, "size": frames.stat().st_size}
    if snapshots_path is not None:
        snaps = Path(snapshots_path)
        identity["snapshots"] = snaps.name
        identity["snapshots_size"] = snaps.stat().st_size if snaps.exists() else None
    if schedule:
        identity["orders"] = hashlib.sha256(repr(list(schedule)).encode()).hexdigest()
    return identity


def check_replay_target(db_path: str | Path, identity: dict[str, Any], config_digest: str) -> None:
    """Refuse a `--db` that already holds orders or fills of any run other than a replay of the same
    recording with the same configuration digest. Raises `ReplayTargetError`.

    Why: replay ids restart at 1 and the writer skips ids already in the file as replay-idempotent (the
    crash re-run case), so mixing in another run would silently drop this replay's orders and fills.
    Reads the file with a read-only sqlite3 connection; a missing or empty file is always fine.
    """
    path = Path(db_path)
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        raise ReplayTargetError(f"cannot read {path}: {exc}") from None
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"runs", "orders", "fills"} <= tables:
            return  # not (yet) a QuantumFlow store: the writer decides
        busy = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM orders) OR EXISTS (SELECT 1 FROM fills)"
        ).fetchone()[0]
        if not busy:
            return
        runs = conn.execute(
            "SELECT run_id, mode, config_digest, config_json FROM runs ORDER BY run_id"
        ).fetchall()
    except sqlite3.Error as exc:
        raise ReplayTargetError(f"cannot read {path}: {exc}") from None
    finally:
        conn.close()
    for run_id, mode, digest, config_json in runs:
        try:
            replay_of = orjson.loads(config_json).get("replay_of") if config_json else None
        except (orjson.JSONDecodeError, AttributeError):
            replay_of = None
        if mode != "replay" or replay_of is None:
            why = f"({mode})"
        elif replay_of != identity:
            same_file = all(replay_of.get(k) == identity.get(k) for k in ("recording", "size"))
            why = (
                "(a replay of this recording with other snapshots or scripted orders)"
                if same_file
                else f"(a replay of {replay_of.get('recording')})"
            )
        elif digest != config_digest:
            why = "(a replay of this recording with another configuration)"
        else:
            continue  # a re-run of the same replay, e.g. after a crash: the writer skips what it has
        raise ReplayTargetError(f"{path} already holds run {run_id} {why}; replay into a fresh --db PATH")


async def _make_room(writer: StoreWriter | None, publisher: Publisher | None) -> None:
    await asyncio.sleep(0)  # let the writer and the feed run
    if writer is not None:
        await writer.wait_for_room(min(writer.config.max_batch, writer.config.sample_capacity // 2))
    if publisher is not None:
        while publisher.queue_depth or _feed_backlog(publisher) > _CLIENT_BACKLOG:
            await asyncio.sleep(0.001)  # the client is reading: wait for it instead of dropping it


def _feed_backlog(publisher: Publisher) -> int:
    """Largest unsent byte count of any feed client (0 when none is connected)."""
    clients = getattr(publisher, "_clients", {})
    sizes = [c.transport.get_write_buffer_size() for c in clients.values() if not c.transport.is_closing()]
    return max(sizes, default=0)


def _store_instruments(
    frames_path: str | Path, instruments: dict[tuple[Market, str], Instrument], peek: int = 2000
) -> dict[tuple[Market, str], Instrument]:
    """The instruments the recording trades, from its first frames (the store keys fills by symbol)."""
    parser = FrameParser(instruments)
    seen: dict[str, tuple[Market, str]] = {}
    for i, item in enumerate(FrameReader(frames_path)):
        if i >= peek:
            break
        try:
            event = parser.parse_frame(item.frame, item.recv_ns)
        except ParseError:
            continue
        if event is not None and hasattr(event, "symbol"):
            seen.setdefault(event.symbol, (event.market, event.symbol))
    if not seen:
        return {}
    return {key: instruments[key] for key in seen.values()}


def _bad(stats: ReplayStats, item: Any, exc: ParseError) -> None:
    kind = _reason_kind(exc.reason)
    if type(item) is not RecordedFrame:
        stats.bad_snapshots += 1
        kind = "snapshot_" + kind
    else:
        stats.bad_frames += 1
    stats.bad_by_reason[kind] = stats.bad_by_reason.get(kind, 0) + 1
    total = stats.bad_frames + stats.bad_snapshots
    if total <= LOG_LIMIT:
        log.warning("bad input at recv_ns=%d (%s): %s", item.recv_ns, kind, exc.reason)
        if total == LOG_LIMIT:
            log.warning("further bad input is only counted (see the summary)")


def _wait_until(started: float, first_ns: int, recv_ns: int) -> None:
    delay = (recv_ns - first_ns) / 1e9 - (time.perf_counter() - started)
    if delay > 0:
        time.sleep(delay)


class _Progress:
    """A one-line progress bar on stderr, by compressed bytes read; only used on a terminal."""

    def __init__(self, reader: FrameReader) -> None:
        self.reader = reader
        self.size = max(reader.path.stat().st_size, 1)
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, frames: int) -> None:
        now = time.perf_counter()
        if now - self.last < 0.2:
            return
        self.last = now
        fraction = min(self.reader.position / self.size, 1.0)
        rate = frames / max(now - self.started, 1e-9)
        filled = int(fraction * 30)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:5.1%} {frames:,} frames {rate:,.0f}/s"
        )
        sys.stderr.flush()

    def done(self, frames: int) -> None:
        sys.stderr.write(f"\r[{'#' * 30}] 100.0% {frames:,} frames{' ' * 20}\n")
        sys.stderr.flush()


def build_summary(engine: Engine, stats: ReplayStats) -> dict[str, Any]:
    """The replay summary: replay counters + `engine.summary()` (which grows as the engine does)."""
    core = engine.summary()
    span_ns = (stats.last_recv_ns or 0) - (stats.first_recv_ns or 0)
    total = stats.frames + stats.snapshots
    summary: dict[str, Any] = {
        "file": stats.file,
        "snapshots_file": stats.snapshots_file,
        "pace": stats.pace,
        "messages": dict(sorted(stats.messages.items())),
        "messages_total": stats.frames,
        "snapshots": stats.snapshots,
        "symbols": sorted(core["per_symbol"]),
        "gaps": core["gaps"],
        "resyncs": core["resyncs"],
        "crossed": core["crossed"],
        "stale_snapshots": core["stale_snapshots"],
        "invalid_snapshots": core["invalid_snapshots"],
        "buffer_overflows": core["buffer_overflows"],
        "malformed_depth_resyncs": stats.malformed_depth_resyncs,
        "book_notices": stats.book_notices,
        "book_ticker_checks": core["book_ticker_checks"],
        "book_ticker_mismatches": core["book_ticker_mismatches"],
        "book_ticker_unannounced_levels": core["book_ticker_unannounced_levels"],
        "book_ticker_unexplained": core["book_ticker_unexplained"],
        "bad_frames": stats.bad_frames,
        "bad_snapshots": stats.bad_snapshots,
        "bad_by_reason": stats.bad_by_reason,
        "truncated": stats.truncated,
        "time_in_sync_seconds": core["time_in_sync_seconds"],
        "recording_seconds": span_ns / 1e9,
        "wall_seconds": stats.wall_seconds,
        "msgs_per_s": total / stats.wall_seconds if stats.wall_seconds else 0.0,
        "outputs": stats.outputs,
        "ticks": stats.ticks,
        "parser": stats.parser_counters,
        "engine": core,
    }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"replay of {summary['file']}"]
    lines.append(f"  messages        {summary['messages_total']:,} + {summary['snapshots']} snapshot(s)")
    for stream, count in summary["messages"].items():
        lines.append(f"    {stream:<28}{count:>10,}")
    lines.append(f"  symbols         {', '.join(summary['symbols']) or '-'}")
    lines.append(
        f"  gaps / resyncs  {summary['gaps']} / {summary['resyncs']}  (crossed {summary['crossed']})"
    )
    lines.append(
        f"  bookTicker      {summary['book_ticker_checks']:,} checks, {summary['book_ticker_mismatches']} "
        f"mismatches ({summary['book_ticker_unannounced_levels']} unannounced-level quirk, "
        f"{summary['book_ticker_unexplained']} unexplained)"
    )
    for name, seconds in summary["time_in_sync_seconds"].items():
        fraction = summary["engine"]["per_symbol"][name]["sync_fraction"]
        lines.append(f"  in sync         {name}: {seconds:,.1f} s ({fraction:.2%})")
    if summary["bad_frames"] or summary["bad_snapshots"]:
        lines.append(f"  bad input       {summary['bad_by_reason']}")
    if summary["truncated"]:
        lines.append("  WARNING         the recording ends in a truncated gzip stream")
    if "fills" in summary:
        by_status = ", ".join(f"{k} {v}" for k, v in summary["orders_by_status"].items()) or "-"
        lines.append(f"  signals         {summary['signals']:,}")
        lines.append(f"  orders          {summary['orders']:,} ({by_status})")
        lines.append(
            f"  fills           {summary['fills']:,} (maker {summary['fills_maker']}, taker "
            f"{summary['fills_taker']}), volume {summary['volume']}, fees {summary['fees']}"
        )
        lines.append(
            f"  P&L             realized {summary['realized_pnl']}, unrealized {summary['unrealized_pnl']}, "
            f"max drawdown {summary['max_drawdown']}, equity {summary['equity']}"
        )
        slippage = summary["mean_slippage_bps"]
        markouts = ", ".join(f"{h} {v:+.2f}" for h, v in summary["mean_markout_bps"].items()) or "-"
        lines.append(
            f"  fill quality    slippage {'-' if slippage is None else f'{slippage:+.2f}'} bps, "
            f"markouts (bps) {markouts}"
        )
        for model, figures in (summary.get("fill_models") or {}).items():
            lines.append(
                f"  model {model:<13} fills {figures['fills']} (maker {figures['fills_maker']}), "
                f"realized {figures['realized_pnl']}, fees {figures['fees']}, "
                f"digest {figures['fills_digest'][:12]}"
            )
    store = summary.get("store")
    if store:
        lines.append(
            f"  store           {store['db']} (run {store['run_id']}): {store['rows_written']:,} rows in "
            f"{store['commits']} commits, {store['samples_dropped']} samples dropped"
        )
    lines.append(
        f"  recording {summary['recording_seconds']:,.1f} s, wall {summary['wall_seconds']:,.2f} s, "
        f"{summary['msgs_per_s']:,.0f} msgs/s"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a .ws.jsonl.gz recording")
    parser.add_argument(
        "--snapshots", type=Path, default=None, help="snapshots JSONL (default: the one beside FILE)"
    )
    parser.add_argument(
        "--exchange-info",
        type=Path,
        default=None,
        metavar="PATH",
        help="exchangeInfo filters of the recorded symbols (default: the .exchangeinfo.json beside FILE, "
        "else the built-in BTCUSDT/ETHUSDT defaults)",
    )
    parser.add_argument("--pace", choices=("recorded", "max"), default="max", help="default: max")
    parser.add_argument("--summary-json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    db = parser.add_mutually_exclusive_group()
    db.add_argument(
        "--db",
        type=Path,
        default=Path(DEFAULT_REPLAY_DB_PATH),
        help=f"SQLite file the replay writes, as a live run would (default: ./{DEFAULT_REPLAY_DB_PATH}, "
        f"apart from the live worker's ./{DEFAULT_DB_PATH}, which refuses a file holding replays; "
        "never $QF_DB, so a replay cannot land in the live database by accident)",
    )
    db.add_argument("--no-db", action="store_true", help="write nothing (market replay and summary only)")
    parser.add_argument(
        "--publish", default=None, metavar="SOCKET", help="serve the replay's feed on this Unix socket"
    )
    orders = parser.add_argument_group("scripted orders and fill models")
    orders.add_argument(
        "--orders",
        type=Path,
        default=None,
        metavar="SCHEDULE.csv",
        help="place these orders, not the strategy's",
    )
    orders.add_argument(
        "--orders-out", type=Path, default=None, metavar="RESULT.csv", help="one row per order"
    )
    orders.add_argument(
        "--compare-fill-models",
        action="store_true",
        help="also replay under the conservative and probabilistic queue models (no database) and compare",
    )
    add_config_arguments(parser, live=False)


def _compare_fill_models(
    args: argparse.Namespace,
    snapshots: Path | None,
    cfg: WorkerConfig,
    schedule: Sequence[ScheduledOrder] | None,
    instruments: dict[tuple[Market, str], Instrument],
) -> dict[str, Any]:
    """The same replay under each queue model, without a database: what the fill model changes."""
    results = {}
    for model in QUEUE_MODELS:
        variant = dataclasses.replace(cfg, broker=dataclasses.replace(cfg.broker, queue_model=model))
        tally_sink = _TallySink()
        outcome = asyncio.run(
            replay_async(
                args.file,
                snapshots,
                config=variant,
                instruments=instruments,
                schedule=schedule,
                observers=[tally_sink],
            )
        )
        results[model] = tally_sink.summary(outcome.engine)
    return results


class _TallySink:
    """A replay observer that sums what was traded (`worker.tally.TradingTally`)."""

    def __init__(self) -> None:
        self.tally = TradingTally()

    def __call__(self, _event: Any, outputs: list[Any]) -> None:
        self.tally.add(outputs)

    def summary(self, engine: Engine) -> dict[str, Any]:
        trader = engine.trader
        if trader is None:
            return {}
        return self.tally.summary(trader.summary(), trader.instruments)


def main(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        level = str(args.log_level or "INFO").upper()
        logging.basicConfig(
            level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO",
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
    if not args.file.exists():
        log.error("recording %s does not exist", args.file)
        return 2
    snapshots = args.snapshots if args.snapshots is not None else default_snapshots_path(args.file)
    if snapshots is not None and not Path(snapshots).exists():
        log.error("snapshots file %s does not exist", snapshots)
        return 2
    if snapshots is None:
        log.warning("no snapshots file: books stay SYNCING (only message counts are meaningful)")
    exchange_info = getattr(args, "exchange_info", None)
    if exchange_info is not None and not Path(exchange_info).exists():
        log.error("exchange info file %s does not exist", exchange_info)
        return 2
    progress = sys.stderr.isatty() and not args.no_progress
    try:
        instruments = recording_instruments(args.file, exchange_info)
        # The replay's configuration: its file and --set only; the live worker's environment stays out.
        cfg = load_config(args.config, env={}, sets=args.sets)
        schedule = read_schedule(args.orders) if args.orders is not None else None
        tally = _TallySink()
        results = ScheduleResults()
        outcome = asyncio.run(
            replay_async(
                args.file,
                snapshots,
                config=cfg,
                db_path=None if args.no_db else args.db,
                publish_socket=args.publish,
                instruments=instruments,
                pace=args.pace,
                progress=progress,
                schedule=schedule,
                observers=[tally, results],
            )
        )
        engine, stats, store = outcome.engine, outcome.stats, outcome.store
        comparison = (
            _compare_fill_models(args, snapshots, cfg, schedule, instruments)
            if args.compare_fill_models
            else None
        )
    except (ConfigError, ScheduleError, ReplayTargetError) as exc:
        log.error("%s", exc)
        return 2
    except StoreError as exc:
        log.error("cannot replay into %s: %s", args.db, exc)
        return 1
    summary = build_summary(engine, stats)
    summary.update(tally.summary(engine))
    if comparison is not None:
        summary["fill_models"] = comparison
    if store is not None:
        summary["store"] = store
    if args.orders_out is not None and engine.trader is not None:
        written = results.write(args.orders_out, engine.trader.instruments)
        log.info("wrote %d scripted order results to %s", written, args.orders_out)
    print(format_summary(summary))
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return 0
