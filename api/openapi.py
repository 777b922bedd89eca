"""The OpenAPI 3.0 document served at `/openapi.json`, written out by hand so it is exact.

- Every endpoint lists its parameters with their bounds (the documented maximum page size comes from
  `Settings.max_page_size`), its 200 body, and the problem documents it may return (400/404/405/503).
- The test suite runs schemathesis against this document in-process: a response that does not match
  it, or any 5xx but a documented 503, fails the build. So the document is the contract, not a sketch.
"""

from __future__ import annotations

from typing import Any

from api.settings import Settings

MONEY = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{8}$", "description": "exact decimal, 8 places"}
DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "exact decimal"}
TIME = {"type": "string", "format": "date-time"}
INT = {"type": "integer"}
NUM = {"type": "number"}
STR = {"type": "string"}
BOOL = {"type": "boolean"}
ANY: dict[str, Any] = {}


def null(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required}


def arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


PROBLEM = obj(
    {
        "type": STR,
        "title": STR,
        "status": INT,
        "detail": STR,
        "instance": STR,
        "parameter": STR,
    },
    ["type", "title", "status", "detail"],
)

SIDE = {"type": "string", "enum": ["BUY", "SELL"]}
FILL = obj(
    {
        "fill_id": INT,
        "order_id": INT,
        "market": STR,
        "symbol": STR,
        "side": SIDE,
        "price": DECIMAL,
        "qty": DECIMAL,
        "notional": MONEY,
        "fee": MONEY,
        "fee_asset": STR,
        "fee_quote": MONEY,
        "liquidity": STR,
        "realized_pnl": MONEY,
        "position_after": DECIMAL,
        "time": TIME,
        "ts_ns": INT,
        "model": STR,
        "latency_us": NUM,
        "queue_ahead": DECIMAL,
        "decision_mid": NUM,
        "fill_mid": NUM,
        "slippage_bps": NUM,
    }
)
ORDER_STATUSES = ["Pending", "PartiallyFilled", "Filled", "Cancelled", "Rejected", "Denied"]
ORDER = obj(
    {
        "order_id": INT,
        "run_id": INT,
        "market": STR,
        "symbol": STR,
        "side": SIDE,
        "type": STR,
        "tif": STR,
        "qty": DECIMAL,
        "price": null(DECIMAL),
        "tag": STR,
        "status": {"type": "string", "enum": ORDER_STATUSES},
        "filled_qty": DECIMAL,
        "reason": null(STR),
        "created": TIME,
        "created_ns": INT,
        "updated": TIME,
        "updated_ns": INT,
        "transitions": INT,
        "stop_price": null(DECIMAL),
        "reduce_only": {"type": "boolean"},
        "oco": null(INT),
    }
)
ORDER_DETAIL = {
    "allOf": [
        ORDER,
        obj(
            {
                "history": arr(
                    obj(
                        {
                            "seq": INT,
                            "time": TIME,
                            "ts_ns": INT,
                            "status": STR,
                            "filled_qty": DECIMAL,
                            "reason": null(STR),
                            "run_id": INT,
                        }
                    )
                ),
                "fills": arr(FILL),
            }
        ),
    ]
}
SIGNAL = obj(
    {
        "signal_id": INT,
        "time": TIME,
        "ts_ns": INT,
        "market": STR,
        "symbol": STR,
        "model": STR,
        "value": NUM,
        "direction": {"type": "integer", "enum": [-1, 0, 1]},
        "confidence": NUM,
        "mid": null(NUM),
        "order_id": null(INT),
        "features": ANY,
    }
)
RISK = obj(
    {
        "decision_id": INT,
        "time": TIME,
        "ts_ns": INT,
        "market": STR,
        "symbol": STR,
        "verdict": {"type": "string", "enum": ["approved", "adjusted", "denied"]},
        "reason": STR,
        "order_id": null(INT),
        "side": null(SIDE),
        "qty_requested": null(DECIMAL),
        "qty_approved": null(DECIMAL),
        "price": null(DECIMAL),
        "detail": ANY,
    }
)
POSITION = obj(
    {
        "market": STR,
        "symbol": STR,
        "qty": DECIMAL,
        "side": {"type": "string", "enum": ["LONG", "SHORT", "FLAT"]},
        "cost": MONEY,
        "avg_price": null({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{8}$"}),
        "mark_price": null(DECIMAL),
        "mark_time": null(TIME),
        "market_value": null(MONEY),
        "unrealized_pnl": null(MONEY),
        "realized_pnl": MONEY,
        "fees": MONEY,
        "funding": MONEY,
        "fills": INT,
        "last_fill_id": INT,
        "updated": TIME,
    }
)


def page(item: dict[str, Any]) -> dict[str, Any]:
    return obj({"data": arr(item), "limit": INT, "next": null(STR), "next_url": null(STR)})


HEALTH = obj(
    {
        "status": {"type": "string", "enum": ["ok", "unhealthy"]},
        "reasons": arr(STR),
        "checked_at": TIME,
        "database": obj({"readable": BOOL}),
        "heartbeat_age_s": null(NUM),
        "heartbeat_max_age_s": NUM,
        "replication": obj({"mode": STR, "lag_s": null(NUM)}),
        "trading_state": null(STR),
        "state_reason": null(STR),
        "sync": null({}),
        "writer_lag_ms": null(INT),
        "run_id": null(INT),
    }
)
STATUS = obj(
    {
        "trading_state": null(STR),
        "state_reason": null(STR),
        "last_state_change": null(obj({"time": TIME, "state": STR, "reason": STR, "source": STR}, None)),
        "heartbeat": null(obj({"run_id": INT, "wall_time": TIME, "trading_state": STR, "sync": ANY})),
        "symbols": arr(
            obj(
                {
                    "market": STR,
                    "symbol": STR,
                    "sync": null(STR),
                    "bid": null(DECIMAL),
                    "ask": null(DECIMAL),
                    "mid": null(NUM),
                    "book_time": null(TIME),
                    "gaps": INT,
                    "resyncs": INT,
                    "reconnects": INT,
                    "fills": INT,
                    "orders": INT,
                }
            )
        ),
        "counters": obj({"gaps": INT, "resyncs": INT, "reconnects": INT}),
        "breakers": arr(
            obj({"breaker": STR, "tripped": BOOL, "reason": STR, "since": TIME, "updated": TIME})
        ),
        "run": null(obj({"run_id": INT, "mode": STR, "code_version": STR, "started": TIME})),
    }
)
STATUS["properties"]["last_state_change"]["required"] = ["time", "state", "reason", "source"]
PNL = obj(
    {
        "as_of": null(TIME),
        "as_of_ns": null(INT),
        "realized_pnl": MONEY,
        "fees": MONEY,
        "net_realized_pnl": MONEY,
        "fills": INT,
        "volume": MONEY,
        "unrealized_pnl_at_book": MONEY,
        "exposure_at_book": MONEY,
        "positions": arr(POSITION),
        "equity": null(MONEY),
        "cash": null(MONEY),
        "unrealized_pnl": null(MONEY),
        "exposure": null(MONEY),
        "peak": null(MONEY),
        "drawdown": null(MONEY),
        "drawdown_pct": null(NUM),
        "max_drawdown": null(MONEY),
        "max_drawdown_pct": null(NUM),
        "start_equity": null(MONEY),
        "total_return_pct": null(NUM),
    }
)
EQUITY = obj(
    {
        "from": TIME,
        "to": TIME,
        "resolution_s": {"type": "integer", "enum": [1, 60, 3600]},
        "step_s": INT,
        "count": INT,
        "data": arr(
            obj(
                {
                    "t": TIME,
                    "t_s": INT,
                    "open": MONEY,
                    "high": MONEY,
                    "low": MONEY,
                    "close": MONEY,
                    "peak": MONEY,
                    "drawdown": MONEY,
                    "max_drawdown": MONEY,
                    "samples": INT,
                }
            )
        ),
    }
)
STATS = obj(
    {
        "from": null(TIME),
        "to": null(TIME),
        "hours": INT,
        "start_equity": null(MONEY),
        "end_equity": null(MONEY),
        "pnl": null(MONEY),
        "return_pct": null(NUM),
        "volatility_annualized": null(NUM),
        "sharpe": null(NUM),
        "sortino": null(NUM),
        "max_drawdown": null(MONEY),
        "max_drawdown_pct": null(NUM),
        "fills": INT,
        "maker_ratio": null(NUM),
        "orders": INT,
        "orders_denied": INT,
        "wins": INT,
        "losses": INT,
        "win_rate": null(NUM),
        "profit_factor": null(NUM),
        "gross_profit": MONEY,
        "gross_loss": MONEY,
        "realized_pnl": MONEY,
        "fees": MONEY,
        "volume": MONEY,
        "turnover": null(NUM),
        "mean_slippage_bps": null(NUM),
        "markouts": arr(obj({"horizon_ms": INT, "n": INT, "mean_bps": null(NUM)})),
    }
)
WINDOW = obj(
    {
        "start": TIME,
        "end": TIME,
        "start_ns": INT,
        "end_ns": INT,
        "holy_days": arr(STR),
        "dates": arr(STR),
        "havdalah_fallback": BOOL,
    }
)
CALENDAR = obj(
    {
        "now": TIME,
        "paused_now": BOOL,
        "current": null(WINDOW),
        "next_change": TIME,
        "windows": arr(WINDOW),
        "location": obj({"latitude": NUM, "longitude": NUM, "tz": STR}),
        "candle_minutes": INT,
        "havdalah": STR,
    }
)


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query") -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


TIME_PARAM = {"type": "string", "maxLength": 64}
P_SYMBOL = _param("symbol", {"type": "string", "pattern": "^[A-Za-z0-9]{2,20}$"}, "instrument, e.g. BTCUSDT")
P_MARKET = _param("market", {"type": "string", "enum": ["spot", "usdm"]}, "spot or usdm")
P_FROM = _param("from", TIME_PARAM, "inclusive start: RFC 3339 time or Unix seconds")
P_TO = _param("to", TIME_PARAM, "inclusive end: RFC 3339 time or Unix seconds; not before `from`")
P_CURSOR = _param("cursor", {"type": "string", "maxLength": 400}, "the `next` token of the previous page")


def _responses(ok: dict[str, Any], *codes: int, media: str = "application/json") -> dict[str, Any]:
    problem = {"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    out: dict[str, Any] = {"200": {"description": "OK", "content": {media: {"schema": ok}}}}
    for code, text in (
        (400, "invalid parameter (the body names it)"),
        (404, "no such resource"),
        (405, "method not allowed: the API is read-only"),
        (503, "database unreadable or query time limit exceeded"),
    ):
        if code in codes or code in (400, 405, 503):
            out[str(code)] = {"description": text, **problem}
    return out


def _get(summary: str, ok: dict[str, Any], params: list[dict[str, Any]], *codes: int, **kw: Any) -> dict:
    return {"get": {"summary": summary, "parameters": params, "responses": _responses(ok, *codes, **kw)}}


def openapi_document(settings: Settings) -> dict[str, Any]:
    limit = _param(
        "limit",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": settings.max_page_size,
            "default": settings.default_page_size,
        },
        f"page size, at most {settings.max_page_size}",
    )
    lst = [P_SYMBOL, P_MARKET, P_FROM, P_TO, limit, P_CURSOR]
    status_list = {"type": "string", "maxLength": 200}
    health_responses = _responses(HEALTH)
    health_responses["503"] = {
        "description": "database unreadable or heartbeat stale (the body says why)",
        "content": {
            "application/json": {"schema": HEALTH},
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}},
        },
    }
    health = {
        "get": {
            "summary": "Liveness of the worker as seen through the database",
            "parameters": [],
            "responses": health_responses,
        }
    }
    live_schema = obj({"status": {"type": "string", "enum": ["ok", "unhealthy"]}, "reasons": arr(STR)})
    live_responses = _responses(live_schema)
    live_responses["503"] = {
        "description": "database unreadable",
        "content": {"application/json": {"schema": live_schema}},
    }
    live = {
        "get": {
            "summary": "The API's own liveness: the database is readable (the worker may be down)",
            "parameters": [],
            "responses": live_responses,
        }
    }
    v1 = "/api/v1"
    paths: dict[str, Any] = {
        "/health": health,
        "/livez": live,
        f"{v1}/health": health,
        f"{v1}/status": _get("Trading state, symbols, sync, last prices, counters", STATUS, []),
        f"{v1}/positions": _get(
            "Open positions marked at the latest mid",
            obj({"data": arr(POSITION), "unrealized_pnl": MONEY, "exposure": MONEY}),
            [],
        ),
        f"{v1}/orders": _get(
            "Orders, newest first (keyset pages)",
            page(ORDER),
            [
                *lst,
                _param("status", status_list, "comma-separated: " + ", ".join(ORDER_STATUSES)),
                _param("side", {"type": "string", "enum": ["BUY", "SELL"]}, "order side"),
            ],
        ),
        f"{v1}/orders/{{id}}": _get(
            "One order with its state transitions and fills",
            ORDER_DETAIL,
            [_param("id", {"type": "string", "maxLength": 40}, "order_id", "path")],
            404,
        ),
        f"{v1}/fills": _get(
            "Fills, newest first (keyset pages)",
            page(FILL),
            [
                *lst,
                _param("side", {"type": "string", "enum": ["BUY", "SELL"]}, "fill side"),
                _param("order_id", {"type": "integer", "minimum": 0}, "fills of one order"),
            ],
        ),
        f"{v1}/pnl": _get("Realized, unrealized, fees, equity and drawdown now", PNL, []),
        f"{v1}/equity": _get(
            "Equity and drawdown series from the rollups",
            EQUITY,
            [
                P_FROM,
                P_TO,
                _param(
                    "window", {"type": "string", "pattern": "^[0-9]{1,4}[smhd]$"}, "e.g. 1h, 24h, 7d, 30d"
                ),
                _param(
                    "points", {"type": "integer", "minimum": 2, "maximum": 2000, "default": 120}, "points"
                ),
                _param(
                    "resolution", {"type": "string", "enum": ["auto", "1", "60", "3600"]}, "source rollup"
                ),
            ],
        ),
        f"{v1}/signals": _get(
            "Strategy signals, newest first (keyset pages)",
            page(SIGNAL),
            lst,
        ),
        f"{v1}/risk-events": _get(
            "Risk decisions, newest first (keyset pages)",
            page(RISK),
            [
                *lst,
                _param("status", status_list, "verdicts, comma-separated (default: adjusted,denied)"),
            ],
        ),
        f"{v1}/stats": _get(
            "Return, Sharpe, Sortino, drawdown, win rate, profit factor, turnover, fees, slippage, markouts",
            STATS,
            [P_FROM, P_TO],
        ),
        f"{v1}/calendar": _get(
            "The next Shabbat / Yom Tov pause windows",
            CALENDAR,
            [_param("count", {"type": "integer", "minimum": 1, "maximum": 20, "default": 4}, "windows")],
        ),
        "/metrics": _get("Prometheus metrics", {"type": "string"}, [], media="text/plain"),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "QuantumFlow read-only API",
            "version": "1.0.0",
            "description": (
                "Read-only view of the QuantumFlow paper-trading worker's database. Prices, quantities and "
                "money are exact decimal strings. Lists are newest first with opaque keyset cursors; "
                f"page size at most {settings.max_page_size}. Errors are RFC 9457 problem documents."
            ),
        },
        "paths": paths,
        "components": {"schemas": {"Problem": PROBLEM}},
    }
