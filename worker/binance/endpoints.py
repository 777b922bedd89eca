"""Binance base URLs, stream names and combined-stream URLs: configuration, not constants in code.

Design:
- `Endpoints` holds every base URL the worker talks to; tests build one pointing at 127.0.0.1 and the
  worker reaches the loopback stand-in through exactly the same code as Binance.
- Spot serves depth and trades on one combined-stream connection. USD-M split its routes in 2026:
  depth (and bookTicker) on `/public`, trades and mark price on `/market`; so USD-M needs two
  connections. The mark price stream (`@markPrice@1s`) carries the funding rate and the next funding
  time: without it a paper futures position would never pay funding.
- `connection_specs` is the single place that decides which streams share a connection; it caps a
  connection at `MAX_STREAMS_PER_CONNECTION` streams (Binance allows 1024; fewer keeps a reconnect cheap).
- Stream names are lowercase (Binance's rule); symbols elsewhere are uppercase.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from worker.errors import ConfigError
from worker.events import Market

MAX_STREAMS_PER_CONNECTION = 200

# Request weights of the REST calls we make (Binance's published tables) and per-minute weight limits.
DEPTH_LIMIT = 1000
DEPTH_WEIGHT = {Market.SPOT: {100: 5, 500: 25, 1000: 50, 5000: 250}, Market.USDM: {100: 5, 500: 10, 1000: 20}}
EXCHANGE_INFO_WEIGHT = {Market.SPOT: 20, Market.USDM: 1}
# ticker/price: (one symbol, several or all). Spot: 2 with `symbol`, 4 with `symbols` or none. USD-M
# (no `symbols` parameter): 1 with `symbol`, 2 for all symbols.
TICKER_PRICE_WEIGHT = {Market.SPOT: (2, 4), Market.USDM: (1, 2)}
# fundingRate has its own limit (500 requests / 5 min / IP, shared with fundingInfo), not the weight
# table; it is counted as 1 against the weight budget so it still paces with the other calls.
FUNDING_RATE_WEIGHT = 1
FUNDING_RATE_LIMIT = 1000  # records per page (Binance's maximum)
WEIGHT_LIMIT_1M = {Market.SPOT: 6000, Market.USDM: 2400}

USDM_DEPTH_SPEEDS = ("0ms", "100ms", "250ms", "500ms")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs (no trailing slash). Defaults are Binance's production hosts."""

    spot_ws: str = "wss://stream.binance.com:9443"
    spot_rest: str = "https://api.binance.com"
    usdm_ws: str = "wss://fstream.binance.com"
    usdm_rest: str = "https://fapi.binance.com"
    usdm_depth_speed: str = "100ms"

    def __post_init__(self) -> None:
        if self.usdm_depth_speed not in USDM_DEPTH_SPEEDS:
            raise ConfigError("usdm_depth_speed", f"one of {', '.join(USDM_DEPTH_SPEEDS)}")
        for name in ("spot_ws", "usdm_ws"):
            if not getattr(self, name).startswith(("ws://", "wss://")):
                raise ConfigError(name, "a ws:// or wss:// URL")
        for name in ("spot_rest", "usdm_rest"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise ConfigError(name, "an http:// or https:// URL")

    @classmethod
    def loopback(cls, ws_port: int, rest_port: int | None = None, usdm_depth_speed: str = "0ms") -> Endpoints:
        """Every URL on 127.0.0.1: what the tests and the stand-in use."""
        rest_port = ws_port if rest_port is None else rest_port
        return cls(
            spot_ws=f"ws://127.0.0.1:{ws_port}",
            spot_rest=f"http://127.0.0.1:{rest_port}",
            usdm_ws=f"ws://127.0.0.1:{ws_port}",
            usdm_rest=f"http://127.0.0.1:{rest_port}",
            usdm_depth_speed=usdm_depth_speed,
        )

    def rest_base(self, market: Market) -> str:
        return self.spot_rest if market is Market.SPOT else self.usdm_rest

    def depth_path(self, market: Market) -> str:
        return "/api/v3/depth" if market is Market.SPOT else "/fapi/v1/depth"

    def exchange_info_path(self, market: Market) -> str:
        return "/api/v3/exchangeInfo" if market is Market.SPOT else "/fapi/v1/exchangeInfo"

    def ticker_price_path(self, market: Market) -> str:
        return "/api/v3/ticker/price" if market is Market.SPOT else "/fapi/v1/ticker/price"

    def funding_rate_path(self) -> str:
        return "/fapi/v1/fundingRate"  # USD-M only

    def depth_stream(self, market: Market, symbol: str) -> str:
        """Spot `<sym>@depth@100ms`. USD-M: Binance documents `<sym>@depth` (250 ms), `@depth@500ms` and
        `@depth@100ms`; 250 ms is the BARE name (`@depth@250ms` is not a documented stream). `@depth@0ms`
        is what the reference USD-M recording subscribed (data README)."""
        if market is Market.SPOT:
            return f"{symbol.lower()}@depth@100ms"
        speed = self.usdm_depth_speed
        return f"{symbol.lower()}@depth" if speed == "250ms" else f"{symbol.lower()}@depth@{speed}"


def trade_stream(symbol: str) -> str:
    return f"{symbol.lower()}@trade"


def mark_price_stream(symbol: str) -> str:
    return f"{symbol.lower()}@markPrice@1s"


def book_ticker_stream(symbol: str) -> str:
    return f"{symbol.lower()}@bookTicker"


def combined_url(base: str, streams: Iterable[str], route: str = "") -> str:
    """`<base>[/route]/stream?streams=a/b/c`: Binance's combined-stream endpoint."""
    names = list(streams)
    if not names:
        raise ConfigError("streams", "at least one stream name")
    prefix = f"{base.rstrip('/')}/{route.strip('/')}" if route else base.rstrip("/")
    return f"{prefix}/stream?streams={'/'.join(names)}"


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """One WebSocket connection: its name (for logs and counters), URL and the streams it carries."""

    name: str
    market: Market
    url: str
    streams: tuple[str, ...]
    symbols: tuple[str, ...]


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def connection_specs(
    endpoints: Endpoints,
    market: Market,
    symbols: Iterable[str],
    *,
    book_ticker: bool = False,
    max_streams: int = MAX_STREAMS_PER_CONNECTION,
) -> list[ConnectionSpec]:
    """The connections needed for depth + trades (+ bookTicker; + mark price on USD-M) of `symbols`.

    A symbol's depth streams always stay on one connection so a reconnect resyncs whole symbols.
    """
    syms = sorted({s.upper() for s in symbols})
    if not syms:
        raise ConfigError("symbols", "at least one symbol")
    per_symbol_depth = 2 if book_ticker else 1
    specs: list[ConnectionSpec] = []

    def add(name: str, base: str, route: str, names_for: object, per_symbol: int) -> None:
        group = max(1, max_streams // per_symbol)
        for n, chunk in enumerate(_chunks(syms, group)):
            streams = [s for sym in chunk for s in names_for(sym)]  # type: ignore[operator]
            label = name if n == 0 else f"{name}-{n}"
            url = combined_url(base, streams, route)
            specs.append(ConnectionSpec(label, market, url, tuple(streams), tuple(chunk)))

    def depth_names(sym: str) -> list[str]:
        names = [endpoints.depth_stream(market, sym)]
        if book_ticker:
            names.append(book_ticker_stream(sym))
        return names

    if market is Market.SPOT:
        add("spot", endpoints.spot_ws, "", lambda s: [*depth_names(s), trade_stream(s)], per_symbol_depth + 1)
    else:
        add("usdm-public", endpoints.usdm_ws, "public", depth_names, per_symbol_depth)
        add("usdm-market", endpoints.usdm_ws, "market", lambda s: [trade_stream(s), mark_price_stream(s)], 2)
    return specs
