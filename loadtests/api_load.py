"""API load test: seed a realistic database through the store's writer, then measure with locust.

    python loadtests/api_load.py [--db PATH] [--reuse] [--days 30 --fills 500000 --orders 300000]
                                 [--duration 30] [--users 64]

1. Seeds `--db` through `StoreWriter` (`loadtests/seed_api_db.py`): a month of 1 s equity samples with
   their 60 s / 1 h rollups, hundreds of thousands of orders and fills, their transitions, markouts,
   signals, risk decisions (skipped with `--reuse` when the file exists).
2. Each server runs under uvicorn pinned to core 0 (`taskset -c 0`); locust runs headless on core 1
   (`taskset -c 1`, FastHttpUser) so client and server never share a core.
3. Runs, one after the other, each against a freshly started server:
   - trivial: a one-route Starlette app returning a constant JSON body (the framework's ceiling);
   - mix max: the realistic mix (60% fills pages, 30% equity charts over 1-24 h, 10% P&L) unpaced;
   - mix at 200 req/s: the same mix paced to a steady 200 requests/s (p99 target < 25 ms);
   - ranges: equity over 1 h / 24 h / 7 d / 30 d at a steady rate, named apart (long ranges should
     answer as fast as short ones because they read coarser rollups).
   The API runs per load shape as configured locally (response cache on, invalidated by any change of
   the file; per-thread connection revalidated against the file), with the cache off (every request
   queries SQLite), and with the settings it uses over a Litestream follow copy on Fly (a fresh
   connection per request, cache on), so every cost is visible.
4. During every API run a worker stand-in writes through `StoreWriter` once a second (an equity
   sample, a heartbeat, a book top per symbol), as the live worker does (`--no-live-writes` turns it
   off): each commit changes the file, so the response cache is invalidated every second and the
   figures are those of a database that is being written, not of a frozen one.
5. Prints requests/s, p50/p95/p99 and errors per run and per request name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = "targets: mix max >= 1000 req/s; at 200 req/s p99 < 25 ms and 0 errors; 7d/30d equity ~ 1h"


def trivial_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def trivial(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/trivial", trivial)])


def serve_trivial(port: int) -> None:
    import uvicorn

    uvicorn.run(trivial_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, db: Path, port: int, cache: bool = True, fresh: bool = False) -> subprocess.Popen:
    if kind == "trivial":
        cmd = [sys.executable, __file__, "--serve-trivial", str(port)]
    else:
        cmd = [sys.executable, "-m", "api", "--db", str(db), "--port", str(port)]
        cmd += ["--heartbeat-max-age", "1e9"]
    env = {**os.environ, "QF_API_CACHE_TTL_S": "2" if cache else "0"}
    env["QF_API_FRESH_CONNECTIONS"] = "1" if fresh else "0"
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, env=env, start_new_session=True)
    path = "/trivial" if kind == "trivial" else "/api/v1/pnl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{kind} server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # polling a child process's readiness in a script, not a test
    proc.kill()
    raise SystemExit(f"{kind} server did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_locust(port: int, profile: str, users: int, duration: int, rate: float, out: Path) -> list[dict]:
    prefix = out / f"{profile}-{int(rate)}-{time.monotonic_ns()}"
    env = {**os.environ, "QF_LOAD_PROFILE": profile, "QF_LOAD_RATE": str(rate)}
    cmd = [
        "taskset", "-c", "1", sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
        "--headless", "-u", str(users), "-r", str(users), "-t", f"{duration}s",
        "--host", f"http://127.0.0.1:{port}", "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, cwd=ROOT, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(f"{prefix}_stats.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def fmt(row: dict) -> str:
    return (
        f"{row['Name'][:22]:<22} {float(row['Requests/s']):>9.1f} {row['50%']:>6} {row['95%']:>6} "
        f"{row['99%']:>6} {row['Request Count']:>8} {row['Failure Count']:>6}"
    )


def report(title: str, rows: list[dict]) -> dict:
    print(f"\n== {title}")
    print(f"{'name':<22} {'req/s':>9} {'p50':>6} {'p95':>6} {'p99':>6} {'requests':>8} {'errors':>6}  (ms)")
    agg = None
    for row in rows:
        if row["Name"] == "Aggregated":
            agg = row
            continue
        print(fmt(row))
    if agg is not None:
        print(fmt(agg))
    return agg or {}


def server_quantiles(port: int) -> str:
    """p50/p95/p99 of the API's own request-duration histogram (all routes but /metrics).

    Locust's figures include its own scheduling on a shared core; the server's histogram shows the
    time the request spent inside the application (upper bound of the bucket the quantile falls in).
    """
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("qf_api_request_duration_seconds_bucket{") and 'route="/metrics"' not in line:
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return "no data"
    out = []
    for q in (0.5, 0.95, 0.99):
        bound = next(b for b in sorted(buckets) if buckets[b] >= q * total)
        out.append(f"p{int(q * 100)} <= {bound * 1000:g} ms")
    return ", ".join(out) + f" ({int(total)} requests)"


async def write_live(db: Path) -> None:
    """What the worker writes every second, through the store's own writer, until SIGTERM."""
    from worker.instruments import DEFAULT_INSTRUMENTS
    from worker.store import records
    from worker.store.writer import RunInfo, StoreWriter

    symbols = [i for (m, _), i in DEFAULT_INSTRUMENTS.items() if m.value == "spot"]
    writer = StoreWriter(db, symbols, RunInfo("test", "api_load live writes", "0" * 64))
    await writer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    equity = 10_000 * 10**8
    try:
        while not stop.is_set():
            now = time.time_ns()
            equity += (now // 10**9 % 7 - 3) * 10**6
            batch: list[object] = [records.EquitySample(now, equity, equity, 0, 0, 0, 0)]
            batch += [
                records.BookTop(now, "spot", i.symbol, 6_000_000, 100, 6_000_001, 100, 6_000_000.5, 0.0)
                for i in symbols
            ]
            sync = {f"spot:{i.symbol}": "live" for i in symbols}
            batch.append(records.Heartbeat(now, "ACTIVE", "trading", sync))
            writer.submit_many(batch)
            await writer.flush()
            with contextlib.suppress(TimeoutError):  # once a second until told to stop
                await asyncio.wait_for(stop.wait(), max(0.0, 1 - (time.time_ns() - now) / 1e9))
    finally:
        await writer.close("api_load done")


def start_live_writes(db: Path) -> subprocess.Popen:
    """The worker stand-in, on the client core (1): on Fly the worker is another machine."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--write-live", str(db)]
    return subprocess.Popen(["taskset", "-c", "1", *cmd], start_new_session=True)


def warm(db: Path) -> None:
    """Read the file once so every run starts with it in the page cache (as a serving machine would)."""
    with open(db, "rb") as fh:
        while fh.read(1 << 24):
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-trivial", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--write-live", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-live-writes", action="store_true", help="measure a database nobody writes (not like Fly)"
    )
    parser.add_argument("--db", default=str(Path(tempfile.gettempdir()) / "qf_api_load.db"))
    parser.add_argument("--reuse", action="store_true", help="use --db as is when it exists")
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--fills", type=int, default=500_000)
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--duration", type=int, default=30, help="seconds per run")
    parser.add_argument("--users", type=int, default=64, help="locust users for the unpaced runs")
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial)
        return 0
    if args.write_live:
        asyncio.run(write_live(args.write_live))
        return 0

    db = Path(args.db)
    if not (args.reuse and db.exists()):
        from loadtests.seed_api_db import seed

        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(f"seeding {db}: {args.days:g} days of 1 s equity, ~{args.fills} fills, {args.orders} orders")
        summary = asyncio.run(
            seed(db, days=args.days, orders=args.orders, fills_target=args.fills, progress=True)
        )
        print(f"seeded in {summary.seconds:.0f} s: {summary}")
    size_mb = db.stat().st_size / 1e6
    print(f"database {db}: {size_mb:.0f} MB")
    warm(db)
    out = Path(tempfile.mkdtemp(prefix="qf_locust_"))
    results: dict[str, dict] = {}
    server_side: dict[str, str] = {}
    runs = [
        ("trivial Starlette endpoint, unpaced", "trivial", "trivial", args.users, 0.0, True, False),
        ("API mix, unpaced (max load)", "api", "mix", args.users, 0.0, True, False),
        ("API mix, unpaced, cache off", "api", "mix", args.users, 0.0, False, False),
        ("API mix, unpaced, follow-mode settings", "api", "mix", args.users, 0.0, True, True),
        ("API mix, paced at 200 req/s", "api", "mix", 10, 20.0, True, False),
        ("API mix, 200 req/s, cache off", "api", "mix", 10, 20.0, False, False),
        ("API mix, 200 req/s, follow-mode settings", "api", "mix", 10, 20.0, True, True),
        ("API equity ranges, 100 req/s, cache off", "api", "ranges", 5, 20.0, False, False),
    ]
    for title, kind, profile, users, rate, cache, fresh in runs:
        port = free_port()
        server = start_server(kind, db, port, cache, fresh)
        writes = start_live_writes(db) if kind == "api" and not args.no_live_writes else None
        try:
            results[title] = report(title, run_locust(port, profile, users, args.duration, rate, out))
            if kind == "api":
                server_side[title] = server_quantiles(port)
                print("server-side (Prometheus histogram, upper bucket bounds): " + server_side[title])
        finally:
            if writes is not None:
                stop_server(writes)
            stop_server(server)
    print(f"\nlocust CSVs in {out}")
    print("\n== summary (" + TARGETS + ")")
    for title, agg in results.items():
        if agg:
            print(
                f"{title:<40} {float(agg['Requests/s']):>8.1f} req/s  p50 {agg['50%']} ms  "
                f"p95 {agg['95%']} ms  p99 {agg['99%']} ms  errors {agg['Failure Count']}"
            )
            if title in server_side:
                print(f"{'':<40} server-side {server_side[title]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
