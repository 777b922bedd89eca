"""`python -m worker replay FILE [--snapshots FILE] [--pace recorded|max] [--summary-json PATH]`.

Design:
- Feeds a recording through the same code as live: raw frame -> `FrameParser.parse_frame` ->
  `Engine.on_event`, snapshots through `parse_snapshot`, merged with the frames by `recv_ns`. Any number
  of symbols; spot and USD-M are told apart by each frame's content (the parser's inference).
- Deterministic: no wall clock reaches the engine; `--pace recorded` only sleeps between frames.
- Streams from disk (constant memory). A bad frame costs one log line (the first `LOG_LIMIT` of them,
  then a count) and a counter; the replay keeps going.
- `build_summary(engine, stats)` turns the engine's counters and the replay's own into the summary, so
  later engine parts (strategy, broker) appear in it by extending `Engine.summary()`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from worker.binance.parse import FrameParser, ParseError
from worker.binance.recording import FrameReader, RecordedFrame, default_snapshots_path, merged
from worker.engine import Engine, Output
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument

log = logging.getLogger("worker.replay")
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
    outputs: int = 0
    bad_frames: int = 0
    bad_by_reason: dict[str, int] = field(default_factory=dict)
    bad_snapshots: int = 0
    bad_lines: int = 0
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


def replay(
    frames_path: str | Path,
    snapshots_path: str | Path | None = None,
    *,
    instruments: dict[tuple[Market, str], Instrument] | None = None,
    pace: str = "max",
    engine: Engine | None = None,
    on_outputs: Callable[[list[Output]], None] | None = None,
    progress: bool = False,
) -> tuple[Engine, ReplayStats]:
    """Replay one recording into `engine` (a fresh market engine by default)."""
    instruments = dict(instruments or DEFAULT_INSTRUMENTS)
    parser = FrameParser(instruments)
    engine = engine or Engine(instruments)
    stats = ReplayStats(str(frames_path), str(snapshots_path) if snapshots_path else None, pace)
    reader = FrameReader(frames_path)
    messages = stats.messages
    on_event = engine.on_event
    parse_frame = parser.parse_frame
    bar = _Progress(reader) if progress else None
    started = time.perf_counter()
    for item in merged(reader, snapshots_path):
        recv_ns = item.recv_ns
        if stats.first_recv_ns is None:
            stats.first_recv_ns = recv_ns
        stats.last_recv_ns = recv_ns
        if pace == "recorded":
            _wait_until(started, stats.first_recv_ns, recv_ns)
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
            continue
        if event is None:
            continue
        outputs = on_event(event)
        if outputs:
            stats.outputs += len(outputs)
            if on_outputs is not None:
                on_outputs(outputs)
        if bar is not None and not stats.frames & 1023:
            bar.update(stats.frames)
    stats.wall_seconds = time.perf_counter() - started
    stats.bad_lines = reader.bad_lines
    stats.truncated = reader.truncated
    if reader.truncated:
        log.warning("%s ends in a truncated gzip stream: replayed what was readable", frames_path)
    if bar is not None:
        bar.done(stats.frames)
    stats.parser_counters = parser.counters
    return engine, stats


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
    parser.add_argument("--pace", choices=("recorded", "max"), default="max", help="default: max")
    parser.add_argument("--summary-json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def main(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
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
    progress = sys.stderr.isatty() and not args.no_progress
    engine, stats = replay(args.file, snapshots, pace=args.pace, progress=progress)
    summary = build_summary(engine, stats)
    print(format_summary(summary))
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return 0
