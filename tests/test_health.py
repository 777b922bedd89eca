"""Worker health: verdicts, the /health endpoint, loop lag, heartbeat rows."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from worker.errors import ConfigError
from worker.health import (
    Health,
    HealthInputs,
    HealthLimits,
    HealthServer,
    Heartbeat,
    LoopLagMonitor,
    SymbolHealth,
)


def live(symbol="spot:BTCUSDT", age=0.2) -> SymbolHealth:
    return SymbolHealth(symbol, "live", age, gaps=1, resyncs=2, reconnects=3)


class State:
    """A mutable stand-in for the worker's state; the provider reads it like the worker's would."""

    def __init__(self) -> None:
        self.symbols = [live(), live("usdm:BTCUSDT")]
        self.writer_lag_s: float | None = 0.1
        self.trading = "running"
        self.fail = False

    def __call__(self) -> HealthInputs:
        if self.fail:
            raise RuntimeError("broken state")
        return HealthInputs(
            self.symbols, self.writer_lag_s, 3, self.trading, ts_ns=123, extra={"version": "0.1.0"}
        )


@pytest.fixture
async def served():
    state = State()
    server = HealthServer(
        Health(state, limits=HealthLimits(max_msg_age_s=5, max_writer_lag_s=2)), 0, "127.0.0.1"
    )
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        yield state, client
    await server.close()


async def test_healthy_is_200_with_the_full_report(served):
    _, client = served
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["problems"] == []
    assert body["symbols"]["spot:BTCUSDT"] == {
        "state": "live",
        "last_msg_age_s": 0.2,
        "gaps": 1,
        "resyncs": 2,
        "reconnects": 3,
    }
    assert body["writer"] == {"lag_s": 0.1, "queue": 3}
    assert body["trading"] == "running" and body["version"] == "0.1.0"
    assert body["rss_bytes"] > 1_000_000 and body["uptime_s"] >= 0


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda s: setattr(s, "symbols", [SymbolHealth("spot:BTCUSDT", "syncing", 0.1)]),
            "spot:BTCUSDT syncing",
        ),
        (lambda s: setattr(s, "symbols", [live(age=30.0)]), "last message 30.0s ago"),
        (lambda s: setattr(s, "symbols", [SymbolHealth("spot:X", "live", None)]), "no message yet"),
        (lambda s: setattr(s, "symbols", []), "no symbols"),
        (lambda s: setattr(s, "writer_lag_s", 9.0), "writer lag 9.0s"),
        (lambda s: setattr(s, "fail", True), "state provider failed: RuntimeError"),
    ],
)
async def test_unhealthy_is_503_naming_the_problem(served, change, problem):
    state, client = served
    change(state)
    response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert any(problem in p for p in body["problems"]), body["problems"]


async def test_trading_pause_is_reported_but_healthy(served):
    state, client = served
    state.trading = "paused:shabbat"
    response = await client.get("/health")
    assert response.status_code == 200 and response.json()["trading"] == "paused:shabbat"


async def test_other_paths_and_methods(served):
    _, client = served
    assert (await client.get("/nope")).status_code == 404
    assert (await client.post("/health")).status_code == 405
    head = await client.head("/health")
    assert head.status_code == 200 and head.content == b""


async def test_blocked_loop_makes_health_503():
    monitor = LoopLagMonitor(interval_s=0.02)
    await monitor.start()
    await monitor.next_sample()
    health = Health(State(), monitor, HealthLimits(max_loop_lag_s=0.1))
    assert health.report().ok
    time.sleep(0.3)  # the hazard under test: synchronous work blocking the event loop
    assert monitor.lag_s >= 0.25  # overdue wake-up, seen even before the monitor runs again
    await monitor.next_sample()
    report = health.report()
    assert not report.ok and report.status_code == 503
    assert any("event loop lag" in p for p in report.problems)
    assert monitor.max_lag_s >= 0.25
    await monitor.close()


async def test_bad_port_and_port_in_use():
    with pytest.raises(ConfigError, match=r"health\.port"):
        HealthServer(Health(State()), 70000)
    first = HealthServer(Health(State()), 0, "127.0.0.1")
    await first.start()
    with pytest.raises(ConfigError, match="free port"):
        await HealthServer(Health(State()), first.port, "127.0.0.1").start()
    await first.close()


async def test_heartbeat_feeds_store_records_to_the_sink():
    from worker.store.records import Heartbeat as HeartbeatRecord

    rows: list[HeartbeatRecord] = []
    two = asyncio.Event()
    state = State()

    def sink(record: HeartbeatRecord) -> None:
        rows.append(record)
        state.writer_lag_s = 99.0  # the second beat reports the change
        state.trading = "paused"
        if len(rows) == 2:
            two.set()

    beat = Heartbeat(Health(state), sink, interval_s=0.01)
    await beat.start()
    await asyncio.wait_for(two.wait(), 5)
    await beat.close()
    first, second = rows[:2]
    assert isinstance(first, HeartbeatRecord)
    assert first.detail["ok"] is True and first.trading_state == "running"
    assert first.sync == {"spot:BTCUSDT": "live", "usdm:BTCUSDT": "live"} and first.ts_ns == 123
    assert second.detail["ok"] is False and "writer lag 99.0s" in second.detail["problems"][0]
    assert second.trading_state == "paused" and second.detail["writer"]["lag_s"] == 99.0
    assert second.detail["symbols"]["spot:BTCUSDT"]["resyncs"] == 2
    state.fail = True
    broken = beat.row()
    assert broken.trading_state == "unknown" and broken.detail["ok"] is False


async def test_heartbeat_survives_a_failing_sink():
    calls = asyncio.Event()
    count = 0

    def sink(row: dict) -> None:
        nonlocal count
        count += 1
        if count == 3:
            calls.set()
        raise OSError("queue gone")

    beat = Heartbeat(Health(State()), sink, interval_s=0.01)
    await beat.start()
    await asyncio.wait_for(calls.wait(), 5)
    await beat.close()
    assert beat.errors >= 3 and beat.beats == 0
