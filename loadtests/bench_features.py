"""Per-event cost of the signal path: `Features.on_book` + `Strategy.on_features` per applied depth frame.

Usage: `python loadtests/bench_features.py [--json] [--repeat N] [FILE ...]` (default: both recordings).

What is measured: the real recordings are replayed through the real parser and `SymbolBook`
(`signal_study.replay`); around each applied depth event, `perf_counter_ns` times exactly
`features.on_book(book, ts)` plus `strategy.on_features(fv, position, entry, ts)` (the strategy sees a
flat position, so it evaluates its entry path, the common case). Trades are timed separately
(`on_trade`). Parsing and the book are outside the timer: `loadtests/bench_book.py` measures them, and
measures the whole hot path once the engine runs features and strategy.

Memory: after the timed pass, the same event stream (book tops captured per event) is fed `--repeat`
more times into the same Features/Strategy, shifted forward in time; the growth of
`sys.getallocatedblocks()` over the last pass should be about 0 (constant memory, whatever the length).

`--engine` adds bench_book's measure (parse + `Engine.on_event` per depth frame) with and without the
lead's `Trader` (features, strategy, risk, broker, portfolio), so the whole trading half is visible.

Targets (issue 3): features + strategy <= 5 µs median and <= 30 µs p99 per depth frame.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from array import array
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.recordings import DEFAULT_FILES, percentile  # noqa: E402
from loadtests.signal_study import replay  # noqa: E402
from worker.features import FeatureConfig, Features  # noqa: E402
from worker.strategy import Strategy, StrategyConfig  # noqa: E402


class _Frozen:
    """An OrderBook-shaped view of one recorded top, so memory passes replay without a book."""

    __slots__ = ("asks", "bids")

    def top_bids(self, k: int) -> list:
        return self.bids[:k]

    def top_asks(self, k: int) -> list:
        return self.asks[:k]


def bench(path: Path, repeat: int) -> dict:
    """Phase 1 times the live replay against the real book; phase 2 checks memory over `repeat` passes."""
    fconfig = FeatureConfig()
    n = fconfig.levels
    features = Features("BTCUSDT", fconfig)
    strategy = Strategy("BTCUSDT", fconfig.windows_ms, StrategyConfig())
    perf = time.perf_counter_ns
    on_book, on_trade, on_features = features.on_book, features.on_trade, strategy.on_features
    book_ns = array("q")
    trade_ns = array("q")
    events: list[tuple] = []
    signals = 0
    gc.collect()
    for kind, obj, ts in replay(path):
        if kind == "book":
            t0 = perf()
            fv = on_book(obj.book, ts)
            if fv is not None and on_features(fv, 0, None, ts) is not None:
                signals += 1
            book_ns.append(perf() - t0)
            events.append(("book", (obj.book.top_bids(n), obj.book.top_asks(n)), ts))
        elif kind == "trade":
            t0 = perf()
            on_trade(obj)
            trade_ns.append(perf() - t0)
            events.append(("trade", obj, ts))

    # phase 2: the same stream again and again, time shifted, into the same objects
    span = events[-1][2] - events[0][2] + 1_000_000_000
    view = _Frozen()
    blocks_start = 0
    for p in range(1, repeat + 1):
        shift = p * span
        if p == repeat:
            gc.collect()
            blocks_start = sys.getallocatedblocks()
        for kind, obj, ts in events:
            if kind == "book":
                view.bids, view.asks = obj
                fv = on_book(view, ts + shift)
                if fv is not None:
                    on_features(fv, 0, None, ts + shift)
            else:
                on_trade(replace(obj, recv_ns=obj.recv_ns + shift))
    gc.collect()
    blocks = sys.getallocatedblocks() - blocks_start
    sb = array("q", sorted(book_ns))
    st = array("q", sorted(trade_ns))
    return {
        "file": path.name,
        "depth_events": len(sb),
        "trades": len(st),
        "signals": signals,
        "book_p50_ns": percentile(sb, 0.5),
        "book_p99_ns": percentile(sb, 0.99),
        "book_p999_ns": percentile(sb, 0.999),
        "book_max_ns": sb[-1] if sb else 0,
        "book_mean_ns": sum(sb) // max(len(sb), 1),
        "trade_p50_ns": percentile(st, 0.5),
        "trade_p99_ns": percentile(st, 0.99),
        "memory_passes": repeat,
        "blocks_last_pass": blocks,
        "blocks_per_event": blocks / max(len(events), 1),
    }


def engine_hot_path(path: Path, with_trader: bool) -> dict:
    """bench_book's measure (parse + `Engine.on_event` per depth frame), with or without the Trader
    (features, strategy, risk, broker, portfolio): the difference is what the trading half adds."""
    from worker.binance.parse import FrameParser, ParseError
    from worker.binance.recording import RecordedFrame, default_snapshots_path, merged
    from worker.engine import Engine
    from worker.events import DepthDiff, Market
    from worker.instruments import DEFAULT_INSTRUMENTS
    from worker.trader import Trader

    parser = FrameParser(DEFAULT_INSTRUMENTS)
    market = Market.USDM if path.name.startswith("usdm") else Market.SPOT
    trader = Trader([DEFAULT_INSTRUMENTS[(market, "BTCUSDT")]]) if with_trader else None
    engine = Engine(DEFAULT_INSTRUMENTS, trader=trader)
    perf = time.perf_counter_ns
    depth_ns = array("q")
    gc.collect()
    for item in merged(path, default_snapshots_path(path)):
        is_frame = type(item) is RecordedFrame
        t0 = perf()
        try:
            if is_frame:
                event = parser.parse_frame(item.frame, item.recv_ns)
            else:
                event = parser.parse_snapshot(item.body, item.symbol, item.market, item.recv_ns)
        except ParseError:
            continue
        if event is not None:
            engine.on_event(event)
        elapsed = perf() - t0
        if is_frame and type(event) is DepthDiff:
            depth_ns.append(elapsed)
    sd = array("q", sorted(depth_ns))
    return {"p50_ns": percentile(sd, 0.5), "p99_ns": percentile(sd, 0.99)}


def render(r: dict) -> str:
    return (
        f"{r['file']}: {r['depth_events']:,} depth events, {r['trades']:,} trades, {r['signals']} signals\n"
        f"  features+strategy per depth frame: p50 {r['book_p50_ns'] / 1000:.2f} µs"
        f"  p99 {r['book_p99_ns'] / 1000:.2f} µs  p99.9 {r['book_p999_ns'] / 1000:.2f} µs"
        f"  max {r['book_max_ns'] / 1000:.1f} µs  mean {r['book_mean_ns'] / 1000:.2f} µs"
        f"  (targets p50 <= 5, p99 <= 30)\n"
        f"  on_trade: p50 {r['trade_p50_ns'] / 1000:.2f} µs  p99 {r['trade_p99_ns'] / 1000:.2f} µs;"
        f"  memory: {r['blocks_last_pass']:+d} blocks over pass {r['memory_passes']} of the same stream"
        f" ({r['blocks_per_event']:+.5f}/event)"
        + (
            f"\n  engine per depth frame (parse + on_event): book only p50"
            f" {r['engine_bare']['p50_ns'] / 1000:.1f} µs p99 {r['engine_bare']['p99_ns'] / 1000:.1f} µs;"
            f" with Trader p50 {r['engine_trader']['p50_ns'] / 1000:.1f} µs"
            f" p99 {r['engine_trader']['p99_ns'] / 1000:.1f} µs"
            if "engine_bare" in r
            else ""
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--engine", action="store_true", help="also time the Engine with and without Trader")
    args = parser.parse_args(argv)
    files = args.files or DEFAULT_FILES
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"recording not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    for path in files:
        result = bench(path, max(1, args.repeat))
        if args.engine:
            bare = engine_hot_path(path, with_trader=False)
            full = engine_hot_path(path, with_trader=True)
            result["engine_bare"], result["engine_trader"] = bare, full
        print(json.dumps(result) if args.json else render(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
