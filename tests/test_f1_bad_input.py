"""Bad input gets one clear log line and a counter, and the symbol resyncs where needed (issue 2).

Against the loopback stand-in: a snapshot that does not cover the buffered diffs, a crossed snapshot, a
SYNCING buffer that overflows, and a depth diff with a price off the tick grid (before: dropped as
malformed while the book stayed LIVE without it until the next diff revealed the gap).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import orjson
import pytest

from tests.fakes.binance import FakeBinance, FakeSymbol
from tests.test_live_faults import Live
from worker.binance.recording import FrameWriter, SnapshotWriter
from worker.book import SyncState
from worker.engine import Engine
from worker.events import FeedState, FeedStatus, Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.replay import replay

pytestmark = pytest.mark.timeout(30)
SPOT = Market.SPOT
SOURCE_LOG = "worker.binance.source"


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.mark.parametrize(
    ("fault", "kind", "counter"),
    [("stale", "stale_snapshot", "stale_snapshots"), ("crossed", "invalid_snapshot", "invalid_snapshots")],
)
async def test_a_refused_snapshot_is_logged_once_counted_and_refetched(
    caplog: pytest.LogCaptureFixture, fault: str, kind: str, counter: str
) -> None:
    caplog.set_level(logging.WARNING, logger=SOURCE_LOG)
    async with FakeBinance() as fake:
        fake.rest_fault(fault)
        async with Live(fake, SPOT, ["BTCUSDT"]) as live:
            live.source.snapshot_pace_base = 0.01
            await live.assert_equal_to_truth()
            stats = live.stats()
            assert stats[counter] == 1 and stats["book_notices"] == 1
            assert stats["snapshot_requests"] == 2 and live.book().syncs == 1
    lines = _warnings(caplog, kind)
    assert len(lines) == 1 and "BTCUSDT" in lines[0] and "refetching" in lines[0], lines


async def test_a_buffer_overflow_is_logged_once_per_syncing_episode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SOURCE_LOG)
    async with FakeBinance() as fake:
        fake.rest_fault("slow", 0.3)  # the first snapshot takes long: diffs pile up in the buffer
        async with Live(fake, SPOT, ["BTCUSDT"]) as live:
            live.engine.max_buffer = 3  # books are created on the first event, after this line
            await live.assert_equal_to_truth()
            assert live.stats()["buffer_overflows"] > 1
    lines = _warnings(caplog, "buffer_overflow")
    assert len(lines) == 1 and "max 3" in lines[0], lines


async def test_an_off_tick_depth_diff_resyncs_that_symbol_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=SOURCE_LOG)
    symbols = ["BTCUSDT", "ETHUSDT"]
    async with FakeBinance([(SPOT, s) for s in symbols]) as fake, Live(fake, SPOT, symbols) as live:
        await live.until(lambda: live.live("BTCUSDT") and live.live("ETHUSDT"), "both LIVE")
        fake.pause()
        bad = {
            "e": "depthUpdate",
            "E": 1,
            "s": "BTCUSDT",
            "U": fake.books[(SPOT, "BTCUSDT")].last_id + 1,
            "u": fake.books[(SPOT, "BTCUSDT")].last_id + 1,
            "b": [["60000.001", "1.0"]],  # tick 0.01: off the grid
            "a": [],
        }
        await fake.send_malformed([orjson.dumps({"stream": "btcusdt@depth@100ms", "data": bad}).decode()])
        # no further diff is needed to notice: the book leaves LIVE on the bad frame itself
        await live.until(lambda: live.book("BTCUSDT").resyncs == 1, "the resync")
        assert not live.live("BTCUSDT") and live.live("ETHUSDT")
        fake.resume()
        await live.assert_equal_to_truth()
        btc, eth = live.book("BTCUSDT"), live.book("ETHUSDT")
        assert btc.resync_reasons == {"malformed depth frame": 1} and (btc.syncs, btc.gaps) == (2, 0)
        assert (eth.resyncs, eth.syncs) == (0, 1)
        stats = live.stats()
        assert stats["malformed"] == 1 and stats["malformed_depth_resyncs"] == 1
    lines = _warnings(caplog, "malformed frame")
    assert len(lines) == 1 and "off-grid" in lines[0], lines


async def test_a_malformed_frame_without_a_known_symbol_resyncs_nothing() -> None:
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        await fake.send_malformed()  # bad JSON, a depth frame without a symbol, an unknown stream
        await live.until(lambda: live.stats()["malformed"] == 3, "3 malformed frames counted")
        await live.assert_equal_to_truth()
        assert live.book().resyncs == 0 and live.stats()["malformed_depth_resyncs"] == 0


def test_replay_resyncs_where_live_did_and_logs_book_notices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recording with an off-tick diff: the replay resyncs there (as live did) and takes live's next
    snapshot; a stale snapshot in the file is logged and counted."""
    caplog.set_level(logging.WARNING, logger="worker.replay")
    inst = DEFAULT_INSTRUMENTS[(SPOT, "BTCUSDT")]
    true = FakeSymbol(SPOT, "BTCUSDT", inst, random.Random(3))
    frames, snaps = tmp_path / "r.ws.jsonl.gz", tmp_path / "r.snapshots.jsonl"
    ns = 1_000
    with FrameWriter(frames) as fw, SnapshotWriter(snaps) as sw:

        def diff() -> None:
            nonlocal ns
            ns += 1
            depth, _ = true.step(ns)
            fw.write(ns, orjson.dumps({"stream": "btcusdt@depth@100ms", "data": depth}))

        def snapshot(stale: bool = False) -> None:
            nonlocal ns
            ns += 1
            body = true.snapshot(1000, ns)
            if stale:
                body["lastUpdateId"] = 1
            sw.write(ns, "BTCUSDT", SPOT, orjson.dumps(body))

        diff()
        snapshot(stale=True)
        diff()
        snapshot()
        for _ in range(5):
            diff()
        # the venue's off-tick diff: the true book moves on, our parser cannot take the price
        ns += 1
        bad = {"e": "depthUpdate", "E": ns, "s": "BTCUSDT", "U": true.last_id + 1, "u": true.last_id + 1}
        true.last_id += 1
        fw.write(
            ns,
            orjson.dumps({"stream": "btcusdt@depth@100ms", "data": bad | {"b": [["1.001", "1"]], "a": []}}),
        )
        diff()
        snapshot()  # live fetched one after the resync
        for _ in range(5):
            diff()
    engine, stats = replay(frames, snaps)
    book = engine.symbol_book(SPOT, "BTCUSDT")
    assert book is not None and book.state is SyncState.LIVE
    assert book.resync_reasons == {"malformed depth frame": 1} and book.gaps == 0 and book.syncs == 2
    assert book.book.bids() == sorted(true.bids.items(), reverse=True)
    assert book.book.asks() == sorted(true.asks.items())
    assert (stats.bad_frames, stats.malformed_depth_resyncs, stats.book_notices) == (1, 1, 1)
    assert book.stale_snapshots == 1
    assert len(_warnings(caplog, "stale_snapshot")) == 1


def test_engine_notices_are_bounded_and_drained() -> None:
    engine = Engine(DEFAULT_INSTRUMENTS)
    assert engine.take_notices() == []
    out = engine.on_event(FeedStatus("BTCUSDT", SPOT, FeedState.MALFORMED, "x", 5))
    assert out == []  # not LIVE: nothing to announce, but the book was reset
    for i in range(1000):
        engine.notices.append(i)  # type: ignore[arg-type]
    assert len(engine.take_notices()) == 256 and not engine.notices
