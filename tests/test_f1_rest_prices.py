"""`BinanceRest.ticker_prices` and `BinanceRest.funding_history` against the loopback stand-in, and
their parse functions (the interfaces F3 wires at live start and on a USD-M restart)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.fakes.binance import FakeBinance
from worker.binance.parse import ParseError, parse_funding_history, parse_ticker_prices
from worker.binance.rest import BinanceRest, RestError, WeightBudget
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.portfolio import FundingRate

pytestmark = pytest.mark.timeout(30)
SPOT, USDM = Market.SPOT, Market.USDM
HOUR8_MS = 28_800_000


def _mid(fake: FakeBinance, market: Market, symbol: str) -> Decimal:
    book = fake.books[(market, symbol)]
    return book.instrument.price_decimal(book.mid)


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_ticker_prices_one_request_for_all_symbols(market: Market) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    async with FakeBinance([(market, s) for s in symbols]) as fake:
        fake.pause()
        budget = WeightBudget(6000, window_s=1e9)  # one window for the whole test: no minute rollover
        async with BinanceRest(market, fake.endpoints(), budget=budget) as rest:
            prices = await rest.ticker_prices(["ethusdt", "BTCUSDT"])
            assert prices == {s: _mid(fake, market, s) for s in symbols}
            assert all(isinstance(p, Decimal) for p in prices.values())
            assert fake.ticker_requests == 1 and rest.budget.used == (4 if market is SPOT else 2)
            one = await rest.ticker_prices(["BTCUSDT"])
            assert one == {"BTCUSDT": _mid(fake, market, "BTCUSDT")}
            assert rest.budget.used == (6 if market is SPOT else 3)  # a single symbol costs less
            assert await rest.ticker_prices([]) == {}
            with pytest.raises(RestError):
                await rest.ticker_prices(["NOSUCHUSDT"])


async def test_funding_history_parses_pages_and_rounds_the_mark_to_ticks() -> None:
    async with FakeBinance([(USDM, "BTCUSDT")]) as fake:
        fake.pause()
        base = 1_723_161_600_000
        fake.set_funding_history(
            "BTCUSDT",
            [
                (base - HOUR8_MS, "0.00010000", "59000.00000000"),  # before the window
                (base, "0.00010000", "60000.05000000"),  # half a tick: to the even tick 60000.0
                (base + HOUR8_MS, "-0.00003750", "60000.15000000"),  # to 60000.2
                (base + 2 * HOUR8_MS, "0.00001000", "60001.00000000"),  # after the window
            ],
        )
        async with BinanceRest(USDM, fake.endpoints()) as rest:
            rates = await rest.funding_history("btcusdt", base, base + HOUR8_MS)
            assert [(r.symbol, r.rate_e8, r.mark_price, r.funding_ns) for r in rates] == [
                ("BTCUSDT", 10_000, 600_000, base * 1_000_000),
                ("BTCUSDT", -3_750, 600_002, (base + HOUR8_MS) * 1_000_000),
            ]
            assert all(type(r) is FundingRate and r.recv_ns > 0 for r in rates)
            (request,) = fake.funding_requests
            assert request == {
                "symbol": "BTCUSDT",
                "startTime": str(base),
                "endTime": str(base + HOUR8_MS),
                "limit": "1000",
            }
            # more than one page: paged by the last funding time, nothing twice, nothing lost
            fake.set_funding_history(
                "BTCUSDT", [(base + i * HOUR8_MS, "0.00010000", "60000") for i in range(1500)]
            )
            fake.funding_requests.clear()
            rates = await rest.funding_history("BTCUSDT", base, base + 1500 * HOUR8_MS)
            assert len(rates) == 1500 and len(fake.funding_requests) == 2
            assert [r.funding_ns for r in rates] == sorted({r.funding_ns for r in rates})
            # a rate that is not whole 1e-8 units cannot be settled exactly: refused, not rounded
            fake.set_funding_history("BTCUSDT", [(base, "0.000100001", "60000")])
            with pytest.raises(RestError, match="1e-8"):
                await rest.funding_history("BTCUSDT", base, base)
        async with BinanceRest(SPOT, fake.endpoints()) as spot:
            with pytest.raises(RestError, match="USD-M only"):
                await spot.funding_history("BTCUSDT", base, base)


def test_parse_ticker_prices_refuses_what_it_cannot_read() -> None:
    body = b'[{"symbol":"BTCUSDT","price":"60000.01000000"},{"symbol":"XRPUSDT","price":"0.5"}]'
    assert parse_ticker_prices(body, ["BTCUSDT"]) == {"BTCUSDT": Decimal("60000.01")}
    assert parse_ticker_prices({"symbol": "BTCUSDT", "price": "1"}, ["btcusdt"]) == {"BTCUSDT": Decimal(1)}
    for bad, symbols in [
        (b"{not json", ["BTCUSDT"]),
        (b'[{"symbol":"BTCUSDT","price":"abc"}]', ["BTCUSDT"]),
        (b'[{"symbol":"BTCUSDT","price":"0"}]', ["BTCUSDT"]),
        (b'[{"symbol":"BTCUSDT","price":"1"}]', ["BTCUSDT", "ETHUSDT"]),
        (b'"text"', ["BTCUSDT"]),
    ]:
        with pytest.raises(ParseError):
            parse_ticker_prices(bad, symbols)


def test_parse_funding_history_refuses_bad_records() -> None:
    inst = DEFAULT_INSTRUMENTS[(USDM, "BTCUSDT")]
    ok = b'[{"symbol":"BTCUSDT","fundingTime":2,"fundingRate":"0.0001","markPrice":"1.04"},'
    ok += b'{"symbol":"ETHUSDT","fundingTime":1,"fundingRate":"0.0001","markPrice":"1"}]'
    assert parse_funding_history(ok, inst, 7) == [FundingRate("BTCUSDT", 10_000, 10, 2_000_000, 7)]
    for bad in [
        b'[{"symbol":"BTCUSDT","fundingTime":"2","fundingRate":"0.0001","markPrice":"1"}]',
        b'[{"symbol":"BTCUSDT","fundingTime":2,"fundingRate":"x","markPrice":"1"}]',
        b'[{"symbol":"BTCUSDT","fundingTime":2,"fundingRate":"0.0001","markPrice":""}]',
        b'[{"symbol":"BTCUSDT","fundingTime":2,"fundingRate":"0.0001"}]',
        b'{"code":-1121}',
    ]:
        with pytest.raises(ParseError):
            parse_funding_history(bad, inst, 7)
