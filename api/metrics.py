"""Prometheus metrics: request counts and latencies, plus the worker's state read at scrape time.

- A registry per app (not the global one), so tests can build many apps in one process.
- The request middleware is pure ASGI (no BaseHTTPMiddleware task overhead); the route label is the
  matched route's path template, or "unmatched", so label cardinality stays bounded whatever clients send.
- Scrape-time gauges come from one read of the heartbeat, the latest equity bar and the totals; a
  database that cannot be read sets `qf_api_db_up 0` instead of failing the scrape.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.context import ctx
from api.db import Reader, Unavailable
from api.params import Query
from worker.store.schema import TRADING_STATES

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("qf_api_requests", "HTTP requests", ("route", "method", "status"), registry=r)
        self.latency = Histogram(
            "qf_api_request_duration_seconds", "Request latency", ("route",), buckets=BUCKETS, registry=r
        )
        self.db_up = Gauge("qf_api_db_up", "1 when the database could be read at scrape", registry=r)
        self.query_timeouts = Gauge("qf_api_query_timeouts", "Queries stopped by the time limit", registry=r)
        self.connections = Gauge("qf_api_connections_opened", "Read-only connections opened", registry=r)
        self.cache = Gauge("qf_api_cache", "Response cache lookups", ("result",), registry=r)
        self.heartbeat_age = Gauge(
            "qf_worker_heartbeat_age_seconds", "Age of the worker heartbeat", registry=r
        )
        self.trading_state = Gauge(
            "qf_worker_trading_state", "1 for the current state", ("state",), registry=r
        )
        self.equity = Gauge("qf_equity", "Latest equity (quote asset)", registry=r)
        self.drawdown = Gauge("qf_drawdown", "Latest drawdown from peak (quote asset, <= 0)", registry=r)
        self.fills = Gauge("qf_fills", "Fills persisted", registry=r)
        self.writer_lag = Gauge("qf_worker_writer_lag_seconds", "Worker store writer lag", registry=r)


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_label(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


def _scrape(reader: Reader) -> tuple:
    hb = reader.one("SELECT wall_ns, trading_state, writer_lag_ms FROM heartbeat WHERE id = 1")
    eq = reader.one(
        "SELECT close, drawdown FROM equity_bars WHERE resolution_s = 1 ORDER BY bucket_s DESC LIMIT 1"
    ) or reader.one(
        "SELECT close, drawdown FROM equity_bars WHERE resolution_s = 60 ORDER BY bucket_s DESC LIMIT 1"
    )
    fills = reader.one("SELECT coalesce(sum(fills), 0) FROM totals_symbol")
    return hb, eq, fills


async def metrics_endpoint(request: Request) -> Response:
    Query(request.scope.get("query_string", b""), request.query_params.multi_items(), ())
    m: Metrics = request.app.state.metrics
    c = ctx(request)
    try:
        hb, eq, fills = await c.db.run(_scrape)
        m.db_up.set(1)
        if hb is not None:
            m.heartbeat_age.set((time.time_ns() - hb[0]) / 1e9)
            m.writer_lag.set(hb[2] / 1000)
            for state in (*TRADING_STATES, hb[1]):
                m.trading_state.labels(state).set(1 if state == hb[1] else 0)
        if eq is not None:
            m.equity.set(eq[0] / 1e8)
            m.drawdown.set(eq[1] / 1e8)
        m.fills.set(fills[0] if fills else 0)
    except Unavailable:
        m.db_up.set(0)
    m.query_timeouts.set(c.db.timeouts)
    m.connections.set(c.db.opened)
    m.cache.labels("hit").set(c.cache.hits)
    m.cache.labels("miss").set(c.cache.misses)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
