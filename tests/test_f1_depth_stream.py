"""USD-M 250 ms depth is Binance's bare `<sym>@depth` (documented: `@depth`, `@depth@500ms`,
`@depth@100ms`); `@depth@250ms` is no documented stream name."""

from __future__ import annotations

import pytest

from tests.fakes.binance import FakeBinance
from tests.test_live_faults import Live
from worker.binance.endpoints import Endpoints, connection_specs
from worker.binance.parse import FrameParser
from worker.binance.stream import stream_kind
from worker.events import DepthDiff, Market
from worker.instruments import DEFAULT_INSTRUMENTS

pytestmark = pytest.mark.timeout(30)
USDM = Market.USDM


@pytest.mark.parametrize(
    ("speed", "name"),
    [("250ms", "btcusdt@depth"), ("100ms", "btcusdt@depth@100ms"), ("500ms", "btcusdt@depth@500ms")],
)
def test_usdm_depth_stream_names(speed: str, name: str) -> None:
    endpoints = Endpoints(usdm_depth_speed=speed)
    assert endpoints.depth_stream(USDM, "BTCUSDT") == name
    assert endpoints.depth_stream(Market.SPOT, "BTCUSDT") == "btcusdt@depth@100ms"
    (public, _) = connection_specs(endpoints, USDM, ["BTCUSDT"])
    assert public.url == f"wss://fstream.binance.com/public/stream?streams={name}"
    assert stream_kind(name) == "depth"


def test_the_bare_depth_stream_parses() -> None:
    frame = (
        b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":2,"T":1,"s":"BTCUSDT","U":5,"u":6,'
        b'"pu":4,"b":[["60000.1","0.001"]],"a":[]}}'
    )
    event = FrameParser(DEFAULT_INSTRUMENTS).parse_frame(frame, 9)
    assert isinstance(event, DepthDiff) and (event.market, event.prev_final_id) == (USDM, 4)


async def test_a_250ms_worker_syncs_on_the_stand_in() -> None:
    async with FakeBinance([(USDM, "BTCUSDT")]) as fake:
        fake.endpoints = lambda: Endpoints.loopback(fake.port, usdm_depth_speed="250ms")  # type: ignore[method-assign]
        async with Live(fake, USDM, ["BTCUSDT"]) as live:
            await live.assert_equal_to_truth()
            assert live.book().gaps == 0
            public = next(c for c in fake.conns if c.route == "/public/stream")
            assert public.streams == ["btcusdt@depth"]
