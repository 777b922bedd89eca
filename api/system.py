"""Health, status and the trading calendar: how an operator (and Fly's check) sees the worker.

Design and invariants:
- `/health` is 200 only when the database is readable AND the worker's heartbeat (wall clock, written
  at least once a second) is younger than `heartbeat_max_age_s`; otherwise 503. Either way the body
  says why: heartbeat age, replication lag where known, per-symbol sync state, trading state.
- `/livez` is the API's own liveness: 200 while the database is readable, whatever the worker does.
  fly.toml checks `/health` (as issue 10 asks), so Fly's proxy stops routing to the API while the worker
  is down; point the check at `/livez` to keep the dashboard reachable then.
- Over a litestream follow copy the heartbeat age includes the replication lag, so it is the honest
  upper bound of how stale the API's data is; the copy's own modification age is reported beside it.
- `calendar` reads `worker.calendar.CalendarClock` (pure, precomputed windows) with the wall clock:
  the API is the imperative shell, so it may read the time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
from starlette.requests import Request

from api import render
from api.context import JSON, ctx, query
from api.db import Reader, Unavailable
from worker.calendar import CalendarClock, PauseWindow

_HEARTBEAT = (
    "SELECT run_id, wall_ns, ts_ns, trading_state, state_reason, sync_json, writer_lag_ms, queue_depth, "
    "rows_written, samples_dropped, detail_json FROM heartbeat WHERE id = 1"
)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _heartbeat(reader: Reader) -> dict[str, Any] | None:
    row = reader.one(_HEARTBEAT)
    if row is None:
        return None
    return {
        "run_id": row[0],
        "wall_ns": row[1],
        "engine_time": render.iso(row[2]),
        "engine_ts_ns": row[2],
        "trading_state": row[3],
        "state_reason": row[4],
        "sync": _loads(row[5]),
        "writer_lag_ms": row[6],
        "queue_depth": row[7],
        "rows_written": row[8],
        "samples_dropped": row[9],
        "detail": _loads(row[10]),
    }


def _replication(request: Request, heartbeat_age: float | None) -> dict[str, Any]:
    settings = ctx(request).settings
    if not settings.replica_url:
        return {"mode": "local", "lag_s": None, "note": "reading the worker's file directly"}
    ages = []
    for suffix in ("", "-wal"):
        try:
            ages.append(time.time() - os.stat(settings.db_path + suffix).st_mtime)
        except OSError:
            continue
    return {
        "mode": "litestream-follow",
        "lag_s": None if heartbeat_age is None else round(heartbeat_age, 3),
        "lag_note": "upper bound: age of the newest heartbeat in the copy",
        "copy_updated_age_s": round(min(ages), 3) if ages else None,
    }


async def health(request: Request) -> JSON:
    query(request, ())
    settings = ctx(request).settings
    reasons: list[str] = []
    now_ns = time.time_ns()
    heartbeat = None
    try:
        heartbeat = await ctx(request).db.run(_heartbeat)
        readable = True
    except Unavailable as exc:
        readable = False
        reasons.append(f"database not readable: {exc.detail}")
    age = None
    if readable and heartbeat is None:
        reasons.append("no heartbeat written yet (has the worker started?)")
    if heartbeat is not None:
        age = (now_ns - heartbeat["wall_ns"]) / 1e9
        if age > settings.heartbeat_max_age_s:
            reasons.append(
                f"worker heartbeat is {age:.1f} s old (max {settings.heartbeat_max_age_s:g} s): "
                "worker down or replication stalled"
            )
    body = {
        "status": "ok" if not reasons else "unhealthy",
        "reasons": reasons,
        "checked_at": render.iso(now_ns),
        "database": {"readable": readable},
        "heartbeat_age_s": None if age is None else round(age, 3),
        "heartbeat_max_age_s": settings.heartbeat_max_age_s,
        "replication": _replication(request, age),
        "trading_state": heartbeat["trading_state"] if heartbeat else None,
        "state_reason": heartbeat["state_reason"] if heartbeat else None,
        "sync": heartbeat["sync"] if heartbeat else None,
        "writer_lag_ms": heartbeat["writer_lag_ms"] if heartbeat else None,
        "run_id": heartbeat["run_id"] if heartbeat else None,
    }
    return JSON(body, status_code=200 if not reasons else 503, headers={"Cache-Control": "no-store"})


def _readable(reader: Reader) -> bool:
    reader.one("SELECT 1 FROM meta LIMIT 1")
    return True


async def livez(request: Request) -> JSON:
    query(request, ())
    try:
        await ctx(request).db.run(_readable)
    except Unavailable as exc:
        body = {"status": "unhealthy", "reasons": [f"database not readable: {exc.detail}"]}
        return JSON(body, status_code=503, headers={"Cache-Control": "no-store"})
    return JSON({"status": "ok", "reasons": []}, headers={"Cache-Control": "no-store"})


def _status(reader: Reader) -> dict[str, Any]:
    heartbeat = _heartbeat(reader)
    instruments = reader.instruments()
    state = reader.one(
        "SELECT ts_ns, state, previous, reason, source, detail_json FROM trading_state_events "
        "ORDER BY ts_ns DESC, event_id DESC LIMIT 1"
    )
    books = {
        (r[0], r[1]): r
        for r in reader.rows(
            "SELECT market, symbol, ts_ns, bid_price, bid_qty, ask_price, ask_qty, microprice, imbalance "
            "FROM book_top_latest LIMIT 1000"
        )
    }
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for kind, market, symbol, count in reader.rows(
        "SELECT kind, market, symbol, count FROM event_counts ORDER BY kind LIMIT 2000"
    ):
        counts.setdefault((market, symbol), {})[kind] = count
    breakers = reader.rows(
        "SELECT breaker, tripped, reason, since_ns, updated_ns FROM breakers ORDER BY breaker LIMIT 100"
    )
    totals = {
        (r[0], r[1]): r
        for r in reader.rows(
            "SELECT market, symbol, fills, orders, orders_denied FROM totals_symbol LIMIT 1000"
        )
    }
    run = reader.one(
        "SELECT run_id, mode, code_version, started_wall_ns, ended_wall_ns, stop_reason, host "
        "FROM runs ORDER BY run_id DESC LIMIT 1"
    )
    sync = (heartbeat or {}).get("sync") or {}
    symbols = []
    for key in sorted(set(instruments) | set(books)):
        market, symbol = key
        inst = instruments.get(key) or render.FALLBACK
        book = books.get(key)
        c = counts.get(key, {})
        t = totals.get(key)
        symbols.append(
            {
                "market": market,
                "symbol": symbol,
                "sync": sync.get(f"{market}:{symbol}", sync.get(symbol)) if isinstance(sync, dict) else None,
                "bid": inst.price(book[3]) if book else None,
                "bid_qty": inst.qty(book[4]) if book else None,
                "ask": inst.price(book[5]) if book else None,
                "ask_qty": inst.qty(book[6]) if book else None,
                "mid": inst.price_float((book[3] + book[5]) / 2) if book else None,
                "microprice": inst.price_float(book[7]) if book else None,
                "imbalance": book[8] if book else None,
                "book_time": render.iso(book[2]) if book else None,
                "gaps": c.get("gap", 0),
                "resyncs": c.get("resync", 0),
                "reconnects": c.get("reconnect", 0),
                "events": c,
                "fills": t[2] if t else 0,
                "orders": t[3] if t else 0,
                "orders_denied": t[4] if t else 0,
            }
        )
    global_counts = counts.get(("", ""), {})
    return {
        "trading_state": heartbeat["trading_state"] if heartbeat else (state[1] if state else None),
        "state_reason": heartbeat["state_reason"] if heartbeat else (state[3] if state else None),
        "last_state_change": None
        if state is None
        else {
            "time": render.iso(state[0]),
            "ts_ns": state[0],
            "state": state[1],
            "previous": state[2],
            "reason": state[3],
            "source": state[4],
            "detail": _loads(state[5]),
        },
        "heartbeat": None
        if heartbeat is None
        else {**heartbeat, "wall_time": render.iso(heartbeat["wall_ns"])},
        "symbols": symbols,
        "counters": {
            "gaps": sum(c.get("gap", 0) for c in counts.values()),
            "resyncs": sum(c.get("resync", 0) for c in counts.values()),
            "reconnects": sum(c.get("reconnect", 0) for c in counts.values()),
            "events": global_counts,
        },
        "breakers": [
            {
                "breaker": b[0],
                "tripped": bool(b[1]),
                "reason": b[2],
                "since": render.iso(b[3]),
                "updated": render.iso(b[4]),
            }
            for b in breakers
        ],
        "run": None
        if run is None
        else {
            "run_id": run[0],
            "mode": run[1],
            "code_version": run[2],
            "started": render.iso(run[3]),
            "ended": render.iso(run[4]),
            "stop_reason": run[5],
            "host": run[6],
        },
    }


async def status(request: Request) -> JSON:
    query(request, ())
    return JSON(await ctx(request).db.run(_status))


def window_json(window: PauseWindow) -> dict[str, Any]:
    return {
        "start": render.iso(window.start_ns),
        "end": render.iso(window.end_ns),
        "start_ns": window.start_ns,
        "end_ns": window.end_ns,
        "holy_days": list(window.holy_days),
        "dates": [day.date.isoformat() for day in window.days],
        "havdalah_fallback": window.havdalah_fallback,
    }


async def calendar(request: Request) -> JSON:
    q = query(request, ("count",))
    count = q.integer("count", 4, 1, 20)
    assert count is not None
    clock: CalendarClock = request.app.state.calendar_clock
    config = ctx(request).settings.calendar
    now = time.time_ns()
    current = clock.window_at(now)
    windows = []
    ts = now
    for _ in range(count):
        window = clock.next_window(ts)
        windows.append(window_json(window))
        ts = window.end_ns
    return JSON(
        {
            "now": render.iso(now),
            "paused_now": current is not None,
            "current": None if current is None else window_json(current),
            "next_change": render.iso(clock.next_change(now)),
            "windows": windows,
            "location": {
                "latitude": config.location.latitude,
                "longitude": config.location.longitude,
                "tz": config.location.tz,
            },
            "candle_minutes": config.candle_minutes,
            "havdalah": config.havdalah_label,
        }
    )
