"""The live path against the loopback Binance stand-in, one fault at a time.

Every test runs the real worker loop (`worker.app.App`: source -> Engine -> sinks) against
`tests.fakes.binance.FakeBinance` through the same code as Binance (only URLs differ), injects a fault,
and checks that (1) the loop is still running, (2) the book ends LIVE and equal, level for level, to the
stand-in's TRUE book, and (3) the gap/resync/reconnect counters say what happened.
No sleeps as synchronization: `until()` waits on a condition, re-checked whenever the loop processes an
event, with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import recording
from tests.fakes.binance import FakeBinance
from worker.app import App, PumpCounters, TopLogger, pump
from worker.binance.endpoints import Endpoints, connection_specs
from worker.binance.parse import FrameParser
from worker.binance.record import record
from worker.binance.recording import RecordedSnapshot, merged
from worker.binance.rest import BinanceRest, RestError, WeightBudget
from worker.binance.source import LiveSource, SourceFailed, _Gate
from worker.binance.stream import full_jitter_delays
from worker.book import SymbolBook, SyncState
from worker.engine import BookTop, Engine
from worker.events import DepthDiff, Market, TimerTick, Trade
from worker.instruments import DEFAULT_INSTRUMENTS

pytestmark = pytest.mark.timeout(30)

SPOT, USDM = Market.SPOT, Market.USDM
FAST_STREAMS = {"backoff_base": 0.02, "backoff_cap": 0.1, "stable_s": 0.05, "close_timeout": 0.5}


class Live:
    """The worker loop wired to a stand-in; `until()` waits on conditions the loop makes true."""

    def __init__(
        self,
        fake: FakeBinance,
        market: Market,
        symbols: list[str],
        *,
        stream_options: dict[str, Any] | None = None,
        rest_options: dict[str, Any] | None = None,
        book_ticker: bool = False,
    ) -> None:
        self.fake = fake
        self.market = market
        self.symbols = symbols
        self.stream_options = FAST_STREAMS | (stream_options or {})
        self.rest_options = {"backoff_base": 0.02, "backoff_cap": 0.1, "timeout": 2.0} | (rest_options or {})
        self.book_ticker = book_ticker
        self.progress = asyncio.Event()

    async def __aenter__(self) -> Live:
        endpoints = self.fake.endpoints()
        self.rest = BinanceRest(self.market, endpoints, **self.rest_options)
        instruments = await self.rest.instruments(self.symbols)  # exchangeInfo from the stand-in
        self.engine = Engine(instruments)
        self.source = LiveSource(
            self.engine,
            self.market,
            self.symbols,
            endpoints=endpoints,
            instruments=instruments,
            rest=self.rest,
            book_ticker=self.book_ticker,
            stream_options=self.stream_options,
        )
        self.app = App(self.source, self.engine, [self._tick])
        self.task = asyncio.create_task(self.app.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.app.stop.set()
        await asyncio.wait_for(self.task, 5)
        await self.rest.aclose()

    def _tick(self, event: object, outputs: list[Any]) -> None:
        self.progress.set()

    async def until(self, cond: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not cond():
                    assert not self.task.done(), f"worker loop exited: {self.task}"
                    self.progress.clear()
                    # re-check at least every 50 ms: some conditions (REST counters) change without an event
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.progress.wait(), 0.05)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; stats={self.source.stats()}") from None

    def book(self, symbol: str = "BTCUSDT") -> SymbolBook:
        book = self.engine.symbol_book(self.market, symbol)
        assert book is not None, f"no book for {symbol} yet"
        return book

    def live(self, symbol: str = "BTCUSDT") -> bool:
        book = self.engine.symbol_book(self.market, symbol)
        return book is not None and book.state is SyncState.LIVE

    def stats(self) -> dict[str, Any]:
        return self.source.stats()

    async def assert_equal_to_truth(self) -> None:
        """Stop the stand-in's data, let the book catch up, and compare every level."""
        await self.until(lambda: all(self.live(s) for s in self.symbols), "all books LIVE")
        self.fake.pause()
        for symbol in self.symbols:
            bids, asks, last_id = self.fake.true_levels(self.market, symbol)
            await self.until(
                lambda s=symbol, i=last_id: self.live(s) and self.book(s).book.last_update_id == i,
                f"{symbol} to reach update {last_id}",
            )
            book = self.book(symbol).book
            assert book.bids() == bids and book.asks() == asks, f"{symbol} differs from the true book"
        assert not self.task.done(), "the worker loop exited"


# --- the happy path, both markets ---


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_syncs_and_matches_true_book(market: Market) -> None:
    async with FakeBinance([(market, "BTCUSDT")]) as fake, Live(fake, market, ["BTCUSDT"]) as live:
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs, book.syncs) == (0, 0, 1)
        assert live.stats()["snapshot_requests"] == 1
        assert live.stats()["reconnects"] == 0
        # USD-M: depth on /public, trades on /market (the stand-in refuses anything else)
        routes = sorted(c.route for c in fake.conns)
        assert routes == (["/stream"] if market is SPOT else ["/market/stream", "/public/stream"])
        assert live.engine.symbol_summary(live.engine._symbols[market]["BTCUSDT"])["trades"] > 0


# --- WebSocket faults ---


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_dropped_connection_reconnects_and_resyncs(market: Market) -> None:
    async with FakeBinance([(market, "BTCUSDT")]) as fake, Live(fake, market, ["BTCUSDT"]) as live:
        await live.until(live.live, "first sync")
        dropped = await fake.drop_connections()
        assert dropped == (1 if market is SPOT else 2)
        await live.until(lambda: live.stats()["reconnects"] == dropped, "reconnects")
        await live.until(lambda: live.book().syncs == 2 and live.live(), "second sync")
        await live.assert_equal_to_truth()
        stats, book = live.stats(), live.book()
        assert stats["drops"] == dropped
        assert stats["disconnects"] == 1  # only the depth connection's drop resyncs the book
        assert book.resyncs == 1 and book.resync_reasons == {"feed disconnected": 1}
        assert stats["snapshot_requests"] == 2


async def test_gap_resyncs_only_that_symbol() -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]
    async with (
        FakeBinance([(SPOT, s) for s in symbols]) as fake,
        Live(fake, SPOT, symbols) as live,
    ):
        await live.until(lambda: live.live("BTCUSDT") and live.live("ETHUSDT"), "both LIVE")
        fake.skip_updates("BTCUSDT", 3)
        await live.until(lambda: live.book("BTCUSDT").gaps == 1, "the gap")
        await live.assert_equal_to_truth()
        btc, eth = live.book("BTCUSDT"), live.book("ETHUSDT")
        assert (btc.gaps, btc.resyncs, btc.syncs) == (1, 1, 2)
        assert (eth.gaps, eth.resyncs, eth.syncs) == (0, 0, 1)
        assert live.stats()["reconnects"] == 0


async def test_duplicated_frames_are_ignored() -> None:
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        fake.duplicate_next(3)
        await live.until(lambda: live.book().ignored_old >= 3, "duplicates seen")
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs, book.ignored_old) == (0, 0, 3)


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_out_of_order_frame_is_a_gap_and_resyncs(market: Market) -> None:
    async with FakeBinance([(market, "BTCUSDT")]) as fake, Live(fake, market, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        fake.reorder_next()
        await live.until(lambda: live.book().gaps == 1, "the gap")
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs, book.syncs) == (1, 1, 2)
        assert live.stats()["snapshot_requests"] == 2


async def test_malformed_frames_are_counted_and_dropped() -> None:
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        await fake.send_malformed(
            ['{"stream":"btcusdt@trade","data":{"e":"trade","p":"1.001"}}', "]]", "{}x"]
        )
        await live.until(lambda: live.stats()["malformed"] == 3, "3 malformed frames counted")
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs) == (0, 0)
        assert live.stats()["reconnects"] == 0


@pytest.mark.parametrize("kind", ["depth", "trade"])
async def test_silence_watchdog_is_per_stream(kind: str) -> None:
    options = {"watchdog_s": {"depth": 5.0, "trade": 5.0, "bookTicker": 5.0, kind: 0.3}}
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"], stream_options=options) as live:
        await live.until(live.live, "sync")
        fake.silence(kind)  # the other stream on the same connection keeps flowing
        await live.until(lambda: live.stats()["reconnects"] == 1, "the watchdog's reconnect")
        await live.assert_equal_to_truth()
        client = live.source.clients["spot"]
        stream = "btcusdt@depth@100ms" if kind == "depth" else "btcusdt@trade"
        assert client.counters.stale_by_stream == {stream: 1}
        assert live.book().resyncs == 1  # a new connection means a new diff chain: resync


async def test_server_pings_are_answered() -> None:
    async with (
        FakeBinance(ping_interval=0.05) as fake,
        Live(fake, SPOT, ["BTCUSDT"], stream_options={"ping_interval": None}) as live,
    ):
        await live.until(live.live, "sync")
        # the stand-in closes a connection whose pong is late (ping_timeout = interval); latency > 0
        # means it measured a pong to its own ping
        await live.until(lambda: fake.conns and fake.conns[0].ws.latency > 0, "a pong to the server's ping")
        await live.assert_equal_to_truth()
        assert live.stats()["drops"] == 0 and fake.connections_total == 1


async def test_refused_upgrades_are_retried_with_backoff() -> None:
    async with FakeBinance() as fake:
        fake.refuse_ws = 3  # HTTP 503 on the WebSocket upgrade: websockets retries with our delays
        async with Live(fake, SPOT, ["BTCUSDT"]) as live:
            await live.assert_equal_to_truth()
            assert fake.ws_refused == 3
            assert live.stats()["reconnects"] == 0  # three failed attempts, then one connection


def test_full_jitter_delays_are_capped() -> None:
    delays = full_jitter_delays(0.5, 4.0)()
    values = [next(delays) for _ in range(200)]
    for n, value in enumerate(values):
        assert 0.0 <= value <= min(4.0, 0.5 * 2**n)
    assert max(values[10:]) > 2.0  # the cap is reached, not just approached
    assert len(set(values)) == len(values)  # jittered, not a fixed schedule


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_rotation_opens_new_connection_before_closing_old(market: Market) -> None:
    options = {"handoff_timeout_s": 5.0}
    async with (
        FakeBinance([(market, "BTCUSDT")]) as fake,
        Live(fake, market, ["BTCUSDT"], stream_options=options) as live,
    ):
        await live.until(live.live, "sync")
        before = fake.connections_total
        for client in live.source.clients.values():
            client.rotate_now()
        await live.until(lambda: live.stats()["rotations"] == len(live.source.clients), "rotations")
        await live.assert_equal_to_truth()
        book, stats = live.book(), live.stats()
        assert (book.gaps, book.resyncs, book.syncs) == (0, 0, 1)
        assert stats["handoff_timeouts"] == 0 and stats["disconnects"] == 0
        assert fake.connections_total == 2 * before and len(fake.conns) == before
        assert stats["snapshot_requests"] == 1


# --- REST faults ---


@pytest.mark.parametrize(
    ("fault", "value", "counter"),
    [
        ("429", 0.4, "http_429"),
        ("418", 0.4, "http_418"),
        ("500", 0.0, "http_5xx"),
        ("503", 0.0, "http_5xx"),
        ("slow", 1.0, "rest_timeouts"),
        ("garbage", 0.0, "malformed_snapshots"),
    ],
)
async def test_snapshot_faults(fault: str, value: float, counter: str) -> None:
    async with FakeBinance() as fake:
        fake.rest_fault(fault, value)
        async with Live(fake, SPOT, ["BTCUSDT"], rest_options={"timeout": 0.3}) as live:
            await live.assert_equal_to_truth()
            stats = live.stats()
            assert stats[counter] == 1
            assert fake.depth_requests == 2  # the faulty answer, then one good one
            assert fake.requests_while_blocked == 0  # nothing sent during Retry-After or a ban
            if fault in ("429", "418"):
                depth = [t for t, path, _ in fake.rest_log if path.endswith("/depth")]
                assert depth[1] - depth[0] >= value  # the wait was honoured
            assert live.book().syncs == 1


async def test_weight_budget_waits_for_next_window_instead_of_429() -> None:
    clock = [1_000_040.0]  # 20 s into a minute window (1_000_020 is a boundary)

    async def travel(seconds: float) -> None:  # time passes: the venue's window rolls over too
        clock[0] += seconds
        fake.weight_used = 0
        await asyncio.sleep(0)

    async with FakeBinance(weight_limit=1000, weight_window_s=10**9) as fake:
        fake.weight_used = 900  # another client on our IP spent most of this minute
        budget = WeightBudget(1000, headroom=0.8, clock=lambda: clock[0], sleep=travel)
        async with Live(fake, SPOT, ["BTCUSDT"], rest_options={"budget": budget}) as live:
            await live.assert_equal_to_truth()
            assert budget.waits == 1 and 39.9 < budget.waited_s < 40.1
            assert live.stats()["http_429"] == 0


def test_weight_budget_follows_the_header() -> None:
    now = [120.0]
    budget = WeightBudget(100, headroom=1.0, clock=lambda: now[0])
    budget.observe("70")
    assert budget.used == 70
    budget.observe("junk")  # unreadable: ignored, not fatal
    assert budget.used == 70
    now[0] = 180.0  # next minute: Binance's counter restarts
    budget.observe(None)
    budget._roll()
    assert budget.used == 0


async def test_rest_client_error_is_not_retried() -> None:
    async with FakeBinance() as fake:
        rest = BinanceRest(SPOT, fake.endpoints(), backoff_base=0.01)
        with pytest.raises(RestError) as info:
            await rest.depth("NOPEUSDT")
        assert info.value.status == 400 and rest.counters.requests == 1
        fake.rest_fault("500")
        fake.rest_fault("500")
        rest.max_attempts = 2
        with pytest.raises(RestError, match="giving up after 2 attempts"):
            await rest.depth("BTCUSDT")
        await rest.aclose()


def test_connection_specs_follow_the_2026_usdm_split() -> None:
    ep = Endpoints(usdm_depth_speed="0ms")
    (spot,) = connection_specs(ep, SPOT, ["btcusdt"])
    assert spot.url == "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
    public, market = connection_specs(ep, USDM, ["BTCUSDT", "ethusdt"], book_ticker=True)
    assert public.url == (
        "wss://fstream.binance.com/public/stream?streams="
        "btcusdt@depth@0ms/btcusdt@bookTicker/ethusdt@depth@0ms/ethusdt@bookTicker"
    )
    assert market.url == (
        "wss://fstream.binance.com/market/stream?streams="
        "btcusdt@trade/btcusdt@markPrice@1s/ethusdt@trade/ethusdt@markPrice@1s"
    )
    many = connection_specs(ep, SPOT, [f"s{i}usdt" for i in range(150)], max_streams=200)
    assert [len(s.symbols) for s in many] == [100, 50]


# --- the command itself ---


async def test_run_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    async with FakeBinance() as fake:
        ep = fake.endpoints()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "run",
            "--symbols",
            "btcusdt",
            "--spot-ws",
            ep.spot_ws,
            "--spot-rest",
            ep.spot_rest,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # its own database: never the working tree's ./quantumflow.db (which may hold replays)
            env={**os.environ, "PYTHONUNBUFFERED": "1", "QF_DB": str(tmp_path / "live.db")},
        )
        assert proc.stdout is not None
        seen = []
        async with asyncio.timeout(15):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"worker exited early: {seen}"
                seen.append(line)
                if "is live" in line:
                    break
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
        assert code == 0, rest
        assert "shutting down" in rest


# --- real data through the live path ---


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_real_recording_served_live_stays_gap_free(market: Market) -> None:
    """The stand-in serves the first 50,000 recorded frames byte for byte, and the recorded snapshot."""
    ws_path, snaps_path = recording(market.value)
    fake = FakeBinance.from_recording(ws_path, snaps_path, max_frames=50_000, interval=0.001)
    fake.frames_per_step = 100
    async with fake, Live(fake, market, ["BTCUSDT"], book_ticker=True) as live:
        await fake.wait_connections(1 if market is SPOT else 2)  # before any frame: the snapshot is old
        fake.resume()
        await live.until(
            lambda: fake.recording_left == 0 and live.source.counters.frames == fake.frames_sent,
            "every recorded frame received",
            timeout=20,
        )
        await live.until(lambda: live.source.queue.empty(), "the queue drained")
        book = live.book()
        summary = live.engine.symbol_summary(live.engine._symbols[market]["BTCUSDT"])
        assert book.state is SyncState.LIVE
        assert (book.gaps, book.resyncs, book.syncs, book.crossed) == (0, 0, 1, 0)
        assert summary["book_ticker_checks"] > 1000
        assert summary["book_ticker_unexplained"] == 0
        assert live.stats()["malformed"] == 0


async def test_record_command_writes_a_replayable_recording(tmp_path: Path) -> None:
    async with FakeBinance() as fake:
        ep = fake.endpoints()
        args = argparse.Namespace(
            symbols=["btcusdt"],
            market="spot",
            out=tmp_path,
            duration=0.8,
            flush_interval=0.2,
            usdm_depth_speed="0ms",
            spot_ws=ep.spot_ws,
            spot_rest=ep.spot_rest,
            usdm_ws=ep.usdm_ws,
            usdm_rest=ep.usdm_rest,
        )
        summary = await record(args)
    assert summary["snapshots"] == 1 and summary["frames"] > 50
    # replay the files through parser and engine: it syncs once and never gaps
    frames_path = Path(str(summary["frames_file"]))
    parser = FrameParser(DEFAULT_INSTRUMENTS)
    engine = Engine({(SPOT, "BTCUSDT"): DEFAULT_INSTRUMENTS[(SPOT, "BTCUSDT")]})
    kinds: dict[str, int] = {}
    for item in merged(frames_path, Path(str(summary["snapshots_file"]))):
        if isinstance(item, RecordedSnapshot):
            event = parser.parse_snapshot(item.body, item.symbol, item.market, item.recv_ns)
        else:
            event = parser.parse_frame(item.frame, item.recv_ns)
        kinds[type(event).__name__] = kinds.get(type(event).__name__, 0) + 1
        engine.on_event(event)
    book = engine.symbol_book(SPOT, "BTCUSDT")
    assert book is not None and book.state is SyncState.LIVE
    assert (book.gaps, book.resyncs, book.syncs) == (0, 0, 1)
    assert set(kinds) == {"DepthDiff", "Trade", "BookTicker", "DepthSnapshot"}
    assert sum(kinds.values()) == summary["frames"] + 1


async def test_stale_snapshot_refetches_are_paced() -> None:
    """A snapshot older than the buffered diffs is refetched, each time after a growing delay."""
    async with FakeBinance() as fake:
        for _ in range(5):
            fake.rest_fault("stale")
        async with Live(fake, SPOT, ["BTCUSDT"]) as live:
            live.source.snapshot_pace_base = 0.05
            await live.assert_equal_to_truth()
            book = live.book()
            assert (book.stale_snapshots, book.syncs, book.gaps) == (5, 1, 0)
            assert live.stats()["snapshot_requests"] == 6 and live.stats()["snapshot_paced"] == 5
            times = [t for t, path, _ in fake.rest_log if path.endswith("/depth")]
            spacing = [b - a for a, b in itertools.pairwise(times)]
            minimum = [0.05 * 2**n / 2 for n in range(5)]  # the lower edge of each jittered delay
            assert all(s >= m * 0.99 for s, m in zip(spacing, minimum, strict=True)), spacing


async def test_server_shutdown_notice_rotates_without_a_gap() -> None:
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        await fake.send_server_shutdown()
        await live.until(lambda: live.stats()["rotations"] == 1, "rotation")
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs, book.syncs) == (0, 0, 1)
        assert live.stats()["malformed"] == 0 and fake.connections_total == 2


async def test_pump_survives_an_engine_error() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_event(self, event: TimerTick) -> list[Any]:
            if event.recv_ns == 2:
                raise RuntimeError("bug in a strategy")
            self.seen.append(event.recv_ns)
            return [event.recv_ns]

    async def events():  # type: ignore[no-untyped-def]
        for i in range(1, 5):
            yield TimerTick(i)

    engine, sunk, counters = Flaky(), [], PumpCounters()
    await pump(events(), engine, [lambda e, out: sunk.extend(out)], counters)  # type: ignore[arg-type]
    assert engine.seen == [1, 3, 4] and sunk == [1, 3, 4]
    assert (counters.events, counters.engine_errors) == (4, 1)


async def test_a_refused_stream_url_stops_the_worker_loudly() -> None:
    """A 404 on the handshake means the URL or stream names are wrong: no retry loop, a clear error."""
    async with FakeBinance() as fake:
        fake.refuse_ws, fake.refuse_status = 1, 404
        live = Live(fake, SPOT, ["BTCUSDT"])
        await live.__aenter__()
        with pytest.raises(SourceFailed, match="404"):
            await asyncio.wait_for(live.task, 5)
        assert fake.ws_refused == 1
        await live.rest.aclose()


async def test_a_bug_in_frame_handling_costs_nothing_but_that_frame() -> None:
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"]) as live:
        await live.until(live.live, "sync")
        real = live.source._on_frame
        broken = {"left": 3}

        async def flaky(text: str | bytes, recv_ns: int, lane: Any) -> None:
            if broken["left"] and b"@trade" in (text if isinstance(text, bytes) else text.encode()):
                broken["left"] -= 1
                raise RuntimeError("bug")
            await real(text, recv_ns, lane)

        for client in live.source.clients.values():
            client.on_frame = flaky
        await live.until(lambda: broken["left"] == 0, "three failures")
        await live.assert_equal_to_truth()
        assert live.source.clients["spot"].counters.handler_errors == 3
        assert live.stats()["reconnects"] == 0 and live.book().resyncs == 0


async def test_scheduled_rotation_repeats_without_gaps() -> None:
    options = {"rotate_after_s": 0.25, "handoff_timeout_s": 5.0}
    async with FakeBinance() as fake, Live(fake, SPOT, ["BTCUSDT"], stream_options=options) as live:
        await live.until(lambda: live.stats()["rotations"] >= 3, "three scheduled rotations")
        await live.assert_equal_to_truth()
        book = live.book()
        assert (book.gaps, book.resyncs, book.syncs) == (0, 0, 1)
        assert live.stats()["handoff_timeouts"] == 0


def _diff(first: int, final: int, prev: int | None = None) -> DepthDiff:
    market = SPOT if prev is None else USDM
    return DepthDiff("BTCUSDT", market, first, final, prev, [], [], 0, 0)


@pytest.mark.parametrize("usdm", [False, True])
def test_rotation_gate_holds_a_new_lane_that_runs_ahead(usdm: bool) -> None:
    """The new lane (2) is ahead of the old one (1): its events wait until the old lane catches up."""
    gate = _Gate("depth", 1)
    prev = (lambda p: p) if usdm else (lambda p: None)
    out = gate.admit(_diff(1, 10, prev(0)), 10, 1, 1)
    assert [d.final_id for d in out] == [10]
    ahead = _diff(14, 16, prev(13))
    assert gate.admit(ahead, 16, 2, 1) == []  # held: 11..13 not seen yet
    caught = gate.admit(_diff(11, 13, prev(10)), 13, 1, 1) + gate.catch_up()
    assert [d.final_id for d in caught] == [13, 16] and gate.gen == 2
    assert gate.admit(_diff(14, 16, prev(13)), 16, 1, 1) == []  # the old lane's copy: dropped
    assert [d.final_id for d in gate.admit(_diff(17, 18, prev(16)), 18, 2, 1)] == [18]


def test_rotation_gate_switches_when_lanes_meet() -> None:
    gate = _Gate("trade", 1)
    trade = lambda i: Trade("BTCUSDT", SPOT, i, 1, 1, False, 0, 0)  # noqa: E731
    assert gate.admit(trade(5), 5, 1, 1) == [trade(5)]
    assert gate.admit(trade(4), 4, 2, 1) == []  # the new lane is behind: duplicate
    assert gate.admit(trade(5), 5, 2, 1) == [] and gate.gen == 2  # same event on both: follow new
    assert gate.admit(trade(6), 6, 1, 1) == []  # old lane after the switch
    assert gate.admit(trade(6), 6, 2, 1) == [trade(6)]


def test_top_logger_logs_at_a_low_rate(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine({(SPOT, "BTCUSDT"): DEFAULT_INSTRUMENTS[(SPOT, "BTCUSDT")]})
    logger = TopLogger(engine, interval_s=1.0)
    caplog.set_level("INFO", logger="worker.app")
    for i in range(30):  # 30 tops, 0.1 s apart: 3 seconds of event time
        top = BookTop("BTCUSDT", SPOT, i, 6_000_000, 5, 6_000_001, 7, 0.1, 6_000_000.5, 0, i * 100_000_000)
        logger(TimerTick(0), [top])
    lines = [r.getMessage() for r in caplog.records if " top " in r.getMessage()]
    assert len(lines) == 3 and "60000.00 x 0.00005 | 60000.01 x 0.00007" in lines[0]
