"""Binance frame parsing: both markets, inference, exact integers, and every kind of bad input."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.binance.parse import (
    FrameParser,
    ParseError,
    make_converter,
    make_split_converter,
    parse_exchange_info,
)
from worker.errors import ConfigError
from worker.events import BookTicker, DepthDiff, DepthSnapshot, Market, Trade
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument, OffGridError

SPOT_DEPTH = (
    b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,"s":"BTCUSDT",'
    b'"U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"],["61730.17000000","1.50000000"]],'
    b'"a":[["61837.64000000","1.54698000"]]}}'
)
USDM_DEPTH = (
    b'{"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1723161256501,"T":1723161256493,'
    b'"s":"BTCUSDT","U":5123107850310,"u":5123107853551,"pu":5123107850300,'
    b'"b":[["61800.20","2.909"]],"a":[["61800.30","0.000"],["61800.40","12.5"]]}}'
)
SPOT_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,'
    b'"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)
USDM_TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256321,"s":"BTCUSDT",'
    b'"t":5266583935,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}'
)
SPOT_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000",'
    b'"B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}'
)
USDM_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":5123107839020,"s":"BTCUSDT",'
    b'"b":"61800.20","B":"2.507","a":"61800.30","A":"2.510","T":1723161256313,"E":1723161256313}}'
)


@pytest.fixture
def parser() -> FrameParser:
    return FrameParser(DEFAULT_INSTRUMENTS)


def test_spot_depth_envelope(parser: FrameParser) -> None:
    event = parser.parse_frame(SPOT_DEPTH, 7)
    assert event == DepthDiff(
        "BTCUSDT",
        Market.SPOT,
        50093239189,
        50093239202,
        None,
        [(6173763, 0), (6173017, 150000)],
        [(6183764, 154698)],
        1723161255208 * 1_000_000,
        7,
    )


def test_usdm_depth_inferred_from_pu_and_uses_transaction_time(parser: FrameParser) -> None:
    event = parser.parse_frame(USDM_DEPTH.decode(), 9)
    assert isinstance(event, DepthDiff)
    assert event.market is Market.USDM
    assert event.prev_final_id == 5123107850300
    assert event.bids == [(618002, 2909)]
    assert event.asks == [(618003, 0), (618004, 12500)]
    assert event.exchange_ns == 1723161256493 * 1_000_000


def test_bare_data_object_and_explicit_market(parser: FrameParser) -> None:
    bare = orjson.dumps(orjson.loads(SPOT_DEPTH)["data"])
    assert parser.parse_frame(bare, 1) == parser.parse_frame(SPOT_DEPTH, 1)
    event = parser.parse_frame(bare, 1, Market.SPOT)
    assert isinstance(event, DepthDiff) and event.market is Market.SPOT


def test_usdm_depth_without_pu_is_refused_when_market_is_usdm(parser: FrameParser) -> None:
    with pytest.raises(ParseError, match="without pu"):
        parser.parse_frame(SPOT_DEPTH, 1, Market.USDM)


def test_trades_both_markets(parser: FrameParser) -> None:
    spot = parser.parse_frame(SPOT_TRADE, 3)
    assert spot == Trade("BTCUSDT", Market.SPOT, 3735683259, 6183763, 2000, True, 1723161255342 * 10**6, 3)
    assert spot.aggressor_sign == -1
    usdm = parser.parse_frame(USDM_TRADE, 4)
    assert usdm == Trade("BTCUSDT", Market.USDM, 5266583935, 618003, 6, False, 1723161256321 * 10**6, 4)


def test_book_tickers_both_markets(parser: FrameParser) -> None:
    spot = parser.parse_frame(SPOT_TICKER, 5)
    assert spot == BookTicker("BTCUSDT", Market.SPOT, 50093239212, 6183763, 378826, 6183764, 154698, 5)
    usdm = parser.parse_frame(USDM_TICKER, 6)
    assert usdm == BookTicker("BTCUSDT", Market.USDM, 5123107839020, 618002, 2507, 618003, 2510, 6)


def test_control_reply_is_not_an_event(parser: FrameParser) -> None:
    assert parser.parse_frame(b'{"result":null,"id":1}', 1) is None


def test_same_text_gives_same_result_through_the_cache(parser: FrameParser) -> None:
    first = parser.parse_frame(SPOT_DEPTH, 1)
    second = parser.parse_frame(SPOT_DEPTH, 1)
    assert first == second


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"', "malformed JSON"),
        (b"[1,2,3]", "not a JSON object"),
        (b"", "malformed JSON"),
        (b'{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","s":"BTCUSDT"}}', "unknown stream"),
        (b'{"stream":"nonsense","data":{"e":"trade"}}', "unknown stream"),
        (b'{"stream":"btcusdt@trade","data":{"e":"depthUpdate"}}', "carries event"),
        (b'{"stream":"btcusdt@trade","data":[1]}', "envelope"),
        (b'{"e":"kline","s":"BTCUSDT"}', "unknown event"),
        (b'{"e":"trade","s":"BTCUSDT","p":"1.00"}', "bad trade"),
    ],
)
def test_malformed_frames_raise_parse_error(parser: FrameParser, frame: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parser.parse_frame(frame, 1)


def _depth_with(bids: list, asks: list | None = None, **fields: object) -> bytes:
    data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 10, "u": 12, "b": bids, "a": asks or []}
    data.update(fields)
    return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})


@pytest.mark.parametrize(
    ("bids", "fields", "message"),
    [
        ([["61737.635", "1.0"]], {}, "off-grid"),  # half a tick
        ([["-61737.63", "1.0"]], {}, "off-grid"),  # a sign is not a digit
        ([["0.00", "1.0"]], {}, "not positive"),
        ([["abc", "1.0"]], {}, "off-grid"),
        ([["61737.63", "-1.0"]], {}, "off-grid"),  # negative quantity
        ([["61737.63", "1 0"]], {}, "off-grid"),
        ([["6173763", "1.0", "x"]], {}, "bad depthUpdate"),
        ([[61737.63, "1.0"]], {}, "bad depthUpdate"),  # a JSON number, not text
        ([["61737.63", "1.0"]], {"U": 13, "u": 12}, "bad update ids"),
        ([["61737.63", "1.0"]], {"U": "10"}, "bad update ids"),
        ([["61737.63", "1.0"]], {"s": "DOGEUSDT"}, "unknown symbol"),
    ],
)
def test_bad_depth_values(parser: FrameParser, bids: list, fields: dict, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parser.parse_frame(_depth_with(bids, **fields), 1)


def test_unknown_symbol_error_names_the_symbol(parser: FrameParser) -> None:
    with pytest.raises(ParseError) as info:
        parser.parse_frame(_depth_with([], s="DOGEUSDT"), 1)
    assert info.value.symbol == "DOGEUSDT"
    assert info.value.market is Market.SPOT


def test_a_bad_frame_leaves_the_parser_working(parser: FrameParser) -> None:
    with pytest.raises(ParseError):
        parser.parse_frame(_depth_with([["61737.635", "1.0"], ["61737.64", "1.0"]]), 1)
    event = parser.parse_frame(_depth_with([["61737.64", "1.0"]]), 1)
    assert isinstance(event, DepthDiff) and event.bids == [(6173764, 100000)]


def test_quantity_off_lot_grid_is_rounded_up_and_counted(parser: FrameParser) -> None:
    # A resting order from before a step-size change (the spot recording has such levels).
    event = parser.parse_frame(_depth_with([], [["200000.00000000", "25.42618900"], ["1.00", "0.000001"]]), 1)
    assert isinstance(event, DepthDiff)
    assert event.asks == [(20000000, 2542619), (100, 1)]  # never rounded to 0
    assert parser.counters["qty_rounded_up"] == 2


def test_cache_stays_bounded_and_exact() -> None:
    parser = FrameParser(DEFAULT_INSTRUMENTS, cache_bound=64)
    instrument = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
    for start in range(0, 1000, 37):
        bids = [[f"{60000 + i}.{i % 100:02d}000000", f"0.{i:05d}000"] for i in range(start, start + 40)]
        event = parser.parse_frame(_depth_with(bids), 1)
        assert isinstance(event, DepthDiff)
        assert event.bids == [(instrument.price_ticks(p), instrument.qty_lots(q)) for p, q in bids]
        codec = parser._codecs[Market.SPOT]["BTCUSDT"]
        assert len(codec.prices) <= 64 and len(codec.qtys) <= 64


decimal_text = st.one_of(
    st.from_regex(r"\A[0-9]{1,7}(\.[0-9]{0,10})?\Z"),
    st.text(alphabet="0123456789.-+_ e١", min_size=1, max_size=12),
)


@given(decimal_text, st.sampled_from([(1, 2), (1, 5), (1, 0), (5, 1), (25, 3), (1, 8)]))
def test_fast_converter_agrees_with_instrument_parsing(text: str, grid: tuple[int, int]) -> None:
    fast = make_converter(*grid)
    tick = Decimal(grid[0]).scaleb(-grid[1])
    instrument = Instrument("X", Market.SPOT, tick, Decimal("1"), Decimal("0"))
    try:
        expected: int | None = instrument.price_ticks(text)
        valid = all(c in "0123456789." for c in text) and text.count(".") <= 1 and text != "."
    except (OffGridError, ValueError):
        expected, valid = None, False
    if valid:
        assert fast(text) == expected
        assert Decimal(text) == tick * expected  # and it is exact
    else:
        with pytest.raises(OffGridError):
            fast(text)


def test_snapshot_parsing(parser: FrameParser) -> None:
    body = {"lastUpdateId": 42, "bids": [["61800.01000000", "1.00000000"]], "asks": [["61800.02", "0.5"]]}
    expected = DepthSnapshot("BTCUSDT", Market.SPOT, 42, [(6180001, 100000)], [(6180002, 50000)], 3)
    assert parser.parse_snapshot(body, "btcusdt", Market.SPOT, 3) == expected
    assert parser.parse_snapshot(orjson.dumps(body), "BTCUSDT", Market.SPOT, 3) == expected
    assert parser.parse_snapshot(orjson.dumps(body).decode(), "BTCUSDT", Market.SPOT, 3) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>502</html>", "malformed snapshot"),
        ({"bids": [], "asks": []}, "bad snapshot"),
        ({"lastUpdateId": "1", "bids": [], "asks": []}, "bad snapshot"),
        ({"lastUpdateId": 1, "bids": [["1.001", "1"]], "asks": []}, "off-grid"),
        ({"code": -1121, "msg": "Invalid symbol."}, "bad snapshot"),
    ],
)
def test_bad_snapshots(parser: FrameParser, body: object, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parser.parse_snapshot(body, "BTCUSDT", Market.SPOT, 1)  # type: ignore[arg-type]


def test_snapshot_for_unknown_symbol(parser: FrameParser) -> None:
    with pytest.raises(ParseError, match="unknown symbol"):
        parser.parse_snapshot({"lastUpdateId": 1, "bids": [], "asks": []}, "DOGEUSDT", Market.SPOT, 1)


SPOT_INFO = {
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00001000"},
                {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True},
            ],
        },
        {"symbol": "ETHBTC", "filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.00001"}]},
    ]
}
USDM_INFO = {
    "symbols": [
        {
            "symbol": "BTCUSDT",
            "baseAsset": "BTC",
            "quoteAsset": "USDT",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.10"},
                {"filterType": "LOT_SIZE", "stepSize": "0.001"},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
            ],
        }
    ]
}


def test_exchange_info_spot_and_usdm() -> None:
    spot = parse_exchange_info(orjson.dumps(SPOT_INFO), Market.SPOT, ["btcusdt"])
    instrument = spot[(Market.SPOT, "BTCUSDT")]
    assert (instrument.tick_size, instrument.step_size, instrument.min_notional) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("5"),
    )
    assert instrument.base_asset == "BTC"
    usdm = parse_exchange_info(USDM_INFO, Market.USDM)
    instrument = usdm[(Market.USDM, "BTCUSDT")]
    assert (instrument.tick_size, instrument.step_size, instrument.min_notional) == (
        Decimal("0.1"),
        Decimal("0.001"),
        Decimal("100"),
    )
    # the parser accepts what exchangeInfo produced
    parser = FrameParser(usdm)
    event = parser.parse_frame(USDM_TRADE, 1)
    assert isinstance(event, Trade) and event.price == 618003


def test_exchange_info_errors() -> None:
    with pytest.raises(ConfigError, match="missing"):
        parse_exchange_info(SPOT_INFO, Market.SPOT, ["SOLUSDT"])
    with pytest.raises(ConfigError, match="LOT_SIZE"):
        parse_exchange_info(SPOT_INFO, Market.SPOT, ["ETHBTC"])
    with pytest.raises(ConfigError, match="JSON"):
        parse_exchange_info(b"{oops", Market.SPOT)


@given(
    st.lists(st.from_regex(r"\A[0-9]{1,3}\.[0-9]{0,4}\Z") | decimal_text, min_size=1, max_size=40),
    st.sampled_from([(1, 2), (1, 0), (1, 3), (5, 1)]),
)
def test_split_converter_agrees_with_the_plain_one(texts: list[str], grid: tuple[int, int]) -> None:
    split = make_split_converter(*grid, bound=8)  # a tiny bound also exercises the clearing
    plain = make_converter(*grid)
    for text in texts + texts[::-1]:  # repeats hit the part caches
        try:
            expected: int | None = plain(text)
        except (OffGridError, ValueError):
            expected = None
        if expected is None:
            with pytest.raises((OffGridError, ValueError)):
                split(text)
        else:
            assert split(text) == expected
