"""Opening the trades database: one writer (the worker), any number of read-only readers.

Design and invariants:
- Writer: WAL journal, `synchronous=NORMAL` (durable at each WAL sync, never corrupt; Litestream's
  recommendation), `busy_timeout=5000` (Litestream takes short write locks when it checkpoints), and
  `wal_autocheckpoint=0`: Litestream's tips disable the application's automatic checkpoints on busy
  databases and let Litestream checkpoint (it does, every `min-checkpoint-page-count` pages / minute).
  Without Litestream the writer runs a PASSIVE checkpoint itself once the WAL passes
  `WriterConfig.wal_checkpoint_bytes` (64 MB), so the WAL stays bounded either way. Under Litestream that
  threshold is far above Litestream's own 1000-page (~4 MB) checkpoints, so it only acts when Litestream
  is not checkpointing; Litestream 0.5 then notices the WAL moved under it and takes a fresh snapshot
  (litestream#1198): a cost, never a corrupt replica.
- The schema is checked BEFORE anything is written: a newer version, another application's file or a
  corrupt file raises `StoreError` and the file is left byte-for-byte as it was.
- A directory or file we cannot write (read-only volume) is refused with a clear message up front.
- Reader: `file:PATH?mode=ro` URI plus `PRAGMA query_only=1`, so no code path can write, and a
  schema-version check so a reader never misreads a newer layout. The API opens one per request.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import aiosqlite

from worker.store import schema

DEFAULT_DB_PATH = "quantumflow.db"  # in the working directory: the embedded default needs no setup
BUSY_TIMEOUT_MS = 5000


class StoreError(RuntimeError):
    """The database cannot be used; the message says why and what was (not) touched."""


class MixedRunsError(StoreError):
    """The file holds runs of the other kind (a live worker on a replay's file): a usage error (exit 2)."""


def _writable_or_raise(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.exists():
        raise StoreError(f"database directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(
            f"database directory {directory} is not writable (read-only volume?): "
            "SQLite needs it for the -wal and -shm files; refusing to start"
        )
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.W_OK):
            raise StoreError(f"{candidate} is read-only: refusing to start")


def writer_pragmas(conn: sqlite3.Connection) -> None:
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"could not switch the database to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA temp_store=MEMORY")


def open_writer_sync(path: str | os.PathLike[str], *, quick_check: bool = False) -> sqlite3.Connection:
    """Open (creating if absent) and migrate the database for writing; autocommit mode.

    Used at start (before the async writer takes over) and by the operator CLIs.
    """
    p = Path(path)
    _writable_or_raise(p)
    existed = p.exists() and p.stat().st_size > 0
    try:
        conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {p}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        schema.check_openable(conn)  # before any write, including the journal-mode switch
        if existed and quick_check:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise StoreError(f"{p} failed PRAGMA quick_check ({result}); restore it from the replica")
        writer_pragmas(conn)
        schema.migrate(conn)
    except schema.SchemaError as exc:
        conn.close()
        raise StoreError(f"refusing to open {p}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"refusing to open {p}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


async def open_writer(path: str | os.PathLike[str], *, quick_check: bool = False) -> aiosqlite.Connection:
    """Migrate synchronously (start-up only), then hand back an aiosqlite connection for the writer task."""
    open_writer_sync(path, quick_check=quick_check).close()
    conn = await aiosqlite.connect(Path(path), isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA wal_autocheckpoint=0")
        await conn.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        await conn.close()
        raise
    return conn


def reader_uri(path: str | os.PathLike[str]) -> str:
    return f"file:{quote(str(Path(path).resolve()))}?mode=ro"


def _check_reader(conn: sqlite3.Connection, path: object) -> None:
    try:
        version = schema.check_openable(conn)
    except schema.SchemaError as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if version == 0:
        raise StoreError(f"{path} has no QuantumFlow schema yet (has the worker started?)")


def connect_readonly(
    path: str | os.PathLike[str], *, timeout_s: float = 5.0, check_schema: bool = True
) -> sqlite3.Connection:
    """A read-only sqlite3 connection (the API opens one per request). Raises StoreError if unusable."""
    if not Path(path).exists():
        raise StoreError(f"database {path} does not exist")
    try:
        conn = sqlite3.connect(reader_uri(path), uri=True, timeout=timeout_s, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path} read-only: {exc}") from exc
    if check_schema:
        try:
            _check_reader(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


async def open_reader(path: str | os.PathLike[str], *, timeout_s: float = 5.0) -> aiosqlite.Connection:
    """The async flavour of `connect_readonly`."""
    if not Path(path).exists():
        raise StoreError(f"database {path} does not exist")
    try:
        conn = await aiosqlite.connect(reader_uri(path), uri=True, timeout=timeout_s)
        await conn.execute("PRAGMA query_only=1")
        async with conn.execute("PRAGMA user_version") as cur:
            version = (await cur.fetchone())[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path} read-only: {exc}") from exc
    if version > schema.LATEST_VERSION or version == 0:
        await conn.close()
        raise StoreError(
            f"cannot read {path}: schema version {version}, this code reads {schema.LATEST_VERSION}"
        )
    return conn
