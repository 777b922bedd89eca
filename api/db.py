"""Read-only database access: a fresh connection per request, a time limit, a row cap, off the loop.

Design and invariants (after Datasette's `database.py`):
- Every request opens its own connection with `worker.store.db.connect_readonly` (`mode=ro` URI and
  `PRAGMA query_only=1`, schema version checked) and closes it when done. A long-lived connection goes
  stale when `litestream restore -f` rewrites the copy, and a long-lived reader blocks the follower.
- All of a request's queries run in ONE read transaction (`BEGIN` ... `ROLLBACK`): a page and the totals
  beside it come from the same snapshot even while the worker writes.
- The work runs in a worker thread (anyio, bounded by a capacity limiter) so the event loop never waits
  on SQLite; the limiter keeps a burst from spawning a thread per request on a 1-core machine.
- Time limit: a progress handler interrupts any statement still running after `time_limit_ms`
  (SQLite raises "interrupted"), which becomes a 503 problem, so no request can hold a core.
- Row cap: `Reader.rows` fetches at most `max_rows` + 1 rows and refuses more, whatever the SQL says.
- Failures to open (no file yet, no schema yet, corrupt) become `Unavailable` (503), never a 500.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from api.problems import Problem
from worker.store.db import StoreError, connect_readonly

T = TypeVar("T")
PROGRESS_OPS = 1000  # VM instructions between time checks: ~10-50 us of work


class Unavailable(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(503, detail)


class Reader:
    """What an endpoint's query function sees: a read-only connection with a row cap."""

    def __init__(self, conn: sqlite3.Connection, max_rows: int) -> None:
        self.conn = conn
        self.max_rows = max_rows

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self.conn.execute(sql, params)
        rows = cur.fetchmany(self.max_rows + 1)
        if len(rows) > self.max_rows:
            raise Problem(400, f"the request would read more than {self.max_rows} rows; narrow it")
        return rows

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.conn.execute(sql, params).fetchone()

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}


class Database:
    def __init__(self, path: str, *, time_limit_ms: int = 500, max_rows: int = 5000, threads: int = 4):
        self.path = path
        self.time_limit_s = time_limit_ms / 1000
        self.max_rows = max_rows
        self._limiter = anyio.CapacityLimiter(threads)
        self.timeouts = 0

    def connect(self) -> sqlite3.Connection:
        """A fresh read-only connection (also what the read-only test tries to write through)."""
        try:
            conn = connect_readonly(self.path, timeout_s=min(5.0, self.time_limit_s * 4))
        except StoreError as exc:
            raise Unavailable(str(exc)) from None
        conn.isolation_level = None
        return conn

    def run_sync(self, fn: Callable[[Reader], T]) -> T:
        conn = self.connect()
        deadline = time.monotonic() + self.time_limit_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_OPS)
        try:
            conn.execute("BEGIN")
            return fn(Reader(conn, self.max_rows))
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                self.timeouts += 1
                raise Unavailable(
                    f"query exceeded the {int(self.time_limit_s * 1000)} ms time limit; narrow the request"
                ) from None
            raise Unavailable(f"database error: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise Unavailable(f"database error: {exc}") from None
        finally:
            conn.close()

    async def run(self, fn: Callable[[Reader], T]) -> T:
        return await anyio.to_thread.run_sync(self.run_sync, fn, limiter=self._limiter)
