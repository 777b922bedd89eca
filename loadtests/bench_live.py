"""Benchmark the live path end to end on loopback: WebSocket frames -> source -> queue -> Engine.

The stand-in (`tests/fakes/binance.py`) serves a real recording as fast as the socket takes it; the
worker's real `LiveSource` and `Engine` consume it. Reported per market:
- frames/s through the whole path (stand-in, socket, websockets, parse, queue, engine: one process,
  so this is a floor for the worker alone);
- receive-to-engine latency (recv_ns stamp at the socket -> engine done with the event), p50/p99/max:
  what queueing costs under a flood (the stand-in sends as fast as it can, in the same process, so
  this is a worst case, not the latency at Binance's ~100 frames/s);
- sync outcome (gaps, resyncs), so a fast run that lost data does not count.

Usage: python loadtests/bench_live.py [--frames N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import RECORDINGS  # noqa: E402
from tests.fakes.binance import FakeBinance  # noqa: E402
from worker.binance.rest import BinanceRest  # noqa: E402
from worker.binance.source import LiveSource  # noqa: E402
from worker.engine import Engine  # noqa: E402
from worker.events import Market  # noqa: E402


async def bench(market: Market, frames: int) -> dict[str, Any]:
    ws_path, snaps_path = RECORDINGS[market.value]
    fake = FakeBinance.from_recording(ws_path, snaps_path, max_frames=frames, interval=0.0)
    fake.frames_per_step = 200
    latencies: list[int] = []
    async with fake:
        endpoints = fake.endpoints()
        rest = BinanceRest(market, endpoints)
        instruments = await rest.instruments(["BTCUSDT"])
        engine = Engine(instruments)
        source = LiveSource(
            engine,
            market,
            ["BTCUSDT"],
            endpoints=endpoints,
            instruments=instruments,
            rest=rest,
            book_ticker=True,
        )
        async with source:
            await fake.wait_connections(1 if market is Market.SPOT else 2)
            done = asyncio.Event()

            async def consume() -> None:
                async for event in source:
                    engine.on_event(event)
                    latencies.append(time.time_ns() - event.recv_ns)
                    drained = source.queue.empty() and source.counters.frames >= fake.frames_sent
                    if fake.recording_left == 0 and drained:
                        done.set()

            task = asyncio.create_task(consume())
            start = time.perf_counter()
            fake.resume()
            await asyncio.wait_for(done.wait(), 300)
            wall = time.perf_counter() - start
            task.cancel()
        await rest.aclose()
    book = engine.symbol_book(market, "BTCUSDT")
    latencies.sort()
    n = len(latencies)
    return {
        "market": market.value,
        "frames": fake.frames_sent,
        "wall_s": round(wall, 3),
        "frames_per_s": round(fake.frames_sent / wall),
        "recv_to_engine_p50_us": round(latencies[n // 2] / 1000, 1),
        "recv_to_engine_p99_us": round(latencies[int(n * 0.99)] / 1000, 1),
        "recv_to_engine_max_us": round(latencies[-1] / 1000, 1),
        "gaps": book.gaps if book else None,
        "resyncs": book.resyncs if book else None,
        "state": book.state.value if book else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for market in (Market.SPOT, Market.USDM):
        if not RECORDINGS[market.value][0].exists():
            print(f"skip {market.value}: no recording", file=sys.stderr)
            continue
        result = asyncio.run(bench(market, args.frames))
        if args.json:
            print(orjson.dumps(result).decode())
        else:
            print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
