"""Locust users for the read-only API (driven by `loadtests/api_load.py`, or by hand).

Profiles (environment QF_LOAD_PROFILE):
- `mix` (default): the realistic dashboard/analyst mix - 60% fills pages (a third of them follow the
  previous page's `next` cursor, half filter by symbol), 30% equity charts over 1-24 h, 10% P&L totals.
- `ranges`: equity charts over 1 h, 24 h, 7 d and 30 d, equally often (named apart, to compare).
- `trivial`: GET /trivial on the trivial Starlette app (the framework's own ceiling).
QF_LOAD_RATE > 0 paces each user at that many requests/s (constant throughput) for steady-rate runs;
0 (default) sends as fast as responses come back. FastHttpUser (geventhttpclient) so that one locust
core can drive more requests than the server core can serve.

    QF_LOAD_PROFILE=mix locust -f loadtests/locustfile.py --headless -u 50 -r 50 -t 20s --host http://127.0.0.1:8080
"""

from __future__ import annotations

import os
import random
import time

from locust import FastHttpUser, constant, constant_throughput, task

PROFILE = os.environ.get("QF_LOAD_PROFILE", "mix")
RATE = float(os.environ.get("QF_LOAD_RATE", "0"))
SYMBOLS = ("BTCUSDT", "ETHUSDT")
WINDOWS = ("1h", "2h", "4h", "6h", "12h", "24h")


def _check(response) -> None:
    if response.status_code != 200:
        response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


class ApiUser(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.next_token: str | None = None
        self.next_symbol: str | None = None
        if RATE > 0:
            # Paced users all start together; without a random phase they would fire in lockstep
            # bursts (users x requests at once, every 1/RATE s) instead of a steady stream.
            time.sleep(random.random() / RATE)  # gevent-patched under locust: yields, blocks nothing

    def _fills(self) -> None:
        if self.next_token and random.random() < 1 / 3:
            params = {"limit": "50", "cursor": self.next_token}
            if self.next_symbol:
                params["symbol"] = self.next_symbol
            name = "fills (next page)"
        else:
            self.next_symbol = random.choice(SYMBOLS) if random.random() < 0.5 else None
            params = {"limit": "50"}
            if self.next_symbol:
                params["symbol"] = self.next_symbol
            name = "fills (first page)"
        with self.client.get("/api/v1/fills", params=params, name=name, catch_response=True) as r:
            _check(r)
            if r.status_code == 200:
                self.next_token = r.json().get("next")

    def _equity(self, window: str, name: str) -> None:
        with self.client.get(
            "/api/v1/equity", params={"window": window, "points": "120"}, name=name, catch_response=True
        ) as r:
            _check(r)

    def _pnl(self) -> None:
        with self.client.get("/api/v1/pnl", name="pnl", catch_response=True) as r:
            _check(r)

    @task
    def one(self) -> None:
        if PROFILE == "trivial":
            with self.client.get("/trivial", name="trivial", catch_response=True) as r:
                _check(r)
        elif PROFILE == "ranges":
            window = random.choice(("1h", "24h", "7d", "30d"))
            self._equity(window, f"equity {window}")
        else:
            roll = random.random()
            if roll < 0.6:
                self._fills()
            elif roll < 0.9:
                self._equity(random.choice(WINDOWS), "equity 1-24h")
            else:
                self._pnl()
