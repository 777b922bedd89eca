"""The recording format: what `record` writes, replay reads back byte for byte, in arrival order."""

from __future__ import annotations

import gzip
from pathlib import Path

from worker.binance.parse import FrameParser, ParseError
from worker.binance.recording import (
    FrameReader,
    FrameWriter,
    RecordedFrame,
    RecordedSnapshot,
    SnapshotWriter,
    default_snapshots_path,
    merged,
    read_snapshots,
)
from worker.events import DepthSnapshot, Market
from worker.instruments import DEFAULT_INSTRUMENTS

FRAME_A = (
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1.00","q":"1.0",'
    '"T":1,"m":true,"M":true}}'
)
FRAME_B = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1.00","B":"1","a":"1.01","A":"2"}}'
)


def test_round_trip_is_byte_exact_and_merged_by_recv_ns(tmp_path: Path) -> None:
    ws = tmp_path / "x.ws.jsonl.gz"
    snaps = tmp_path / "x.snapshots.jsonl"
    with FrameWriter(ws) as writer:
        writer.write(100, FRAME_A)
        writer.write(300, FRAME_B)
    with SnapshotWriter(snaps) as writer:
        writer.write(200, "btcusdt", Market.USDM, b'{"lastUpdateId":7,"bids":[],"asks":[]}', "https://x/fapi")
    frames = list(FrameReader(ws))
    assert frames == [RecordedFrame(100, FRAME_A.encode()), RecordedFrame(300, FRAME_B)]
    assert list(read_snapshots(snaps)) == [
        RecordedSnapshot(
            200, "BTCUSDT", Market.USDM, {"lastUpdateId": 7, "bids": [], "asks": []}, "https://x/fapi"
        )
    ]
    assert [item.recv_ns for item in merged(ws, snaps)] == [100, 200, 300]
    assert default_snapshots_path(ws) == snaps
    # the reference files' layout: one envelope per line
    assert (
        gzip.decompress(ws.read_bytes()).splitlines()[0] == b'{"recv_ns":100,"msg":' + FRAME_A.encode() + b"}"
    )


def test_snapshot_market_inferred_for_files_without_it(tmp_path: Path) -> None:
    path = tmp_path / "s.snapshots.jsonl"
    path.write_text(
        '{"recv_ns":1,"symbol":"BTCUSDT","request":null,"msg":{"lastUpdateId":1,"E":1,"T":1,"bids":[],"asks":[]}}\n'
        '{"recv_ns":2,"symbol":"BTCUSDT","request":null,"msg":{"lastUpdateId":1,"bids":[],"asks":[]}}\n'
        "not json\n"
    )
    assert [s.market for s in read_snapshots(path)] == [Market.USDM, Market.SPOT]


def test_newlines_inside_a_frame_keep_one_frame_per_line(tmp_path: Path) -> None:
    path = tmp_path / "n.ws.jsonl.gz"
    with FrameWriter(path) as writer:
        writer.write(1, '{"result":\nnull,"id":1}')
        writer.write(2, FRAME_A)
    frames = list(FrameReader(path))
    assert [f.recv_ns for f in frames] == [1, 2]
    assert FrameParser(DEFAULT_INSTRUMENTS).parse_frame(frames[0].frame, 1) is None


def test_bad_lines_reach_the_parser_and_truncation_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.ws.jsonl.gz"
    body = b'{"recv_ns":1,"msg":{"broken"}\n' + b"garbage line\n" + b'{"recv_ns":3,"msg":' + FRAME_B + b"}\n"
    path.write_bytes(gzip.compress(body))
    reader = FrameReader(path)
    frames = list(reader)
    assert [f.recv_ns for f in frames] == [1, 1, 3]
    parser = FrameParser(DEFAULT_INSTRUMENTS)
    failures = 0
    for frame in frames[:2]:
        try:
            parser.parse_frame(frame.frame, frame.recv_ns)
        except ParseError:
            failures += 1
    assert failures == 2
    assert reader.bad_lines == 1 and not reader.truncated

    cut = tmp_path / "cut.ws.jsonl.gz"
    whole = gzip.compress(b"".join(b'{"recv_ns":%d,"msg":%s}\n' % (i, FRAME_B) for i in range(2000)))
    cut.write_bytes(whole[: len(whole) // 2])
    reader = FrameReader(cut)
    frames = list(reader)
    assert reader.truncated
    assert frames and all(f.frame == FRAME_B for f in frames)


def test_appending_to_an_existing_recording(tmp_path: Path) -> None:
    path = tmp_path / "a.ws.jsonl.gz"
    for recv_ns in (1, 2):
        with FrameWriter(path) as writer:
            writer.write(recv_ns, FRAME_B)
    assert [f.recv_ns for f in FrameReader(path)] == [1, 2]


def test_snapshot_line_parses_to_the_same_event(tmp_path: Path) -> None:
    path = tmp_path / "z.snapshots.jsonl"
    with SnapshotWriter(path) as writer:
        writer.write(5, "BTCUSDT", Market.SPOT, '{"lastUpdateId":9,"bids":[["1.00","2.0"]],"asks":[]}')
    (snap,) = read_snapshots(path)
    event = FrameParser(DEFAULT_INSTRUMENTS).parse_snapshot(snap.body, snap.symbol, snap.market, snap.recv_ns)
    assert event == DepthSnapshot("BTCUSDT", Market.SPOT, 9, [(100, 200000)], [], 5)
