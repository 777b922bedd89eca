"""The store with real processes: kill -9 mid-stream and restart; a read-only reader beside a live writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from worker.store import db
from worker.store.check import run_check

ROOT = Path(__file__).resolve().parents[1]
PROC = [sys.executable, str(ROOT / "tests" / "store_proc.py")]


def start_writer(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PROC, "--db", str(path), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, bufsize=1
    )


def committed_until(proc: subprocess.Popen[str], at_least: int) -> int:
    """Read the child's commit reports until it has committed `at_least` fills; return the last id."""
    assert proc.stdout is not None
    last = 0
    for line in proc.stdout:
        word, *rest = line.split()
        if word == "committed":
            last = int(rest[0])
            if last >= at_least:
                return last
    raise AssertionError(f"writer exited (code {proc.wait()}) after committing {last}")


def test_kill_9_mid_stream_then_restart_keeps_every_committed_fill_once(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    proc = start_writer(path, "--per-commit", "7")
    try:
        last = committed_until(proc, 700)
    finally:
        proc.send_signal(signal.SIGKILL)  # no flush, no close: whatever was committed must be there
        proc.wait(timeout=10)
    conn = sqlite3.connect(path)
    ids = [row[0] for row in conn.execute("SELECT fill_id FROM fills ORDER BY fill_id")]
    conn.close()
    assert ids[:last] == list(range(1, last + 1))  # every reported commit is there, in full
    survived = len(ids)

    # Restart like a replay re-run from the beginning: duplicates skipped, the stream continues.
    rerun = subprocess.run(
        [*PROC, "--db", str(path), "--from-start", "--count", str(survived + 300)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[0].split()[1] == str(survived)  # recovery saw what survived
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), count(DISTINCT fill_id), max(fill_id) FROM fills").fetchone() == (
        survived + 300,
        survived + 300,
        survived + 300,
    )
    runs = conn.execute("SELECT stop_reason FROM runs ORDER BY run_id").fetchall()
    assert runs == [(None,), ("done",)]  # the killed run never recorded a stop
    conn.close()
    code, report = run_check(path)
    assert code == 0 and report["mismatches"] == [] and report["portfolio_rebuild"] == "ok", report


def test_read_only_reader_sees_consistent_snapshots_while_the_writer_runs(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    proc = start_writer(path, "--per-commit", "5")
    try:
        committed_until(proc, 5)  # schema exists
        seen = 0
        checks = 0
        while seen < 1500:
            reader = db.connect_readonly(path)  # fresh read-only connection, as the API opens per request
            try:
                reader.execute("BEGIN")  # one snapshot for all the reads below
                count, qty_sum, volume = reader.execute(
                    "SELECT count(*), coalesce(sum(side * qty), 0), coalesce(sum(notional), 0) FROM fills"
                ).fetchone()
                totals = reader.execute(
                    "SELECT coalesce(sum(fills), 0), coalesce(sum(volume), 0) FROM totals_symbol"
                )
                position = reader.execute("SELECT coalesce(sum(qty), 0) FROM positions").fetchone()[0]
                events = reader.execute("SELECT count(*) FROM order_events").fetchone()[0]
                assert totals.fetchone() == (count, volume)
                assert position == qty_sum
                assert events == 2 * count  # every order is written with both its transitions
                reader.execute("COMMIT")
            finally:
                reader.close()
            assert count >= seen  # never goes back
            seen = count
            checks += 1
        assert checks > 3
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_sigterm_flushes_everything_before_exit(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    proc = start_writer(path, "--per-commit", "50", "--pace", "0.01")
    committed_until(proc, 200)
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    closed = int(out.strip().splitlines()[-1].split()[1])
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT max(fill_id) FROM fills").fetchone()[0] == closed
    assert conn.execute("SELECT stop_reason FROM runs").fetchone() == ("sigterm",)
    conn.close()


FILL_COLUMNS = (
    "fill_id, order_id, market, symbol, side, price, qty, notional, fee, fee_asset, fee_quote, liquidity, "
    "realized_pnl, position_after, cost_after, ts_ns, model, latency_ns, queue_ahead, decision_mid, "
    "fill_mid, slippage_bps"
)


def fill_rows(path: Path) -> list[tuple]:
    conn = db.connect_readonly(path)
    try:
        return conn.execute(f"SELECT {FILL_COLUMNS} FROM fills ORDER BY fill_id").fetchall()
    finally:
        conn.close()


def test_kill_9_mid_replay_then_rerun_leaves_what_an_uninterrupted_replay_leaves(tmp_path: Path) -> None:
    """The real worker: `python -m worker replay` killed with SIGKILL mid-stream, then run again."""
    from tests.conftest import recording

    ws, snaps = recording("usdm")
    env = {k: v for k, v in os.environ.items() if k != "QF_CONFIG"}
    replay = [sys.executable, "-m", "worker", "replay", str(ws), "--snapshots", str(snaps), "--no-progress"]
    reference = tmp_path / "reference.db"
    subprocess.run([*replay, "--db", str(reference)], check=True, capture_output=True, cwd=ROOT, env=env)
    expected = fill_rows(reference)
    assert len(expected) >= 5, "the default strategy trades this recording"

    path = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [*replay, "--db", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env
    )
    seen: list[tuple] = []
    try:
        while len(seen) < 2:  # poll the file (read-only) until fills are committed, then pull the plug
            if proc.poll() is not None:
                pytest.skip("the replay finished before it could be killed (machine too fast)")
            if path.exists():
                try:
                    seen = fill_rows(path)
                except (db.StoreError, sqlite3.Error):
                    seen = []  # schema not there yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    survived = fill_rows(path)
    assert survived[: len(seen)] == seen  # everything committed before the kill is there
    assert len(survived) < len(expected), "killed mid-stream"

    rerun = subprocess.run([*replay, "--db", str(path)], capture_output=True, text=True, cwd=ROOT, env=env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert fill_rows(path) == expected  # each fill exactly once, identical to the uninterrupted replay
    code, report = run_check(path)
    assert code == 0 and report["portfolio_rebuild"] == "ok", report
