"""The store in-process: schema and refusals, the writer's batching/ordering/never-drop rules, rollups,
running totals, idempotent replays, recovery and the offline check."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.store_proc import INSTRUMENT, outputs_for
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, cancel, fill, new_order
from worker.store import db, records, recovery, schema
from worker.store.check import run_check
from worker.store.ledger import Position, apply_fill
from worker.store.writer import RunInfo, StoreWriter, WriterConfig

ROOT = Path(__file__).resolve().parents[1]
RUN = RunInfo("test", "test", "digest")
T0 = 1_723_161_240_000_000_000


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def started(path: Path, **config: object) -> StoreWriter:
    writer = StoreWriter(path, [INSTRUMENT], RUN, WriterConfig(**config))  # type: ignore[arg-type]
    await writer.start()
    return writer


async def write_outputs(path: Path, n: int) -> None:
    """One writer run that records `outputs_for(1..n)` and closes cleanly."""
    writer = await started(path)
    for i in range(1, n + 1):
        writer.submit_many(outputs_for(i))
    await writer.close()


def a_fill(fill_id: int, order_id: int, side: Side, price: int, qty: int, ts: int, fee: int = 0) -> Fill:
    return Fill(
        fill_id,
        order_id,
        "BTCUSDT",
        side,
        price,
        qty,
        fee,
        "USDT",
        Liquidity.TAKER,
        ts,
        "t/1",
        0,
        0,
        1.0,
        1.0,
        0.5,
    )


# ---- schema and refusals --------------------------------------------------------------------------------
def test_migration_sets_version_and_is_idempotent(tmp_path: Path) -> None:
    conn = db.open_writer_sync(tmp_path / "a.db")
    assert schema.schema_version(conn) == schema.LATEST_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert schema.migrate(conn) == schema.LATEST_VERSION  # second run: nothing to do
    conn.close()


def test_strict_tables_refuse_floats_in_money_columns(tmp_path: Path) -> None:
    conn = db.open_writer_sync(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO positions (market, symbol, qty, cost, realized_pnl, fees, fills, last_fill_id, "
            "updated_ns) VALUES ('spot', 'BTCUSDT', 1, 10.5, 0, 0, 1, 1, 1)"
        )  # cost as a float
    conn.close()


def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(db.StoreError, match="newer"):
        db.open_writer_sync(path)
    with pytest.raises(db.StoreError, match="newer"):
        db.connect_readonly(path)
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists()


def test_corrupt_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not sqlite" * 500)
    before = digest(path)
    with pytest.raises(db.StoreError, match="not a"):
        db.open_writer_sync(path)
    code, report = run_check(path)
    assert code == 2 and report["ok"] is False
    assert digest(path) == before


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(db.StoreError, match="no QuantumFlow schema"):
        db.open_writer_sync(path)
    assert digest(path) == before


def test_reader_is_read_only(tmp_path: Path) -> None:
    db.open_writer_sync(tmp_path / "a.db").close()
    reader = db.connect_readonly(tmp_path / "a.db")
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("INSERT INTO meta VALUES ('x', 'y')")
    assert reader.execute("PRAGMA query_only").fetchone()[0] == 1
    reader.close()


async def test_async_reader_opens_and_refuses_missing(tmp_path: Path) -> None:
    db.open_writer_sync(tmp_path / "a.db").close()
    reader = await db.open_reader(tmp_path / "a.db")
    async with reader.execute("SELECT value FROM meta WHERE key = 'money_scale'") as cur:
        assert (await cur.fetchone())[0] == "100000000"
    await reader.close()
    with pytest.raises(db.StoreError):
        await db.open_reader(tmp_path / "missing.db")


# ---- the ledger -------------------------------------------------------------------------------------
def test_ledger_average_cost_round_trip() -> None:
    p = Position()
    assert apply_fill(p, 1, 10, 1000, 1, 1) == 0  # buy 10 for 1000
    assert apply_fill(p, -1, 4, 480, 1, 2) == 80  # sell 4 for 480: cost 400
    assert apply_fill(p, -1, 10, 1100, 1, 3) == 60  # close 6 (cost 600, proceeds 660), short 4 at 440
    assert (p.qty, p.cost) == (-4, -440)
    assert apply_fill(p, 1, 4, 400, 1, 4) == 40  # buy back 4 for 400
    assert (p.qty, p.cost, p.realized_pnl, p.fees, p.fills) == (0, 0, 180, 4, 4)


# ---- the writer ---------------------------------------------------------------------------------------
async def test_writer_batches_and_keeps_totals_in_step(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path)
    for i in range(1, 301):
        writer.submit_many(outputs_for(i))  # 1500 records submitted without yielding
    await writer.flush(timeout=10)
    assert writer.stats.commits < 20  # batched, not a transaction per record
    assert writer.lag_seconds() == 0.0 and not writer.is_lagging
    await writer.close()

    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), min(fill_id), max(fill_id) FROM fills").fetchone() == (300, 1, 300)
    totals = conn.execute("SELECT fills, volume, fees, realized_pnl FROM totals_symbol").fetchone()
    sums = conn.execute(
        "SELECT count(*), sum(notional), sum(fee_quote), sum(realized_pnl) FROM fills"
    ).fetchone()
    assert totals == sums
    hourly = conn.execute("SELECT sum(fills), sum(volume) FROM totals_hourly").fetchone()
    assert hourly == sums[:2]
    # Every order went Pending -> Filled, in that order.
    rows = conn.execute("SELECT seq, status FROM order_events WHERE order_id = 7 ORDER BY seq").fetchall()
    assert rows == [(1, "Pending"), (2, "Filled")]
    assert conn.execute("SELECT status, transitions FROM orders WHERE order_id = 7").fetchone() == (
        "Filled",
        2,
    )
    assert conn.execute("SELECT stop_reason FROM runs").fetchone() == ("stop",)
    conn.close()
    code, report = run_check(path)
    assert code == 0 and report["ok"] and report["fills"] == 300, report


async def test_order_transitions_keep_their_order_within_a_batch(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path)
    order = new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10, 600_000, T0)
    part = fill(order, 4)
    writer.submit(records.OrderUpdate(order, T0))
    writer.submit(a_fill(1, 1, Side.BUY, 600_000, 4, T0 + 1))
    writer.submit(records.OrderUpdate(part, T0 + 1))
    writer.submit(records.OrderUpdate(cancel(part, "restart"), T0 + 2))
    await writer.flush(timeout=5)
    await writer.close()
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, status, filled_qty, reason FROM order_events ORDER BY seq").fetchall()
    assert rows == [(1, "Pending", 0, None), (2, "PartiallyFilled", 4, None), (3, "Cancelled", 4, "restart")]
    assert conn.execute("SELECT orders_cancelled, orders FROM totals_symbol").fetchone() == (1, 1)
    conn.close()


async def test_samples_are_dropped_under_pressure_but_fills_never(tmp_path: Path) -> None:
    writer = await started(tmp_path / "w.db", sample_capacity=50, critical_soft_limit=100)
    for i in range(1, 401):
        writer.submit_many(outputs_for(i))  # 800 samples, 1200 never-drop records, no yield
    assert writer.stats.samples_dropped == 800 - 50
    assert writer.is_lagging  # 1200 queued never-drop records > soft limit: risk must stop opening
    await writer.flush(timeout=10)
    assert not writer.is_lagging
    await writer.close()
    conn = sqlite3.connect(tmp_path / "w.db")
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == 400
    assert conn.execute("SELECT count(*) FROM order_events").fetchone()[0] == 800
    assert conn.execute("SELECT count(*) FROM book_top_bars WHERE resolution_s = 1").fetchone()[0] <= 50
    conn.close()


async def test_lag_seconds_measures_the_oldest_unwritten_record(tmp_path: Path) -> None:
    writer = await started(tmp_path / "w.db", max_lag_s=0.0)
    writer.submit(records.SystemEvent(T0, "gap", "warning", "spot", "BTCUSDT"))
    assert writer.lag_seconds() > 0.0
    assert writer.is_lagging  # any unwritten record is older than a 0 s limit
    await writer.flush(timeout=5)
    assert writer.lag_seconds() == 0.0 and not writer.is_lagging
    await writer.close()


async def test_replayed_fills_and_transitions_are_written_once(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    await write_outputs(path, 50)
    writer = await started(path)  # a replay re-run from the start after a crash
    for i in range(1, 81):
        writer.submit_many(outputs_for(i))
    await writer.flush(timeout=5)
    assert writer.stats.duplicates_skipped == 50
    await writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*), count(DISTINCT fill_id) FROM fills").fetchone() == (80, 80)
    assert conn.execute("SELECT fills FROM totals_symbol").fetchone()[0] == 80
    assert conn.execute("SELECT count(*) FROM order_events").fetchone()[0] == 160
    conn.close()
    code, report = run_check(path)
    assert code == 0, report


async def test_equity_and_book_rollups_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path, retention_s=600, retention_every_s=60)
    equity = [100, 120, 90, 130, 110]
    for minute in range(30):  # 30 minutes of 1 s samples (engine clock), one equity level per 6 min
        for second in range(60):
            ts = T0 + (minute * 60 + second) * 1_000_000_000
            value = equity[minute // 6] * 10**8
            writer.submit(records.EquitySample(ts, value, value, 0, 0, 0, 0))
            writer.submit(records.BookTop(ts, "spot", "BTCUSDT", 100 + minute, 1, 102 + minute, 2))
        await writer.flush(timeout=5)
    await writer.close()
    conn = sqlite3.connect(path)
    first_bucket = T0 // 10**9
    raw = conn.execute("SELECT min(bucket_s), count(*) FROM equity_bars WHERE resolution_s = 1").fetchone()
    assert raw[0] >= first_bucket + 30 * 60 - 600 - 60  # older raw seconds were deleted
    minutes = conn.execute(
        "SELECT bucket_s, open, high, low, close, samples, peak, drawdown FROM equity_bars "
        "WHERE resolution_s = 60 ORDER BY bucket_s"
    ).fetchall()
    assert len(minutes) == 30 + (first_bucket % 60 != 0)  # every minute kept after retention
    assert sum(m[5] for m in minutes) == 1800
    hours = conn.execute(
        "SELECT sum(samples), max(high), min(low) FROM equity_bars WHERE resolution_s = 3600"
    )
    assert hours.fetchone() == (1800, 130 * 10**8, 90 * 10**8)
    # Drawdown: the 110 after a 130 peak.
    last = conn.execute(
        "SELECT close, peak, drawdown FROM equity_bars WHERE resolution_s = 60 ORDER BY bucket_s DESC LIMIT 1"
    ).fetchone()
    assert last == (110 * 10**8, 130 * 10**8, -20 * 10**8)
    worst = conn.execute("SELECT min(max_drawdown) FROM equity_bars WHERE resolution_s = 3600").fetchone()[0]
    assert worst == -30 * 10**8  # 90 against the 120 peak
    book = conn.execute(
        "SELECT sum(samples), min(mid2_low), max(mid2_high) FROM book_top_bars WHERE resolution_s = 3600"
    ).fetchone()
    assert book == (1800, 202, 202 + 2 * 29)
    latest = conn.execute("SELECT bid_price, ask_price FROM book_top_latest").fetchone()
    assert latest == (129, 131)
    conn.close()


async def test_unwritable_record_is_kept_as_an_event_not_lost_or_blocking(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path)
    bad = Fill(9, 9, "DOGEUSDT", Side.BUY, 1, 1, 0, "USDT", Liquidity.TAKER, T0, "t/1", 0, 0, 1.0, 1.0, 0.0)
    writer.submit(bad)
    writer.submit(records.RiskDecision(T0, "spot", "BTCUSDT", "bogus-verdict", "x"))  # CHECK refuses it
    writer.submit_many(outputs_for(1))
    await writer.flush(timeout=5)
    await writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == 1
    details = [orjson.loads(d) for (d,) in conn.execute("SELECT detail_json FROM system_events")]
    assert len(details) == 2
    assert any("DOGEUSDT" in d["record"] for d in details)
    conn.close()


# ---- recovery, check and the operator reset ---------------------------------------------------------------
async def test_recovery_rebuilds_positions_open_orders_and_breakers(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path)
    resting = new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10, 590_000, T0)
    writer.submit(records.OrderUpdate(resting, T0))
    writer.submit(records.OrderUpdate(fill(resting, 3), T0 + 5))
    writer.submit(a_fill(1, 1, Side.BUY, 590_000, 3, T0 + 5, fee=7))
    writer.submit(records.BreakerChange(T0 + 6, "daily_loss", True, "loss 2.1% > 2%"))
    writer.submit(records.TradingStateChange(T0 + 6, "HALTED", "ACTIVE", "daily_loss", "risk"))
    await writer.close()

    state = (await started(path)).recovered
    assert state is not None
    assert [(o.order_id, o.status_name, o.filled_qty) for o in state.open_orders] == [
        (1, "PartiallyFilled", 3)
    ]
    assert state.positions[("usdm", "BTCUSDT")].qty == 3
    assert state.fees == 7 and state.mismatches == []
    assert state.trading_state == "HALTED"
    assert [b.breaker for b in state.tripped_breakers] == ["daily_loss"]
    assert state.previous_run and state.previous_run["stop_reason"] == "stop"
    assert state.max_fill_id == 1 and state.max_order_id == 1


async def test_operator_reset_is_recorded_and_applied(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(path)
    writer.submit(records.BreakerChange(T0, "drawdown", True, "drawdown 5%"))
    await writer.flush(timeout=5)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "risk",
            "reset",
            "--db",
            str(path),
            "--reason",
            "reviewed",
            "--operator",
            "ana",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout)
    assert out["tripped_breakers"] == [{"breaker": "drawdown", "reason": "drawdown 5%"}]
    pending = await writer.pending_operator_actions()  # what the running worker polls
    assert [(a.action, a.reason, a.operator) for a in pending] == [("risk_reset", "reviewed", "ana")]
    writer.submit(records.OperatorActionApplied(pending[0].action_id, T0 + 1))
    writer.submit(records.BreakerChange(T0 + 1, "drawdown", False, "operator reset: reviewed"))
    await writer.flush(timeout=5)
    assert await writer.pending_operator_actions() == []
    await writer.close()
    state = (await started(path)).recovered
    assert state is not None and state.tripped_breakers == [] and state.pending_actions == []


def test_risk_reset_refuses_missing_db_and_empty_reason(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "worker", "risk", "reset", "--db"]
    missing = subprocess.run([*base, str(tmp_path / "no.db"), "--reason", "x"], capture_output=True, cwd=ROOT)
    assert missing.returncode == 2 and not (tmp_path / "no.db").exists()
    db.open_writer_sync(tmp_path / "a.db").close()
    empty = subprocess.run([*base, str(tmp_path / "a.db"), "--reason", " "], capture_output=True, cwd=ROOT)
    assert empty.returncode == 2


async def test_check_finds_tampered_fills_and_illegal_transitions(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    await write_outputs(path, 20)
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "check", "--db", str(path)],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout
    assert orjson.loads(proc.stdout)["fills"] == 20

    conn = sqlite3.connect(path)
    conn.execute("UPDATE fills SET qty = qty + 1 WHERE fill_id = 5")  # positions no longer match
    conn.execute("UPDATE totals_symbol SET fills = fills + 1")  # a running total drifts
    conn.execute(  # order 3 cancelled after it was Filled
        "INSERT INTO order_events SELECT 3, 3, 1, 'Cancelled', qty, 'x', 1 FROM orders WHERE order_id = 3"
    )
    conn.commit()
    conn.close()
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "check", "--db", str(path)],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    report = orjson.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False
    kinds = {m["kind"] for m in report["mismatches"]}
    assert {"position", "totals", "order_transition"} <= kinds
    assert any(m.get("order_id") == 5 for m in report["mismatches"])  # fills vs order's filled qty


# ---- volumes that cannot be written -----------------------------------------------------------------------
def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()})")


@pytest.fixture
def mounts():
    mounted: list[Path] = []
    yield mounted
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def test_read_only_volume_is_refused_with_a_clear_error(tmp_path: Path, mounts: list[Path]) -> None:
    volume = tmp_path / "ro"
    _mount_tmpfs(volume, "size=1m")
    mounts.append(volume)
    db.open_writer_sync(volume / "w.db").close()
    subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
    before = digest(volume / "w.db")
    with pytest.raises(db.StoreError, match="read-only"):
        db.open_writer_sync(volume / "w.db")
    assert digest(volume / "w.db") == before


async def test_full_disk_stalls_the_writer_then_it_catches_up(tmp_path: Path, mounts: list[Path]) -> None:
    volume = tmp_path / "small"
    _mount_tmpfs(volume, "size=768k")
    mounts.append(volume)
    writer = await started(volume / "w.db", retry_backoff_s=(0.02, 0.1))
    filler = volume / "filler"
    with filler.open("wb") as out:  # take all the free space
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    for i in range(1, 201):
        writer.submit_many(outputs_for(i))
    deadline = asyncio.get_running_loop().time() + 10
    while writer.stats.write_errors == 0:  # poll until the disk-full error reaches the writer
        assert asyncio.get_running_loop().time() < deadline, "the writer never saw the full disk"
        await asyncio.sleep(0.01)
    assert writer.is_lagging  # risk engine: stop opening positions (storage_lag)
    assert "full" in writer.stats.last_error.lower()
    filler.unlink()  # space comes back
    await writer.flush(timeout=10)
    assert not writer.is_lagging
    await writer.close()
    code, report = run_check(volume / "w.db")
    assert code == 0 and report["fills"] == 200, report


async def test_funding_payments_reach_positions_totals_and_the_check(tmp_path: Path) -> None:
    from worker.portfolio import FundingPayment

    path = tmp_path / "w.db"
    writer = await started(path)
    writer.submit_many(outputs_for(1))  # a USD-M buy
    writer.submit(FundingPayment("BTCUSDT", T0 + 10**12, 10_000, 600_000, 11, -660))
    writer.submit(FundingPayment("BTCUSDT", T0 + 10**12, 10_000, 600_000, 11, -660))  # replayed: once
    await writer.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT funding FROM positions").fetchone() == (-660,)
    assert conn.execute("SELECT funding FROM totals_symbol").fetchone() == (-660,)
    conn.close()
    code, report = run_check(path)
    assert code == 0 and report["portfolio_rebuild"] == "ok", report


async def test_check_reports_a_fill_the_account_could_not_have_made(tmp_path: Path) -> None:
    from worker.events import Market
    from worker.instruments import DEFAULT_INSTRUMENTS

    path = tmp_path / "w.db"
    writer = StoreWriter(path, [DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]], RUN)
    await writer.start()
    writer.submit(a_fill(1, 1, Side.SELL, 6_000_000, 5, T0))  # spot sell with nothing held
    await writer.close()
    code, report = run_check(path)
    assert code == 1
    assert [m["kind"] for m in report["mismatches"]] == ["fill_without_order", "portfolio_refused"]


async def test_restart_repairs_positions_from_fills_and_records_the_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    await write_outputs(path, 30)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE positions SET qty = qty + 1000")  # the stored view drifts from the fills
    conn.commit()
    conn.close()
    writer = await started(path)
    state = writer.recovered
    assert state is not None and [m["kind"] for m in state.mismatches] == ["position"]
    writer.submit_many(outputs_for(31))  # continues from the rebuilt position, not the drifted one
    await writer.close()
    conn = sqlite3.connect(path)
    kinds = conn.execute("SELECT kind, severity FROM system_events").fetchall()
    assert kinds == [("position_mismatch", "error")]
    conn.close()
    code, report = run_check(path)
    assert code == 0, report


def test_restart_cancels_open_orders_never_assumes_them_filled() -> None:
    order = new_order(4, "BTCUSDT", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 10, 600_000, T0)
    state = recovery.RecoveredState(
        schema_version=1, positions={}, mismatches=[], open_orders=[fill(order, 2)], trading_state=None,
        trading_state_reason="", breakers={}, pending_actions=[], max_order_id=4, max_fill_id=0,
        max_signal_id=0, fills=0, last_event_ns=T0, equity_peak=None,
    )  # fmt: skip
    (update,) = recovery.restart_cancellations(state, T0 + 5)
    assert update.order.status_name == "Cancelled" and update.order.status.reason == "restart"
    assert update.order.filled_qty == 2 and update.ts_ns == T0 + 5


async def test_the_workers_own_output_types_are_stored_not_rejected(tmp_path: Path) -> None:
    """The writer takes the engine's shapes as they are (risk, engine, broker, events)."""
    from worker import broker, engine, risk
    from worker.book import SyncState
    from worker.events import FeedState, FeedStatus, Market

    path = tmp_path / "w.db"
    writer = await started(path)
    order = new_order(1, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 10, 600_000, T0)
    t1, t5 = T0 + 10**9, T0 + 5 * 10**9
    outputs = [
        broker.OrderUpdate(order, T0, "accepted"),
        a_fill(1, 1, Side.BUY, 600_000, 10, T0 + 1),
        broker.OrderUpdate(fill(order, 10), T0 + 1, "fill"),
        broker.Markout(1, 1, "BTCUSDT", Side.BUY, 1000, T0, t1, 600_000, 600_000.5, 600_002.0, 0.2, 0.3),
        broker.Markout(1, 1, "BTCUSDT", Side.BUY, 5000, T0, t5, 600_000, 600_000.5, None, None, None),
        risk.RiskDecisionEvent(T0, "usdm", "BTCUSDT", "denied", "max_position", 1, 10, 0, 600_000, "s"),
        risk.TradingStateChanged(T0 + 2, "HALTED", "ACTIVE", "drawdown", "risk"),
        risk.BreakerChanged(T0 + 2, "drawdown", True, "drawdown 5.1%"),
        engine.SyncChange("BTCUSDT", Market.USDM, SyncState.SYNCING, "gap: U 5 > 3", T0 + 5),
        engine.SyncChange("BTCUSDT", Market.USDM, SyncState.LIVE, "snapshot", T0 + 6),
        FeedStatus("BTCUSDT", Market.USDM, FeedState.DISCONNECTED, "closed 1006", T0 + 7),
        FeedStatus("BTCUSDT", Market.USDM, FeedState.CONNECTED, "", T0 + 8),
    ]
    writer.submit_many(outputs)
    await writer.close()
    conn = sqlite3.connect(path)
    kinds = dict(conn.execute("SELECT kind, count FROM event_counts"))
    assert "store_rejected" not in kinds, conn.execute("SELECT detail_json FROM system_events").fetchall()
    assert kinds == {"resync": 1, "gap": 1, "synced": 1, "disconnect": 1, "reconnect": 1}
    assert conn.execute("SELECT verdict, reason FROM risk_decisions").fetchall() == [
        ("denied", "max_position")
    ]
    assert conn.execute("SELECT state FROM trading_state_events").fetchall() == [("HALTED",)]
    assert conn.execute("SELECT tripped FROM breakers WHERE breaker = 'drawdown'").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM markouts").fetchone() == (1,)  # the one with no mid is skipped
    conn.close()
    code, report = run_check(path)
    assert code == 0, report


async def test_the_traders_samples_and_events_are_stored(tmp_path: Path) -> None:
    trader = pytest.importorskip("worker.trader")
    path = tmp_path / "w.db"
    writer = await started(path)
    writer.submit_many(
        [
            trader.EquitySample(T0, 10**12, 10**12, 0, 0, 0, 0),
            trader.TopSample(T0, "usdm", "BTCUSDT", 600_000, 3, 600_001, 4, 0.1, 600_000.4),
            trader.Incident(T0 + 3, "order_refused", "spot oversell"),
            trader.PauseChange(T0 + 4, True, "shabbat", T0 + 10**12),
        ]
    )
    await writer.close()
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT kind, count FROM event_counts")) == {"order_refused": 1, "pause": 1}
    assert conn.execute("SELECT bid_price, ask_price FROM book_top_latest").fetchone() == (600_000, 600_001)
    assert conn.execute("SELECT count(*) FROM equity_bars").fetchone() == (3,)
    conn.close()


async def test_shutdown_on_a_full_disk_is_bounded(tmp_path: Path, mounts: list[Path]) -> None:
    volume = tmp_path / "small"
    _mount_tmpfs(volume, "size=768k")
    mounts.append(volume)
    writer = await started(volume / "w.db", retry_backoff_s=(0.02, 0.05))
    with (volume / "filler").open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    writer.submit_many(outputs_for(1))
    await writer.close("sigterm", timeout=0.3)  # returns although nothing can be written
    assert writer.stats.write_errors > 0


async def test_optional_retention_of_signals_and_approved_decisions(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = await started(
        path, signal_retention_s=3600, approved_decision_retention_s=3600, retention_every_s=1
    )
    for hour in range(3):
        ts = T0 + hour * 3600 * 10**9
        writer.submit(records.Signal(ts, "usdm", "BTCUSDT", "ofi/1", 0.5, 1, 0.7, signal_id=hour + 1))
        writer.submit(records.RiskDecision(ts, "usdm", "BTCUSDT", "approved", "ok"))
        writer.submit(records.RiskDecision(ts, "usdm", "BTCUSDT", "denied", "max_position"))
        await writer.flush(timeout=5)
    await writer.close()
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT signal_id FROM signals ORDER BY 1")] == [2, 3]
    verdicts = conn.execute("SELECT verdict, count(*) FROM risk_decisions GROUP BY 1 ORDER BY 1").fetchall()
    assert verdicts == [("approved", 2), ("denied", 3)]  # denials are never deleted
    conn.close()


async def test_signals_are_kept_30_days_by_default_and_0_keeps_everything(tmp_path: Path) -> None:
    assert WriterConfig().signal_retention_s == WriterConfig().approved_decision_retention_s == 30 * 86_400
    for retention, kept in ((None, [2]), (0, [1, 2])):
        path = tmp_path / f"keep_{retention}.db"
        extra = {} if retention is None else {"signal_retention_s": 0, "approved_decision_retention_s": 0}
        writer = await started(path, retention_every_s=1, **extra)
        for n, age_days in ((1, 31), (2, 0)):  # the second signal's time is "now" on the engine clock
            ts = T0 + (31 - age_days) * 86_400 * 10**9
            writer.submit(records.Signal(ts, "usdm", "BTCUSDT", "ofi/1", 0.5, 1, 0.7, signal_id=n))
            await writer.flush(timeout=5)
        await writer.close()
        conn = sqlite3.connect(path)
        assert [r[0] for r in conn.execute("SELECT signal_id FROM signals ORDER BY 1")] == kept, retention
        conn.close()


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 50), st.integers(590_000, 610_000)),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, 3),
)
def test_any_fill_sequence_stores_positions_and_totals_equal_to_the_portfolio_rebuild(
    tmp_path_factory: pytest.TempPathFactory, trades: list[tuple[Side, int, int]], restarts: int
) -> None:
    """Whatever the fills (and however many restarts in between), the stored positions, the running totals,
    the store's ledger and `worker.portfolio.rebuild_from_fills` agree to the last 1e-8."""
    path = tmp_path_factory.mktemp("prop") / "w.db"

    async def run() -> None:
        chunk = max(1, len(trades) // (restarts + 1))
        for start in range(0, len(trades), chunk):
            writer = await started(path)
            for i, (side, qty, price) in enumerate(trades[start : start + chunk], start=start + 1):
                order = new_order(i, "BTCUSDT", side, OrderType.LIMIT, TimeInForce.IOC, qty, price, T0 + i)
                writer.submit(records.OrderUpdate(order, T0 + i))
                writer.submit(a_fill(i, i, side, price, qty, T0 + i, fee=qty * 3))
                writer.submit(records.OrderUpdate(fill(order, qty), T0 + i))
            await writer.close()

    asyncio.run(run())
    code, report = run_check(path)
    assert code == 0 and report["portfolio_rebuild"] == "ok", report
    assert report["fills"] == len(trades)
    net = sum(int(side) * qty for side, qty, _ in trades)
    assert report["positions"]["usdm:BTCUSDT"]["qty"] == net
