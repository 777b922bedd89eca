"""The read-only API on a database seeded through the store's own writer: values, errors, read-only-ness.

Every expected value is computed here from the database (or the seed) independently of the API code.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.db import Database, Unavailable
from api.settings import Settings
from loadtests.seed_api_db import seed

DAYS = 30


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api") / "trades.db"
    asyncio.run(seed(path, days=DAYS, equity_step_s=60, orders=1500, fills_target=2500))
    return path


@pytest.fixture(scope="module")
def client(seeded: Path) -> TestClient:
    with TestClient(create_app(Settings(str(seeded), heartbeat_max_age_s=600))) as c:
        yield c


def raw(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def money(units: int) -> str:
    return f"{Decimal(units).scaleb(-8):.8f}"


# ---- endpoints ------------------------------------------------------------------------------------------
def test_fills_page_matches_the_table_exactly(client: TestClient, seeded: Path) -> None:
    body = client.get("/api/v1/fills", params={"limit": 5, "symbol": "btcusdt"}).json()
    rows = raw(
        seeded,
        "SELECT fill_id, price, qty, notional, fee FROM fills WHERE symbol = 'BTCUSDT' "
        "ORDER BY ts_ns DESC, fill_id DESC LIMIT 5",
    )
    assert [f["fill_id"] for f in body["data"]] == [r[0] for r in rows]
    first = body["data"][0]
    assert first["price"] == f"{Decimal(rows[0][1]) * Decimal('0.01'):.2f}"
    assert first["qty"] == f"{Decimal(rows[0][2]) * Decimal('0.00001'):.5f}"
    assert first["notional"] == money(rows[0][3])
    assert first["fee"] == money(rows[0][4])
    assert all(f["symbol"] == "BTCUSDT" for f in body["data"])
    assert body["limit"] == 5 and body["next"]


def test_paging_walks_every_row_once(client: TestClient, seeded: Path) -> None:
    params = {"limit": 200, "side": "buy", "from": "2000-01-01T00:00:00Z"}
    seen: list[int] = []
    url, query = "/api/v1/fills", dict(params)
    while True:
        body = client.get(url, params=query).json()
        seen += [f["fill_id"] for f in body["data"]]
        if not body["next"]:
            break
        query = {**params, "cursor": body["next"]}
    expected = [
        r[0]
        for r in raw(seeded, "SELECT fill_id FROM fills WHERE side = 1 ORDER BY ts_ns DESC, fill_id DESC")
    ]
    assert seen == expected and len(expected) > 400


def test_orders_filter_by_status_and_detail_has_transitions(client: TestClient, seeded: Path) -> None:
    body = client.get("/api/v1/orders", params={"status": "Cancelled,Rejected", "limit": 50}).json()
    assert body["data"] and {o["status"] for o in body["data"]} <= {"Cancelled", "Rejected"}
    partial = raw(
        seeded,
        "SELECT order_id FROM orders WHERE status = 'Cancelled' AND filled_qty > 0 ORDER BY order_id LIMIT 1",
    )[0][0]
    detail = client.get(f"/api/v1/orders/{partial}").json()
    statuses = [h["status"] for h in detail["history"]]
    assert statuses[0] == "Pending" and statuses[-1] == "Cancelled" and "PartiallyFilled" in statuses
    assert [h["seq"] for h in detail["history"]] == list(range(1, len(statuses) + 1))
    fills = raw(seeded, "SELECT fill_id FROM fills WHERE order_id = ? ORDER BY ts_ns", (partial,))
    assert [f["fill_id"] for f in detail["fills"]] == [r[0] for r in fills]
    assert client.get("/api/v1/orders/99999999").status_code == 404
    assert detail["stop_price"] is None and detail["reduce_only"] is False and detail["oco"] is None


def test_a_stop_order_reads_back_with_its_trigger_and_oco_list(seeded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "stops.db"
    shutil.copy(seeded, copy)  # the module's database stays as seeded
    with sqlite3.connect(copy) as conn:
        (order_id,) = conn.execute("SELECT min(order_id) FROM orders").fetchone()
        conn.execute(
            "UPDATE orders SET type = 'STOP_MARKET', price = NULL, stop_price = 5940000, reduce_only = 1, "
            "oco = 77 WHERE order_id = ?",
            (order_id,),
        )
    with TestClient(create_app(Settings(str(copy)))) as client:
        stop = client.get(f"/api/v1/orders/{order_id}").json()
    assert (stop["type"], stop["price"], stop["stop_price"], stop["reduce_only"], stop["oco"]) == (
        "STOP_MARKET", None, "59400.00", True, 77
    )  # fmt: skip


def test_positions_and_pnl_come_from_running_totals(client: TestClient, seeded: Path) -> None:
    pos = {p["symbol"]: p for p in client.get("/api/v1/positions").json()["data"]}
    for symbol, qty, cost, fees in raw(seeded, "SELECT symbol, qty, cost, fees FROM positions"):
        step = Decimal("0.00001") if symbol == "BTCUSDT" else Decimal("0.0001")
        assert Decimal(pos[symbol]["qty"]) == qty * step
        assert pos[symbol]["cost"] == money(cost) and pos[symbol]["fees"] == money(fees)
        book = "SELECT bid_price, ask_price FROM book_top_latest WHERE symbol = ?"
        bid, ask = raw(seeded, book, (symbol,))[0]
        per_tick_lot = 10 if symbol == "BTCUSDT" else 100  # tick x step x 1e8 money units
        mark = bid if qty > 0 else ask  # a long closes at the bid, a short at the ask
        assert pos[symbol]["unrealized_pnl"] == money(qty * mark * per_tick_lot - cost)
        if qty:  # a decimal string like every price: cost / base quantity, to 1e-8
            average = (Decimal(cost) / 10**8 / (qty * step)).quantize(Decimal("1e-8"))
            assert pos[symbol]["avg_price"] == str(average)
    pnl = client.get("/api/v1/pnl").json()
    last = raw(
        seeded,
        "SELECT close, drawdown FROM equity_bars WHERE resolution_s = 1 ORDER BY bucket_s DESC LIMIT 1",
    )
    assert pnl["equity"] == money(last[0][0]) and pnl["drawdown"] == money(last[0][1])
    realized, fees, fills = raw(seeded, "SELECT sum(realized_pnl), sum(fee_quote), count(*) FROM fills")[0]
    assert pnl["realized_pnl"] == money(realized) and pnl["fees"] == money(fees) and pnl["fills"] == fills


@pytest.mark.parametrize(("window", "resolution"), [("30d", 3600), ("7d", 60), ("24h", 60), ("1h", 1)])
def test_equity_uses_the_coarsest_rollup_that_gives_the_points(
    client: TestClient, window: str, resolution: int
):
    body = client.get("/api/v1/equity", params={"window": window, "points": 200}).json()
    assert body["resolution_s"] == resolution
    assert 0 < body["count"] <= 201
    times = [b["t_s"] for b in body["data"]]
    assert times == sorted(times) and all(t % body["step_s"] == 0 for t in times)
    for bar in body["data"]:
        assert Decimal(bar["low"]) <= Decimal(bar["close"]) <= Decimal(bar["high"])
        assert Decimal(bar["max_drawdown"]) <= 0


def test_equity_buckets_agree_with_the_raw_samples(client: TestClient, seeded: Path) -> None:
    body = client.get("/api/v1/equity", params={"window": "7d", "points": 50}).json()
    bar = body["data"][len(body["data"]) // 2]
    step = body["step_s"]
    hi, lo, n = raw(
        seeded,
        "SELECT max(high), min(low), count(*) FROM equity_bars "
        "WHERE resolution_s = 1 AND bucket_s >= ? AND bucket_s < ?",
        (bar["t_s"], bar["t_s"] + step),
    )[0]
    assert bar["high"] == money(hi) and bar["low"] == money(lo) and bar["samples"] == n


def test_stats_status_signals_risk_calendar_metrics(client: TestClient, seeded: Path) -> None:
    stats = client.get("/api/v1/stats").json()
    wins, losses = raw(seeded, "SELECT sum(realized_pnl > 0), sum(realized_pnl < 0) FROM fills")[0]
    assert stats["wins"] == wins and stats["losses"] == losses
    assert stats["win_rate"] == pytest.approx(wins / (wins + losses))
    assert stats["sharpe"] is not None and stats["hours"] >= DAYS * 24
    mean_slip = raw(seeded, "SELECT avg(slippage_bps) FROM fills")[0][0]
    assert stats["mean_slippage_bps"] == pytest.approx(mean_slip)
    assert {m["horizon_ms"] for m in stats["markouts"]} == {1000, 10000}
    ranged = client.get("/api/v1/stats", params={"from": stats["to"], "to": stats["to"]}).json()
    assert ranged["fills"] <= stats["fills"]

    status = client.get("/api/v1/status").json()
    assert status["trading_state"] == "ACTIVE"
    btc = next(s for s in status["symbols"] if s["symbol"] == "BTCUSDT")
    assert btc["sync"] == "live" and btc["bid"] and btc["gaps"] == 1 and btc["reconnects"] >= 1

    signals = client.get("/api/v1/signals", params={"symbol": "ETHUSDT", "limit": 3}).json()["data"]
    assert len(signals) == 3 and all(s["symbol"] == "ETHUSDT" for s in signals)
    denied = client.get("/api/v1/risk-events", params={"status": "denied"}).json()["data"]
    assert denied and all(d["verdict"] == "denied" for d in denied)

    calendar = client.get("/api/v1/calendar", params={"count": 3}).json()
    assert len(calendar["windows"]) == 3 and calendar["location"]["tz"] == "America/Sao_Paulo"
    starts = [w["start_ns"] for w in calendar["windows"]]
    assert starts == sorted(starts) and all(w["end_ns"] > w["start_ns"] for w in calendar["windows"])

    text = client.get("/metrics").text
    assert 'qf_api_requests_total{method="GET",route="/api/v1/stats",status="200"}' in text
    assert "qf_worker_heartbeat_age_seconds" in text and "qf_api_db_up 1.0" in text


def test_health_says_why(seeded: Path, tmp_path: Path) -> None:
    with TestClient(create_app(Settings(str(seeded), heartbeat_max_age_s=600))) as ok:
        body = ok.get("/health").json()
        assert body["status"] == "ok" and body["sync"]["spot:BTCUSDT"] == "live"
        assert ok.get("/api/v1/health").status_code == 200
    with TestClient(create_app(Settings(str(seeded), heartbeat_max_age_s=0.001))) as stale:
        r = stale.get("/health")
        assert r.status_code == 503 and "heartbeat" in r.json()["reasons"][0]
        assert stale.get("/livez").status_code == 200, "the API lives on while the worker is down"
    with TestClient(create_app(Settings(str(tmp_path / "missing.db")))) as missing:
        r = missing.get("/health")
        assert r.status_code == 503 and "not readable" in r.json()["reasons"][0]
        r = missing.get("/livez")
        assert r.status_code == 503 and "not readable" in r.json()["reasons"][0]
        r = missing.get("/api/v1/fills")
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"


# ---- read-only ---------------------------------------------------------------------------------------
def test_the_apps_connection_cannot_write(seeded: Path) -> None:
    database = Database(str(seeded))
    conn = database.connect()
    try:
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only|query_only"):
            conn.execute("DELETE FROM fills")
    finally:
        conn.close()
    with pytest.raises(Unavailable):
        database.run_sync(lambda reader: reader.conn.execute("UPDATE heartbeat SET run_id = 0"))
    assert raw(seeded, "SELECT count(*) FROM heartbeat WHERE run_id = 0")[0][0] == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/api/v1/fills", "/api/v1/orders/1", "/", "/health", "/nowhere"])
def test_every_non_get_is_405(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.headers["content-type"] == "application/problem+json" and r.json()["status"] == 405


def test_head_and_dashboard(client: TestClient) -> None:
    assert client.head("/api/v1/pnl").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<svg" in page.text


# ---- bad input ------------------------------------------------------------------------------------------
BAD = [
    ("/api/v1/fills", {"limit": "0"}, "limit"),
    ("/api/v1/fills", {"limit": "501"}, "limit"),
    ("/api/v1/fills", {"limit": "99999999999999999999999999"}, "limit"),
    ("/api/v1/fills", {"limit": "ten"}, "limit"),
    ("/api/v1/fills", {"from": "2024-02-01", "to": "2024-01-01"}, "from"),
    ("/api/v1/fills", {"from": "yesterday"}, "from"),
    ("/api/v1/fills", {"to": "99999999999999"}, "to"),
    ("/api/v1/fills", {"cursor": "!!!not-base64!!!"}, "cursor"),
    ("/api/v1/fills", {"cursor": "WzEsImZpbGxzIl0"}, "cursor"),
    ("/api/v1/fills", {"symbol": "BTC'; DROP TABLE fills;--"}, "symbol"),
    ("/api/v1/fills", {"symbl": "BTCUSDT"}, "symbl"),
    ("/api/v1/fills", {"side": "long"}, "side"),
    ("/api/v1/fills", {"market": "futures"}, "market"),
    ("/api/v1/orders", {"status": "Filled,Open"}, "status"),
    ("/api/v1/orders/1 OR 1=1", {}, "id"),
    ("/api/v1/orders/-1", {}, "id"),
    ("/api/v1/orders/99999999999999999999", {}, "id"),
    ("/api/v1/equity", {"window": "7y"}, "window"),
    ("/api/v1/equity", {"points": "1"}, "points"),
    ("/api/v1/equity", {"resolution": "5"}, "resolution"),
    ("/api/v1/equity", {"from": "2024-01-01", "to": "2025-06-01"}, "from"),
    ("/api/v1/calendar", {"count": "1000"}, "count"),
    ("/api/v1/pnl", {"x": "1"}, "x"),
    ("/api/v1/fills", {"q": "x" * 5000}, "query"),
]


@pytest.mark.parametrize(("path", "params", "parameter"), BAD)
def test_bad_parameters_are_400_naming_the_parameter(client: TestClient, path, params, parameter) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["parameter"] == parameter and body["status"] == 400 and body["detail"]


def test_repeated_parameter_and_foreign_cursors_are_refused(client: TestClient) -> None:
    assert client.get("/api/v1/fills?limit=1&limit=2").json()["parameter"] == "limit"
    token = client.get("/api/v1/fills", params={"limit": 1}).json()["next"]
    other_endpoint = client.get("/api/v1/orders", params={"cursor": token})
    other_filters = client.get("/api/v1/fills", params={"cursor": token, "symbol": "ETHUSDT"})
    tampered = client.get(
        "/api/v1/fills", params={"cursor": token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")}
    )
    for r in (other_endpoint, other_filters, tampered):
        assert r.status_code == 400 and r.json()["parameter"] == "cursor"
    assert client.get("/api/v1/fills", params={"cursor": token, "limit": 3}).status_code == 200


def test_query_time_limit_turns_a_runaway_query_into_503(seeded: Path) -> None:
    database = Database(str(seeded), time_limit_ms=20)

    def runaway(reader):
        return reader.one(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
        )

    with pytest.raises(Unavailable, match="time limit"):
        database.run_sync(runaway)
    assert database.timeouts == 1


def test_row_cap_refuses_oversized_reads(seeded: Path) -> None:
    database = Database(str(seeded), max_rows=10)
    with pytest.raises(Exception, match="more than 10 rows"):
        database.run_sync(lambda reader: reader.rows("SELECT fill_id FROM fills"))


def test_sql_rendered_fills_equal_the_python_rendering(client: TestClient, seeded: Path) -> None:
    """The fills list is rendered by SQLite (api.sqljson), an order's fills by Python (api.render)."""
    order_id = raw(seeded, "SELECT order_id FROM fills GROUP BY order_id HAVING count(*) > 1 LIMIT 1")[0][0]
    listed = client.get("/api/v1/fills", params={"order_id": order_id}).json()["data"]
    detailed = client.get(f"/api/v1/orders/{order_id}").json()["fills"]
    assert len(listed) >= 2 and len(listed) == len(detailed)
    by_id = sorted(listed, key=lambda f: f["fill_id"]), sorted(detailed, key=lambda f: f["fill_id"])
    for a, b in zip(*by_id, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert value == pytest.approx(b[key]), key
            else:
                assert value == b[key] and type(value) is type(b[key]), key


def test_market_and_unknown_symbol_filters(client: TestClient, seeded: Path) -> None:
    spot = client.get("/api/v1/fills", params={"market": "spot", "limit": 100}).json()["data"]
    assert {f["symbol"] for f in spot} == {"BTCUSDT", "ETHUSDT"} and len(spot) == 100
    assert client.get("/api/v1/fills", params={"market": "usdm"}).json() == {
        "data": [],
        "limit": 50,
        "next": None,
        "next_url": None,
    }
    assert client.get("/api/v1/risk-events", params={"symbol": "XRPUSDT"}).json()["data"] == []
    rejected = client.get("/api/v1/orders", params={"status": "Rejected", "symbol": "ETHUSDT", "limit": 500})
    expected = raw(
        seeded,
        "SELECT order_id FROM orders WHERE status = 'Rejected' AND symbol = 'ETHUSDT' "
        "ORDER BY created_ns DESC, order_id DESC",
    )
    assert [o["order_id"] for o in rejected.json()["data"]] == [r[0] for r in expected] and expected


def test_avg_price_is_plain_decimal_text_even_for_tiny_prices() -> None:
    from api.portfolio import _avg_price
    from api.render import InstrumentView

    tiny = InstrumentView.from_row(("spot", "XUSDT", "0.00000001", "0.001", "X", "USDT"))
    assert _avg_price(tiny, 1_000, 12) == "0.00000012"  # 1 X bought for 12e-8 USDT; str() gives 1.2E-7
    assert _avg_price(tiny, -3_000, -37) == "0.00000012"  # a short: 37e-8 / 3, half-even to 1e-8
    assert _avg_price(tiny, 0, 0) is None
