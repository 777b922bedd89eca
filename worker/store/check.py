"""`python -m worker check --db PATH`: verify a trades database offline and print a JSON report.

Design:
- Opens the file read-only (`mode=ro`, `query_only`): checking never changes what it checks.
- Runs `PRAGMA integrity_check`, the schema-version check, rebuilds positions and P&L from the fills and
  compares them with the stored positions, snapshots and running totals, and walks every order's
  transitions (see `recovery.verify`).
- Prints one JSON object (`ok`, `fills`, `mismatches`, ...) and exits 0 only when everything agrees;
  1 when something is wrong, 2 when the file cannot be read at all.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import orjson

from worker.store import recovery
from worker.store.db import DEFAULT_DB_PATH, reader_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", default=DEFAULT_DB_PATH, help=f"database file (default: {DEFAULT_DB_PATH})")
    parser.add_argument("--compact", action="store_true", help="print the report on one line")


def run_check(path: str | Path) -> tuple[int, dict]:
    p = Path(path)
    if not p.exists():
        return 2, {"ok": False, "fills": 0, "mismatches": [], "error": f"{p} does not exist"}
    try:
        conn = sqlite3.connect(reader_uri(p), uri=True, timeout=5.0)
    except sqlite3.Error as exc:
        return 2, {"ok": False, "fills": 0, "mismatches": [], "error": f"cannot open {p}: {exc}"}
    try:
        conn.execute("PRAGMA query_only=1")
        report = recovery.verify(conn)
    except sqlite3.DatabaseError as exc:
        error = f"{p} is not a readable database: {exc}"
        return 2, {"ok": False, "fills": 0, "mismatches": [], "error": error}
    finally:
        conn.close()
    report["db"] = str(p)
    return (0 if report["ok"] else 1), report


def main(args: argparse.Namespace) -> int:
    code, report = run_check(args.db)
    option = orjson.OPT_SORT_KEYS | (0 if args.compact else orjson.OPT_INDENT_2)
    sys.stdout.write(orjson.dumps(report, option=option).decode() + "\n")
    return code
