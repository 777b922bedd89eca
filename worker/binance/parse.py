"""Binance WebSocket frames and REST bodies -> typed events (`worker/events.py`).

Design and invariants:
- The only module that knows the market-data JSON. Spot and USD-M frames both parse here; the market is
  taken from the caller when it knows it, else inferred from the frame itself: a futures `depthUpdate`
  carries `pu`, a futures `trade` carries `X`, a futures `bookTicker` carries `e`.
- Accepts the combined-stream envelope `{"stream", "data"}` or the bare data object. The stream name's
  kind (`@depth...`, `@trade`, `@bookTicker`) must agree with the data, else `ParseError`.
- Control replies (`{"result": ..., "id": ...}`) are not market data: `parse_frame` returns None.
- Every failure is a `ParseError` (malformed JSON, unknown stream or event, missing field, unknown
  symbol, a price off the tick grid, a non-numeric or negative quantity).
- A market-data quantity off the lot grid is NOT an error: resting orders placed before Binance
  coarsened a step size keep their finer quantities (the spot BTCUSDT recording has 7 such far-away
  levels, e.g. 25.426189 at 200000.00, step 0.00001). Refusing them would resync the symbol forever,
  since every deep snapshot holds them too. Such a quantity is rounded UP to whole lots (never to 0, so
  a live level is never deleted) and counted in `FrameParser.counters["qty_rounded_up"]`.
- The parser keeps no state that a bad frame can corrupt; the caller logs and counts, and the book's
  sequence check turns a lost diff into a gap and a resync of that symbol only.
- Price/quantity text -> integer ticks/lots is the per-level cost of every depth diff (orjson itself is
  ~3 µs of a median depth frame; conversion was most of the rest). Each symbol keeps a bounded cache
  (text -> int) per kind, evicting first-in first-out so memory stays constant however long the worker
  runs. A price miss converts through cached whole and fraction parts (`make_split_converter`), any
  other miss through `make_converter`; both give exactly `Instrument.price_ticks`/`qty_lots` results.
- Exchange times become integer ns: trades use `T` (trade time); depth uses `T` where the venue sends it
  (USD-M) and `E` otherwise.
- USD-M `markPriceUpdate` -> `MarkPrice`: the funding rate `r` must be exact in 1e-8 units (Binance sends
  8 decimals); the mark `p` carries more decimals than the tick, so it is rounded half-even to a tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import orjson

from worker.errors import ConfigError
from worker.events import BookTicker, DepthDiff, DepthSnapshot, Event, Level, Market, MarkPrice, Trade
from worker.instruments import Instrument, OffGridError
from worker.portfolio import RATE_SCALE, FundingRate

MS = 1_000_000
# Entries per symbol and kind (price / quantity), evicted first-in first-out. Binance re-sends the same
# far-away prices over and over: on the spot recording, in the largest diffs, price misses fall from 44%
# (8192 entries, cleared when full) to 27% (16384 FIFO) and 17% (32768 FIFO). A full pair of caches
# holds ~8 MB per symbol and never grows past the bound.
CACHE_BOUND = 32768

_STREAM_KINDS = {
    "depth": "depthUpdate",
    "trade": "trade",
    "bookTicker": "bookTicker",
    "markPrice": "markPriceUpdate",
}


class ParseError(ValueError):
    """A frame or body that cannot become an event; says why, and which symbol when known.

    `event`: the frame's event type (`depthUpdate`, ...) when it got that far. A `depthUpdate` error that
    names a symbol means that symbol's book lost a diff: the caller resyncs it at once.
    """

    def __init__(
        self, reason: str, symbol: str | None = None, market: Market | None = None, event: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.symbol = symbol
        self.market = market
        self.event = event


def make_converter(mantissa: int, decimals: int) -> Callable[[str], int]:
    """A text -> units converter for the grid mantissa × 10^-decimals.

    Same results as `worker.instruments.parse_units` (tests check it) but faster on Binance's
    fixed-decimal text. Only plain ASCII digits with at most one dot are accepted (`int()` alone would
    take signs, spaces, underscores and non-ASCII digits).
    """
    pow10 = [10**i for i in range(40)]

    def convert(text: str) -> int:
        digits = text.replace(".", "", 1)
        if not (digits.isdigit() and digits.isascii()):
            raise OffGridError(text)
        shift = len(digits) - text.find(".") - decimals if len(digits) < len(text) else -decimals
        value = int(digits)
        if shift > 0:
            if shift >= 40:
                raise OffGridError(text)
            value, rest = divmod(value, pow10[shift])
            if rest:
                raise OffGridError(text)
        elif shift < 0:
            value *= pow10[-shift]
        if mantissa != 1:
            value, rest = divmod(value, mantissa)
            if rest:
                raise OffGridError(text)
        return value

    return convert


def make_split_converter(mantissa: int, decimals: int, bound: int = 4096) -> Callable[[str], int]:
    """A price converter that remembers whole parts and fractional parts separately.

    Why: most cache misses are far-away prices seen for the first time, but their parts are not new:
    on the spot recording 150,000 price texts have ~900 distinct whole parts and 100 fractions. A text
    whose two parts are both known converts with two dict lookups (~30% faster than `make_converter`);
    any other text goes through `make_converter`, which validates it, and then teaches its parts.
    Exact: for a valid text, value = whole × 10^decimals + fraction units, each part a function of its
    own digits alone. Only for plain decimal grids (mantissa 1); the caches are cleared when full.
    """
    fallback = make_converter(mantissa, decimals)
    if mantissa != 1:
        return fallback
    wholes: dict[str, int] = {}
    fractions: dict[str, int] = {}
    scale = 10**decimals

    def convert(text: str) -> int:
        dot = text.find(".")
        if dot > 0:
            whole = wholes.get(text[:dot])
            if whole is not None:
                fraction = fractions.get(text[dot + 1 :])
                if fraction is not None:
                    return whole + fraction
        value = fallback(text)  # raises on anything that is not plain on-grid decimal text
        if dot > 0:
            if len(wholes) >= bound:
                wholes.clear()
            if len(fractions) >= bound:
                fractions.clear()
            whole = int(text[:dot]) * scale
            wholes[text[:dot]] = whole
            fractions[text[dot + 1 :]] = value - whole
        return value

    return convert


class _Codec:
    """One symbol's converters and caches; `levels` converts a side of a diff."""

    __slots__ = (
        "_strict_qty",
        "bound",
        "instrument",
        "market",
        "price_of",
        "price_order",
        "prices",
        "qty_order",
        "qtys",
        "rounded",
        "symbol",
    )

    def __init__(self, instrument: Instrument, bound: int = 0) -> None:
        self.instrument = instrument
        self.bound = bound or CACHE_BOUND
        self.symbol = instrument.symbol
        self.market = instrument.market
        self.price_of = make_split_converter(*instrument._price_grid)
        self._strict_qty = make_converter(*instrument._qty_grid)
        self.prices: dict[str, int] = {}
        self.qtys: dict[str, int] = {}
        self.price_order: deque[str] = deque()
        self.qty_order: deque[str] = deque()
        self.rounded = 0

    def qty_of(self, text: str) -> int:
        """Lots in `text`; off the lot grid -> rounded up and counted (see the module docstring)."""
        try:
            return self._strict_qty(text)
        except OffGridError:
            return self._rounded_qty(text)

    def _rounded_qty(self, text: str) -> int:
        digits = text.replace(".", "", 1)
        if not (digits.isascii() and digits.isdigit()):
            raise OffGridError(text) from None
        lots = (Decimal(text) / self.instrument.step_size).to_integral_value(ROUND_CEILING)
        self.rounded += 1
        return int(lots)

    def price(self, text: str) -> int:
        prices = self.prices
        value = prices.get(text)
        if value is None:
            value = self.price_of(text)
            if value <= 0:
                raise OffGridError(f"price {text} is not positive")
            if len(prices) >= self.bound:
                del prices[self.price_order.popleft()]  # first in, first out: size stays at the bound
            prices[text] = value
            self.price_order.append(text)
        return value

    def qty(self, text: str) -> int:
        qtys = self.qtys
        value = qtys.get(text)
        if value is None:
            value = self.qty_of(text)
            if len(qtys) >= self.bound:
                del qtys[self.qty_order.popleft()]
            qtys[text] = value
            self.qty_order.append(text)
        return value

    def levels(self, raw: list[Any]) -> list[Level]:
        """One pass that converts the misses and remembers them (FIFO-bounded, inlined: per-level cost).

        Measured on the recordings: an optimistic all-hits comprehension first (retried on KeyError) was
        ~2 µs slower per depth frame, because most diffs carry at least one new price or quantity.
        """
        prices, qtys = self.prices, self.qtys
        pget, qget = prices.get, qtys.get
        price_of, strict_qty = self.price_of, self._strict_qty
        porder, qorder = self.price_order, self.qty_order
        bound = self.bound
        out = []
        append = out.append
        for p, q in raw:
            price = pget(p)
            if price is None:
                price = price_of(p)
                if price <= 0:
                    raise OffGridError(f"price {p} is not positive")
                if len(prices) >= bound:
                    del prices[porder.popleft()]
                prices[p] = price
                porder.append(p)
            qty = qget(q)
            if qty is None:
                try:
                    qty = strict_qty(q)
                except OffGridError:
                    qty = self._rounded_qty(q)
                if len(qtys) >= bound:
                    del qtys[qorder.popleft()]
                qtys[q] = qty
                qorder.append(q)
            append((price, qty))
        return out

    def levels_uncached(self, raw: list[Any]) -> list[Level]:
        """Snapshot levels: converted directly so a 1000-level body does not flush the hot caches."""
        price_of, qty_of = self.price_of, self.qty_of
        out = []
        for price_text, qty_text in raw:
            price = price_of(price_text)
            if price <= 0:
                raise OffGridError(f"price {price_text} is not positive")
            out.append((price, qty_of(qty_text)))
        return out


_PARSE_FAILURES = (KeyError, TypeError, ValueError, AttributeError, IndexError)


class FrameParser:
    """Stateless apart from conversion caches: one instance per worker (or per replay)."""

    def __init__(self, instruments: Mapping[tuple[Market, str], Instrument], *, cache_bound: int = 0) -> None:
        """`cache_bound`: text -> int entries kept per symbol and kind (default `CACHE_BOUND`)."""
        if cache_bound < 0:
            raise ConfigError("cache_bound", f">= 0 (0 = the default {CACHE_BOUND}), got {cache_bound}")
        self._codecs: dict[Market, dict[str, _Codec]] = {Market.SPOT: {}, Market.USDM: {}}
        for (market, symbol), instrument in instruments.items():
            self._codecs[Market(market)][symbol.upper()] = _Codec(instrument, cache_bound)
        self._stream_kinds: dict[str, str] = {}

    @property
    def counters(self) -> dict[str, int]:
        """Conversion facts worth watching: quantities rounded up to the lot grid (distinct texts)."""
        return {"qty_rounded_up": sum(c.rounded for m in self._codecs.values() for c in m.values())}

    @property
    def symbols(self) -> list[tuple[Market, str]]:
        return [(market, symbol) for market, codecs in self._codecs.items() for symbol in codecs]

    # --- frames ---
    def parse_frame(self, text: str | bytes, recv_ns: int, market: Market | None = None) -> Event | None:
        """One WebSocket text frame -> event, or None for a control reply. Raises `ParseError`."""
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"malformed JSON: {exc}") from None
        if type(obj) is not dict:
            raise ParseError(f"frame is not a JSON object: {type(obj).__name__}")
        return self.parse_message(obj, recv_ns, market)

    def parse_message(self, obj: dict[str, Any], recv_ns: int, market: Market | None = None) -> Event | None:
        """An already-decoded frame object -> event (the same rules as `parse_frame`)."""
        stream = obj.get("stream")
        data = obj.get("data")
        if stream is None and data is None:
            if "result" in obj and "id" in obj:
                return None
            data = obj
        elif type(data) is not dict or type(stream) is not str:
            raise ParseError(f"bad combined-stream envelope (stream={stream!r})")
        kind = data.get("e")
        if kind is None and "u" in data and "A" in data:
            kind = "bookTicker"  # spot bookTicker frames carry no event type
        if stream is not None:
            expected = self._stream_kinds.get(stream)
            if expected is None:
                expected = self._stream_kind(stream)
            if kind != expected:
                raise ParseError(f"stream {stream} carries event {kind!r}, expected {expected}")
        try:
            if kind == "depthUpdate":
                return self._depth(data, recv_ns, market)
            if kind == "bookTicker":
                return self._book_ticker(data, recv_ns, market)
            if kind == "trade":
                return self._trade(data, recv_ns, market)
            if kind == "markPriceUpdate":
                return self._mark_price(data, recv_ns)
        except ParseError as exc:
            exc.event = kind
            raise
        except _PARSE_FAILURES as exc:
            symbol = data.get("s") if isinstance(data.get("s"), str) else None
            if market is None and kind == "depthUpdate":  # the same inference as `_depth`
                market = Market.SPOT if data.get("pu") is None else Market.USDM
            raise ParseError(f"bad {kind} frame: {type(exc).__name__}: {exc}", symbol, market, kind) from None
        raise ParseError(f"unknown event type {kind!r}")

    def _stream_kind(self, stream: str) -> str:
        _, at, rest = stream.partition("@")
        kind = _STREAM_KINDS.get(rest.partition("@")[0]) if at else None
        if kind is None:
            raise ParseError(f"unknown stream {stream!r}")
        if len(self._stream_kinds) < 1024:
            self._stream_kinds[stream] = kind
        return kind

    def _codec(self, symbol: Any, market: Market) -> _Codec:
        codec = self._codecs[market].get(symbol)
        if codec is None:
            raise ParseError(f"unknown symbol {market.value}:{symbol}", str(symbol), market)
        return codec

    def _depth(self, d: dict[str, Any], recv_ns: int, market: Market | None) -> DepthDiff:
        pu = d.get("pu")
        if market is None:
            market = Market.SPOT if pu is None else Market.USDM
        elif market is Market.USDM and pu is None:
            raise ParseError("USD-M depthUpdate without pu", d.get("s"), market)
        codec = self._codec(d["s"], market)
        first, final = d["U"], d["u"]
        if type(first) is not int or type(final) is not int or first > final:
            raise ParseError(f"bad update ids U={first!r} u={final!r}", codec.symbol, market)
        if pu is not None and type(pu) is not int:
            raise ParseError(f"bad pu={pu!r}", codec.symbol, market)
        exchange_ms = d.get("T") or d["E"]
        try:
            bids = codec.levels(d["b"])
            asks = codec.levels(d["a"])
        except OffGridError as exc:
            raise ParseError(f"off-grid level {exc}", codec.symbol, market) from None
        return DepthDiff(codec.symbol, market, first, final, pu, bids, asks, int(exchange_ms) * MS, recv_ns)

    def _trade(self, d: dict[str, Any], recv_ns: int, market: Market | None) -> Trade:
        if market is None:
            market = Market.USDM if "X" in d else Market.SPOT
        codec = self._codec(d["s"], market)
        maker = d["m"]
        trade_id = d["t"]
        if type(maker) is not bool or type(trade_id) is not int:
            raise ParseError(f"bad trade fields t={trade_id!r} m={maker!r}", codec.symbol, market)
        try:
            price = codec.price(d["p"])
            qty = codec.qty(d["q"])
        except OffGridError as exc:
            raise ParseError(f"off-grid trade {exc}", codec.symbol, market) from None
        return Trade(codec.symbol, market, trade_id, price, qty, maker, int(d["T"]) * MS, recv_ns)

    def _book_ticker(self, d: dict[str, Any], recv_ns: int, market: Market | None) -> BookTicker:
        if market is None:
            market = Market.USDM if "e" in d else Market.SPOT
        codec = self._codec(d["s"], market)
        update_id = d["u"]
        if type(update_id) is not int:
            raise ParseError(f"bad bookTicker u={update_id!r}", codec.symbol, market)
        try:
            return BookTicker(
                codec.symbol,
                market,
                update_id,
                codec.price(d["b"]),
                codec.qty(d["B"]),
                codec.price(d["a"]),
                codec.qty(d["A"]),
                recv_ns,
            )
        except OffGridError as exc:
            raise ParseError(f"off-grid bookTicker {exc}", codec.symbol, market) from None

    def _mark_price(self, d: dict[str, Any], recv_ns: int) -> MarkPrice:
        codec = self._codec(d["s"], Market.USDM)
        next_funding_ms, event_ms = d["T"], d["E"]
        if type(next_funding_ms) is not int or type(event_ms) is not int:
            raise ParseError(
                f"bad markPriceUpdate T={next_funding_ms!r} E={event_ms!r}", codec.symbol, codec.market
            )
        try:
            mark = Decimal(d["p"])
            rate = Decimal(d["r"]) * RATE_SCALE
        except (InvalidOperation, TypeError):
            raise ParseError(
                f"bad markPriceUpdate p={d['p']!r} r={d['r']!r}", codec.symbol, codec.market
            ) from None
        units = _funding_units(rate, mark, codec.instrument)
        if units is None:
            raise ParseError(
                f"markPriceUpdate p={d['p']!r} r={d['r']!r}: a positive mark and a rate in 1e-8 steps",
                codec.symbol,
                codec.market,
            )
        rate_e8, ticks = units
        return MarkPrice(
            codec.symbol, codec.market, ticks, rate_e8, next_funding_ms * MS, event_ms * MS, recv_ns
        )

    # --- REST bodies ---
    def parse_snapshot(
        self, body: str | bytes | dict[str, Any], symbol: str, market: Market, recv_ns: int
    ) -> DepthSnapshot:
        """A `/api/v3/depth` or `/fapi/v1/depth` response body -> `DepthSnapshot`. Raises `ParseError`."""
        market = Market(market)
        codec = self._codec(symbol.upper(), market)
        if not isinstance(body, dict):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"malformed snapshot JSON: {exc}", codec.symbol, market) from None
        try:
            last_update_id = body["lastUpdateId"]
            if type(last_update_id) is not int:
                raise TypeError(f"lastUpdateId={last_update_id!r}")
            bids = codec.levels_uncached(body["bids"])
            asks = codec.levels_uncached(body["asks"])
        except ParseError:
            raise
        except OffGridError as exc:
            raise ParseError(f"off-grid snapshot level {exc}", codec.symbol, market) from None
        except _PARSE_FAILURES as exc:
            raise ParseError(f"bad snapshot: {type(exc).__name__}: {exc}", codec.symbol, market) from None
        return DepthSnapshot(codec.symbol, market, last_update_id, bids, asks, recv_ns)


def parse_exchange_info(
    body: str | bytes | dict[str, Any], market: Market, symbols: Iterable[str] | None = None
) -> dict[tuple[Market, str], Instrument]:
    """`exchangeInfo` body -> instruments keyed like `DEFAULT_INSTRUMENTS`.

    Tick from PRICE_FILTER.tickSize, step from LOT_SIZE.stepSize, minimum notional from NOTIONAL
    (spot, `minNotional`) or MIN_NOTIONAL (older spot `minNotional`, USD-M `notional`). With `symbols`,
    only those are returned and a missing one raises `ConfigError`; a symbol whose filters cannot be
    represented exactly raises `ConfigError` (refuse at start rather than round later).
    """
    market = Market(market)
    if not isinstance(body, dict):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ConfigError("exchangeInfo", f"valid JSON ({exc})") from None
    wanted = {s.upper() for s in symbols} if symbols is not None else None
    found: dict[tuple[Market, str], Instrument] = {}
    for entry in body.get("symbols", []):
        name = str(entry.get("symbol", "")).upper()
        if wanted is not None and name not in wanted:
            continue
        filters = {f.get("filterType"): f for f in entry.get("filters", [])}
        try:
            tick = Decimal(filters["PRICE_FILTER"]["tickSize"])
            step = Decimal(filters["LOT_SIZE"]["stepSize"])
            notional_filter = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
            min_notional = Decimal(notional_filter.get("minNotional", notional_filter.get("notional", "0")))
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise ConfigError(f"exchangeInfo {name} filters", f"PRICE_FILTER and LOT_SIZE ({exc})") from None
        found[(market, name)] = Instrument(
            name,
            market,
            tick.normalize(),
            step.normalize(),
            min_notional,
            str(entry.get("baseAsset", "")),
            str(entry.get("quoteAsset", "USDT")),
        )
    if wanted is not None:
        missing = sorted(wanted - {s for _, s in found})
        if missing:
            raise ConfigError("symbols", f"listed in {market.value} exchangeInfo; missing {missing}")
    return found


def parse_ticker_prices(body: str | bytes | Any, symbols: Iterable[str]) -> dict[str, Decimal]:
    """`ticker/price` body (one `{"symbol","price"}` object or a list of them) -> price by symbol, for
    `symbols` only. Raises `ParseError` on a malformed body or a missing/unreadable price."""
    if isinstance(body, str | bytes):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"malformed ticker/price JSON: {exc}") from None
    entries = [body] if isinstance(body, dict) else body
    if not isinstance(entries, list):
        raise ParseError(f"ticker/price body is a {type(body).__name__}, not a list")
    wanted = {s.upper() for s in symbols}
    prices: dict[str, Decimal] = {}
    for entry in entries:
        if not isinstance(entry, dict) or str(entry.get("symbol", "")).upper() not in wanted:
            continue
        symbol = str(entry["symbol"]).upper()
        try:
            price = Decimal(str(entry["price"]))
        except (KeyError, InvalidOperation):
            raise ParseError(f"ticker/price {symbol}: bad price {entry.get('price')!r}", symbol) from None
        if not price.is_finite() or price <= 0:
            raise ParseError(f"ticker/price {symbol}: price {entry['price']!r} is not positive", symbol)
        prices[symbol] = price
    missing = sorted(wanted - set(prices))
    if missing:
        raise ParseError(f"ticker/price has no price for {missing}")
    return prices


def _funding_units(rate_e8: Decimal, mark: Decimal, instrument: Instrument) -> tuple[int, int] | None:
    """(rate in 1e-8 units, mark in ticks) of a funding record (`markPriceUpdate` or the REST history):
    None unless the rate is exact in 1e-8 steps and the mark a positive number; the mark is rounded
    half-even to a tick (at least one)."""
    if not rate_e8.is_finite() or rate_e8 != rate_e8.to_integral_value() or not mark.is_finite() or mark <= 0:
        return None
    ticks = int((mark / instrument.tick_size).to_integral_value(ROUND_HALF_EVEN))
    return int(rate_e8), max(ticks, 1)


def parse_funding_history(body: str | bytes | Any, instrument: Instrument, recv_ns: int) -> list[FundingRate]:
    """USD-M `/fapi/v1/fundingRate` body -> `FundingRate`s of `instrument`, in funding-time order.

    Each record: `fundingTime` (ms), `fundingRate` (exact in 1e-8 units, as the mark price stream's `r`),
    `markPrice` (more decimals than the tick: rounded half-even to a tick, as `markPriceUpdate`). A record
    that breaks any of these raises `ParseError`: settling funding on a guess would corrupt the ledger.
    """
    if isinstance(body, str | bytes):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"malformed fundingRate JSON: {exc}", instrument.symbol, Market.USDM) from None
    if not isinstance(body, list):
        raise ParseError(f"fundingRate body is a {type(body).__name__}, not a list", instrument.symbol)
    rates = []
    for entry in body:
        try:
            if str(entry["symbol"]).upper() != instrument.symbol:
                continue
            funding_ms = entry["fundingTime"]
            if type(funding_ms) is not int:
                raise TypeError(f"fundingTime={funding_ms!r}")
            rate = Decimal(str(entry["fundingRate"])) * RATE_SCALE
            mark = Decimal(str(entry["markPrice"]))
        except (KeyError, TypeError, InvalidOperation) as exc:
            reason = f"bad fundingRate record {entry!r}: {type(exc).__name__}: {exc}"
            raise ParseError(reason, instrument.symbol, Market.USDM) from None
        units = _funding_units(rate, mark, instrument)
        if units is None:
            raise ParseError(
                f"fundingRate record {entry!r}: a rate in 1e-8 steps and a positive mark price",
                instrument.symbol,
                Market.USDM,
            )
        rate_e8, ticks = units
        rates.append(FundingRate(instrument.symbol, rate_e8, ticks, funding_ms * MS, recv_ns))
    rates.sort(key=lambda r: r.funding_ns)
    return rates
