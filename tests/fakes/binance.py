"""A loopback Binance stand-in: combined-stream WebSocket + REST depth/exchangeInfo, with faults on command.

Design:
- One `websockets` server on 127.0.0.1 serves both: WebSocket upgrades on Binance's combined-stream
  routes (spot `/stream`, USD-M `/public/stream` for depth and bookTicker, `/market/stream` for trades;
  a stream asked for on the wrong route is refused with 400, as a routing mistake must fail loudly),
  and plain HTTP GETs on `/api/v3/...` and `/fapi/v1/...` through `process_request`. The worker reaches
  it through the same code as Binance; only the base URLs differ (`endpoints()`).
- Generated data: each symbol keeps its TRUE book (integer ticks -> lots); every step mutates it,
  advances the update ids exactly as the venue does (spot `U = prev u + 1`; USD-M venue-wide ids with
  `pu = prev u`) and sends the diff and a trade. Snapshots are the true book at that moment, so a
  client that follows the rules can be compared level for level with `true_levels()`.
- Recording mode (`from_recording`): serves a real recording's frames byte for byte, and its snapshot.
- Faults, injected on command: `drop_connections`, `skip_updates` (a gap), `duplicate_next`,
  `reorder_next`, `send_malformed`, `silence(kind)` (that stream of the current connections goes
  quiet), REST `rest_fault("429"|"418"|"500"|"503"|"slow"|"garbage")`, a REST weight limit enforced
  with 429 like Binance's, and server pings (`ping_interval`). REST also serves `ticker/price` (the
  mid) and USD-M `fundingRate` (what `set_funding_history` holds). Requests sent while a 429's Retry-After
  or a 418 ban lasts are counted: a well-behaved client leaves them at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from worker.binance.endpoints import Endpoints
from worker.binance.recording import FrameReader, read_snapshots
from worker.binance.stream import envelope_stream
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument


def _text(value: Decimal) -> str:
    return format(value, "f")


@dataclass
class FakeSymbol:
    """One symbol's true book and id counters on the stand-in."""

    market: Market
    symbol: str
    instrument: Instrument
    rng: random.Random
    mid: int = 6_000_000
    band: int = 200
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    last_id: int = 1_000_000
    trade_id: int = 500
    steps: int = 0
    funding_rate: str = "0.00010000"
    next_funding_ms: int = 0  # 0: the next 8-hour boundary, as Binance's BTCUSDT perpetual

    def __post_init__(self) -> None:
        if self.market is Market.USDM:
            self.mid, self.last_id = 600_000, 5_000_000_000
        for _ in range(60):
            self.bids[self.mid - self.rng.randint(1, self.band)] = self.rng.randint(1, 10**5)
            self.asks[self.mid + self.rng.randint(1, self.band)] = self.rng.randint(1, 10**5)

    def _price(self, ticks: int) -> str:
        return _text(self.instrument.price_decimal(ticks))

    def _qty(self, lots: int) -> str:
        return _text(self.instrument.qty_decimal(lots))

    def step(self, now_ms: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Mutate the true book; return (depth data, trade data) exactly as Binance would send them."""
        rng = self.rng
        changes: dict[str, list[list[str]]] = {"b": [], "a": []}
        for side, book, sign in (("b", self.bids, -1), ("a", self.asks, 1)):
            for _ in range(rng.randint(1, 6)):
                price = self.mid + sign * rng.randint(1, self.band)
                qty = 0 if (price in book and rng.random() < 0.3) else rng.randint(1, 10**5)
                if qty:
                    book[price] = qty
                else:
                    book.pop(price, None)
                changes[side].append([self._price(price), self._qty(qty)])
        prev = self.last_id
        if self.market is Market.SPOT:
            first = prev + 1
            self.last_id = prev + rng.randint(1, 3)
            depth = {"e": "depthUpdate", "E": now_ms, "s": self.symbol, "U": first, "u": self.last_id}
        else:
            first = prev + 1 + rng.randint(0, 40)  # venue-wide ids: other symbols used the rest
            self.last_id = first + rng.randint(0, 4)
            depth = {
                "e": "depthUpdate",
                "E": now_ms,
                "T": now_ms,
                "s": self.symbol,
                "U": first,
                "u": self.last_id,
                "pu": prev,
            }
        depth["b"], depth["a"] = changes["b"], changes["a"]
        self.trade_id += 1
        self.steps += 1
        buy = rng.random() < 0.5
        book, pick = (self.asks, min) if buy else (self.bids, max)
        price = pick(book) if book else self.mid
        trade: dict[str, Any] = {
            "e": "trade",
            "E": now_ms,
            "s": self.symbol,
            "t": self.trade_id,
            "p": self._price(price),
            "q": self._qty(rng.randint(1, 1000)),
            "T": now_ms,
            "m": not buy,
        }
        if self.market is Market.SPOT:
            trade["M"] = True
        else:
            trade["X"] = "MARKET"
        return depth, trade

    def snapshot(self, limit: int, now_ms: int) -> dict[str, Any]:
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        body: dict[str, Any] = {"lastUpdateId": self.last_id}
        if self.market is Market.USDM:
            body["E"], body["T"] = now_ms, now_ms
        body["bids"] = [[self._price(p), self._qty(q)] for p, q in bids]
        body["asks"] = [[self._price(p), self._qty(q)] for p, q in asks]
        return body

    def mark_price(self, now_ms: int) -> dict[str, Any]:
        """A USD-M `markPriceUpdate`: the mark is the mid with more decimals than the tick, like Binance's."""
        bid, ask = max(self.bids), min(self.asks)
        mark = (self.instrument.price_decimal(bid) + self.instrument.price_decimal(ask)) / 2 + Decimal(
            "0.00012345"
        )
        next_funding = self.next_funding_ms or (now_ms // 28_800_000 + 1) * 28_800_000
        return {
            "e": "markPriceUpdate",
            "E": now_ms,
            "s": self.symbol,
            "p": _text(mark.quantize(Decimal("0.00000001"))),
            "i": _text(mark.quantize(Decimal("0.00000001"))),
            "P": _text(mark.quantize(Decimal("0.00000001"))),
            "r": self.funding_rate,
            "T": next_funding,
        }

    def book_ticker(self, now_ms: int) -> dict[str, Any]:
        bid, ask = max(self.bids), min(self.asks)
        head: dict[str, Any] = {"e": "bookTicker"} if self.market is Market.USDM else {}
        return (
            head
            | {
                "u": self.last_id,
                "s": self.symbol,
                "b": self._price(bid),
                "B": self._qty(self.bids[bid]),
                "a": self._price(ask),
                "A": self._qty(self.asks[ask]),
            }
            | ({"T": now_ms, "E": now_ms} if self.market is Market.USDM else {})
        )


@dataclass
class Conn:
    ws: ServerConnection
    route: str
    streams: list[str]
    muted: set[str] = field(default_factory=set)  # stream kinds this connection no longer sends


ROUTES = {"/stream": Market.SPOT, "/public/stream": Market.USDM, "/market/stream": Market.USDM}
USDM_ROUTE_KINDS = {
    "/public/stream": {"depth", "bookTicker"},
    "/market/stream": {"trade", "aggTrade", "markPrice"},
}


class FakeBinance:
    """The stand-in server. Use as `async with FakeBinance(...) as fake:`; `fake.endpoints()` for URLs."""

    def __init__(
        self,
        symbols: Iterable[tuple[Market, str]] = ((Market.SPOT, "BTCUSDT"),),
        *,
        interval: float = 0.005,
        seed: int = 7,
        ping_interval: float | None = None,
        weight_limit: int = 6000,
        weight_window_s: float = 60.0,
        book_ticker: bool = True,
        instruments: Mapping[tuple[Market, str], Instrument] | None = None,
    ) -> None:
        """`instruments`: symbols listed beside the defaults (exchangeInfo serves them all)."""
        self.rng = random.Random(seed)
        self.instruments = {**DEFAULT_INSTRUMENTS, **(instruments or {})}
        self.books: dict[tuple[Market, str], FakeSymbol] = {
            (Market(m), s): FakeSymbol(Market(m), s, self.instruments[(Market(m), s)], self.rng)
            for m, s in symbols
        }
        self.interval = interval
        self.ping_interval = ping_interval
        self.weight_limit = weight_limit
        self.weight_window_s = weight_window_s
        self.book_ticker = book_ticker
        self.conns: list[Conn] = []
        self.connections_total = 0
        self.running = asyncio.Event()
        self.running.set()
        self.stepped = asyncio.Condition()
        # faults
        self._skip: dict[str, int] = {}
        self._dup = 0
        self._reorder = 0
        self._held: list[tuple[Market, str, str, bytes]] = []
        self.rest_faults: deque[tuple[str, float]] = deque()
        # REST bookkeeping
        self.rest_log: list[tuple[float, str, int]] = []
        self.weight_used = 0
        self.weight_offset = 0  # weight "other clients" of our IP spent this window
        self._window = int(time.time() // weight_window_s)
        self.blocked_until = 0.0
        self.requests_while_blocked = 0
        self.depth_requests = 0
        self.ticker_requests = 0
        self.funding_history: dict[str, list[tuple[int, str, str]]] = {}
        self.funding_requests: list[dict[str, str]] = []
        self.refuse_ws = 0  # the next n WebSocket upgrades get HTTP `refuse_status`
        self.refuse_status = 503
        self.ws_refused = 0
        # recording mode
        self._recording: deque[tuple[str, bytes]] | None = None
        self.frames_per_step = 1
        self.frames_sent = 0
        self._recorded_snapshots: dict[tuple[Market, str], bytes] = {}
        self.server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = 0

    # --- lifecycle ---
    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            compression=None,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def endpoints(self, usdm_depth_speed: str = "0ms") -> Endpoints:
        return Endpoints.loopback(self.port, usdm_depth_speed=usdm_depth_speed)

    # --- truth ---
    def true_levels(
        self, market: Market, symbol: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int]:
        """(bids best first, asks best first, last update id) of the stand-in's true book."""
        b = self.books[(market, symbol)]
        return sorted(b.bids.items(), reverse=True), sorted(b.asks.items()), b.last_id

    # --- data generation ---
    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    async def _tick_loop(self) -> None:
        while True:
            await self.running.wait()
            await self.step()
            await asyncio.sleep(self.interval)

    async def step(self, n: int = 1) -> None:
        """Advance every symbol by one update (or replay the next recorded frame) and send it."""
        for _ in range(n):
            if self._recording is not None:
                await self._step_recording()
                continue
            now_ms = time.time_ns() // 1_000_000
            for (market, symbol), book in self.books.items():
                depth, trade = book.step(now_ms)
                await self._emit_depth(market, symbol, orjson.dumps(depth))
                await self._emit(market, symbol, "trade", orjson.dumps(trade))
                if self.book_ticker:
                    await self._emit(market, symbol, "bookTicker", orjson.dumps(book.book_ticker(now_ms)))
                if market is Market.USDM:
                    await self._emit(market, symbol, "markPrice", orjson.dumps(book.mark_price(now_ms)))
        async with self.stepped:
            self.stepped.notify_all()

    async def _emit_depth(self, market: Market, symbol: str, data: bytes) -> None:
        if self._skip.get(symbol, 0) > 0:
            self._skip[symbol] -= 1
            return
        if self._reorder > 0 and not self._held:
            self._held.append((market, symbol, "depth", data))
            return
        await self._emit(market, symbol, "depth", data)
        if self._held:
            self._reorder -= 1
            held, self._held = self._held, []
            for m, s, k, d in held:
                await self._emit(m, s, k, d)
        if self._dup > 0:
            self._dup -= 1
            await self._emit(market, symbol, "depth", data)

    async def _emit(self, market: Market, symbol: str, kind: str, data: bytes) -> None:
        prefix = symbol.lower() + "@"
        for conn in list(self.conns):
            if ROUTES[conn.route] is not market or kind in conn.muted:
                continue
            for stream in conn.streams:
                if stream.startswith(prefix) and stream.split("@")[1] == kind:
                    await self._send(conn, b'{"stream":"' + stream.encode() + b'","data":' + data + b"}")

    async def _send(self, conn: Conn, frame: bytes | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.send(frame.decode() if isinstance(frame, bytes) else frame)

    # --- WebSocket side ---
    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        streams = parse_qs(url.query).get("streams", [""])[0].split("/")
        conn = Conn(ws, url.path, streams)
        self.conns.append(conn)
        self.connections_total += 1
        async with self.stepped:
            self.stepped.notify_all()
        try:
            await ws.wait_closed()
        finally:
            self.conns.remove(conn)

    async def wait_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until `n` WebSocket connections are open (a condition, not a sleep)."""
        async with asyncio.timeout(timeout):
            while len(self.conns) < n:
                async with self.stepped:
                    await self.stepped.wait()

    # --- faults ---
    async def drop_connections(self) -> int:
        """Cut every WebSocket abruptly (no close frame), as a network failure does."""
        dropped = list(self.conns)
        for conn in dropped:
            conn.ws.transport.abort()
        return len(dropped)

    def set_funding(self, symbol: str, rate: str, next_funding_ms: int) -> None:
        """The funding rate and next funding time the USD-M mark price stream announces from now on."""
        book = self.books[(Market.USDM, symbol)]
        book.funding_rate, book.next_funding_ms = rate, next_funding_ms

    def skip_updates(self, symbol: str, n: int) -> None:
        """The next `n` depth updates change the true book but are never sent: a gap."""
        self._skip[symbol] = self._skip.get(symbol, 0) + n

    def duplicate_next(self, n: int = 1) -> None:
        self._dup += n

    def reorder_next(self, n: int = 1) -> None:
        """The next depth frame is sent after the one that follows it."""
        self._reorder += n

    async def send_malformed(self, frames: Iterable[str] | None = None) -> None:
        bad = list(
            frames
            or [
                "{not json",
                '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"}}',
                '{"stream":"nosuch@stream","data":{}}',
            ]
        )
        for conn in list(self.conns):
            for frame in bad:
                await self._send(conn, frame)

    async def send_server_shutdown(self) -> None:
        """Binance's notice that the server goes down soon (spot)."""
        for conn in list(self.conns):
            await self._send(conn, orjson.dumps({"e": "serverShutdown", "E": time.time_ns() // 1_000_000}))

    def silence(self, kind: str) -> None:
        """Streams of this kind go quiet on the connections open now (new connections are healthy)."""
        for conn in self.conns:
            conn.muted.add(kind)

    def rest_fault(self, kind: str, value: float = 0.0) -> None:
        """Queue a fault for the next depth request: "429"/"418" (value = Retry-After s), "500"/"503",
        "slow" (value = delay s), "garbage" (a body that is not JSON), "stale" (lastUpdateId 1), "crossed"
        (a bid above the best ask)."""
        self.rest_faults.append((kind, value))

    # --- REST side ---
    def _roll_window(self) -> None:
        window = int(time.time() // self.weight_window_s)
        if window != self._window:
            self._window, self.weight_used = window, 0

    def _json(
        self, ws: ServerConnection, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> Response:
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        response = ws.respond(status, text)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self.weight_used + self.weight_offset)
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path in ROUTES:
            if self.refuse_ws > 0:
                self.refuse_ws -= 1
                self.ws_refused += 1
                return ws.respond(self.refuse_status, "refused on command\n")
            streams = parse_qs(url.query).get("streams", [""])[0].split("/")
            allowed = USDM_ROUTE_KINDS.get(url.path)
            if not streams or not all("@" in s for s in streams):
                return ws.respond(400, "bad streams\n")
            if allowed and any(s.split("@")[1] not in allowed for s in streams):
                return ws.respond(400, f"streams {streams} are not served on {url.path}\n")
            return None  # upgrade to WebSocket
        response = await self._rest(ws, url.path, {k: v[0] for k, v in parse_qs(url.query).items()})
        self.rest_log.append((time.monotonic(), url.path, response.status_code))
        return response

    async def _rest(self, ws: ServerConnection, path: str, params: dict[str, str]) -> Response:
        now = time.monotonic()
        if now < self.blocked_until:
            self.requests_while_blocked += 1
        market = Market.SPOT if path.startswith("/api/") else Market.USDM
        self._roll_window()
        if path.endswith("/depth"):
            self.depth_requests += 1
            limit = int(params.get("limit", "100"))
            weight = {100: 5, 500: 25, 1000: 50, 5000: 250}.get(limit, 50)
            if market is Market.USDM:
                weight = {100: 5, 500: 10, 1000: 20}.get(limit, 20)
            self.weight_used += weight
            if self.weight_used + self.weight_offset > self.weight_limit:
                retry = self.weight_window_s - (time.time() % self.weight_window_s)
                self.blocked_until = now + retry
                return self._json(
                    ws, 429, {"code": -1003, "msg": "Too many requests"}, {"Retry-After": f"{retry:.3f}"}
                )
            if self.rest_faults:
                kind, value = self.rest_faults.popleft()
                if kind in ("429", "418"):
                    self.blocked_until = now + value
                    code = -1003
                    return self._json(
                        ws, int(kind), {"code": code, "msg": f"fault {kind}"}, {"Retry-After": f"{value}"}
                    )
                if kind in ("500", "503"):
                    return self._json(ws, int(kind), {"code": -1001, "msg": "Internal error"})
                if kind == "slow":
                    await asyncio.sleep(value)
                if kind == "garbage":
                    return self._json(ws, 200, "<html>oops")
                if kind == "stale":  # a snapshot older than anything the client buffered
                    book = self.books[(market, params.get("symbol", "").upper())]
                    body = book.snapshot(limit, time.time_ns() // 1_000_000)
                    body["lastUpdateId"] = 1
                    return self._json(ws, 200, body)
                if kind == "crossed":  # a current snapshot whose best bid is above its best ask
                    book = self.books[(market, params.get("symbol", "").upper())]
                    body = book.snapshot(limit, time.time_ns() // 1_000_000)
                    body["bids"].insert(0, [book._price(max(book.asks) + 5), "1"])
                    return self._json(ws, 200, body)
            symbol = params.get("symbol", "").upper()
            if self._recording is not None:
                body = self._recorded_snapshots.get((market, symbol))
                if body is None:
                    return self._json(ws, 400, {"code": -1121, "msg": "Invalid symbol."})
                return self._json(ws, 200, body.decode())
            book = self.books.get((market, symbol))
            if book is None:
                return self._json(ws, 400, {"code": -1121, "msg": "Invalid symbol."})
            return self._json(ws, 200, book.snapshot(limit, time.time_ns() // 1_000_000))
        if path.endswith("/ticker/price"):
            return self._ticker_price(ws, market, params)
        if path == "/fapi/v1/fundingRate":
            return self._funding_rate(ws, params)
        if path.endswith("/exchangeInfo"):
            self.weight_used += 20 if market is Market.SPOT else 1
            return self._json(ws, 200, self.exchange_info(market))
        return self._json(ws, 404, {"code": -1, "msg": f"no route {path}"})

    def _ticker_price(self, ws: ServerConnection, market: Market, params: dict[str, str]) -> Response:
        """Binance's ticker/price: `symbol` -> one object; spot `symbols=[...]` or nothing -> a list.
        The price is the symbol's mid (ticks), as text on its grid."""
        one, many = (2, 4) if market is Market.SPOT else (1, 2)
        self.weight_used += one if "symbol" in params else many
        self.ticker_requests += 1
        if "symbols" in params and market is Market.USDM:
            return self._json(ws, 400, {"code": -1101, "msg": "Unknown parameter symbols"})
        if "symbol" in params:
            names = [params["symbol"].upper()]
        elif "symbols" in params:
            names = [str(n).upper() for n in orjson.loads(params["symbols"])]
        else:
            names = [s for m, s in [*self.books, *self._recorded_snapshots] if m is market]
        body = []
        for name in names:
            price = self._mid_text(market, name)
            if price is None:
                return self._json(ws, 400, {"code": -1121, "msg": "Invalid symbol."})
            body.append({"symbol": name, "price": price})
        return self._json(ws, 200, body[0] if "symbol" in params else body)

    def _mid_text(self, market: Market, symbol: str) -> str | None:
        """A generated symbol's mid; a recorded one's best bid in its recorded snapshot (on the grid)."""
        book = self.books.get((market, symbol))
        if book is not None:
            return book._price(book.mid)
        recorded = self._recorded_snapshots.get((market, symbol))
        if recorded is None:
            return None
        bids = orjson.loads(recorded).get("bids") or [["0"]]
        return str(bids[0][0])

    def set_funding_history(self, symbol: str, records: Iterable[tuple[int, str, str]]) -> None:
        """What `/fapi/v1/fundingRate` serves for `symbol`: (fundingTime ms, fundingRate, markPrice)."""
        self.funding_history[symbol.upper()] = sorted(records)

    def _funding_rate(self, ws: ServerConnection, params: dict[str, str]) -> Response:
        """Binance's fundingRate: startTime/endTime inclusive, ascending, at most `limit` (<= 1000) from
        startTime on."""
        self.weight_used += 1
        self.funding_requests.append(dict(params))
        symbol = params.get("symbol", "").upper()
        start = int(params.get("startTime", "0"))
        end = int(params.get("endTime", str(2**62)))
        limit = min(int(params.get("limit", "100")), 1000)
        records = [r for r in self.funding_history.get(symbol, []) if start <= r[0] <= end][:limit]
        body = [
            {"symbol": symbol, "fundingTime": t, "fundingRate": rate, "markPrice": mark}
            for t, rate, mark in records
        ]
        return self._json(ws, 200, body)

    def exchange_info(self, market: Market) -> dict[str, Any]:
        symbols = []
        for (m, s), inst in self.instruments.items():
            if m is not market:
                continue
            notional = (
                {"filterType": "NOTIONAL", "minNotional": _text(inst.min_notional)}
                if market is Market.SPOT
                else {"filterType": "MIN_NOTIONAL", "notional": _text(inst.min_notional)}
            )
            symbols.append(
                {
                    "symbol": s,
                    "status": "TRADING",
                    "baseAsset": inst.base_asset,
                    "quoteAsset": inst.quote_asset,
                    **({"contractType": "PERPETUAL"} if market is Market.USDM else {}),
                    "filters": [
                        {"filterType": "PRICE_FILTER", "tickSize": _text(inst.tick_size)},
                        {"filterType": "LOT_SIZE", "stepSize": _text(inst.step_size)},
                        notional,
                    ],
                }
            )
        limit = {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": self.weight_limit,
        }
        return {"timezone": "UTC", "rateLimits": [limit], "symbols": symbols}

    # --- recording mode ---
    @classmethod
    def from_recording(
        cls, ws_path: Path, snapshots_path: Path, *, max_frames: int | None = None, **kwargs: Any
    ) -> FakeBinance:
        """Serve a real recording (read with the project's own reader): its frames in order, byte for
        byte, `frames_per_step` per step; its snapshots on REST (the first one of each symbol)."""
        fake = cls((), **kwargs)
        frames: deque[tuple[str, bytes]] = deque()
        for frame in FrameReader(ws_path):
            stream = envelope_stream(frame.frame)
            if stream is not None:
                frames.append((stream, frame.frame))
            if max_frames is not None and len(frames) >= max_frames:
                break
        fake._recording = frames
        fake.frames_per_step = 50
        fake.pause()  # frames flow once the test resumes (after the client connected)
        for snap in read_snapshots(snapshots_path):
            fake._recorded_snapshots.setdefault((snap.market, snap.symbol), orjson.dumps(snap.body))
        return fake

    async def _step_recording(self) -> None:
        assert self._recording is not None
        if not self._recording:
            self.pause()
            return
        for _ in range(min(self.frames_per_step, len(self._recording))):
            stream, raw = self._recording.popleft()
            kind = stream.split("@")[1]
            self.frames_sent += 1
            for conn in list(self.conns):
                if stream in conn.streams and kind not in conn.muted:
                    await self._send(conn, raw)

    @property
    def recording_left(self) -> int:
        return len(self._recording or ())
