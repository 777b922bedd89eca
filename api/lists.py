"""List endpoints (fills, orders, signals, risk events) and one order with its history.

Design and invariants:
- Newest first, keyset-paged on `(time, id) < (last time, last id)` over the store's indexes
  (`fills_ts`, `fills_symbol_ts`, `orders_created`, ...). Page N costs what page 1 costs; rows inserted
  while a client pages have newer keys, so they never shift, repeat or hide the rows of later pages.
- `limit` defaults to 50 and is at most `Settings.max_page_size` (500): documented in the OpenAPI.
- Filters: `symbol`, `market` (answered through its symbols' index), `from`/`to` (inclusive, on the
  row's own time), `status` (orders: order status, the index chosen from the running totals;
  risk-events: verdict, default adjusted+denied over the store's partial index), `side`, and a fill's
  `order_id`. A filter no index serves, that could match almost nothing, is not offered: it would walk a
  whole table to fill one page. An unknown symbol answers an empty page at once.
- Every value is bound as a parameter; SQL text is only ever built from constants.
- Prices, quantities and money are exact decimal strings (see `api.render`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from api import render, sqljson
from api.context import JSON, ctx, query
from api.db import Reader
from api.params import Query, bad_param
from api.problems import Problem

SIDES = {1: "BUY", -1: "SELL"}
ORDER_STATUSES = ("Pending", "PartiallyFilled", "Filled", "Cancelled", "Rejected", "Denied")
VERDICTS = ("approved", "adjusted", "denied")
LIST_PARAMS = ("symbol", "market", "from", "to", "limit", "cursor")


@dataclass(frozen=True, slots=True)
class ListSpec:
    name: str
    table: str
    time_col: str
    id_col: str
    columns: str
    render: Callable[[tuple, dict[tuple[str, str], render.InstrumentView]], dict[str, Any]]
    json_expr: str = ""  # when set: SQLite renders each row (alias f, instrument grid g); see api.sqljson


def _json_field(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _inst(instruments: dict, market: str, symbol: str) -> render.InstrumentView:
    return instruments.get((market, symbol)) or render.FALLBACK


FILL_COLUMNS = (
    "fill_id, order_id, market, symbol, side, price, qty, notional, fee, fee_asset, fee_quote, "
    "liquidity, realized_pnl, position_after, ts_ns, model, latency_ns, queue_ahead, decision_mid, "
    "fill_mid, slippage_bps"
)


def fill_json(r: tuple, instruments: dict) -> dict[str, Any]:
    inst = _inst(instruments, r[2], r[3])
    return {
        "fill_id": r[0],
        "order_id": r[1],
        "market": r[2],
        "symbol": r[3],
        "side": SIDES.get(r[4], str(r[4])),
        "price": inst.price(r[5]),
        "qty": inst.qty(r[6]),
        "notional": render.money(r[7]),
        "fee": render.money(r[8]),
        "fee_asset": r[9],
        "fee_quote": render.money(r[10]),
        "liquidity": r[11],
        "realized_pnl": render.money(r[12]),
        "position_after": inst.qty(r[13]),
        "time": render.iso(r[14]),
        "ts_ns": r[14],
        "model": r[15],
        "latency_us": r[16] / 1000,
        "queue_ahead": inst.qty(r[17]),
        "decision_mid": inst.price_float(r[18]),
        "fill_mid": inst.price_float(r[19]),
        "slippage_bps": r[20],
    }


ORDER_COLUMNS = (
    "order_id, run_id, market, symbol, side, type, tif, qty, price, tag, status, filled_qty, reason, "
    "created_ns, updated_ns, transitions, stop_price, reduce_only, oco"
)


def order_json(r: tuple, instruments: dict) -> dict[str, Any]:
    inst = _inst(instruments, r[2], r[3])
    return {
        "order_id": r[0],
        "run_id": r[1],
        "market": r[2],
        "symbol": r[3],
        "side": SIDES.get(r[4], str(r[4])),
        "type": r[5],
        "tif": r[6],
        "qty": inst.qty(r[7]),
        "price": inst.price(r[8]),
        "tag": r[9],
        "status": r[10],
        "filled_qty": inst.qty(r[11]),
        "reason": r[12],
        "created": render.iso(r[13]),
        "created_ns": r[13],
        "updated": render.iso(r[14]),
        "updated_ns": r[14],
        "transitions": r[15],
        "stop_price": inst.price(r[16]),
        "reduce_only": bool(r[17]),
        "oco": r[18] or None,
    }


SIGNAL_COLUMNS = (
    "signal_id, ts_ns, market, symbol, model, value, direction, confidence, mid, order_id, features_json"
)


def signal_json(r: tuple, instruments: dict) -> dict[str, Any]:
    inst = _inst(instruments, r[2], r[3])
    return {
        "signal_id": r[0],
        "time": render.iso(r[1]),
        "ts_ns": r[1],
        "market": r[2],
        "symbol": r[3],
        "model": r[4],
        "value": r[5],
        "direction": r[6],
        "confidence": r[7],
        "mid": inst.price_float(r[8]),
        "order_id": r[9],
        "features": _json_field(r[10]),
    }


RISK_COLUMNS = (
    "decision_id, ts_ns, market, symbol, verdict, reason, order_id, side, qty_requested, qty_approved, "
    "price, detail_json"
)


def risk_json(r: tuple, instruments: dict) -> dict[str, Any]:
    inst = _inst(instruments, r[2], r[3])
    return {
        "decision_id": r[0],
        "time": render.iso(r[1]),
        "ts_ns": r[1],
        "market": r[2],
        "symbol": r[3],
        "verdict": r[4],
        "reason": r[5],
        "order_id": r[6],
        "side": None if r[7] is None else SIDES.get(r[7], str(r[7])),
        "qty_requested": inst.qty(r[8]),
        "qty_approved": inst.qty(r[9]),
        "price": inst.price(r[10]),
        "detail": _json_field(r[11]),
    }


FILLS = ListSpec("fills", "fills", "ts_ns", "fill_id", FILL_COLUMNS, fill_json, sqljson.FILL_JSON)
ORDERS = ListSpec("orders", "orders", "created_ns", "order_id", ORDER_COLUMNS, order_json)
SIGNALS = ListSpec("signals", "signals", "ts_ns", "signal_id", SIGNAL_COLUMNS, signal_json)
RISK = ListSpec("risk-events", "risk_decisions", "ts_ns", "decision_id", RISK_COLUMNS, risk_json)


IndexChoice = Callable[[Reader], str]


def _page(
    request: Request,
    spec: ListSpec,
    q: Query,
    where: list[str],
    params: list[Any],
    filters: dict[str, Any],
    index: str | IndexChoice = "",
):
    """Shared keyset paging: parse limit/cursor, build the bounded query, make the reader function.

    `where` holds conditions on unqualified column names; with a JSON-rendering spec the table is
    aliased `f` and joined to the instrument grid `g`, so every column is qualified there. Decisions
    that need the database (which symbols a market has, which index suits a status) are made inside
    the reader function, in the request's own read transaction.
    """
    c = ctx(request)
    settings = c.settings
    limit = q.integer("limit", settings.default_page_size, 1, settings.max_page_size)
    assert limit is not None
    start, end = q.time_range()
    symbol, market = q.symbol(), q.market()
    filters.update({"symbol": symbol, "market": market, "from": start, "to": end})
    if symbol is not None:
        where.append("symbol = ?")
        params.append(symbol)
    if market is not None:
        where.append("market = ?")
        params.append(market)
    if start is not None:
        where.append(f"{spec.time_col} >= ?")
        params.append(start)
    if end is not None:
        where.append(f"{spec.time_col} <= ?")
        params.append(end)
    token = q.text("cursor")
    if token is not None:
        after = c.cursors.decode(token, spec.name, filters, 2)
        where.append(f"({spec.time_col}, {spec.id_col}) < (?, ?)")
        params.extend(after)

    def finish(reader: Reader) -> tuple[list[str], list[Any], str] | None:
        """Where/params/index completed with what only the database knows; None: nothing can match."""
        w, p = list(where), list(params)
        known = reader.instruments()
        if symbol is not None and not any(s == symbol for (_, s) in known):
            return None  # an unknown symbol has no rows: answer without walking an index
        if market is not None and symbol is None:
            # `market` is not indexed; its symbols are (every list has a (symbol, time, id) index).
            symbols = sorted(s for (m, s) in known if m == market)
            if not symbols:
                return None
            w.append(f"symbol IN ({','.join('?' * len(symbols))})")
            p.extend(symbols)
        return w, p, index(reader) if callable(index) else index

    if spec.json_expr:

        def run_json(reader: Reader) -> tuple[list[tuple], dict]:
            instruments = reader.instruments()
            finished = finish(reader)
            if finished is None:
                return [("", 0, None, None)], instruments
            w, p, idx = finished
            qualified = [_qualify(x) for x in w]
            # One result row for the whole page (one GIL hand-off instead of one per row): the page's
            # JSON objects concatenated in order, the row count, and the key of the page's last row.
            body = (
                f"page AS (SELECT f.{spec.time_col} AS t, f.{spec.id_col} AS id, {spec.json_expr} AS j "
                f"FROM {spec.table} f {idx} LEFT JOIN g ON g.market = f.market AND g.symbol = f.symbol "
                f"WHERE {' AND '.join(qualified) or '1'} "
                f"ORDER BY f.{spec.time_col} DESC, f.{spec.id_col} DESC LIMIT ?), "
                "numbered AS (SELECT t, id, j, row_number() OVER (ORDER BY t DESC, id DESC) AS rn FROM page) "
                "SELECT coalesce(group_concat(j, ',') FILTER (WHERE rn <= ?), ''), count(*), "
                "max(CASE WHEN rn = ? THEN t END), max(CASE WHEN rn = ? THEN id END) FROM numbered"
            )
            cte, cte_params = sqljson.instrument_cte(instruments)
            rows = reader.rows(f"WITH {cte}, {body}", [*cte_params, *p, limit + 1, limit, limit, limit])
            return rows, instruments

        return limit, filters, run_json

    def run(reader: Reader) -> tuple[list[tuple], dict]:
        instruments = reader.instruments()
        finished = finish(reader)
        if finished is None:
            return [], instruments
        w, p, idx = finished
        sql = (
            f"SELECT {spec.columns} FROM {spec.table} {idx} WHERE {' AND '.join(w) or '1'} "
            f"ORDER BY {spec.time_col} DESC, {spec.id_col} DESC LIMIT ?"
        )
        return reader.rows(sql, [*p, limit + 1]), instruments

    return limit, filters, run


_COLUMN = re.compile(r"\b(symbol|market|side|liquidity|order_id|ts_ns|fill_id|created_ns|status|reason)\b")


def _qualify(condition: str) -> str:
    """Prefix the fills columns a filter names with the alias `f` (the grid `g` has market/symbol too)."""
    return _COLUMN.sub(lambda m: "f." + m.group(1), condition)


async def _serve_list(
    request: Request,
    spec: ListSpec,
    q: Query,
    where: list[str],
    params: list[Any],
    filters: dict[str, Any],
    index: str | IndexChoice = "",
) -> JSON:
    limit, filters, run = _page(request, spec, q, where, params, filters, index)
    c = ctx(request)
    rows, instruments = await c.db.run(run)
    if spec.json_expr:
        joined, count, last_time, last_id = rows[0]
        data: Any = orjson.Fragment(f"[{joined}]")
        more = count > limit
        last_key = (last_time, last_id) if more else None
    else:
        more = len(rows) > limit
        rows = rows[:limit]
        data = [spec.render(r, instruments) for r in rows]
        time_index = spec.columns.split(", ").index(spec.time_col)
        last_key = (rows[-1][time_index], rows[-1][0]) if rows else None
    token = None
    next_url = None
    if more and last_key is not None:
        token = c.cursors.encode(spec.name, filters, last_key)
        url = request.url.include_query_params(cursor=token)
        next_url = f"{url.path}?{url.query}"  # relative: the same bytes whatever Host the client used
    return JSON({"data": data, "limit": limit, "next": token, "next_url": next_url})


async def fills(request: Request) -> JSON:
    # Only filters an index serves (or that split the rows about evenly, like side): a sparse residual
    # filter would walk the whole time index to fill a page.
    q = query(request, (*LIST_PARAMS, "side", "order_id"))
    where: list[str] = []
    params: list[Any] = []
    side = q.choice("side", ("BUY", "SELL"), fold=True)
    order_id = q.integer("order_id", None, 0, 2**63 - 1)
    if side is not None:
        where.append("side = ?")
        params.append(1 if side == "BUY" else -1)
    if order_id is not None:
        where.append("order_id = ?")
        params.append(order_id)
    filters = {"side": side, "order_id": order_id}
    # One order's fills are a handful: its own index, then a small sort, never a walk of the time index.
    index = "INDEXED BY fills_order" if order_id is not None else ""
    return await _serve_list(request, FILLS, q, where, params, filters, index)


async def orders(request: Request) -> JSON:
    q = query(request, (*LIST_PARAMS, "status", "side"))
    statuses = q.choices("status", ORDER_STATUSES)
    side = q.choice("side", ("BUY", "SELL"), fold=True)
    where: list[str] = []
    params: list[Any] = []
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        params.extend(statuses)
    if side is not None:
        where.append("side = ?")
        params.append(1 if side == "BUY" else -1)
    filters = {"status": list(statuses), "side": side}
    return await _serve_list(request, ORDERS, q, where, params, filters, _order_index(statuses))


RARE_STATUS_ROWS = 5000


def _order_index(statuses: tuple[str, ...]) -> IndexChoice:
    """Which index pages orders of these statuses cheaply, judged from the running totals.

    A rare status (open orders, rejections, ...: at most RARE_STATUS_ROWS rows) is read from
    `orders_status` and sorted (bounded by its count); a common one walks `orders_created` in page
    order, where a page fills after ~limit / share rows. Either way no page reads the whole table.
    """

    def choose(reader: Reader) -> str:
        if not statuses:
            return ""
        row = reader.one(
            "SELECT coalesce(sum(orders), 0), coalesce(sum(orders_filled), 0), "
            "coalesce(sum(orders_cancelled), 0), coalesce(sum(orders_rejected), 0), "
            "coalesce(sum(orders_denied), 0) FROM totals_symbol"
        )
        total, filled, cancelled, rejected, denied = row or (0, 0, 0, 0, 0)
        open_ = max(0, total - filled - cancelled - rejected - denied)
        counts = {
            "Filled": filled,
            "Cancelled": cancelled,
            "Rejected": rejected,
            "Denied": denied,
            "Pending": open_,
            "PartiallyFilled": open_,
        }
        wanted = sum(counts[s] for s in statuses)
        return "INDEXED BY orders_status" if wanted <= RARE_STATUS_ROWS else "INDEXED BY orders_created"

    return choose


async def signals(request: Request) -> JSON:
    q = query(request, LIST_PARAMS)
    return await _serve_list(request, SIGNALS, q, [], [], {})


async def risk_events(request: Request) -> JSON:
    q = query(request, (*LIST_PARAMS, "status"))
    verdicts = q.choices("status", VERDICTS)
    where: list[str] = []
    params: list[Any] = []
    if verdicts:
        where.append(f"verdict IN ({','.join('?' * len(verdicts))})")
        params.extend(verdicts)
    else:
        # Default: the interventions (adjusted and denied), over the store's partial index on them;
        # approved decisions are the bulk of the table and the store may expire them.
        where.append("verdict != 'approved'")
    filters = {"status": list(verdicts)}
    return await _serve_list(request, RISK, q, where, params, filters)


MAX_ORDER_FILLS = 1000


def parse_id(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > 2**63 - 1:
        raise bad_param("id", "must be a whole number (an order_id)")
    return int(text)


async def order_detail(request: Request) -> JSON:
    query(request, ())
    order_id = parse_id(request.path_params["id"])

    def run(reader: Reader):
        row = reader.one(f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ?", (order_id,))
        if row is None:
            return None
        events = reader.rows(
            "SELECT seq, ts_ns, status, filled_qty, reason, run_id FROM order_events WHERE order_id = ? "
            "ORDER BY seq LIMIT 1000",
            (order_id,),
        )
        order_fills = reader.rows(
            f"SELECT {FILL_COLUMNS} FROM fills WHERE order_id = ? ORDER BY ts_ns, fill_id LIMIT ?",
            (order_id, MAX_ORDER_FILLS),
        )
        return row, events, order_fills, reader.instruments()

    found = await ctx(request).db.run(run)
    if found is None:
        raise Problem(404, f"no order with id {order_id}")
    row, events, order_fills, instruments = found
    body = order_json(row, instruments)
    inst = _inst(instruments, row[2], row[3])
    body["history"] = [
        {
            "seq": e[0],
            "time": render.iso(e[1]),
            "ts_ns": e[1],
            "status": e[2],
            "filled_qty": inst.qty(e[3]),
            "reason": e[4],
            "run_id": e[5],
        }
        for e in events
    ]
    body["fills"] = [fill_json(f, instruments) for f in order_fills]
    return JSON(body)
