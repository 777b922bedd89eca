"""The Unix-socket feed carries every documented message type, in the documented shape.

A replay of the real spot recording goes through the same sinks as a live run (`replay_async` with
`publish_socket`); one client reads the whole stream. Tight drawdown limits make the risk engine trip
during the recording, so trading and breaker status changes are on the wire too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import recording
from worker import config
from worker.publish import FeedSink, Publisher, decode_stream
from worker.replay import replay_async
from worker.risk import RiskConfig

DOCUMENTED = {"hello", "book_top", "features", "signal", "fill", "status"}


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="qff-", dir="/tmp"))  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def read_all(reader: asyncio.StreamReader, sink: list[dict]) -> None:
    buffer = bytearray()
    while chunk := await reader.read(1 << 16):
        buffer += chunk
        sink.extend(decode_stream(buffer))


async def test_replay_of_the_real_recording_sends_every_documented_message_type(short_dir: Path) -> None:
    frames, snapshots = recording("spot")
    base = config.load(None, env={})
    cfg = dataclasses.replace(base, risk=RiskConfig(drawdown_reduce_bps=1, drawdown_halt_bps=None))
    received: list[dict] = []
    readers: list[asyncio.Task] = []
    writers: list[asyncio.StreamWriter] = []

    async def connect(publisher: Publisher) -> None:
        reader, writer = await asyncio.open_unix_connection(str(publisher.path))
        writers.append(writer)
        readers.append(asyncio.create_task(read_all(reader, received)))
        await publisher.wait_for_clients(1)

    seen: Counter[str] = Counter()

    def observe(event: object, outputs: list) -> None:
        for out in outputs:
            seen[type(out).__name__] += 1

    await replay_async(
        frames, snapshots, config=cfg, publish_socket=short_dir / "f.sock", publisher_ready=connect,
        observers=[observe],
    )  # fmt: skip
    await asyncio.wait_for(readers[0], 30)  # the feed closes at the end: everything has been read
    types = Counter(m["type"] for m in received)
    assert set(types) >= DOCUMENTED, types
    assert 0 < types["book_top"] <= seen["BookTop"] and types["fill"] == seen["Fill"] > 0
    assert types["signal"] == seen["Signal"] and types["features"] == seen["FeatureVector"] > 0

    features = next(m for m in received if m["type"] == "features" and m["warm"])
    assert features["symbol"] == "BTCUSDT" and isinstance(features["ts_ns"], int)
    values = features["values"]
    assert values and all(isinstance(k, str) and isinstance(v, float) for k, v in values.items())
    assert {"mid", "imbalance", "spread_bps", "microprice"} <= set(values)
    assert any(k.startswith("ofi_") and k.endswith("ms") for k in values)

    signal = next(m for m in received if m["type"] == "signal")
    assert signal["name"] == "ofi" and isinstance(signal["value"], float)
    assert signal["side"] in (1, -1) and signal["kind"] in ("entry", "exit") and signal["reason"]
    assert 0.0 <= signal["confidence"] <= 1.0 and isinstance(signal["mid"], float)

    fill = next(m for m in received if m["type"] == "fill")
    assert fill["side"] in (1, -1) and isinstance(fill["price"], int) and isinstance(fill["qty"], int)

    status = [m for m in received if m["type"] == "status"]
    components = {m["component"] for m in status}
    assert {"book", "trading", "breaker"} <= components, components
    trading = next(m for m in status if m["component"] == "trading")
    assert trading["state"] == "REDUCING" and trading["previous"] == "ACTIVE" and trading["source"] == "risk"
    breaker = next(m for m in status if m["component"] == "breaker")
    assert breaker["breaker"] == "drawdown" and breaker["state"] == "tripped"
    assert breaker["reason"] == "drawdown_reduce"
    book = next(m for m in status if m["component"] == "book")
    assert book["state"] == "live" and book["symbol"] == "BTCUSDT"
    for writer in writers:
        writer.close()


async def test_pause_changes_go_out_as_calendar_status(short_dir: Path) -> None:
    from worker.trader import PauseChange

    publisher = Publisher(short_dir / "p.sock")
    await publisher.start()
    reader, writer = await asyncio.open_unix_connection(str(publisher.path))
    await publisher.wait_for_clients(1)
    sink = FeedSink(publisher)
    sink(None, [PauseChange(5, True, "Shabbat", 99), PauseChange(100, False, "Shabbat", None)])
    received: list[dict] = []
    buffer = bytearray()
    async with asyncio.timeout(10):
        while len(received) < 3:
            buffer += await reader.read(4096)
            received.extend(decode_stream(buffer))
    assert received[1:] == [
        {"type": "status", "component": "calendar", "ts_ns": 5, "state": "paused", "reason": "Shabbat",
         "until_ns": 99},
        {"type": "status", "component": "calendar", "ts_ns": 100, "state": "resumed", "reason": "Shabbat",
         "until_ns": None},
    ]  # fmt: skip
    writer.close()
    await publisher.close()
