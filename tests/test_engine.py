"""Engine (market part): outputs only from LIVE books, per-symbol resyncs, snapshot requests, cross-check."""

from __future__ import annotations

from worker.book import SyncState
from worker.engine import BookTop, Engine, SyncChange
from worker.events import (
    BookTicker,
    DepthDiff,
    DepthSnapshot,
    FeedState,
    FeedStatus,
    Market,
    TimerTick,
    Trade,
)
from worker.instruments import DEFAULT_INSTRUMENTS

S = Market.SPOT


def diff(first: int, final: int, bids=(), asks=(), symbol: str = "BTCUSDT", recv: int = 0) -> DepthDiff:
    return DepthDiff(symbol, S, first, final, None, list(bids), list(asks), 0, recv or final)


def snapshot(last: int, symbol: str = "BTCUSDT") -> DepthSnapshot:
    return DepthSnapshot(symbol, S, last, [(100, 5), (99, 3), (90, 1)], [(101, 2), (102, 4)], last)


def ticker(update_id: int, bid: int, bid_qty: int, ask: int, ask_qty: int) -> BookTicker:
    return BookTicker("BTCUSDT", S, update_id, bid, bid_qty, ask, ask_qty, update_id)


def live_engine(depth: int = 5) -> Engine:
    engine = Engine(DEFAULT_INSTRUMENTS, depth=depth)
    assert engine.on_event(diff(10, 11)) == []
    outputs = engine.on_event(snapshot(10))
    assert outputs[0] == SyncChange("BTCUSDT", S, SyncState.LIVE, "synced", 10)
    assert isinstance(outputs[1], BookTop) and (outputs[1].bid, outputs[1].ask) == (100, 101)
    return engine


def test_nothing_is_emitted_while_syncing_and_snapshots_are_requested_once() -> None:
    engine = Engine(DEFAULT_INSTRUMENTS)
    assert engine.snapshots_wanted() == []
    assert engine.on_event(diff(10, 11, [(100, 1)])) == []
    assert engine.on_event(diff(12, 13, [(100, 2)])) == []
    assert engine.snapshots_wanted() == [(S, "BTCUSDT")]
    assert engine.snapshots_wanted() == []  # marked requested
    engine.snapshot_failed(S, "BTCUSDT")
    assert engine.snapshots_wanted() == [(S, "BTCUSDT")]


def test_book_top_only_when_the_top_changes() -> None:
    engine = live_engine(depth=2)
    assert engine.on_event(diff(12, 12, [(50, 1)])) == []  # below the top 2: no output, no metric work
    (top,) = engine.on_event(diff(13, 13, [(100, 6)]))
    assert isinstance(top, BookTop)
    assert (top.bid, top.bid_qty, top.ask, top.ask_qty, top.update_id) == (100, 6, 101, 2, 13)
    assert top.microprice == (100 * 2 + 101 * 6) / 8
    assert top.imbalance == (6 + 3 - 2 - 4) / 15
    (top,) = engine.on_event(diff(14, 14, [(99, 4)]))  # level 2 changed: imbalance moves, best does not
    assert (top.bid, top.bid_qty) == (100, 6) and top.imbalance == (10 - 6) / 16


def test_a_gap_resyncs_only_that_symbol() -> None:
    engine = live_engine()
    engine.on_event(diff(5, 6, symbol="ETHUSDT"))
    engine.on_event(snapshot(5, "ETHUSDT"))
    outputs = engine.on_event(diff(20, 21, [(100, 1)]))  # BTC misses 12..19
    assert outputs == [SyncChange("BTCUSDT", S, SyncState.SYNCING, "gap", 21)]
    assert engine.symbol_book(S, "BTCUSDT").state is SyncState.SYNCING
    assert engine.symbol_book(S, "ETHUSDT").state is SyncState.LIVE
    assert engine.snapshots_wanted() == [(S, "BTCUSDT")]
    assert engine.on_event(diff(22, 23, [(100, 9)])) == []  # buffered, invisible downstream
    summary = engine.summary()
    assert summary["gaps"] == 1 and summary["resyncs"] == 1
    assert summary["per_symbol"]["spot:ETHUSDT"]["gaps"] == 0


def test_feed_loss_resyncs_and_time_in_sync_is_counted() -> None:
    engine = live_engine()
    engine.on_event(TimerTick(1_000_000_010))
    outputs = engine.on_event(FeedStatus("BTCUSDT", S, FeedState.DISCONNECTED, "closed", 2_000_000_010))
    assert outputs == [SyncChange("BTCUSDT", S, SyncState.SYNCING, "feed disconnected", 2_000_000_010)]
    assert engine.on_event(FeedStatus("BTCUSDT", S, FeedState.CONNECTED, "", 2_000_000_011)) == []
    summary = engine.summary()
    assert summary["time_in_sync_seconds"]["spot:BTCUSDT"] == 2.0
    assert summary["per_symbol"]["spot:BTCUSDT"]["resync_reasons"] == {"feed disconnected": 1}


def test_unknown_symbols_and_trades_are_counted() -> None:
    engine = live_engine()
    engine.on_event(Trade("BTCUSDT", S, 1, 100, 1, True, 0, 20))
    engine.on_event(Trade("XRPUSDT", S, 1, 100, 1, True, 0, 21))
    summary = engine.summary()
    assert summary["unknown_symbol_events"] == 1
    assert summary["per_symbol"]["spot:BTCUSDT"]["trades"] == 1


def test_book_ticker_cross_check_in_either_arrival_order() -> None:
    engine = live_engine()
    engine.on_event(ticker(12, 100, 7, 101, 2))  # the ticker runs ahead of the depth stream
    engine.on_event(diff(11, 12, [(100, 7)]))
    engine.on_event(diff(13, 14, [(99, 1)]))  # top unchanged since 12: checked against ticker 12
    engine.on_event(ticker(16, 100, 7, 101, 3))
    engine.on_event(diff(15, 18, [], [(102, 5)]))  # a later ticker could still be <= 18: waits
    engine.on_event(diff(19, 20, [], [(101, 3)]))  # waits too
    summary = engine.summary()["per_symbol"]["spot:BTCUSDT"]
    assert summary["book_ticker_checks"] == 2 and summary["book_ticker_mismatches"] == 0
    engine.on_event(ticker(21, 100, 7, 101, 3))  # resolves 18 and 20 against ticker 16
    summary = engine.summary()["per_symbol"]["spot:BTCUSDT"]
    assert summary["book_ticker_checks"] == 4 and summary["book_ticker_mismatches"] == 1
    assert summary["book_ticker_unexplained"] == 1  # at 18 our ask qty was 2, the venue's 3
    assert summary["mismatch_examples"][0]["update_id"] == 18


def test_unannounced_level_is_tolerated_only_when_the_next_diff_deletes_it() -> None:
    engine = Engine(DEFAULT_INSTRUMENTS)
    engine.on_event(diff(10, 11))
    engine.on_event(DepthSnapshot("BTCUSDT", S, 10, [(100, 5)], [(110, 2)], 10))
    engine.on_event(ticker(15, 100, 5, 110, 2))
    engine.on_event(ticker(16, 105, 1, 110, 2))  # a better bid the diff stream never announces
    engine.on_event(ticker(17, 100, 5, 110, 2))
    engine.on_event(ticker(30, 100, 5, 110, 2))
    engine.on_event(diff(12, 16, [(90, 2)]))  # compared with ticker 16: mismatch, suspected quirk
    engine.on_event(diff(17, 18, [(105, 0)]))  # the next diff deletes that price: confirmed
    summary = engine.summary()["per_symbol"]["spot:BTCUSDT"]
    assert summary["book_ticker_mismatches"] == 1 and summary["book_ticker_unannounced_levels"] == 1
    assert summary["book_ticker_unexplained"] == 0
    engine.on_event(ticker(31, 106, 1, 110, 2))
    engine.on_event(ticker(32, 100, 5, 110, 2))  # the venue removed 106 at id 32
    engine.on_event(diff(19, 31, [(91, 1)]))
    engine.on_event(diff(32, 33, [(92, 1)]))  # the next diff does NOT delete 106: unexplained
    summary = engine.summary()["per_symbol"]["spot:BTCUSDT"]
    assert summary["book_ticker_mismatches"] == 2 and summary["book_ticker_unannounced_levels"] == 1
    assert summary["book_ticker_unexplained"] == 1
    assert [m["kind"] for m in summary["mismatch_examples"]] == ["unannounced_level", "unexplained"]


def test_replaying_the_same_events_gives_the_same_outputs() -> None:
    events = [diff(10, 11), snapshot(10), diff(12, 13, [(100, 9)]), diff(14, 15, [], [(101, 0)])]
    runs = []
    for _ in range(2):
        engine = Engine(DEFAULT_INSTRUMENTS)
        runs.append([out for event in events for out in engine.on_event(event)])
    assert runs[0] == runs[1] and len(runs[0]) == 4
