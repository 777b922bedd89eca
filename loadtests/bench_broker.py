"""Broker benchmark: per-event cost of the paper venue with a few resting orders, on a real recording.

Usage: `python loadtests/bench_broker.py [--json] [--orders N] [--limit N] [FILE]` (default: the spot
recording in ../shared/data/binance; a synthetic stream when it is absent).

What is measured: only the broker's calls for each event (`advance` before the book changes plus
`on_book` after it, or `on_trade`), timed with `perf_counter_ns`; parsing and the book update are
outside the timer (bench_book.py measures those). A small quoting loop keeps `--orders` resting orders
per side a few ticks behind the touch (re-placed when one finishes) and sends a market order every
2000 events, so the figures include queue updates, trade matching, crosses, walking the book and
markouts. Both queue models run over the same events; their fill counts are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.recordings import SPOT_FILE as DEFAULT_FILE  # noqa: E402
from loadtests.recordings import percentile  # noqa: E402


def pct(values: array, q: float) -> float:
    """Quantile `q` of nanosecond `values`, in µs."""
    return percentile(sorted(values), q) / 1000


def recorded_events(path: Path, limit: int):
    """Parsed events of a recording, in receive order (parsing is not part of what we time)."""
    from worker.binance.parse import FrameParser, ParseError
    from worker.binance.recording import FrameReader, RecordedFrame, default_snapshots_path, merged
    from worker.instruments import DEFAULT_INSTRUMENTS

    parser = FrameParser(DEFAULT_INSTRUMENTS)
    n = 0
    for item in merged(FrameReader(path), default_snapshots_path(path)):
        try:
            if type(item) is RecordedFrame:
                event = parser.parse_frame(item.frame, item.recv_ns)
            else:
                event = parser.parse_snapshot(item.body, item.symbol, item.market, item.recv_ns)
        except ParseError:
            continue
        if event is not None:
            yield event
            n += 1
            if limit and n >= limit:
                return


def synthetic_events(count: int, seed: int = 7):
    """A random walk book (used only when the recording is absent)."""
    from worker.events import DepthDiff, DepthSnapshot, Market, Trade

    rng = random.Random(seed)
    mid = 6_000_000
    bids = [(mid - 1 - i, rng.randint(1, 500)) for i in range(1000)]
    asks = [(mid + 1 + i, rng.randint(1, 500)) for i in range(1000)]
    ts = 1_700_000_000_000_000_000
    yield DepthSnapshot("BTCUSDT", Market.SPOT, 1, bids, asks, ts)
    uid = 1
    for _ in range(count):
        ts += rng.randint(100_000, 3_000_000)
        if rng.random() < 0.3:
            yield Trade("BTCUSDT", Market.SPOT, uid, mid + rng.choice((-1, 1)), rng.randint(1, 50),
                        rng.random() < 0.5, ts, ts)  # fmt: skip
            continue
        mid += rng.choice((-1, 0, 0, 1))
        levels = [(mid - rng.randint(1, 20), rng.randint(0, 500)) for _ in range(8)]
        alevels = [(mid + rng.randint(1, 20), rng.randint(0, 500)) for _ in range(8)]
        uid += 1
        yield DepthDiff("BTCUSDT", Market.SPOT, uid, uid, None, levels, alevels, ts, ts)


def run(events: list, model: str, per_side: int) -> dict:
    from worker.book import DiffResult, SnapshotResult, SymbolBook
    from worker.broker import Broker, BrokerConfig
    from worker.events import DepthDiff, DepthSnapshot, Trade
    from worker.instruments import DEFAULT_INSTRUMENTS
    from worker.orders import OrderType, Side, TimeInForce, new_order

    books: dict = {}
    broker = Broker(BrokerConfig(queue_model=model, seed=3))
    perf = time.perf_counter_ns
    book_ns, trade_ns = array("q"), array("q")
    next_id = 1
    outputs = 0
    live_ids: dict[int, Side] = {}
    for i, ev in enumerate(events):
        et = type(ev)
        if et is DepthDiff or et is DepthSnapshot:
            sb = books.get(ev.symbol)
            if sb is None:
                sb = books[ev.symbol] = SymbolBook(DEFAULT_INSTRUMENTS[(ev.market, ev.symbol)])
            t0 = perf()
            out = broker.advance(ev.recv_ns)
            t1 = perf()
            if et is DepthDiff:
                result = sb.on_diff(ev)
                changed, diff = result is DiffResult.APPLIED, ev
            else:
                changed, diff = sb.on_snapshot(ev) is SnapshotResult.SYNCED, None
            if changed:
                t2 = perf()
                out += broker.on_book(ev.symbol, sb.book, diff, ev.recv_ns)
                t1 += perf() - t2
            book_ns.append(t1 - t0)
        elif et is Trade:
            t0 = perf()
            out = broker.on_trade(ev)
            trade_ns.append(perf() - t0)
        else:
            continue
        outputs += len(out)
        for o in out:
            order = getattr(o, "order", None)
            if order is not None and order.is_terminal:
                live_ids.pop(order.order_id, None)
        # The quoting loop (not timed): keep `per_side` orders per side a few ticks behind the touch.
        sb = books.get(ev.symbol)
        if sb is None or sb.state != "live":
            continue
        book = sb.book
        bb, ba = book.best_bid(), book.best_ask()
        if bb is None or ba is None:
            continue
        sides = list(live_ids.values())
        for side, ref in ((Side.BUY, bb[0]), (Side.SELL, ba[0])):
            while sides.count(side) < per_side:
                price = ref - side * (sides.count(side) * 2)
                o = new_order(
                    next_id, ev.symbol, side, OrderType.LIMIT, TimeInForce.GTC, 20, price, ev.recv_ns
                )
                broker.submit(o, None, ev.recv_ns)
                live_ids[next_id] = side
                sides.append(side)
                next_id += 1
        if i % 2000 == 0:
            side = Side.BUY if (i // 2000) % 2 else Side.SELL
            o = new_order(next_id, ev.symbol, side, OrderType.MARKET, TimeInForce.IOC, 50, None, ev.recv_ns)
            broker.submit(o, None, ev.recv_ns)
            next_id += 1
    all_ns = book_ns + trade_ns
    st = broker.stats
    return {
        "model": broker.model_label,
        "events": len(all_ns),
        "book_events": len(book_ns),
        "trades": len(trade_ns),
        "orders": next_id - 1,
        "fills": st.fills,
        "maker_fills": st.maker_fills,
        "taker_fills": st.taker_fills,
        "rejected": st.rejected,
        "outputs": outputs,
        "book_median_us": pct(book_ns, 0.5),
        "book_p99_us": pct(book_ns, 0.99),
        "trade_median_us": pct(trade_ns, 0.5),
        "trade_p99_us": pct(trade_ns, 0.99),
        "all_mean_us": (sum(all_ns) / len(all_ns) / 1000) if all_ns else 0.0,
        "all_p99_us": pct(all_ns, 0.99),
        "all_max_us": max(all_ns) / 1000 if all_ns else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--orders", type=int, default=3, help="resting orders per side")
    ap.add_argument("--limit", type=int, default=0, help="stop after N events (0 = all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.file.exists():
        source = str(args.file)
        events = list(recorded_events(args.file, args.limit))
    else:
        source = "synthetic (recording not found)"
        events = list(synthetic_events(args.limit or 200_000))
    results = [run(events, model, args.orders) for model in ("conservative", "probabilistic")]
    if args.json:
        print(json.dumps({"source": source, "results": results}, indent=2))
        return 0
    print(f"source: {source}; {args.orders} resting orders per side")
    for r in results:
        print(
            f"{r['model']:>28}: {r['events']} events ({r['trades']} trades) | book median "
            f"{r['book_median_us']:.1f} µs p99 {r['book_p99_us']:.1f} | trade median "
            f"{r['trade_median_us']:.1f} µs p99 {r['trade_p99_us']:.1f} | mean {r['all_mean_us']:.2f} µs "
            f"max {r['all_max_us']:.0f} | "
            f"orders {r['orders']} fills {r['fills']} (maker {r['maker_fills']}, taker {r['taker_fills']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
