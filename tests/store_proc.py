"""A stand-in worker for the store's process tests: writes orders and fills through the real StoreWriter.

Fill `i` is a pure function of `i` (like a deterministic replay), so a restart that starts over from fill 1
exercises the writer's replay idempotency, and one that resumes from the recovered max id continues.

Prints one line per commit to stdout: `committed <max fill id> <monotonic ns>`; `ready <max id>` at start.
SIGTERM: flush, close, exit 0 (what Litestream's exec child must do).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, fill, new_order
from worker.store import records
from worker.store.writer import RunInfo, StoreWriter, WriterConfig

INSTRUMENT = DEFAULT_INSTRUMENTS[(Market.USDM, "BTCUSDT")]  # may go short
T0 = 1_723_161_240_000_000_000  # 2024-08-08T23:54Z, the recordings' start


def outputs_for(i: int) -> list:
    """Order i, its fill, its Filled update, and a sample: the same values every time."""
    side = Side.BUY if (i // 3) % 2 == 0 else Side.SELL
    ts = T0 + i * 50_000_000
    price = 600_000 + (i * 37) % 500
    order = new_order(i, "BTCUSDT", side, OrderType.LIMIT, TimeInForce.GTC, 10 + i % 7, price, ts, "script")
    qty = order.qty
    done = fill(order, qty)
    f = Fill(
        i,
        i,
        "BTCUSDT",
        side,
        price,
        qty,
        3 + i % 5,
        "USDT",
        Liquidity.MAKER,
        ts + 1,
        "test/1",
        0,
        0,
        1.0,
        1.0,
        0.0,
    )
    return [
        records.OrderUpdate(order, ts),
        f,
        records.OrderUpdate(done, ts + 1),
        records.EquitySample(ts, 10**13 + i, 10**13, 0, 0, 0, 0),
        records.BookTop(ts, "usdm", "BTCUSDT", price, 5, price + 1, 7),
    ]


async def main(args: argparse.Namespace) -> int:
    writer = StoreWriter(args.db, [INSTRUMENT], RunInfo("test", "test", "digest"), WriterConfig())
    state = await writer.start()
    start = 1 if args.from_start else state.max_fill_id + 1
    print(f"ready {state.max_fill_id} {state.fills}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    i = start
    end = start + args.count if args.count else None
    while not stop.is_set() and (end is None or i < end):
        upto = i + args.per_commit if end is None else min(i + args.per_commit, end)
        for k in range(i, upto):
            writer.submit_many(outputs_for(k))
        await writer.flush(timeout=30)
        print(f"committed {upto - 1} {time.monotonic_ns()}", flush=True)
        i = upto
        if args.pace:
            # Pace like a live feed; stop promptly on SIGTERM.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.pace)
    await writer.close("sigterm" if stop.is_set() else "done")
    print(f"closed {i - 1}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--count", type=int, default=0, help="fills to write (0: until SIGTERM)")
    parser.add_argument("--per-commit", type=int, default=20)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between groups")
    parser.add_argument("--from-start", action="store_true", help="start over at fill 1 (replay re-run)")
    sys.exit(asyncio.run(main(parser.parse_args())))
