"""The writer task: drains the engine's outputs into SQLite in batched transactions, off the hot path.

Design and invariants:
- `submit(record)` is plain synchronous code (no await, O(1)): the hot path appends to an in-memory
  queue and wakes the writer task. The writer takes everything queued, writes it in ONE transaction
  (`BEGIN IMMEDIATE` ... `COMMIT`) and goes back to waiting; a record is committed within ~100 ms of
  its submission unless the disk itself is slower (then `lag_seconds()` says so).
- Never dropped: orders, order changes, fills, markouts, signals, risk decisions, breaker and trading-state
  changes, the risk engine's state (`records.RiskState`, one row replaced), system events. Their queue
  has no hard limit; past `critical_soft_limit` records, or when the oldest unwritten record is older
  than `max_lag_s`, `is_lagging` turns True and the risk engine must stop opening positions (reason
  `storage_lag`) until it is False again.
- Droppable: equity samples, book-top samples and heartbeats live in a bounded queue; when it is full the
  oldest is dropped and counted (`stats.samples_dropped`).
- Rollups and running totals are maintained by triggers (schema.py) inside the same transaction as the
  rows they summarize. The writer computes only what needs Python state: each fill's realized P&L and
  position after (average-cost ledger), the equity peak, the quote value of fees.
- Replay-idempotent: a fill id or order transition already in the file is not written (or counted) again,
  so re-running a replay after a crash leaves every fill exactly once.
- A failed transaction is rolled back and retried with backoff (disk full, I/O error, lock): nothing is
  lost while the process lives, and `is_lagging` stops new risk. A record SQLite refuses outright (a bug,
  not the disk) is written as a `store_rejected` system event with its content instead of blocking the rest.
- Retention: raw (resolution 1) samples older than `retention_s` on the engine clock are deleted in the
  writer's transactions; their 60 s / 1 h bars always exist because triggers write them at insert time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sqlite3
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite

from worker.instruments import MONEY_SCALE, Instrument
from worker.orders import Fill, Order
from worker.portfolio import fee_in_quote
from worker.store import db, records, recovery
from worker.store.ledger import Position, apply_fill

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterConfig:
    max_lag_s: float = 2.0  # oldest unwritten record older than this: is_lagging
    critical_soft_limit: int = 200_000  # queued never-drop records beyond this: is_lagging
    sample_capacity: int = 20_000  # droppable samples kept at most
    max_batch: int = 20_000  # records per transaction
    heartbeat_interval_s: float = 1.0
    retention_s: int = 7 * 86_400  # raw 1 s samples kept this long (engine clock)
    retention_every_s: int = 60  # engine-clock seconds between retention passes
    wal_checkpoint_bytes: int = 64 * 1024 * 1024  # fallback PASSIVE checkpoint when no Litestream
    retry_backoff_s: tuple[float, float] = (0.05, 2.0)
    quick_check: bool = False  # PRAGMA quick_check at open (slow on big files)
    # High-volume history that is not money, kept 30 days by default so a worker that runs for months
    # does not fill its volume: signals are most of the growth of a busy strategy (measured: ~63 of ~106
    # MB/day at 5 signals/s). 0 or None keeps everything. Denied/adjusted risk decisions are always kept.
    signal_retention_s: int | None = 30 * 86_400
    approved_decision_retention_s: int | None = 30 * 86_400


@dataclass(frozen=True, slots=True)
class RunInfo:
    mode: str  # live | replay | test
    code_version: str
    config_digest: str
    config_json: str = "{}"


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    rows_written: int = 0
    commits: int = 0
    samples_dropped: int = 0
    duplicates_skipped: int = 0
    rejected: int = 0
    write_errors: int = 0
    last_error: str = ""
    last_commit_latency_s: float = 0.0  # submit -> commit of the oldest record of the last batch
    max_commit_latency_s: float = 0.0
    commit_latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))


_INSERT_ORDER = (
    "INSERT INTO orders (order_id, run_id, market, symbol, side, type, tif, qty, price, tag, status, "
    "filled_qty, reason, created_ns, updated_ns, transitions, stop_price, reduce_only, oco) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_ORDER_EVENT = (
    "INSERT INTO order_events (order_id, seq, ts_ns, status, filled_qty, reason, run_id) "
    "SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4, ?5, ?6 FROM order_events WHERE order_id = ?7 "
    "ON CONFLICT DO NOTHING"
)
_INSERT_FILL = (
    "INSERT INTO fills (fill_id, order_id, run_id, market, symbol, side, price, qty, notional, fee, "
    "fee_asset, fee_quote, liquidity, realized_pnl, position_after, cost_after, ts_ns, model, latency_ns, "
    "queue_ahead, decision_mid, fill_mid, slippage_bps) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_MARKOUT = (
    "INSERT INTO markouts (fill_id, horizon_ms, ts_ns, symbol, mid, markout_bps) VALUES (?,?,?,?,?,?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_SIGNAL = (
    "INSERT INTO signals (signal_id, ts_ns, run_id, market, symbol, model, value, direction, "
    "confidence, mid, order_id, features_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_SIGNAL_OUTCOME = (
    "INSERT INTO signal_outcomes (signal_id, horizon_ms, ts_ns, mid, return_bps) VALUES (?,?,?,?,?) "
    "ON CONFLICT DO NOTHING"
)
_INSERT_RISK = (
    "INSERT INTO risk_decisions (ts_ns, run_id, market, symbol, verdict, reason, order_id, side, "
    "qty_requested, qty_approved, price, detail_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_STATE = (
    "INSERT INTO trading_state_events (ts_ns, run_id, state, previous, reason, source, detail_json) "
    "VALUES (?,?,?,?,?,?,?)"
)
_INSERT_BREAKER = (
    "INSERT INTO breaker_events (ts_ns, run_id, breaker, tripped, reason, detail_json) VALUES (?,?,?,?,?,?)"
)
_INSERT_SYSTEM = (
    "INSERT INTO system_events (ts_ns, run_id, kind, severity, market, symbol, detail_json) "
    "VALUES (?,?,?,?,?,?,?)"
)
_INSERT_FUNDING = (
    "INSERT INTO funding_payments (symbol, funding_ns, market, rate_e8, mark_price, position_qty, amount, "
    "run_id) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_SNAPSHOT = (
    "INSERT INTO position_snapshots (ts_ns, run_id, market, symbol, qty, cost, realized_pnl, fees, "
    "last_fill_id) VALUES (?,?,?,?,?,?,?,?,?)"
)
_APPLY_ACTION = (
    "UPDATE operator_actions SET applied_wall_ns = ?, applied_run_id = ?, applied_ns = ? "
    "WHERE action_id = ? AND applied_wall_ns IS NULL"
)
_INSERT_EQUITY = (
    "INSERT INTO equity_bars (resolution_s, bucket_s, open, high, low, close, cash, realized_pnl, "
    "unrealized_pnl, fees, exposure, peak, drawdown, max_drawdown, samples, last_ns) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_INSERT_BOOK_TOP = (
    "INSERT INTO book_top_bars (market, symbol, resolution_s, bucket_s, mid2_open, mid2_high, mid2_low, "
    "mid2_close, bid_price, bid_qty, ask_price, ask_qty, spread_min, spread_max, spread_sum, samples, "
    "last_ns) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
)
_UPSERT_BOOK_LATEST = (
    "INSERT INTO book_top_latest (market, symbol, ts_ns, bid_price, bid_qty, ask_price, ask_qty, microprice, "
    "imbalance) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (market, symbol) DO UPDATE SET "
    "ts_ns = excluded.ts_ns, bid_price = excluded.bid_price, bid_qty = excluded.bid_qty, "
    "ask_price = excluded.ask_price, ask_qty = excluded.ask_qty, microprice = excluded.microprice, "
    "imbalance = excluded.imbalance WHERE excluded.ts_ns >= book_top_latest.ts_ns"
)
_UPSERT_HEARTBEAT = (
    "INSERT INTO heartbeat (id, run_id, wall_ns, ts_ns, trading_state, state_reason, sync_json, "
    "writer_lag_ms, queue_depth, rows_written, samples_dropped, detail_json) "
    "VALUES (1,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, wall_ns = excluded.wall_ns, "
    "ts_ns = excluded.ts_ns, trading_state = excluded.trading_state, state_reason = excluded.state_reason, "
    "sync_json = excluded.sync_json, writer_lag_ms = excluded.writer_lag_ms, "
    "queue_depth = excluded.queue_depth, rows_written = excluded.rows_written, "
    "samples_dropped = excluded.samples_dropped, detail_json = excluded.detail_json"
)

_UPSERT_RISK_STATE = (
    "INSERT INTO risk_state (id, ts_ns, run_id, state_json) VALUES (1,?,?,?) "
    "ON CONFLICT (id) DO UPDATE SET ts_ns = excluded.ts_ns, run_id = excluded.run_id, "
    "state_json = excluded.state_json"
)

Statement = tuple[str, tuple]


class StoreWriter:
    """Owns the database connection for the worker's lifetime. See the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        instruments: Iterable[Instrument],
        run: RunInfo,
        config: WriterConfig | None = None,
    ) -> None:
        self.path = Path(path)
        self.run = run
        self.config = config or WriterConfig()
        self.instruments: dict[str, Instrument] = {}
        for inst in instruments:
            if inst.symbol in self.instruments and self.instruments[inst.symbol] != inst:
                raise ValueError(f"two instruments share the symbol {inst.symbol}: fills carry no market")
            self.instruments[inst.symbol] = inst
        self.stats = WriterStats()
        self.run_id = 0
        self.recovered: recovery.RecoveredState | None = None
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._critical: deque[tuple[int, int, Any]] = deque()  # (submit monotonic ns, seq, record)
        self._samples: deque[tuple[int, int, Any]] = deque()
        self._wake = asyncio.Event()
        self._committed = asyncio.Condition()
        self._seq = 0
        self._committed_seq = 0
        self._inflight_oldest_ns: int | None = None
        self._closing = False
        self._failing = False
        self._fatal: BaseException | None = None
        self._positions: dict[str, Position] = {}
        self._peak: int | None = None
        self._max_fill_id_at_open = 0
        self._last_event_ns = 0
        self._last_retention_s = 0
        self._last_heartbeat: Any = None  # the latest records.Heartbeat
        self._heartbeat_dirty = True
        self._last_heartbeat_write = 0.0
        self._disconnected: set[tuple[str, str]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> recovery.RecoveredState:
        """Open (refusing bad files), recover state, record this run, start draining. Returns the recovery."""
        state, run_id = await asyncio.to_thread(self._open_sync)
        self.recovered, self.run_id = state, run_id
        self._positions = {symbol: replace(p) for (_, symbol), p in state.positions.items()}
        self._peak = state.equity_peak
        self._max_fill_id_at_open = state.max_fill_id
        self._last_event_ns = state.last_event_ns
        self._conn = await db.open_writer(self.path)
        self._task = asyncio.create_task(self._run(), name="store-writer")
        return state

    def _open_sync(self) -> tuple[recovery.RecoveredState, int]:
        conn = db.open_writer_sync(self.path, quick_check=self.config.quick_check)
        try:
            state = recovery.load_state(conn)
            conn.execute("BEGIN IMMEDIATE")
            for inst in self.instruments.values():
                conn.execute(
                    "INSERT INTO instruments (market, symbol, tick_size, step_size, min_notional, "
                    "base_asset, quote_asset, price_decimals, qty_decimals) VALUES (?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (market, symbol) DO UPDATE SET tick_size = excluded.tick_size, "
                    "step_size = excluded.step_size, min_notional = excluded.min_notional, "
                    "base_asset = excluded.base_asset, quote_asset = excluded.quote_asset, "
                    "price_decimals = excluded.price_decimals, qty_decimals = excluded.qty_decimals",
                    _instrument_row(inst),
                )
            cur = conn.execute(
                "INSERT INTO runs (mode, code_version, config_digest, config_json, started_wall_ns, "
                "host, pid) VALUES (?,?,?,?,?,?,?)",
                (
                    self.run.mode,
                    self.run.code_version,
                    self.run.config_digest,
                    self.run.config_json,
                    time.time_ns(),
                    socket.gethostname(),
                    os.getpid(),
                ),
            )
            run_id = int(cur.lastrowid or 0)
            if state.mismatches:
                log.error("store: %d position mismatch(es) on restart; the fills win", len(state.mismatches))
                recovery.repair_positions(conn, state, run_id)
            for problem in state.damaged_orders:  # left as they are; `check` reports them too
                log.error("store: a damaged open order was not restored: %s", problem)
                detail = records.dumps({"problem": problem})
                row = (state.last_event_ns, run_id, "damaged_order", "error", "", "", detail)
                conn.execute(_INSERT_SYSTEM, row)
            conn.execute("COMMIT")
            return state, run_id
        finally:
            conn.close()

    async def close(self, reason: str = "stop", timeout: float | None = 30.0) -> None:
        """Write everything still queued, mark the run ended, close. Call on SIGTERM before exiting.

        `timeout` bounds the wait when the disk refuses writes (full disk): what is still queued then is
        logged as lost and the run's stop reason says how many records, rather than hanging the shutdown.
        """
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            unwritten = self.queue_depth
            log.error("store: %d records unwritten at shutdown (%s)", unwritten, self.stats.last_error)
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            reason = f"{reason}; {unwritten} records unwritten ({self.stats.last_error})"
        except Exception:  # the writer already recorded its fatal error in self._fatal
            pass
        self._task = None
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._conn.execute(
                    "UPDATE runs SET ended_wall_ns = ?, stop_reason = ?, last_event_ns = ? WHERE run_id = ?",
                    (time.time_ns(), reason, self._last_event_ns or None, self.run_id),
                )
            await self._conn.close()
            self._conn = None

    # ---- the hot path's side: synchronous, never awaits -----------------------------------------
    def submit(self, record: Any) -> bool:
        """Queue one engine output. Returns False only when a droppable sample was dropped."""
        now = time.monotonic_ns()
        self._seq += 1
        self.stats.submitted += 1
        if records.classify(record) in records.SAMPLE_KINDS:
            if len(self._samples) >= self.config.sample_capacity:
                self._samples.popleft()
                self.stats.samples_dropped += 1
            self._samples.append((now, self._seq, record))
        else:
            self._critical.append((now, self._seq, record))
        self._wake.set()
        return True

    def submit_many(self, outputs: Iterable[Any]) -> None:
        for record in outputs:
            self.submit(record)

    def lag_seconds(self) -> float:
        """Age of the oldest record not yet committed (0 when everything is written)."""
        oldest = self._inflight_oldest_ns
        for queue in (self._critical, self._samples):
            if queue and (oldest is None or queue[0][0] < oldest):
                oldest = queue[0][0]
        if oldest is None:
            return 0.0
        return (time.monotonic_ns() - oldest) / 1e9

    @property
    def is_lagging(self) -> bool:
        """True: the risk engine must open no new positions (reason `storage_lag`)."""
        return (
            self._failing
            or self._fatal is not None
            or len(self._critical) > self.config.critical_soft_limit
            or self.lag_seconds() > self.config.max_lag_s
        )

    @property
    def failed(self) -> BaseException | None:
        """The error that stopped the writer for good (None while it runs or retries)."""
        return self._fatal

    @property
    def queue_depth(self) -> int:
        return len(self._critical) + len(self._samples)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until everything submitted before this call is committed."""
        target = self._seq
        if self._task is None:
            if self._committed_seq < target:
                raise db.StoreError("store writer is not running: nothing can be flushed")
            return
        self._wake.set()

        async def wait() -> None:
            async with self._committed:
                await self._committed.wait_for(
                    lambda: self._committed_seq >= target or self._fatal is not None
                )

        await asyncio.wait_for(wait(), timeout)
        if self._fatal is not None:
            raise db.StoreError(f"store writer stopped: {self._fatal}") from self._fatal

    async def wait_for_room(self, max_queued: int | None = None, timeout: float | None = None) -> None:
        """Backpressure for a producer that MAY block (replay, never the live worker): wait until at
        most `max_queued` records are queued (default: half the smaller of the two queue limits), so a
        replay at full speed neither drops samples nor grows the never-drop queue without bound."""
        limit = (
            min(self.config.critical_soft_limit, self.config.sample_capacity) // 2
            if max_queued is None
            else max_queued
        )
        if self.queue_depth <= limit and self._fatal is None:
            return
        self._wake.set()

        async def wait() -> None:
            async with self._committed:
                await self._committed.wait_for(lambda: self.queue_depth <= limit or self._fatal is not None)

        await asyncio.wait_for(wait(), timeout)
        if self._fatal is not None:
            raise db.StoreError(f"store writer stopped: {self._fatal}") from self._fatal

    # ---- operator actions (polled by the worker) ---------------------------------------------------
    async def pending_operator_actions(self) -> list[recovery.OperatorAction]:
        if self._conn is None:
            return []
        async with self._conn.execute(recovery.PENDING_ACTIONS_SQL) as cur:
            return [recovery.OperatorAction(*row) for row in await cur.fetchall()]

    # ---- the writer task ---------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                if not self._critical and not self._samples:
                    if self._closing:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.config.heartbeat_interval_s)
                self._wake.clear()
                await self._write_batch()
            await self._write_batch()  # final heartbeat
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("store writer stopped")
                self._fatal = exc
                self.stats.last_error = repr(exc)
            async with self._committed:
                self._committed.notify_all()
            raise

    def _take(self) -> list[tuple[int, int, Any]]:
        batch: list[tuple[int, int, Any]] = []
        limit = self.config.max_batch
        while self._critical and len(batch) < limit:
            batch.append(self._critical.popleft())
        while self._samples and len(batch) < limit:
            batch.append(self._samples.popleft())
        return batch

    async def _write_batch(self) -> None:
        batch = self._take()
        if batch:
            self._inflight_oldest_ns = min(item[0] for item in batch)
        else:
            now = time.monotonic()
            if now - self._last_heartbeat_write < self.config.heartbeat_interval_s and not self._closing:
                return
        statements, per_record = await self._plan(batch)
        housekeeping = self._housekeeping()
        statements.extend(housekeeping)
        backoff = self.config.retry_backoff_s[0]
        while True:
            try:
                await self._execute(statements)
                self._failing = False
                break
            except sqlite3.IntegrityError as exc:
                # A row SQLite refuses (a bug in a record, not the disk): isolate it, keep the rest.
                log.error("store: batch refused (%s); writing record by record", exc)
                await self._execute_isolated(per_record, housekeeping)
                self._failing = False
                break
            except sqlite3.Error as exc:
                # Disk full, I/O error, lock held too long: keep the batch, retry, say we lag.
                self._failing = True
                self.stats.write_errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.error("store: write failed (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)  # retry backoff, not synchronization
                backoff = min(backoff * 2, self.config.retry_backoff_s[1])
        now_ns = time.monotonic_ns()
        if batch:
            latency = (now_ns - self._inflight_oldest_ns) / 1e9 if self._inflight_oldest_ns else 0.0
            self.stats.last_commit_latency_s = latency
            self.stats.max_commit_latency_s = max(self.stats.max_commit_latency_s, latency)
            self.stats.commit_latencies_s.append(latency)
        self._inflight_oldest_ns = None
        self.stats.commits += 1
        self.stats.rows_written += len(statements)
        pending = [q[0][1] for q in (self._critical, self._samples) if q]
        async with self._committed:
            self._committed_seq = (min(pending) - 1) if pending else self._seq
            self._committed.notify_all()
        if self.stats.commits % 50 == 0:
            await self._maybe_checkpoint()

    async def _execute(self, statements: list[Statement]) -> None:
        conn = self._require_conn()
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Group consecutive identical statements into one executemany: one thread hop per group.
            i = 0
            while i < len(statements):
                sql = statements[i][0]
                j = i
                while j < len(statements) and statements[j][0] == sql:
                    j += 1
                if j - i == 1:
                    await conn.execute(sql, statements[i][1])
                else:
                    await conn.executemany(sql, [s[1] for s in statements[i:j]])
                i = j
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise

    async def _execute_isolated(
        self, per_record: list[tuple[Any, list[Statement]]], housekeeping: list[Statement]
    ) -> None:
        conn = self._require_conn()
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for record, group in per_record:
                await conn.execute("SAVEPOINT rec")
                try:
                    for sql, params in group:
                        await conn.execute(sql, params)
                    await conn.execute("RELEASE rec")
                except sqlite3.IntegrityError as exc:
                    await conn.execute("ROLLBACK TO rec")
                    await conn.execute("RELEASE rec")
                    self.stats.rejected += 1
                    await conn.execute(
                        _INSERT_SYSTEM,
                        (
                            self._last_event_ns,
                            self.run_id,
                            "store_rejected",
                            "error",
                            "",
                            "",
                            records.dumps({"error": str(exc), "record": repr(record)}),
                        ),
                    )
            for sql, params in housekeeping:
                await conn.execute(sql, params)
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise

    def _require_conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise db.StoreError("store writer is not open")
        return self._conn

    # ---- turning records into statements -------------------------------------------------------------
    async def _plan(
        self, batch: list[tuple[int, int, Any]]
    ) -> tuple[list[Statement], list[tuple[Any, list]]]:
        """Statements for a batch, in dependency order: orders, their transitions, fills, the rest."""
        existing = await self._existing_fill_ids(batch)
        orders: list[Statement] = []
        transitions: list[Statement] = []
        fills: list[Statement] = []
        rest: list[Statement] = []
        per_record: list[tuple[Any, list[Statement]]] = []
        for _, _, record in batch:
            group = self._statements_for(record, existing)
            if not group:
                continue
            per_record.append((record, group))
            for statement in group:
                sql = statement[0]
                if sql is _INSERT_ORDER:
                    orders.append(statement)
                elif sql is _INSERT_ORDER_EVENT:
                    transitions.append(statement)
                elif sql is _INSERT_FILL:
                    fills.append(statement)
                else:
                    rest.append(statement)
        # Same-SQL statements next to each other batch into one executemany; order within a kind holds.
        rest.sort(key=lambda s: _REST_ORDER.get(s[0], 99))
        return orders + transitions + fills + rest, per_record

    async def _existing_fill_ids(self, batch: list[tuple[int, int, Any]]) -> set[int]:
        """Fill ids in this batch that are already in the file (a replay re-run after a crash)."""
        maybe = [
            r.fill_id for _, _, r in batch if isinstance(r, Fill) and r.fill_id <= self._max_fill_id_at_open
        ]
        if not maybe:
            return set()
        conn = self._require_conn()
        found: set[int] = set()
        for i in range(0, len(maybe), 500):
            chunk = maybe[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with conn.execute(f"SELECT fill_id FROM fills WHERE fill_id IN ({marks})", chunk) as cur:
                found.update(row[0] for row in await cur.fetchall())
        return found

    def _statements_for(self, record: Any, existing_fills: set[int]) -> list[Statement]:
        kind = records.classify(record)
        ts = getattr(record, "ts_ns", None)
        if isinstance(ts, int) and ts > self._last_event_ns:
            self._last_event_ns = ts
        if kind == "fill":
            if record.fill_id in existing_fills:
                self.stats.duplicates_skipped += 1
                return []
            problem = self._fill_problem(record)
            if problem:
                self.stats.rejected += 1
                return [self._rejected(record, problem)]
            return [self._fill_statement(record)]
        if kind == "order":
            return self._order_statements(
                record, record.created_ns if _is_initial(record) else self._last_event_ns
            )
        if kind == "order_update":  # the broker's OrderUpdate, or records.OrderUpdate
            return self._order_statements(record.order, int(record.ts_ns))
        if kind == "equity":
            self._peak = record.equity if self._peak is None else max(self._peak, record.equity)
            return [(_INSERT_EQUITY, records.equity_row(record, self._peak))]
        if kind == "book_top":
            return [
                (_INSERT_BOOK_TOP, records.book_top_row(record)),
                (_UPSERT_BOOK_LATEST, records.book_latest_row(record)),
            ]
        if kind == "heartbeat":
            self._last_heartbeat = record
            self._heartbeat_dirty = True
            return []
        if kind == "signal":
            return [(_INSERT_SIGNAL, records.signal_row(record, self.run_id, self._market(record.symbol)))]
        if kind == "signal_outcome":
            row = (
                record.signal_id,
                record.horizon_ms,
                record.ts_ns,
                float(record.mid),
                float(record.return_bps),
            )
            return [(_INSERT_SIGNAL_OUTCOME, row)]
        if kind == "risk":
            return [(_INSERT_RISK, records.risk_row(record, self.run_id))]
        if kind == "state":
            row = (
                record.ts_ns,
                self.run_id,
                str(record.state),
                None if record.previous is None else str(record.previous),
                record.reason,
                record.source,
                records.dumps(getattr(record, "detail", None)),
            )
            return [(_INSERT_STATE, row)]
        if kind == "breaker":
            row = (
                record.ts_ns,
                self.run_id,
                record.breaker,
                int(record.tripped),
                record.reason,
                records.dumps(getattr(record, "detail", None)),
            )
            return [(_INSERT_BREAKER, row)]
        if kind in ("system", "incident", "pause", "sync", "feed"):
            return [(_INSERT_SYSTEM, row) for row in self._system_rows(kind, record)]
        if kind == "snapshot":
            row = (
                record.ts_ns,
                self.run_id,
                record.market,
                record.symbol,
                record.qty,
                record.cost,
                record.realized_pnl,
                record.fees,
                record.last_fill_id,
            )
            return [(_INSERT_SNAPSHOT, row)]
        if kind == "risk_state":
            return [(_UPSERT_RISK_STATE, (record.ts_ns, self.run_id, records.dumps(record.state)))]
        if kind == "action":
            return [(_APPLY_ACTION, (time.time_ns(), self.run_id, record.ts_ns, record.action_id))]
        if kind == "funding":
            row = (
                record.symbol,
                record.funding_ns,
                self._market(record.symbol),
                record.rate_e8,
                record.mark_price,
                record.position_qty,
                record.amount,
                self.run_id,
            )
            return [(_INSERT_FUNDING, row)]
        if kind == "markout":
            if record.markout_bps is None or record.mid is None:
                return []  # no live book at the horizon: nothing to record
            row = (
                record.fill_id,
                record.horizon_ms,
                record.ts_ns,
                record.symbol,
                float(record.mid),
                float(record.markout_bps),
            )
            return [(_INSERT_MARKOUT, row)]
        # Unknown output: keep it visible rather than lose it silently.
        return [self._rejected(record, "unknown record type")]

    def _system_rows(self, kind: str, record: Any) -> list[tuple]:
        """System events from the several shapes the worker reports them in."""
        ts = getattr(record, "ts_ns", None)
        if ts is None:
            ts = getattr(record, "recv_ns", self._last_event_ns)
        market = str(getattr(record, "market", "") or "")
        symbol = str(getattr(record, "symbol", "") or "")
        if kind == "system":
            return [
                (ts, self.run_id, record.kind, record.severity, market, symbol, records.dumps(record.detail))
            ]
        if kind == "incident":  # trader.Incident: something the core refused or could not do
            detail = records.dumps({"detail": str(record.detail)})
            return [(ts, self.run_id, record.kind, "warning", market, symbol, detail)]
        if kind == "pause":  # trader.PauseChange
            name = "pause" if record.paused else "resume"
            detail = records.dumps({"reason": record.reason, "until_ns": getattr(record, "until_ns", None)})
            return [(ts, self.run_id, name, "info", market, symbol, detail)]
        state = str(getattr(record.state, "value", record.state))
        detail = records.dumps({"reason": record.reason, "state": state})
        if kind == "sync":  # engine.SyncChange: LIVE again, or back to SYNCING (a resync)
            if state == "live":
                return [(ts, self.run_id, "synced", "info", market, symbol, detail)]
            rows = [(ts, self.run_id, "resync", "warning", market, symbol, detail)]
            if "gap" in record.reason.lower():
                rows.append((ts, self.run_id, "gap", "warning", market, symbol, detail))
            return rows
        # events.FeedStatus: a connection after a disconnection is a reconnect.
        key = (market, symbol)
        if state == "connected":
            name = "reconnect" if key in self._disconnected else "connect"
            self._disconnected.discard(key)
        else:
            name = "disconnect" if state == "disconnected" else state
            self._disconnected.add(key)
        return [(ts, self.run_id, name, "warning" if name != "connect" else "info", market, symbol, detail)]

    def _rejected(self, record: Any, why: str) -> Statement:
        """A record the store cannot write as a row, kept verbatim in a system event."""
        row = (
            self._last_event_ns,
            self.run_id,
            "store_rejected",
            "error",
            "",
            getattr(record, "symbol", "") or "",
            records.dumps({"why": why, "type": type(record).__name__, "record": repr(record)[:4000]}),
        )
        return (_INSERT_SYSTEM, row)

    def _fill_problem(self, f: Fill) -> str:
        if f.symbol not in self.instruments:
            return f"unknown symbol {f.symbol}: register its instrument with the writer"
        if not (isinstance(f.qty, int) and f.qty > 0 and isinstance(f.price, int) and f.price > 0):
            return "fill price and quantity must be positive integers"
        if int(f.side) not in (1, -1) or not isinstance(f.fee, int):
            return "fill side must be +1/-1 and its fee an integer"
        return ""

    def _market(self, symbol: str) -> str:
        inst = self.instruments.get(symbol)
        return str(inst.market) if inst else ""

    def _order_statements(self, order: Order, ts_ns: int) -> list[Statement]:
        market = self._market(order.symbol)
        return [
            (_INSERT_ORDER, records.order_row(order, market, self.run_id, ts_ns)),
            (_INSERT_ORDER_EVENT, records.order_event_row(order, ts_ns, self.run_id)),
        ]

    def _fill_statement(self, f: Fill) -> Statement:
        inst = self.instruments[f.symbol]
        notional = inst.notional(f.price, f.qty)
        fee_quote = fee_in_quote(inst, f)  # another asset (e.g. BNB): 0, kept in fills.fee
        position = self._positions.setdefault(f.symbol, Position())
        realized = apply_fill(position, int(f.side), f.qty, notional, fee_quote, f.fill_id)
        row = (
            f.fill_id,
            f.order_id,
            self.run_id,
            str(inst.market),
            f.symbol,
            int(f.side),
            f.price,
            f.qty,
            notional,
            f.fee,
            f.fee_asset,
            fee_quote,
            str(f.liquidity),
            realized,
            position.qty,
            position.cost,
            f.ts_ns,
            f.model,
            f.latency_ns,
            f.queue_ahead,
            float(f.decision_mid),
            float(f.fill_mid),
            float(f.slippage_bps),
        )
        return (_INSERT_FILL, row)

    def _housekeeping(self) -> list[Statement]:
        statements: list[Statement] = []
        now = time.monotonic()
        if self._heartbeat_dirty or now - self._last_heartbeat_write >= self.config.heartbeat_interval_s:
            hb = self._last_heartbeat
            detail = dict(hb.detail) if hb else {}
            detail["writer"] = {
                "commits": self.stats.commits,
                "write_errors": self.stats.write_errors,
                "last_error": self.stats.last_error,
                "duplicates_skipped": self.stats.duplicates_skipped,
                "rejected": self.stats.rejected,
            }
            statements.append(
                (
                    _UPSERT_HEARTBEAT,
                    (
                        self.run_id,
                        time.time_ns(),
                        max(self._last_event_ns, hb.ts_ns if hb else 0),
                        hb.trading_state if hb else "STARTING",
                        hb.state_reason if hb else "",
                        records.dumps(hb.sync if hb else {}),
                        int(self.lag_seconds() * 1000),
                        self.queue_depth,
                        self.stats.rows_written,
                        self.stats.samples_dropped,
                        records.dumps(detail),
                    ),
                )
            )
            statements.append(
                (
                    "UPDATE runs SET last_event_ns = ? WHERE run_id = ?",
                    (self._last_event_ns or None, self.run_id),
                )
            )
            self._heartbeat_dirty = False
            self._last_heartbeat_write = now
        now_s = self._last_event_ns // 1_000_000_000
        if now_s - self._last_retention_s >= self.config.retention_every_s:
            self._last_retention_s = now_s
            cutoff = now_s - self.config.retention_s
            statements.append(
                ("DELETE FROM equity_bars WHERE resolution_s = 1 AND bucket_s < ?", (cutoff,)),
            )
            for inst in self.instruments.values():
                statements.append(
                    (
                        "DELETE FROM book_top_bars WHERE market = ? AND symbol = ? AND resolution_s = 1 "
                        "AND bucket_s < ?",
                        (str(inst.market), inst.symbol, cutoff),
                    )
                )
            if self.config.signal_retention_s:
                old = (now_s - self.config.signal_retention_s) * 1_000_000_000
                statements.append(("DELETE FROM signals WHERE ts_ns < ?", (old,)))
                statements.append(("DELETE FROM signal_outcomes WHERE ts_ns < ?", (old,)))
            if self.config.approved_decision_retention_s:
                old = (now_s - self.config.approved_decision_retention_s) * 1_000_000_000
                statements.append(
                    ("DELETE FROM risk_decisions WHERE verdict = 'approved' AND ts_ns < ?", (old,))
                )
        return statements

    async def _maybe_checkpoint(self) -> None:
        """Bound the WAL when nobody else checkpoints (no Litestream): PASSIVE never blocks readers."""
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size > self.config.wal_checkpoint_bytes:
            with contextlib.suppress(sqlite3.Error):
                await self._require_conn().execute("PRAGMA wal_checkpoint(PASSIVE)")


_REST_ORDER = {
    _INSERT_FUNDING: -1,
    _INSERT_MARKOUT: 0,
    _INSERT_SIGNAL: 1,
    _INSERT_SIGNAL_OUTCOME: 2,
    _INSERT_RISK: 3,
    _INSERT_STATE: 4,
    _INSERT_BREAKER: 5,
    _INSERT_SYSTEM: 6,
    _INSERT_SNAPSHOT: 7,
    _APPLY_ACTION: 8,
    _INSERT_EQUITY: 9,
    _INSERT_BOOK_TOP: 10,
    _UPSERT_BOOK_LATEST: 11,
}


def _is_initial(order: Order) -> bool:
    return order.status_name in ("Pending", "Denied") and order.filled_qty == 0


def _instrument_row(inst: Instrument) -> tuple:
    def decimals(step: Decimal) -> int:
        exponent = step.normalize().as_tuple().exponent
        return max(0, -exponent) if isinstance(exponent, int) else 0

    return (
        str(inst.market),
        inst.symbol,
        _plain(inst.tick_size),
        _plain(inst.step_size),
        _plain(inst.min_notional),
        inst.base_asset,
        inst.quote_asset,
        decimals(inst.tick_size),
        decimals(inst.step_size),
    )


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


assert MONEY_SCALE == 10**8  # the schema's meta.money_scale says the same
