"""Evidence on real data: does OFI explain price moves here, and are the strategy's signals calibrated?

Usage: `python loadtests/signal_study.py [--horizon-ms 10000] [--json] [FILE ...]`
(default: both recordings in ../shared/data/binance).

What it does, per recording: replays frames + snapshots in arrival order through the real parser and
`SymbolBook`; every applied depth event updates `Features` (trades too); a GAP / CROSSED resets them.
1. Contemporaneous regression (Cont, Kukanov & Stoikov 2014, eq. 3): over consecutive non-overlapping
   intervals of 1 s and 10 s, dMid_k = alpha + beta * OFI_k + e, with dMid in ticks and OFI in lots,
   both taken at the interval boundaries (the values that prevailed there). Prints beta, R^2 and n, and
   for comparison R^2 of multi-level OFI and of signed trade flow. Intervals with no LIVE book at either
   end are left out.
2. Calibration: the strategy runs on every book event as if always flat (so every entry it would take
   is seen; the cooldown still stops repeats). For each entry signal, the mid `horizon` later (the one
   prevailing then) is compared with the mid at the signal: hit = it moved in the signal's direction
   (strictly); move = the signed move in bps. Grouped by confidence bucket.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.bench_broker import recorded_events  # noqa: E402
from loadtests.recordings import DEFAULT_FILES  # noqa: E402
from worker.book import DiffResult, SnapshotResult, SymbolBook  # noqa: E402
from worker.events import DepthDiff, Trade  # noqa: E402
from worker.features import FeatureConfig, Features  # noqa: E402
from worker.instruments import DEFAULT_INSTRUMENTS  # noqa: E402
from worker.strategy import SignalKind, Strategy, StrategyConfig  # noqa: E402

NS = 1_000_000_000


def replay(path: Path) -> Iterator[tuple[str, Any, int]]:
    """Yield ("book", SymbolBook, recv_ns) after each applied diff of a LIVE book (and once when it goes
    LIVE), ("trade", Trade, recv_ns) per trade, ("resync", SymbolBook, recv_ns) when the book is lost."""
    books: dict[tuple[Any, str], SymbolBook] = {}

    def book_of(market: Any, symbol: str) -> SymbolBook:
        key = (market, symbol)
        if key not in books:
            books[key] = SymbolBook(DEFAULT_INSTRUMENTS[key])
        return books[key]

    for event in recorded_events(path, 0):
        if type(event) is DepthDiff:
            sb = book_of(event.market, event.symbol)
            result = sb.on_diff(event)
            if result is DiffResult.APPLIED:
                yield "book", sb, event.recv_ns
            elif result in (DiffResult.GAP, DiffResult.CROSSED):
                yield "resync", sb, event.recv_ns
        elif type(event) is Trade:
            yield "trade", event, event.recv_ns
        elif hasattr(event, "last_update_id"):  # DepthSnapshot
            sb = book_of(event.market, event.symbol)
            if sb.on_snapshot(event) is SnapshotResult.SYNCED:
                yield "book", sb, event.recv_ns


def ols(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """y = a + b x: slope, intercept, R^2, n."""
    n = len(x)
    if n < 3 or np.var(x) == 0:
        return {"beta": float("nan"), "alpha": float("nan"), "r2": float("nan"), "n": n}
    beta, alpha = np.polyfit(x, y, 1)
    resid = y - (alpha + beta * x)
    r2 = 1.0 - float(np.sum(resid**2)) / float(np.sum((y - y.mean()) ** 2))
    return {"beta": float(beta), "alpha": float(alpha), "r2": r2, "n": n}


def study(path: Path, horizon_ms: int, strategy_config: StrategyConfig) -> dict[str, Any]:
    fconfig = FeatureConfig()
    features: Features | None = None
    strategy: Strategy | None = None
    intervals = {1: [], 10: []}  # seconds -> list of (cum_ofi, cum_mlofi, cum_flow, mid2) at boundaries
    last_boundary = {1: -1, 10: -1}
    book_ts: list[int] = []
    book_mid2: list[int] = []
    signals: list[tuple[int, int, float, int, float]] = []  # ts, side, confidence, mid2, score
    events = resyncs = 0
    market = None
    tick = lot = None

    def state_now() -> tuple[int, int, int, int] | None:
        if features is None or features.last is None:
            return None
        c = features.cumulative
        return c["ofi"], c["mlofi"], c["trade_flow"], features.last.mid2

    for kind, obj, ts in replay(path):
        events += 1
        for secs in intervals:  # record the prevailing state at each interval boundary crossed
            k = ts // (secs * NS)
            if k != last_boundary[secs]:
                if last_boundary[secs] >= 0:  # quiet stretch: the same state held at every boundary
                    now = state_now()
                    for b in range(last_boundary[secs] + 1, min(k, last_boundary[secs] + 3600) + 1):
                        intervals[secs].append((b, now))
                last_boundary[secs] = k
        if kind == "trade":
            if features is not None:
                features.on_trade(obj)
            continue
        if features is None:
            inst = obj.book.instrument
            market, tick, lot = inst.market, inst.tick_size, inst.step_size
            features = Features(inst.symbol, fconfig)
            strategy = Strategy(inst.symbol, fconfig.windows_ms, strategy_config)
        if kind == "resync":
            resyncs += 1
            features.reset()
            strategy.reset()
            for secs in intervals:  # an interval spanning a reset has no meaningful cumulative
                intervals[secs].append((-1, None))
            continue
        fv = features.on_book(obj.book, ts)
        if fv is None:
            continue
        book_ts.append(ts)
        book_mid2.append(fv.mid2)
        sig = strategy.on_features(fv, 0, None, ts)
        if sig is not None and sig.kind is SignalKind.ENTRY:
            signals.append((ts, int(sig.side), sig.confidence, fv.mid2, sig.score))

    out: dict[str, Any] = {
        "file": path.name,
        "market": str(market),
        "tick": str(tick),
        "lot": str(lot),
        "events": events,
        "resyncs": resyncs,
    }
    for secs, rows in intervals.items():
        dm, ofi, mlofi, flow = [], [], [], []
        for (k0, s0), (k1, s1) in pairwise(rows):
            if s0 is None or s1 is None or k1 != k0 + 1:
                continue
            ofi.append(s1[0] - s0[0])
            mlofi.append(s1[1] - s0[1])
            flow.append(s1[2] - s0[2])
            dm.append((s1[3] - s0[3]) / 2)
        y = np.array(dm, dtype=float)
        out[f"ofi_{secs}s"] = ols(np.array(ofi, dtype=float), y)
        out[f"mlofi_{secs}s"] = ols(np.array(mlofi, dtype=float), y)
        out[f"flow_{secs}s"] = ols(np.array(flow, dtype=float), y)
    out["calibration"] = calibration(signals, np.array(book_ts), np.array(book_mid2), horizon_ms)
    out["signals"] = len(signals)
    return out


def calibration(
    signals: list[tuple[int, int, float, int, float]], ts: np.ndarray, mid2: np.ndarray, horizon_ms: int
) -> list[dict[str, Any]]:
    edges = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0001]
    buckets: dict[int, list[tuple[bool, float]]] = {i: [] for i in range(len(edges) - 1)}
    below: list[tuple[bool, float]] = []
    horizon = horizon_ms * 1_000_000
    if len(ts) == 0:
        return []
    for t, side, conf, m0, _score in signals:
        target = t + horizon
        if target > ts[-1]:
            continue  # the recording ends before the horizon
        j = int(np.searchsorted(ts, target, side="right")) - 1
        move_bps = side * (int(mid2[j]) - m0) / m0 * 1e4
        row = (move_bps > 0, move_bps)
        for i in range(len(edges) - 1):
            if edges[i] <= conf < edges[i + 1]:
                buckets[i].append(row)
                break
        else:
            below.append(row)
    table = []
    for i, rows in buckets.items():
        close = "]" if i == len(edges) - 2 else ")"
        table.append(
            {
                "bucket": f"[{edges[i]:.1f}, {min(edges[i + 1], 1.0):.1f}{close}",
                "count": len(rows),
                "hit_rate": (sum(h for h, _ in rows) / len(rows)) if rows else float("nan"),
                "flat_rate": (sum(m == 0 for _, m in rows) / len(rows)) if rows else float("nan"),
                "mean_move_bps": (sum(m for _, m in rows) / len(rows)) if rows else float("nan"),
            }
        )
    if below:
        table.insert(
            0,
            {
                "bucket": "< 0.5",
                "count": len(below),
                "hit_rate": sum(h for h, _ in below) / len(below),
                "flat_rate": sum(m == 0 for _, m in below) / len(below),
                "mean_move_bps": sum(m for _, m in below) / len(below),
            },
        )
    return table


def render(r: dict[str, Any], horizon_ms: int) -> str:
    lines = [f"{r['file']}  ({r['market']}, tick {r['tick']}, lot {r['lot']}; {r['events']:,} events)"]
    lines.append("  dMid[ticks] = a + b * X[lots] per interval     beta        R^2      n")
    for secs in (1, 10):
        for name in ("ofi", "mlofi", "flow"):
            s = r[f"{name}_{secs}s"]
            lines.append(f"    {secs:>2} s  {name:<6} {s['beta']:>14.5f}  {s['r2']:>9.3f}  {s['n']:>5}")
    lines.append(f"  signals: {r['signals']} entries; calibration at horizon {horizon_ms / 1000:g} s")
    lines.append("    confidence      count   hit rate   flat    mean move (bps)")
    for row in r["calibration"]:
        lines.append(
            f"    {row['bucket']:<12} {row['count']:>8}   {row['hit_rate']:>7.1%}  {row['flat_rate']:>6.1%}"
            f"   {row['mean_move_bps']:>+10.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--horizon-ms", type=int, default=10_000)
    parser.add_argument("--strategy", type=str, default="{}", help="StrategyConfig overrides as JSON")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    files = args.files or DEFAULT_FILES
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"recording not found: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    config = StrategyConfig.from_dict(json.loads(args.strategy))
    for path in files:
        result = study(path, args.horizon_ms, config)
        print(json.dumps(result) if args.json else render(result, args.horizon_ms), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
