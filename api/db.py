"""Read-only database access: a fresh connection per request, a time limit, a row cap, off the loop.

Design and invariants (after Datasette's `database.py`):
- Connections come from `worker.store.db.connect_readonly` (`mode=ro` URI and `PRAGMA query_only=1`,
  schema version checked).
- Over a `litestream restore -f` copy (`fresh_connections=True`, the default when a replica is
  configured) every request opens its own connection and closes it: Litestream writes pages straight
  into the copy, SQLite's cache validation cannot see that, and an open connection - even an idle
  one - stops the follower from applying anything more (measured: the copy froze while one stayed open).
- Over the worker's own file (local runs) a thread keeps its connection between requests, but never
  trusts it across a change of the file: each request first compares the (inode, size, mtime) of the
  database and its -wal with what they were when the connection was opened, and opens a fresh one if
  anything moved (or the connection is older than `max_connection_age_s`). Each request reads the file
  as it is, as a fresh connection would, without paying SQLite's schema parse (~1 ms for this schema)
  every time - the difference between ~400 and ~1,000 uncached requests/s on one core.
- No connection ever holds a transaction between requests (a long-lived reader would block the
  follower's and the worker's checkpoints); any error discards the connection.
- All of a request's queries run in ONE read transaction (`BEGIN` ... `ROLLBACK`): a page and the totals
  beside it come from the same snapshot even while the worker writes.
- The work runs in a worker thread (anyio, bounded by a capacity limiter) so the event loop never waits
  on SQLite; the limiter keeps a burst from spawning a thread per request on a 1-core machine.
- Time limit: a progress handler interrupts any statement still running after `time_limit_ms`
  (SQLite raises "interrupted"), which becomes a 503 problem, so no request can hold a core.
- GIL hand-offs: Python's sqlite3 releases the GIL around each step and re-takes it per row, so hot
  endpoints fetch one row holding the whole JSON page (see `api.sqljson`), and the server process
  shortens the interpreter's switch interval (`api.__main__`).
- Row cap: `Reader.rows` fetches at most `max_rows` + 1 rows and refuses more, whatever the SQL says.
- Failures to open (no file yet, no schema yet, corrupt) become `Unavailable` (503), never a 500.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from api import render
from api.problems import Problem
from worker.store.db import StoreError, connect_readonly

T = TypeVar("T")
# VM instructions between time checks (~1 ms of work). Not Datasette's 1000: every check is a Python
# callback that must re-take the GIL from the event loop thread, and under load each re-take can wait a
# whole switch interval, so frequent checks made long queries slower than the limit they enforce.
PROGRESS_OPS = 100_000


class Unavailable(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(503, detail)


class Reader:
    """What an endpoint's query function sees: a read-only connection with a row cap."""

    def __init__(self, conn: sqlite3.Connection, max_rows: int, database: Database | None = None) -> None:
        self.conn = conn
        self.max_rows = max_rows
        self.database = database

    def instruments(self) -> dict[tuple[str, str], render.InstrumentView]:
        """The instruments table as render views, cached while the file is unchanged."""
        signature = self.database.signature() if self.database is not None else None
        cached = self.database._instruments if self.database is not None else None
        if cached is not None and signature is not None and cached[0] == signature:
            return cached[1]
        value = render.instruments(self.rows(render.INSTRUMENTS_SQL))
        if self.database is not None:
            self.database._instruments = (signature, value)
        return value

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
    def __init__(
        self,
        path: str,
        *,
        time_limit_ms: int = 500,
        max_rows: int = 5000,
        threads: int = 4,
        fresh_connections: bool = False,
        max_connection_age_s: float = 30.0,
    ):
        self.path = path
        self.time_limit_s = time_limit_ms / 1000
        self.max_rows = max_rows
        self.fresh_connections = fresh_connections
        self.max_connection_age_s = max_connection_age_s
        self._limiter = anyio.CapacityLimiter(threads)
        self._local = threading.local()
        self.timeouts = 0
        self.opened = 0
        self._instruments: tuple[tuple, dict] | None = None

    def connect(self) -> sqlite3.Connection:
        """A fresh read-only connection (also what the read-only test tries to write through)."""
        try:
            conn = connect_readonly(self.path, timeout_s=min(5.0, self.time_limit_s * 4))
        except StoreError as exc:
            raise Unavailable(str(exc)) from None
        conn.isolation_level = None
        self.opened += 1
        return conn

    def signature(self) -> tuple:
        """What changes whenever anyone (SQLite or Litestream) writes the file or its WAL."""
        sig: list[int] = []
        for suffix in ("", "-wal"):
            try:
                st = os.stat(self.path + suffix)
            except OSError:
                sig += (0, 0, 0, 0)
                continue
            sig += (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return tuple(sig)

    def _acquire(self) -> sqlite3.Connection:
        if self.fresh_connections:
            return self.connect()
        local = self._local
        signature = self.signature()
        conn = getattr(local, "conn", None)
        if conn is not None and (
            local.signature != signature or time.monotonic() - local.opened_at > self.max_connection_age_s
        ):
            self._discard()
            conn = None
        if conn is None:
            conn = self.connect()
            local.conn, local.signature, local.opened_at = conn, signature, time.monotonic()
        return conn

    def _discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def run_sync(self, fn: Callable[[Reader], T]) -> T:
        conn = self._acquire()
        deadline = time.monotonic() + self.time_limit_s
        conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_OPS)
        broken = True  # until proven otherwise: a SQLite error or an interrupt discards the connection
        try:
            conn.execute("BEGIN")
            try:
                result = fn(Reader(conn, self.max_rows, self))
            except sqlite3.Error:
                raise
            except BaseException:
                broken = False  # a Problem (400/404) raised by the endpoint: the connection is fine
                raise
            broken = False
            return result
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
            if self.fresh_connections:
                conn.close()
            elif not broken:
                try:
                    conn.set_progress_handler(None, 0)
                    conn.execute("ROLLBACK")  # end the read transaction: nothing is held between requests
                except sqlite3.Error:
                    self._discard()
            else:
                self._discard()

    async def run(self, fn: Callable[[Reader], T]) -> T:
        return await anyio.to_thread.run_sync(self.run_sync, fn, limiter=self._limiter)
