"""The dashboard in headless Chromium: it loads, shows the numbers the API returns, logs no errors.

- Needs Debian's `chromium` (`/usr/bin/chromium`); skipped with the reason when it is absent.
- The API runs under uvicorn on a socket bound before the server starts (127.0.0.1, ephemeral port), so
  the browser can connect at once. Chromium is driven over the DevTools protocol (websockets): console
  calls, uncaught exceptions and log entries (failed loads) are collected; the page logs "qf:rendered"
  after each render, which is what the test waits for (no sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect

from api.app import create_app
from api.settings import Settings
from loadtests.seed_api_db import seed

# Debian's chromium (what .ci/run installs), or the Chrome GitHub's Ubuntu runners ship; QF_CHROMIUM
# names another build.
CHROMIUM = os.environ.get("QF_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), ""
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM,
    reason="no Chromium found (chromium, chromium-browser, google-chrome or $QF_CHROMIUM): "
    "apt-get install -y chromium",
)
TIMEOUT = 30


class DevTools:
    """A minimal DevTools protocol client: commands with ids, events collected in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future] = {}
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)
            else:
                async with self.changed:
                    self.events.append(message)
                    self.changed.notify_all()

    async def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        ident = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def wait_for(self, predicate) -> dict:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: any(predicate(e) for e in self.events)), TIMEOUT
            )
            return next(e for e in self.events if predicate(e))


def _rendered(event: dict) -> bool:
    if event.get("method") != "Runtime.consoleAPICalled":
        return False
    args = event["params"].get("args", [])
    return bool(args) and args[0].get("value") == "qf:rendered"


def _errors(events: list[dict]) -> list[str]:
    found = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            found.append(f"console.{params['type']}: {[a.get('value') for a in params.get('args', [])]}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    return found


@contextlib.contextmanager
def serve(app) -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue in the backlog until uvicorn accepts: no start-up wait needed
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def test_dashboard_shows_the_apis_numbers_without_console_errors(tmp_path: Path) -> None:
    db = tmp_path / "trades.db"
    await seed(db, days=2, equity_step_s=20, orders=300, fills_target=500)
    profile = tmp_path / "chromium-profile"
    with serve(create_app(Settings(str(db), heartbeat_max_age_s=3600))) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            pnl = (await http.get("/api/v1/pnl")).json()
            status = (await http.get("/api/v1/status")).json()
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            endpoint = None
            while endpoint is None:
                line = await asyncio.wait_for(proc.stderr.readline(), TIMEOUT)
                assert line, "chromium exited before opening its DevTools endpoint"
                text = line.decode(errors="replace")
                if "DevTools listening on " in text:
                    endpoint = text.split("DevTools listening on ", 1)[1].strip()
            async with connect(endpoint, max_size=2**24) as ws:
                cdp = DevTools(ws)
                target = await cdp.send("Target.createTarget", {"url": "about:blank"})
                attached = await cdp.send(
                    "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
                )
                session = attached["sessionId"]
                for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                    await cdp.send(domain, session=session)
                await cdp.send("Page.navigate", {"url": base + "/"}, session=session)
                await cdp.wait_for(_rendered)
                shown = await cdp.send(
                    "Runtime.evaluate",
                    {
                        "expression": "JSON.stringify({"
                        "equity: document.getElementById('equity').textContent,"
                        "realized: document.getElementById('realized').textContent,"
                        "fees: document.getElementById('fees').textContent,"
                        "drawdown: document.getElementById('drawdown').textContent,"
                        "fills: document.getElementById('fills').textContent,"
                        "state: document.getElementById('state').textContent,"
                        "rows: [...document.querySelectorAll('#symbols tr')]"
                        ".map(r => [...r.cells].map(c => c.textContent)),"
                        "paths: document.querySelectorAll('#equity-chart path').length,"
                        "ddpaths: document.querySelectorAll('#drawdown-chart path').length})",
                        "returnByValue": True,
                    },
                    session=session,
                )
                page = json.loads(shown["result"]["value"])
                errors = _errors(cdp.events)
                cdp.reader.cancel()
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            shutil.rmtree(profile, ignore_errors=True)
    assert page["equity"] == pnl["equity"]
    assert page["realized"] == pnl["realized_pnl"]
    assert page["fees"] == pnl["fees"]
    assert page["drawdown"] == pnl["drawdown"]
    assert page["fills"] == str(pnl["fills"])
    assert page["state"] == status["trading_state"] == "ACTIVE"
    rows = {row[0]: row for row in page["rows"]}
    btc = next(s for s in status["symbols"] if s["symbol"] == "BTCUSDT")
    assert rows["spot:BTCUSDT"][1:4] == [btc["sync"], btc["bid"], btc["ask"]]
    assert page["paths"] == 1 and page["ddpaths"] == 2
    assert errors == []
