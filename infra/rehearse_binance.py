"""Run the loopback Binance stand-in (`tests/fakes/binance.py`) as a process, for `infra/rehearse.sh`.

- With the real spot recording present (`--shared`, default `../shared`), it serves those frames byte for
  byte and the recorded snapshot, paced so the recording lasts `--duration` seconds (the worker must stay
  LIVE for the whole rehearsal: when the frames run out the feed goes quiet and health turns 503).
  Without it, it generates a consistent random book that runs forever.
- Frames start flowing only once the worker's WebSocket is connected (the recorded snapshot must be
  newer than nothing the worker missed), as the stand-in's own recording tests do.
- The chosen port is written to `--port-file` (atomically) once the server listens; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.binance import FakeBinance  # noqa: E402
from worker.events import Market  # noqa: E402

SPOT = ("spot_btcusdt_20240808T2354Z.ws.jsonl.gz", "spot_btcusdt_20240808T2354Z.snapshots.jsonl")


def build(shared: Path, duration_s: float, interval_s: float) -> tuple[FakeBinance, str]:
    ws, snaps = (shared / "data" / "binance" / name for name in SPOT)
    if ws.exists() and snaps.exists():
        fake = FakeBinance.from_recording(ws, snaps, interval=interval_s)
        frames = fake.recording_left
        fake.frames_per_step = max(1, math.ceil(frames / (duration_s / interval_s)))
        return fake, f"recording {ws.name}: {frames} frames over ~{duration_s:g} s"
    fake = FakeBinance(((Market.SPOT, "BTCUSDT"),), interval=0.02)
    return fake, f"generated data (no recording found under {shared})"


async def main(args: argparse.Namespace) -> int:
    fake, what = build(args.shared, args.duration, args.interval)
    await fake.start()
    tmp = args.port_file.with_suffix(".tmp")
    tmp.write_text(str(fake.port))
    os.replace(tmp, args.port_file)
    print(f"binance stand-in on 127.0.0.1:{fake.port}: {what}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if fake.recording_left:

        async def start_when_connected() -> None:
            while not fake.conns:
                await asyncio.sleep(0.05)  # polling a process-local list; no event is exposed for it
            fake.resume()
            print("worker connected: frames flowing", flush=True)

        starter = asyncio.create_task(start_when_connected())
    else:
        starter = None
    await stop.wait()
    if starter is not None:
        starter.cancel()
    await fake.stop()
    print(f"binance stand-in stopped after {fake.frames_sent} recorded frames", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("QF_SHARED", ROOT.parent / "shared"))
    )
    parser.add_argument("--duration", type=float, default=240.0, help="seconds the recording should last")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between steps")
    sys.exit(asyncio.run(main(parser.parse_args())))
