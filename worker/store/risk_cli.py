"""`python -m worker risk reset|status --db PATH`: the operator's documented hands on the breakers.

Design:
- A breaker trip is persisted and survives restarts; the only way to clear it is a recorded operator
  action. `risk reset` inserts one row into `operator_actions` (who, why, when); the worker applies it on
  start or when it next polls (about once a second), clears its breakers and stamps the row as applied.
  The CLI never edits breaker state itself: the risk engine stays the only writer of that state.
- Works while the worker runs (SQLite's busy timeout serializes the two writers) and on a stopped one.
- Refuses a missing file rather than creating an empty database by mistake.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path

import orjson

from worker.store import recovery
from worker.store.db import DEFAULT_DB_PATH, StoreError, connect_readonly, open_writer_sync


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="risk_command", metavar="ACTION", required=True)
    reset = sub.add_parser("reset", help="record an operator reset of the tripped breakers")
    reset.add_argument("--db", default=DEFAULT_DB_PATH)
    reset.add_argument("--reason", required=True, help="why trading may resume (kept in the audit trail)")
    reset.add_argument("--operator", default=None, help="who decided (default: the login name)")
    status = sub.add_parser("status", help="print breakers, trading state and pending operator actions")
    status.add_argument("--db", default=DEFAULT_DB_PATH)


def _print(obj: object) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")


def _operator(name: str | None) -> str:
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def reset(db: str, reason: str, operator: str | None) -> dict:
    if not reason.strip():
        raise StoreError("--reason must say why trading may resume")
    if not Path(db).exists():
        raise StoreError(f"database {db} does not exist")
    conn = open_writer_sync(db)
    try:
        cur = conn.execute(
            "INSERT INTO operator_actions (action, reason, operator, requested_wall_ns) VALUES (?,?,?,?)",
            ("risk_reset", reason.strip(), _operator(operator), time.time_ns()),
        )
        action_id = int(cur.lastrowid or 0)
        rows = conn.execute("SELECT breaker, reason FROM breakers WHERE tripped = 1 ORDER BY breaker")
        tripped = [{"breaker": b, "reason": r} for b, r in rows]
    finally:
        conn.close()
    return {"action_id": action_id, "action": "risk_reset", "tripped_breakers": tripped, "status": "pending"}


def status(db: str) -> dict:
    conn = connect_readonly(db)
    try:
        state = recovery.load_state(conn)
    finally:
        conn.close()
    return {
        "trading_state": state.trading_state,
        "reason": state.trading_state_reason,
        "breakers": {
            b.breaker: {"tripped": b.tripped, "reason": b.reason, "since_ns": b.since_ns}
            for b in state.breakers.values()
        },
        "pending_actions": [
            {"action_id": a.action_id, "action": a.action, "reason": a.reason, "operator": a.operator}
            for a in state.pending_actions
        ],
    }


def main(args: argparse.Namespace) -> int:
    try:
        if args.risk_command == "reset":
            _print(reset(args.db, args.reason, args.operator))
        else:
            _print(status(args.db))
    except StoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0
