"""Replay of the real Binance recordings: the rebuilt book is Binance's book.

Checked independently of the engine's own cross-check: every bookTicker is collected first, then after
each applied diff the book's top is compared with the latest bookTicker whose `u <=` the diff's `u`.
The only disagreement allowed is the one the data README documents (a level the diff stream never
announced, deleted by the next diff), and exactly as many as it counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from bisect import bisect_right
from pathlib import Path

import pytest

from tests.conftest import ROOT, recording
from worker.binance.parse import FrameParser
from worker.binance.recording import RecordedFrame, merged
from worker.book import DiffResult, SymbolBook, SyncState
from worker.events import BookTicker, DepthDiff, Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.replay import build_summary, replay

EXPECTED = {  # from shared/data/binance/README.md
    "spot": {
        "dropped": 2,
        "unannounced": {50093478174, 50093480542},
        "levels": (1971, 2962),
        "best": ("61602.01", "61602.02"),
    },
    "usdm": {"dropped": 4, "unannounced": set(), "levels": (5018, 4578), "best": ("61659.7", "61659.8")},
}


def test_book_equals_book_ticker_at_every_update(real_recording: tuple[str, Path, Path]) -> None:
    name, ws, snaps = real_recording
    market = Market.SPOT if name == "spot" else Market.USDM
    parser = FrameParser(DEFAULT_INSTRUMENTS)
    instrument = DEFAULT_INSTRUMENTS[(market, "BTCUSDT")]
    events = []
    tickers: list[BookTicker] = []
    for item in merged(ws, snaps):
        if type(item) is RecordedFrame:
            event = parser.parse_frame(item.frame, item.recv_ns)
        else:
            event = parser.parse_snapshot(item.body, item.symbol, item.market, item.recv_ns)
        if type(event) is BookTicker:
            tickers.append(event)
        else:
            events.append(event)
    ticker_ids = [t.update_id for t in tickers]
    assert ticker_ids == sorted(ticker_ids)

    sb = SymbolBook(instrument)
    compared, disagreements = 0, []
    for event in events:
        if type(event) is not DepthDiff:
            if event.__class__.__name__ == "DepthSnapshot":
                sb.on_snapshot(event)
            continue
        was_live = sb.state is SyncState.LIVE
        result = sb.on_diff(event)
        assert result in (DiffResult.APPLIED, DiffResult.BUFFERED, DiffResult.IGNORED_OLD), result
        if not (was_live and result is DiffResult.APPLIED):
            continue
        book = sb.book
        assert not book.is_crossed()
        at = bisect_right(ticker_ids, event.final_id)
        if at == 0:
            continue
        ticker = tickers[at - 1]
        compared += 1
        theirs = (ticker.bid_price, ticker.bid_qty, ticker.ask_price, ticker.ask_qty)
        if book.top() != theirs:
            disagreements.append((event.final_id, ticker, book.top()))
    expected = EXPECTED[name]
    assert sb.gaps == 0 and sb.resyncs == 0 and sb.crossed == 0
    assert sb.dropped_before_sync == expected["dropped"]
    assert compared > 6400
    assert {u for u, _, _ in disagreements} == expected["unannounced"]
    for update_id, ticker, ours in disagreements:
        # the documented quirk: a better bid the diff stream never announced, deleted by the next diff
        assert ticker.bid_price > ours[0] and (ticker.ask_price, ticker.ask_qty) == ours[2:]
        following = next(e for e in events if type(e) is DepthDiff and e.final_id > update_id)
        assert (ticker.bid_price, 0) in following.bids
    assert (sb.book.bid_levels, sb.book.ask_levels) == expected["levels"]
    best_bid, best_ask = sb.book.best_bid(), sb.book.best_ask()
    assert best_bid and best_ask
    got = (str(instrument.price_decimal(best_bid[0])), str(instrument.price_decimal(best_ask[0])))
    assert got == expected["best"]


def test_replay_engine_counts_exactly_the_documented_quirk(real_recording: tuple[str, Path, Path]) -> None:
    name, ws, snaps = real_recording
    engine, stats = replay(ws, snaps)
    summary = build_summary(engine, stats)
    unannounced = len(EXPECTED[name]["unannounced"])
    assert summary["gaps"] == 0 and summary["resyncs"] == 0 and summary["crossed"] == 0
    assert summary["book_ticker_mismatches"] == unannounced
    assert summary["book_ticker_unannounced_levels"] == unannounced
    assert summary["book_ticker_unexplained"] == 0
    assert summary["book_ticker_checks"] > 6400
    assert summary["bad_frames"] == 0
    key = f"{'spot' if name == 'spot' else 'usdm'}:BTCUSDT"
    assert summary["symbols"] == [key]
    per_symbol = summary["engine"]["per_symbol"][key]
    assert per_symbol["state"] == "live"
    assert per_symbol["sync_fraction"] > 0.99
    assert (per_symbol["bid_levels"], per_symbol["ask_levels"]) == EXPECTED[name]["levels"]


def test_replay_command_writes_the_summary_json(tmp_path: Path) -> None:
    ws, snaps = recording("spot")
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "replay",
            str(ws),
            "--snapshots",
            str(snaps),
            "--no-db",
            "--summary-json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bookTicker" in done.stdout and "\r" not in done.stderr  # no progress bar off a terminal
    summary = json.loads(out.read_text())
    for key in (
        "messages",
        "symbols",
        "gaps",
        "resyncs",
        "book_ticker_checks",
        "book_ticker_mismatches",
        "recording_seconds",
        "wall_seconds",
        "time_in_sync_seconds",
        "msgs_per_s",
    ):
        assert key in summary
    assert summary["messages"] == {
        "btcusdt@bookTicker": 73174,
        "btcusdt@depth@100ms": 6495,
        "btcusdt@trade": 19904,
    }
    assert summary["symbols"] == ["spot:BTCUSDT"]
    assert summary["gaps"] == 0 and summary["resyncs"] == 0
    assert summary["book_ticker_mismatches"] == 2 and summary["book_ticker_unexplained"] == 0
    assert summary["recording_seconds"] == pytest.approx(650.6, abs=0.1)
    assert summary["wall_seconds"] > 0


def test_replay_survives_bad_frames(tmp_path: Path) -> None:
    """A recording with garbage spliced in: one log line each, counted, and the book still syncs."""
    import gzip

    ws, snaps = recording("usdm")
    spliced = tmp_path / "bad.ws.jsonl.gz"
    with gzip.open(ws, "rb") as src, gzip.open(spliced, "wb") as dst:
        for index, line in enumerate(src):
            if index >= 3000:
                break
            dst.write(line)
            if index in (10, 2000):
                recv = line[11 : line.index(b",")]
                dst.write(b'{"recv_ns":' + recv + b',"msg":{"stream":"btcusdt@trade","data":{oops}}\n')
                dst.write(b'{"recv_ns":' + recv + b',"msg":{"stream":"btcusdt@kline_1m","data":{}}}\n')
    engine, stats = replay(spliced, snaps)
    summary = build_summary(engine, stats)
    assert summary["bad_frames"] == 4
    assert summary["bad_by_reason"] == {"malformed_json": 2, "unknown_stream": 2}
    assert summary["gaps"] == 0 and summary["engine"]["per_symbol"]["usdm:BTCUSDT"]["state"] == "live"
