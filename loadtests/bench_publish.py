"""Measure the Unix-socket feed: the hot path's `offer()` cost, and whether a stuck client slows anyone.

Scenarios (N book tops each): no client; one reader (a separate process reading raw frames); one
reader plus one client that never reads. For each: ns per `offer()`, time until the publisher has
flushed everything, time until the reader has every byte, clients dropped, items dropped.

    python loadtests/bench_publish.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

from worker.publish import BookTop, Publisher

READER = r"""
import socket, sys, struct
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); want = int(sys.argv[2])
buf = bytearray(); seen = 0
print("ready", flush=True)
while seen < want:
    chunk = s.recv(1 << 18)
    if not chunk: break
    buf += chunk
    off = 0
    while len(buf) - off >= 4:
        n = struct.unpack_from(">I", buf, off)[0]
        if len(buf) - off - 4 < n: break
        off += 4 + n; seen += 1
    del buf[:off]
print(seen, flush=True)
"""


def top(i: int) -> BookTop:
    bid = 6_000_000 + (i % 97)
    return BookTop("BTCUSDT", "spot", i, i, bid, 5 + i % 7, bid + 1, 3, 2 * bid + 1, bid + 0.5, 1, 0.1)


async def scenario(n: int, readers: int, stuck: int) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="qfb-", dir="/tmp"))
    path = directory / "f.sock"
    pub = Publisher(path, max_queue=n + 10)
    await pub.start()
    procs = []
    for _ in range(readers):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", READER, str(path), str(n + 1), stdout=asyncio.subprocess.PIPE
        )
        assert (await proc.stdout.readline()).strip() == b"ready"
        procs.append(proc)
    stuck_socks = []
    for _ in range(stuck):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        stuck_socks.append(s)
    await pub.wait_for_clients(readers + stuck, timeout=10)
    items = [top(i) for i in range(n)]
    offer_ns = 0
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        a = time.perf_counter_ns()
        for item in items[start : start + 1000]:
            pub.offer(item)
        offer_ns += time.perf_counter_ns() - a
        await asyncio.sleep(0)  # the worker yields between frames
    while pub.queue_depth:
        await asyncio.sleep(0)
    flushed = time.perf_counter() - t0
    counts = [int((await p.stdout.readline()).strip() or 0) for p in procs]
    received = time.perf_counter() - t0
    for p in procs:
        await p.wait()
    await pub.close()
    for s in stuck_socks:
        s.close()
    return {
        "readers": readers,
        "stuck": stuck,
        "offer_ns": offer_ns / n,
        "flushed_ms": flushed * 1e3,
        "received_ms": received * 1e3,
        "reader_counts": counts,
        "dropped_slow": pub.stats.clients_dropped_slow,
        "queue_dropped": pub.stats.queue_dropped,
    }


async def main(n: int) -> None:
    for readers, stuck in ((0, 0), (1, 0), (1, 1), (2, 3)):
        r = await scenario(n, readers, stuck)
        print(
            f"readers={r['readers']} stuck={r['stuck']}: offer {r['offer_ns']:.0f} ns/item, "
            f"flushed {r['flushed_ms']:.0f} ms, received {r['received_ms']:.0f} ms, "
            f"reader got {r['reader_counts']} of {n + 1}, slow clients dropped {r['dropped_slow']}, "
            f"items dropped {r['queue_dropped']}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().n))
