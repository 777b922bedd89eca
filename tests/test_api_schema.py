"""Schemathesis against `/openapi.json`, in-process (ASGI): no 5xx, and every response matches the document.

The database is seeded through the store's writer, so generated queries hit real rows; examples are
bounded per operation so the whole run stays within seconds.
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import Settings
from loadtests.seed_api_db import seed


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("schema") / "trades.db"
    asyncio.run(seed(path, days=3, equity_step_s=30, orders=400, fills_target=700))
    app = create_app(Settings(str(path), heartbeat_max_age_s=3600))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_openapi_document(case) -> None:
    case.call_and_validate(checks=CHECKS)
