"""`python -m worker record`: write Binance's raw frames and REST snapshots in the recording format.

Design and invariants:
- Output is the format of `shared/data/binance/` (see `worker.binance.recording`): one gzip JSON-lines
  file of `{"recv_ns", "msg"}` with every text frame byte for byte, and a `.snapshots.jsonl` beside it.
  Streams: depth, trade and bookTicker (replay cross-checks the book against bookTicker).
- The exchangeInfo entries the recording was made with go to `.exchangeinfo.json` beside it: a replay
  of any symbol (not only the built-in defaults) uses the same tick/step/notional filters as live.
- The recorder runs the SAME live source and Engine as `run`: a snapshot is fetched exactly when a book
  needs one (start, reconnect, gap), so a replay of the file can always resync where live did.
- Frames are written before they are parsed: a malformed frame is kept as evidence.
- The frame file is flushed every `--flush-interval` seconds (gzip sync flush), so a crash loses at most
  that much; snapshots are flushed at once. SIGINT/SIGTERM or `--duration` end the recording cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import signal
from pathlib import Path

from worker.app import App, endpoints_from
from worker.binance.endpoints import USDM_DEPTH_SPEEDS, Endpoints
from worker.binance.parse import parse_exchange_info
from worker.binance.recording import FrameWriter, SnapshotWriter, exchange_info_path, write_exchange_info
from worker.binance.rest import BinanceRest, RestError
from worker.binance.source import LiveSource
from worker.engine import Engine
from worker.errors import ConfigError
from worker.events import Market
from worker.logs import setup_logging

log = logging.getLogger("worker.record")


class FileRecorder:
    """The `Recorder` the live source calls for every raw frame and snapshot body."""

    def __init__(
        self, out_dir: Path, market: Market, symbols: list[str], endpoints: Endpoints, stamp: str
    ) -> None:
        base = f"{market.value}_{'-'.join(s.lower() for s in symbols)}_{stamp}"
        self.frames_path = out_dir / f"{base}.ws.jsonl.gz"
        self.snapshots_path = out_dir / f"{base}.snapshots.jsonl"
        self.exchange_info_path = exchange_info_path(self.frames_path)
        self.frames = FrameWriter(self.frames_path)
        self.snapshots = SnapshotWriter(self.snapshots_path)
        self.endpoints = endpoints

    def exchange_info(self, market: Market, body: dict[str, object], symbols: list[str]) -> None:
        request = self.endpoints.rest_base(market) + self.endpoints.exchange_info_path(market)
        write_exchange_info(self.exchange_info_path, market, body, symbols, f"GET {request}")

    def frame(self, text: str | bytes, recv_ns: int) -> None:
        self.frames.write(recv_ns, text)

    def snapshot(self, symbol: str, market: Market, body: bytes, recv_ns: int) -> None:
        base = self.endpoints.rest_base(market) + self.endpoints.depth_path(market)
        self.snapshots.write(recv_ns, symbol, market, body, f"GET {base}?symbol={symbol.upper()}&limit=1000")

    def flush(self) -> None:
        self.frames.flush()

    def close(self) -> None:
        self.frames.close()
        self.snapshots.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    binance = Endpoints()
    parser.add_argument("--symbols", nargs="+", required=True, help="symbols, e.g. btcusdt ethusdt")
    parser.add_argument("--market", choices=[m.value for m in Market], default="spot")
    parser.add_argument("--out", required=True, type=Path, help="directory for the recording files")
    parser.add_argument("--duration", type=float, default=None, help="seconds to record (default: until ^C)")
    parser.add_argument("--flush-interval", type=float, default=1.0)
    parser.add_argument("--usdm-depth-speed", choices=USDM_DEPTH_SPEEDS, default="0ms")
    parser.add_argument("--spot-ws", default=binance.spot_ws)
    parser.add_argument("--spot-rest", default=binance.spot_rest)
    parser.add_argument("--usdm-ws", default=binance.usdm_ws)
    parser.add_argument("--usdm-rest", default=binance.usdm_rest)
    parser.add_argument("--log-level", default="INFO")


async def record(args: argparse.Namespace) -> dict[str, object]:
    market = Market(args.market)
    symbols = sorted({s.strip().upper() for v in args.symbols for s in v.split(",") if s.strip()})
    if not symbols:
        raise ConfigError("--symbols", "at least one symbol")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration", "a positive number of seconds")
    endpoints = endpoints_from(args)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    rest = BinanceRest(market, endpoints)
    try:
        exchange_info = await rest.exchange_info(symbols)
        instruments = parse_exchange_info(exchange_info, market, symbols)
        recorder = FileRecorder(args.out, market, symbols, endpoints, stamp)
        recorder.exchange_info(market, exchange_info, symbols)
        engine = Engine(instruments)
        source = LiveSource(
            engine,
            market,
            symbols,
            endpoints=endpoints,
            instruments=instruments,
            rest=rest,
            book_ticker=True,
            recorder=recorder,
        )
        app = App(source, engine)

        async def flusher() -> None:
            while True:
                await asyncio.sleep(args.flush_interval)
                recorder.flush()

        app.add_task(flusher())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, app.stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, app.stop.set)
        log.info("recording %s %s to %s", market.value, ",".join(symbols), recorder.frames_path)
        try:
            await app.run()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            recorder.close()
        summary: dict[str, object] = {
            "frames_file": str(recorder.frames_path),
            "snapshots_file": str(recorder.snapshots_path),
            "exchange_info_file": str(recorder.exchange_info_path),
            "frames": recorder.frames.frames,
            "snapshots": recorder.snapshots.snapshots,
            **{k: v for k, v in source.stats().items() if isinstance(v, int)},
        }
        log.info("recorded %d frames and %d snapshots", recorder.frames.frames, recorder.snapshots.snapshots)
        return summary
    finally:
        await rest.aclose()


def main(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    try:
        summary = asyncio.run(record(args))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except RestError as exc:  # exchangeInfo unreachable at start: nothing sensible to run on
        log.error("cannot start: %s", exc)
        return 1
    print(summary)
    return 0
