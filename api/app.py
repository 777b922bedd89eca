"""The Starlette application factory: read-only JSON over the worker's SQLite, under `/api/v1/`.

Design and invariants:
- Read-only by construction: every route is GET (HEAD answers as GET), a guard in front of the router
  answers 405 to every other method on every path, and the database is opened `mode=ro` with
  `PRAGMA query_only` per request (see `api.db`).
- Every error is an RFC 9457 problem document: 400 names the parameter, 404 for unknown ids and paths,
  405, 503 when the database cannot answer in time. An unexpected exception is still a problem
  document (500), and the test suite's schemathesis run asserts none occurs.
- `/health` is served both at the root (Fly's check) and under `/api/v1/`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api import lists, portfolio, system
from api.cache import ResponseCache, cached
from api.context import JSON, Context
from api.cursors import CursorCodec
from api.db import Database
from api.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from api.openapi import openapi_document
from api.problems import Problem, problem_response
from api.settings import Settings
from worker.calendar import CalendarClock

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
ALLOWED_METHODS = ("GET", "HEAD")


class ReadOnlyGuard:
    """405 for any method but GET/HEAD, on any path, before routing: nothing here ever writes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ALLOWED_METHODS:
            problem = Problem(405, f"{scope['method']} is not allowed: this API is read-only (GET only)")
            response = problem_response(problem, scope.get("path", ""), {"Allow": ", ".join(ALLOWED_METHODS)})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, request.url.path)


async def http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = "no such resource" if exc.status_code == 404 else str(exc.detail)
    headers = dict(exc.headers or {})
    return problem_response(Problem(exc.status_code, detail), request.url.path, headers)


async def error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return problem_response(Problem(500, f"internal error ({type(exc).__name__})"), request.url.path)


async def dashboard(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def openapi(request: Request) -> Response:
    return JSON(request.app.state.openapi)


def create_app(settings: Settings) -> Starlette:
    v1 = "/api/v1"
    routes = [
        Route("/", dashboard, methods=["GET"]),
        Route("/health", system.health, methods=["GET"]),
        Route("/livez", system.livez, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(f"{v1}/health", system.health, methods=["GET"]),
        Route(f"{v1}/status", cached(system.status), methods=["GET"]),
        Route(f"{v1}/positions", cached(portfolio.positions), methods=["GET"]),
        Route(f"{v1}/orders", cached(lists.orders), methods=["GET"]),
        Route(f"{v1}/orders/{{id}}", cached(lists.order_detail), methods=["GET"]),
        Route(f"{v1}/fills", cached(lists.fills), methods=["GET"]),
        Route(f"{v1}/pnl", cached(portfolio.pnl), methods=["GET"]),
        Route(f"{v1}/equity", cached(portfolio.equity), methods=["GET"]),
        Route(f"{v1}/signals", cached(lists.signals), methods=["GET"]),
        Route(f"{v1}/risk-events", cached(lists.risk_events), methods=["GET"]),
        Route(f"{v1}/stats", cached(portfolio.stats), methods=["GET"]),
        Route(f"{v1}/calendar", system.calendar, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={Problem: problem_handler, HTTPException: http_handler, Exception: error_handler},
    )
    metrics = Metrics()
    app.state.ctx = Context(
        settings,
        Database(
            settings.db_path,
            time_limit_ms=settings.query_time_limit_ms,
            max_rows=settings.max_rows,
            threads=settings.threads,
            fresh_connections=settings.fresh_connections,
        ),
        CursorCodec(settings.cursor_key),
        ResponseCache(settings.cache_ttl_s),
    )
    app.state.metrics = metrics
    app.state.calendar_clock = CalendarClock(settings.calendar)
    app.state.calendar_clock.is_paused(time.time_ns())  # precompute the windows now, not on a request
    app.state.openapi = openapi_document(settings)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(ReadOnlyGuard)
    return app
