"""The health job against two loopback HTTP servers (200 / 503 / unreachable), run as the cron runs it
(a subprocess): one line per check, exit codes, Telegram alerts only on a change of state."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections import deque
from pathlib import Path

import pytest

from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram

ROOT = Path(__file__).resolve().parents[1]


class HealthServer:
    """A loopback `/health` endpoint whose answers the test scripts: a queue of (status, body), then
    the default."""

    def __init__(self, status: int = 200, body: dict | None = None) -> None:
        self.status = status
        self.body = body or {"status": "ok"}
        self.script: deque[tuple[int, dict]] = deque()
        self.paths: list[str] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> HealthServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.paths.append(head.split(b" ", 2)[1].decode())
            status, body = self.script.popleft() if self.script else (self.status, self.body)
            data = json.dumps(body).encode()
            reason = {200: "OK", 503: "Service Unavailable", 404: "Not Found"}.get(status, "X")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_health(api: str, worker: str, state: Path, telegram: FakeTelegram | None = None, *extra: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    if telegram is not None:
        env |= {
            "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_CHAT_ID": "42",
            "TELEGRAM_API_BASE": telegram.base_url,
        }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobs.health", "--api", api, "--worker", worker, "--state", str(state),
        "--timeout", "2", "--retries", "1", "--backoff", "0.01", *extra,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def servers():
    api, worker = await HealthServer().start(), await HealthServer().start()
    telegram = await FakeTelegram().start()
    yield api, worker, telegram
    await api.stop()
    await worker.stop()
    await telegram.stop()


async def test_both_healthy_prints_one_line_each_and_sends_nothing(servers, tmp_path: Path) -> None:
    api, worker, telegram = servers
    code, out, err = await run_health(api.url, worker.url + "/", tmp_path / "s.json", telegram)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"api {api.url}/health: healthy (200 in ")
    assert lines[1].startswith(f"worker {worker.url}/health: healthy (200 in ")
    assert api.paths == ["/health"] and worker.paths == ["/health"]
    assert telegram.requests == []
    assert json.loads((tmp_path / "s.json").read_text()) == {"api": True, "worker": True}


async def test_alerts_only_on_a_change_of_state(servers, tmp_path: Path) -> None:
    api, worker, telegram = servers
    state = tmp_path / "state.json"
    worker.status, worker.body = 503, {"status": "unhealthy", "problems": ["spot:BTCUSDT not live"]}

    code, out, err = await run_health(api.url, worker.url, state, telegram)
    assert code == 1, err
    assert "worker" in out and "UNHEALTHY (HTTP 503: spot:BTCUSDT not live)" in out
    await telegram.wait_requests(1)
    assert "🚨 worker is unhealthy: HTTP 503: spot:BTCUSDT not live" in telegram.texts()[0]
    assert len(worker.paths) == 2  # a 503 is retried once before it counts

    for _ in range(2):  # still down: no alert storm
        code, out, _ = await run_health(api.url, worker.url, state, telegram)
        assert code == 1
    assert len(telegram.requests) == 1

    worker.status, worker.body = 200, {"status": "ok"}
    code, out, _ = await run_health(api.url, worker.url, state, telegram)
    assert code == 0
    await telegram.wait_requests(2)
    assert telegram.texts()[1].startswith("QuantumFlow health\n✅ worker recovered: 200 in ")
    code, _, _ = await run_health(api.url, worker.url, state, telegram)
    assert code == 0 and len(telegram.requests) == 2


async def test_unreachable_is_reported_without_a_stack_trace(servers, tmp_path: Path) -> None:
    api, _, telegram = servers
    dead = f"http://127.0.0.1:{closed_port()}"
    code, out, err = await run_health(api.url, dead, tmp_path / "s.json", telegram)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("api ") and "healthy" in lines[0]
    assert lines[1].startswith(f"worker {dead}/health: UNHEALTHY (unreachable: ConnectError")
    assert "Traceback" not in err and "Traceback" not in out
    await telegram.wait_requests(1)
    assert "worker is unhealthy: unreachable" in telegram.texts()[0]


async def test_malformed_url_and_unwritable_state_never_crash(servers, tmp_path: Path) -> None:
    _, worker, _ = servers
    state = tmp_path / "missing-dir" / "state.json"
    code, out, err = await run_health("not a url", worker.url, state, None)
    assert code == 1
    assert out.splitlines()[0].startswith("api not a url/health: UNHEALTHY (unreachable: ")
    assert "alert not sent: TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID not set" in out
    assert "state file" in err and "not written" in err and "Traceback" not in err


async def test_a_transient_503_recovers_on_retry(servers, tmp_path: Path) -> None:
    api, worker, telegram = servers
    api.script.append((503, {"status": "starting"}))
    code, out, err = await run_health(api.url, worker.url, tmp_path / "s.json", telegram)
    assert code == 0, out + err
    assert len(api.paths) == 2 and telegram.requests == []


async def test_an_undelivered_alert_is_retried_next_run(servers, tmp_path: Path) -> None:
    api, worker, telegram = servers
    state = tmp_path / "state.json"
    api.status = 503
    telegram.script(400)  # Telegram refuses the first alert for good
    code, out, _ = await run_health(api.url, worker.url, state, telegram)
    assert code == 1 and "telegram: sent 0 of 1" in out
    assert json.loads(state.read_text()) == {"api": True, "worker": True}  # the change is not forgotten
    code, out, _ = await run_health(api.url, worker.url, state, telegram)
    assert code == 1 and "telegram: sent 1 message(s)" in out
    assert json.loads(state.read_text()) == {"api": False, "worker": True}
    assert "api is unhealthy" in telegram.texts()[0]
