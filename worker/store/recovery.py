"""Recovery: what a restarting worker rebuilds from the file, and the offline verification behind `check`.

Design and invariants:
- Fills are the source of truth. Positions and realized P&L are rebuilt by replaying every fill through
  the same average-cost ledger the writer uses (and through `worker.portfolio.rebuild_from_fills` when
  that exists); the stored `positions` rows and the last `position_snapshots` are compared against the
  rebuild. A mismatch is reported (the worker records an error event) and the rebuild wins.
- Open orders (Pending / PartiallyFilled) come back as `worker.orders.Order` values; the worker must
  re-evaluate or cancel them with reason `restart`, never assume them filled.
- Breaker state comes back exactly as persisted: a tripped breaker stays tripped across restarts until an
  operator reset (`operator_actions`) is applied. The risk engine's whole state (`risk_state`: drawdown
  peak since the last reset, the UTC day's opening equity, order-count windows) comes back with it;
  `equity_peak` (the all-time high of the equity bars) is only the fallback for a file without one.
- Verification reads only; it never writes to the file it checks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from worker import portfolio
from worker.events import Market
from worker.instruments import Instrument
from worker.orders import (
    TERMINAL,
    Cancelled,
    Denied,
    Fill,
    Filled,
    Liquidity,
    Order,
    OrderType,
    PartiallyFilled,
    Pending,
    Rejected,
    Side,
    TimeInForce,
)
from worker.store import schema
from worker.store.ledger import Position, apply_fill

PENDING_ACTIONS_SQL = (
    "SELECT action_id, action, reason, operator, requested_wall_ns FROM operator_actions "
    "WHERE applied_wall_ns IS NULL ORDER BY action_id"
)


@dataclass(frozen=True, slots=True)
class OperatorAction:
    action_id: int
    action: str
    reason: str
    operator: str
    requested_wall_ns: int


@dataclass(frozen=True, slots=True)
class BreakerState:
    breaker: str
    tripped: bool
    reason: str
    since_ns: int
    detail: dict[str, Any]


@dataclass(slots=True)
class RecoveredState:
    """Everything a restarting worker needs, rebuilt from the file."""

    schema_version: int
    positions: dict[tuple[str, str], Position]  # rebuilt from fills, keyed (market, symbol)
    mismatches: list[dict[str, Any]]  # stored positions / snapshots that disagree with the rebuild
    open_orders: list[Order]
    trading_state: str | None  # last persisted ACTIVE/REDUCING/HALTED/PAUSED (None: never set)
    trading_state_reason: str
    breakers: dict[str, BreakerState]
    pending_actions: list[OperatorAction]
    max_order_id: int
    max_fill_id: int
    max_signal_id: int
    fills: int
    last_event_ns: int
    equity_peak: int | None
    previous_run: dict[str, Any] | None = None  # the last run before this one; stop_reason None = crashed
    realized_pnl: int = 0
    fees: int = 0
    risk_state: dict[str, Any] | None = None  # RiskEngine.export_state() as last persisted (None: never)
    damaged_orders: list[str] = field(default_factory=list)  # open rows that are not valid orders
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tripped_breakers(self) -> list[BreakerState]:
        return [b for b in self.breakers.values() if b.tripped]


_FILL_COLUMNS = (
    "fill_id, order_id, symbol, side, price, qty, fee, fee_asset, liquidity, ts_ns, model, latency_ns, "
    "queue_ahead, decision_mid, fill_mid, slippage_bps"
)


def iter_fills(conn: sqlite3.Connection) -> Iterator[Fill]:
    """Every persisted fill as a `worker.orders.Fill`, in fill-id order: the portfolio's inputs."""
    for row in conn.execute(f"SELECT {_FILL_COLUMNS} FROM fills ORDER BY fill_id"):
        yield Fill(
            row[0],
            row[1],
            row[2],
            Side(row[3]),
            row[4],
            row[5],
            row[6],
            row[7],
            Liquidity(row[8]),
            row[9],
            row[10],
            row[11],
            row[12],
            row[13],
            row[14],
            row[15],
        )


def iter_funding(conn: sqlite3.Connection) -> Iterator[portfolio.FundingPayment]:
    """Every persisted USD-M funding settlement, in funding-time order."""
    for row in conn.execute(
        "SELECT symbol, funding_ns, rate_e8, mark_price, position_qty, amount FROM funding_payments "
        "ORDER BY funding_ns, symbol"
    ):
        yield portfolio.FundingPayment(*row)


def rebuild_positions(conn: sqlite3.Connection) -> dict[tuple[str, str], Position]:
    """Replay every fill through the ledger (exact integers, deterministic)."""
    positions: dict[tuple[str, str], Position] = {}
    rows = conn.execute(
        "SELECT market, symbol, side, qty, notional, fee_quote, fill_id FROM fills ORDER BY fill_id"
    )
    for market, symbol, side, qty, notional, fee_quote, fill_id in rows:
        position = positions.setdefault((market, symbol), Position())
        apply_fill(position, side, qty, notional, fee_quote, fill_id)
    for market, symbol, amount in conn.execute(
        "SELECT market, symbol, sum(amount) FROM funding_payments GROUP BY market, symbol"
    ):
        positions.setdefault((market, symbol), Position()).funding += amount
    return positions


def compare_positions(
    conn: sqlite3.Connection, rebuilt: dict[tuple[str, str], Position]
) -> list[dict[str, Any]]:
    """Stored positions and the latest snapshots against the rebuild; one dict per disagreement."""
    mismatches: list[dict[str, Any]] = []
    names = ("qty", "cost", "realized_pnl", "fees", "funding", "fills")
    stored = {
        (row[0], row[1]): tuple(row[2:])
        for row in conn.execute(
            "SELECT market, symbol, qty, cost, realized_pnl, fees, funding, fills FROM positions"
        )
    }
    for key in sorted(set(stored) | set(rebuilt)):
        p = rebuilt.get(key, Position())
        want = (p.qty, p.cost, p.realized_pnl, p.fees, p.funding, p.fills)
        got = stored.get(key, (0,) * len(names))
        if want != got:
            mismatches.append(
                {
                    "kind": "position",
                    "market": key[0],
                    "symbol": key[1],
                    "rebuilt": dict(zip(names, want, strict=True)),
                    "stored": dict(zip(names, got, strict=True)),
                }
            )
    # The portfolio's last snapshot per instrument: compare qty when it covered every fill so far.
    snapshots = conn.execute(
        "SELECT market, symbol, qty, last_fill_id FROM position_snapshots WHERE snapshot_id IN "
        "(SELECT max(snapshot_id) FROM position_snapshots GROUP BY market, symbol)"
    )
    for market, symbol, qty, last_fill_id in snapshots:
        p = rebuilt.get((market, symbol), Position())
        if last_fill_id >= p.last_fill_id and qty != p.qty:
            mismatches.append(
                {
                    "kind": "snapshot",
                    "market": market,
                    "symbol": symbol,
                    "rebuilt_qty": p.qty,
                    "snapshot_qty": qty,
                    "last_fill_id": last_fill_id,
                }
            )
    return mismatches


def _status(name: str, filled: int, reason: str | None) -> Any:
    if name == "Pending":
        return Pending()
    if name == "PartiallyFilled":
        return PartiallyFilled(filled)
    if name == "Filled":
        return Filled(filled)
    if name == "Cancelled":
        return Cancelled(filled, reason or "")
    if name == "Rejected":
        return Rejected(reason or "", filled)
    if name == "Denied":
        return Denied(reason or "", filled)
    raise ValueError(f"unknown order status {name!r}")


def open_orders(conn: sqlite3.Connection) -> tuple[list[Order], list[str]]:
    """The orders a previous run left open, and one line per stored order that is not a valid order (a
    damaged row is reported, never a crash at start; `check` names it too)."""
    rows = conn.execute(
        "SELECT order_id, symbol, side, type, tif, qty, price, created_ns, status, filled_qty, reason, tag, "
        "stop_price, reduce_only, oco FROM orders WHERE status IN ('Pending', 'PartiallyFilled') "
        "ORDER BY order_id"
    )
    orders: list[Order] = []
    problems: list[str] = []
    for row in rows:
        oid, symbol, side, otype, tif, qty, price, created, status, filled, reason, tag, stop, ro, oco = row
        try:
            status_now = _status(status, filled, reason)
            order = Order(oid, symbol, Side(side), OrderType(otype), TimeInForce(tif), qty, price, created,
                          status_now, tag, stop, bool(ro), oco)  # fmt: skip
        except ValueError as exc:  # InvalidOrder, an unknown side/type/status
            problems.append(f"order {oid}: {exc}")
        else:
            orders.append(order)
    return orders, problems


def load_state(conn: sqlite3.Connection) -> RecoveredState:
    """Rebuild what a restarting worker needs. `conn` is any connection to a migrated database."""
    version = schema.schema_version(conn)
    positions = rebuild_positions(conn)
    mismatches = compare_positions(conn, positions)
    state_row = conn.execute(
        "SELECT state, reason FROM trading_state_events ORDER BY event_id DESC LIMIT 1"
    ).fetchone()
    breakers = {
        name: BreakerState(name, bool(tripped), reason, since, orjson.loads(detail))
        for name, tripped, reason, since, detail in conn.execute(
            "SELECT breaker, tripped, reason, since_ns, detail_json FROM breakers ORDER BY breaker"
        )
    }
    actions = [OperatorAction(*row) for row in conn.execute(PENDING_ACTIONS_SQL)]

    def scalar(sql: str) -> int:
        value = conn.execute(sql).fetchone()[0]
        return int(value or 0)

    last_event_ns = max(
        scalar("SELECT max(ts_ns) FROM fills"),
        scalar("SELECT max(updated_ns) FROM orders"),
        scalar("SELECT max(ts_ns) FROM heartbeat"),
        scalar("SELECT max(last_event_ns) FROM runs"),
    )
    peak = conn.execute("SELECT max(high) FROM equity_bars WHERE resolution_s = 3600").fetchone()[0]
    left_open, damaged = open_orders(conn)
    risk_row = conn.execute("SELECT state_json FROM risk_state WHERE id = 1").fetchone()
    run = conn.execute(
        "SELECT run_id, mode, code_version, config_digest, started_wall_ns, ended_wall_ns, stop_reason, "
        "last_event_ns FROM runs ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    previous = None
    if run:
        keys = ("run_id", "mode", "code_version", "config_digest", "started_wall_ns", "ended_wall_ns")
        previous = dict(zip((*keys, "stop_reason", "last_event_ns"), run, strict=True))
    return RecoveredState(
        schema_version=version,
        positions=positions,
        mismatches=mismatches,
        open_orders=left_open,
        damaged_orders=damaged,
        trading_state=state_row[0] if state_row else None,
        trading_state_reason=state_row[1] if state_row else "",
        breakers=breakers,
        pending_actions=actions,
        max_order_id=scalar("SELECT max(order_id) FROM orders"),
        max_fill_id=scalar("SELECT max(fill_id) FROM fills"),
        max_signal_id=scalar("SELECT max(signal_id) FROM signals"),
        fills=scalar("SELECT count(*) FROM fills"),
        last_event_ns=last_event_ns,
        equity_peak=None if peak is None else int(peak),
        previous_run=previous,
        realized_pnl=sum(p.realized_pnl for p in positions.values()),
        fees=sum(p.fees for p in positions.values()),
        risk_state=orjson.loads(risk_row[0]) if risk_row else None,
    )


def restart_cancellations(state: RecoveredState, ts_ns: int) -> list[Any]:
    """The conservative restart policy: every order left open by the previous run is cancelled with
    reason `restart` (never assumed filled). Returns `OrderUpdate` records for the writer; the engine must
    drop the same orders from its broker and portfolio."""
    from worker.orders import cancel
    from worker.store.records import OrderUpdate

    return [OrderUpdate(cancel(order, "restart"), ts_ns, "restart") for order in state.open_orders]


def repair_positions(conn: sqlite3.Connection, state: RecoveredState, run_id: int) -> None:
    """Fills win: rewrite `positions` from the rebuild and record each disagreement as an error event.

    Runs inside the caller's transaction."""
    for mismatch in state.mismatches:
        conn.execute(
            "INSERT INTO system_events (ts_ns, run_id, kind, severity, market, symbol, detail_json) "
            "VALUES (?, ?, 'position_mismatch', 'error', ?, ?, ?)",
            (
                state.last_event_ns,
                run_id,
                mismatch.get("market", ""),
                mismatch.get("symbol", ""),
                orjson.dumps(mismatch, option=orjson.OPT_SORT_KEYS).decode(),
            ),
        )
    if not any(m["kind"] == "position" for m in state.mismatches):
        return
    conn.execute("DELETE FROM positions")
    conn.executemany(
        "INSERT INTO positions (market, symbol, qty, cost, realized_pnl, fees, funding, fills, last_fill_id, "
        "updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [
            (
                m,
                s,
                p.qty,
                p.cost,
                p.realized_pnl,
                p.fees,
                p.funding,
                p.fills,
                p.last_fill_id,
                state.last_event_ns,
            )
            for (m, s), p in state.positions.items()
        ],
    )


# ---- offline verification (python -m worker check) ---------------------------------------------------
_LEGAL_NEXT = {
    "Pending": {"PartiallyFilled", "Filled", "Cancelled", "Rejected"},
    "PartiallyFilled": {"PartiallyFilled", "Filled", "Cancelled"},
}
_FIRST = {"Pending", "Denied"}


def illegal_transitions(conn: sqlite3.Connection, limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
    """Walk every order's transitions; return (orders checked, problems)."""
    problems: list[dict[str, Any]] = []
    checked = 0
    last: dict[int, tuple[int, str, int]] = {}
    rows = conn.execute("SELECT order_id, seq, status, filled_qty FROM order_events ORDER BY order_id, seq")
    for order_id, seq, status, filled in rows:
        prev = last.get(order_id)
        problem = None
        if prev is None:
            checked += 1
            if seq != 1 or status not in _FIRST:
                problem = f"first transition is #{seq} {status}"
        else:
            pseq, pstatus, pfilled = prev
            if seq != pseq + 1:
                problem = f"transition #{seq} follows #{pseq}"
            elif pstatus in {cls.__name__ for cls in TERMINAL}:
                problem = f"{status} after terminal {pstatus}"
            elif status not in _LEGAL_NEXT.get(pstatus, set()):
                problem = f"{pstatus} -> {status}"
            elif filled < pfilled:
                problem = f"filled quantity went down ({pfilled} -> {filled})"
        if problem and len(problems) < limit:
            problems.append({"kind": "order_transition", "order_id": order_id, "problem": problem})
        last[order_id] = (seq, status, filled)
    # The orders row must agree with its last transition, and filled quantity with its fills.
    agree = conn.execute(
        "SELECT o.order_id, o.status, o.filled_qty, o.qty, coalesce(f.filled, 0) FROM orders o "
        "LEFT JOIN (SELECT order_id, sum(qty) AS filled FROM fills GROUP BY order_id) f USING (order_id)"
    )
    for order_id, status, filled_qty, qty, from_fills in agree:
        prev = last.get(order_id)
        problem = None
        if prev is None:
            problem = "order has no transitions"
        elif (prev[1], prev[2]) != (status, filled_qty):
            problem = f"orders row says {status}/{filled_qty}, last transition {prev[1]}/{prev[2]}"
        elif from_fills != filled_qty:
            problem = f"fills sum to {from_fills} lots but the order says {filled_qty}"
        elif filled_qty > qty:
            problem = f"filled {filled_qty} > quantity {qty}"
        if problem and len(problems) < limit:
            problems.append({"kind": "order", "order_id": order_id, "problem": problem})
    orphans = conn.execute(
        "SELECT f.fill_id, f.order_id FROM fills f LEFT JOIN orders o USING (order_id) "
        "WHERE o.order_id IS NULL ORDER BY f.fill_id LIMIT ?",
        (limit,),
    )
    for fill_id, order_id in orphans:
        problems.append({"kind": "fill_without_order", "fill_id": fill_id, "order_id": order_id})
    return checked, problems


def instruments_from_db(conn: sqlite3.Connection) -> list[Instrument]:
    return [
        Instrument(symbol, Market(market), Decimal(tick), Decimal(step), Decimal(min_notional), base, quote)
        for market, symbol, tick, step, min_notional, base, quote in conn.execute(
            "SELECT market, symbol, tick_size, step_size, min_notional, base_asset, quote_asset "
            "FROM instruments"
        )
    ]


def _portfolio_rebuild(conn: sqlite3.Connection) -> tuple[str, Any]:
    """Rebuild with the portfolio's own code (`worker.portfolio.rebuild_from_fills`) from the persisted
    fills and funding payments. Returns (status, portfolio or error text)."""
    try:
        rebuilt = portfolio.rebuild_from_fills(
            iter_fills(conn), instruments_from_db(conn), funding=iter_funding(conn)
        )
    except ValueError as exc:  # ImpossibleFill: a fill that cannot have happened on the account
        return "refused", str(exc)
    return "ok", rebuilt


def verify(conn: sqlite3.Connection) -> dict[str, Any]:
    """The whole offline check. `ok` is False when anything is wrong; `mismatches` lists it all."""
    report: dict[str, Any] = {"ok": False, "fills": 0, "mismatches": []}
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    report["integrity"] = "ok" if integrity == ["ok"] else integrity[:20]
    try:
        version = schema.check_openable(conn)
    except schema.SchemaError as exc:
        report["schema_version"] = schema.schema_version(conn)
        report["error"] = str(exc)
        return report
    report["schema_version"] = version
    if version == 0:
        report["error"] = "no QuantumFlow schema (empty file)"
        return report
    if version < schema.LATEST_VERSION:  # everything checked here exists since v1
        report["note"] = f"schema version {version}: the worker migrates it to v{schema.LATEST_VERSION}"
    mismatches: list[dict[str, Any]] = []
    rebuilt = rebuild_positions(conn)
    mismatches += compare_positions(conn, rebuilt)
    # Running totals against the fills they summarize.
    totals = {
        (m, s): (n, vol, fees, pnl)
        for m, s, n, vol, fees, pnl in conn.execute(
            "SELECT market, symbol, fills, volume, fees, realized_pnl FROM totals_symbol WHERE fills > 0"
        )
    }
    sums = {
        (m, s): (n, vol, fees, pnl)
        for m, s, n, vol, fees, pnl in conn.execute(
            "SELECT market, symbol, count(*), sum(notional), sum(fee_quote), sum(realized_pnl) FROM fills "
            "GROUP BY market, symbol"
        )
    }
    for key in sorted(set(totals) | set(sums)):
        if totals.get(key) != sums.get(key):
            mismatches.append(
                {
                    "kind": "totals",
                    "market": key[0],
                    "symbol": key[1],
                    "stored": totals.get(key),
                    "fills": sums.get(key),
                }
            )
    hourly = conn.execute("SELECT sum(fills), sum(realized_pnl) FROM totals_hourly").fetchone()
    whole = conn.execute("SELECT count(*), sum(realized_pnl) FROM fills").fetchone()
    if (hourly[0] or 0, hourly[1] or 0) != (whole[0] or 0, whole[1] or 0):
        mismatches.append({"kind": "totals_hourly", "stored": list(hourly), "fills": list(whole)})
    orders_checked, order_problems = illegal_transitions(conn)
    mismatches += order_problems
    status, portfolio_result = _portfolio_rebuild(conn)
    report["portfolio_rebuild"] = status
    if status == "ok":
        mismatches += _compare_portfolio(portfolio_result, rebuilt)
    elif status == "refused":
        mismatches.append({"kind": "portfolio_refused", "problem": portfolio_result})
    report["fills"] = int(whole[0] or 0)
    report["orders"] = orders_checked
    report["positions"] = {
        f"{m}:{s}": {"qty": p.qty, "cost": p.cost, "realized_pnl": p.realized_pnl, "fees": p.fees}
        for (m, s), p in sorted(rebuilt.items())
    }
    report["realized_pnl"] = sum(p.realized_pnl for p in rebuilt.values())
    report["fees"] = sum(p.fees for p in rebuilt.values())
    report["mismatches"] = mismatches
    report["ok"] = report["integrity"] == "ok" and not mismatches
    return report


def _compare_portfolio(result: Any, rebuilt: dict[tuple[str, str], Position]) -> list[dict[str, Any]]:
    """The portfolio's rebuild against the store's ledger, field by field, per symbol."""
    out = []
    mine = {symbol: p for (_, symbol), p in rebuilt.items()}
    fields = ("qty", "cost", "realized_pnl", "fees", "funding", "fills")
    for symbol in sorted(set(mine) | set(result.positions)):
        theirs = result.positions.get(symbol)
        ours = mine.get(symbol, Position())
        a = tuple(getattr(theirs, f, 0) if theirs is not None else 0 for f in fields)
        b = tuple(getattr(ours, f) for f in fields)
        if a != b:
            out.append(
                {
                    "kind": "portfolio",
                    "symbol": symbol,
                    "portfolio": dict(zip(fields, a, strict=True)),
                    "ledger": dict(zip(fields, b, strict=True)),
                }
            )
    return out
