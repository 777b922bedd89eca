"""Binance REST: depth snapshots, exchangeInfo, latest prices and funding history, spending request
weight like money.

Design and invariants:
- Every request first reserves its weight in a `WeightBudget`. The budget follows Binance's own count
  (`X-MBX-USED-WEIGHT-1m` on every response) and, when the next request would pass `headroom` × the
  per-minute limit, waits for the next minute window instead of sending. Snapshot storms therefore
  slow down; they never earn a 429.
- A 429 blocks ALL requests of this client for `Retry-After` seconds (default 60), then retries.
- A 418 (IP ban) blocks all requests for the ban's `Retry-After` (default 120 s); the client never sends
  anything while blocked. Pressing on after a 418 only lengthens the ban.
- 5xx, timeouts (slow responses) and transport errors are retried with capped exponential backoff and
  full jitter, `max_attempts` times, then raise `RestError`. Other 4xx raise at once: retrying a bad
  request cannot help.
- Bodies are returned raw (bytes) with the receive time, so the recorder stores them byte for byte and
  the parser (`worker.binance.parse`) turns them into events.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from worker.binance.endpoints import (
    DEPTH_LIMIT,
    DEPTH_WEIGHT,
    EXCHANGE_INFO_WEIGHT,
    FUNDING_RATE_LIMIT,
    FUNDING_RATE_WEIGHT,
    TICKER_PRICE_WEIGHT,
    WEIGHT_LIMIT_1M,
    Endpoints,
)
from worker.events import Market
from worker.instruments import Instrument
from worker.portfolio import FundingRate

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class RestError(RuntimeError):
    """A REST call that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base·2^attempt)]; spreads retries of many clients."""
    return random.uniform(0.0, min(cap, base * (2**attempt)))


class WeightBudget:
    """Binance's request-weight-per-minute limit, tracked on our side so we wait instead of exceeding it.

    - Windows are wall-clock minutes (`window_s`), as Binance counts them.
    - `used` is the larger of our own running sum and the last `X-MBX-USED-WEIGHT-1m` seen in the window.
    """

    def __init__(
        self,
        limit: int,
        *,
        headroom: float = 0.8,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.headroom = headroom
        self.window_s = window_s
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self.window = int(clock() // window_s)
        self.used = 0
        self.waits = 0
        self.waited_s = 0.0

    @property
    def allowance(self) -> int:
        return int(self.limit * self.headroom)

    def _roll(self) -> float:
        now = self._clock()
        window = int(now // self.window_s)
        if window != self.window:
            self.window, self.used = window, 0
        return now

    async def acquire(self, weight: int) -> None:
        """Reserve `weight`, waiting for the next window when it does not fit in this one."""
        async with self._lock:
            while True:
                now = self._roll()
                if self.used + weight <= self.allowance or self.used == 0:
                    self.used += weight
                    return
                wait = (self.window + 1) * self.window_s - now + 0.01
                self.waits += 1
                self.waited_s += wait
                log.warning(
                    "request weight %d/%d used this minute; waiting %.2f s before spending %d more",
                    self.used,
                    self.limit,
                    wait,
                    weight,
                )
                await self._sleep(wait)

    def observe(self, header: str | None) -> None:
        """Take Binance's own count from `X-MBX-USED-WEIGHT-1m` (it includes requests of other clients)."""
        if header is None:
            return
        try:
            value = int(header)
        except ValueError:
            log.warning("ignoring unreadable X-MBX-USED-WEIGHT-1m header %r", header)
            return
        self._roll()
        self.used = max(self.used, value)


@dataclass(slots=True)
class RestCounters:
    requests: int = 0
    snapshot_requests: int = 0
    http_429: int = 0
    http_418: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    transport_errors: int = 0
    retries: int = 0
    failures: int = 0


def _retry_after(response: httpx.Response, default: float) -> float:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else default
    except ValueError:
        return default


class BinanceRest:
    """One market's REST client. Share one instance per market: the weight budget is per IP."""

    def __init__(
        self,
        market: Market,
        endpoints: Endpoints,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        budget: WeightBudget | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.market = market
        self.base = endpoints.rest_base(market)
        self.endpoints = endpoints
        self._own_client = client is None
        if client is None:
            import httpx  # here, not at import: replay never talks REST and httpx costs ~16 MB of RSS

            client = httpx.AsyncClient(timeout=timeout)
        self._client = client
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.budget = budget or WeightBudget(WEIGHT_LIMIT_1M[market])
        self._sleep = sleep
        self._monotonic = monotonic
        self.blocked_until = 0.0  # monotonic time before which nothing is sent (429 / 418)
        self.blocked_reason = ""
        self.counters = RestCounters()
        self._instruments: dict[tuple[Market, str], Instrument] = {}  # from `instruments()` calls

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- public calls ---
    async def depth(self, symbol: str, limit: int = DEPTH_LIMIT) -> tuple[bytes, int]:
        """Raw depth-snapshot body and its receive time (ns since the epoch)."""
        try:
            weight = DEPTH_WEIGHT[self.market][limit]
        except KeyError:
            raise RestError(f"depth limit {limit} not one of {sorted(DEPTH_WEIGHT[self.market])}") from None
        self.counters.snapshot_requests += 1
        params = {"symbol": symbol.upper(), "limit": str(limit)}
        response = await self._get(self.endpoints.depth_path(self.market), params, weight)
        return response.content, time.time_ns()

    async def exchange_info(self, symbols: Iterable[str] = ()) -> dict[str, Any]:
        params: dict[str, str] = {}
        names = sorted({s.upper() for s in symbols})
        if names and self.market is Market.SPOT:  # USD-M has no symbol filter; it returns everything
            params["symbols"] = orjson.dumps(names).decode()
        response = await self._get(
            self.endpoints.exchange_info_path(self.market), params, EXCHANGE_INFO_WEIGHT[self.market]
        )
        body = orjson.loads(response.content)
        self._adopt_rate_limit(body)
        return body

    async def instruments(self, symbols: Iterable[str]) -> dict[tuple[Market, str], Instrument]:
        """Tick size, step size and min notional of `symbols` from exchangeInfo; a missing one raises
        `ConfigError`."""
        from worker.binance.parse import parse_exchange_info  # the parser owns Binance's filter JSON

        wanted = {s.upper() for s in symbols}
        found = parse_exchange_info(await self.exchange_info(wanted), self.market, wanted)
        self._instruments.update(found)
        return found

    async def ticker_prices(self, symbols: list[str]) -> dict[str, Decimal]:
        """Latest price of each of `symbols` (GET ticker/price), exact as Binance sent it.

        One request: spot with `symbols=[...]` (or `symbol` for one); USD-M has no `symbols` parameter, so
        several symbols are one all-symbols request (weight 2) filtered here. Raises `RestError` when the
        body is unreadable or a symbol has no price.
        """
        from worker.binance.parse import ParseError, parse_ticker_prices

        names = sorted({s.upper() for s in symbols})
        if not names:
            return {}
        one, many = TICKER_PRICE_WEIGHT[self.market]
        params: dict[str, str] = {}
        if len(names) == 1:
            params["symbol"] = names[0]
        elif self.market is Market.SPOT:
            params["symbols"] = orjson.dumps(names).decode()
        response = await self._get(
            self.endpoints.ticker_price_path(self.market), params, one if "symbol" in params else many
        )
        try:
            return parse_ticker_prices(response.content, names)
        except ParseError as exc:
            self.counters.failures += 1
            raise RestError(f"GET ticker/price {params}: {exc}") from exc

    async def funding_history(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        """USD-M funding events of `symbol` with `start_ms <= fundingTime <= end_ms`, oldest first.

        GET /fapi/v1/fundingRate (limit 1000 a page; a longer span is paged by the last funding time).
        Marks are rounded half-even to the symbol's tick (its filters come from exchangeInfo, fetched
        once if `instruments()` has not been called for it). Raises `RestError`.
        """
        from worker.binance.parse import ParseError, parse_funding_history

        if self.market is not Market.USDM:
            raise RestError("funding history exists on USD-M only")
        name = symbol.upper()
        instrument = self._instruments.get((Market.USDM, name))
        if instrument is None:
            instrument = (await self.instruments([name]))[(Market.USDM, name)]
        rates: list[FundingRate] = []
        start = start_ms
        while start <= end_ms:
            params = {
                "symbol": name,
                "startTime": str(start),
                "endTime": str(end_ms),
                "limit": str(FUNDING_RATE_LIMIT),
            }
            response = await self._get(self.endpoints.funding_rate_path(), params, FUNDING_RATE_WEIGHT)
            try:
                page = parse_funding_history(response.content, instrument, time.time_ns())
            except ParseError as exc:
                self.counters.failures += 1
                raise RestError(f"GET fundingRate {params}: {exc}") from exc
            rates.extend(r for r in page if not rates or r.funding_ns > rates[-1].funding_ns)
            if len(page) < FUNDING_RATE_LIMIT:
                break
            start = page[-1].funding_ns // 1_000_000 + 1
        return rates

    # --- machinery ---
    def _adopt_rate_limit(self, body: dict[str, Any]) -> None:
        for rule in body.get("rateLimits", ()):
            if (
                rule.get("rateLimitType") == "REQUEST_WEIGHT"
                and rule.get("interval") == "MINUTE"
                and rule.get("intervalNum") == 1
            ):
                self.budget.limit = int(rule["limit"])

    def _block(self, seconds: float, reason: str) -> None:
        until = self._monotonic() + seconds
        if until > self.blocked_until:
            self.blocked_until, self.blocked_reason = until, reason

    async def _wait_unblocked(self) -> None:
        while (left := self.blocked_until - self._monotonic()) > 0:
            await self._sleep(left)

    async def _get(self, path: str, params: dict[str, str], weight: int) -> httpx.Response:
        import httpx  # already loaded by the client's creation; a dict lookup

        url = self.base + path
        attempt = 0
        while True:
            await self._wait_unblocked()
            await self.budget.acquire(weight)
            self.counters.requests += 1
            problem: str
            try:
                response = await self._client.get(url, params=params, timeout=self.timeout)
            except httpx.TimeoutException:
                self.counters.timeouts += 1
                problem = f"no response within {self.timeout} s"
            except httpx.TransportError as exc:
                self.counters.transport_errors += 1
                problem = f"transport error: {exc!r}"
            else:
                self.budget.observe(response.headers.get("x-mbx-used-weight-1m"))
                status = response.status_code
                if status == 200:
                    return response
                if status == 429:
                    self.counters.http_429 += 1
                    wait = _retry_after(response, 60.0)
                    log.warning("GET %s: 429 rate limited; sending nothing for %.1f s", path, wait)
                    self._block(wait, "429")
                    continue  # honouring Retry-After is not a failed attempt
                if status == 418:
                    self.counters.http_418 += 1
                    wait = _retry_after(response, 120.0)
                    log.error("GET %s: 418 IP banned; sending nothing for %.1f s", path, wait)
                    self._block(wait, "418")
                    continue
                if status >= 500:
                    self.counters.http_5xx += 1
                    problem = f"HTTP {status}"
                else:
                    self.counters.failures += 1
                    raise RestError(f"GET {path} {params}: HTTP {status}: {response.text[:200]}", status)
            attempt += 1
            if attempt >= self.max_attempts:
                self.counters.failures += 1
                raise RestError(f"GET {path} {params}: {problem}, giving up after {attempt} attempts")
            self.counters.retries += 1
            delay = full_jitter(attempt, self.backoff_base, self.backoff_cap)
            log.warning("GET %s: %s; retry %d in %.2f s", path, problem, attempt, delay)
            await self._sleep(delay)
