"""Unix-socket feed: ordering, slow and vanishing clients, bad paths, and the `tail` client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from worker.errors import ConfigError
from worker.orders import Fill, Liquidity, Side
from worker.publish import BookTop, Publisher, decode_stream

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def sock_dir():
    # tmp_path can exceed AF_UNIX's 107-byte limit; a short directory under /tmp cannot.
    path = Path(tempfile.mkdtemp(prefix="qf-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def top(i: int, symbol: str = "BTCUSDT") -> BookTop:
    bid = 6_000_000 + (i % 50)
    return BookTop(
        symbol=symbol,
        market="spot",
        ts_ns=1_700_000_000_000_000_000 + i,
        update_id=1000 + i,
        bid_px=bid,
        bid_qty=10 + i,
        ask_px=bid + 1,
        ask_qty=7,
        mid2=2 * bid + 1,
        mid=bid + 0.5,
        spread=1,
        imbalance=0.25,
    )


async def read_n(reader: asyncio.StreamReader, n: int, timeout: float = 10.0) -> list[dict]:
    buffer = bytearray()
    out: list[dict] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            buffer += chunk
            out.extend(decode_stream(buffer))
    return out


async def started(path: Path, **kwargs) -> tuple[Publisher, asyncio.Task]:
    pub = Publisher(path, **kwargs)
    await pub.start()
    task = pub._run_task
    assert task is not None
    return pub, task


async def test_client_receives_every_book_top_in_order(sock_dir):
    pub, task = await started(sock_dir / "feed.sock", hello={"instruments": {"BTCUSDT": {"tick": "0.01"}}})
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "feed.sock"))
    await pub.wait_for_clients(1)
    n = 5000
    for i in range(n):
        assert pub.offer_book_top(top(i))
        assert not pub.offer_book_top(top(i))  # unchanged top: not sent twice
        if i % 500 == 0:
            await asyncio.sleep(0)  # yield like the worker does between frames
    messages = await read_n(reader, n + 1)
    assert messages[0]["type"] == "hello" and messages[0]["version"] == 1
    assert messages[0]["instruments"]["BTCUSDT"]["tick"] == "0.01"
    tops = messages[1:]
    assert [m["update_id"] for m in tops] == [1000 + i for i in range(n)]
    assert all(m["type"] == "book_top" for m in tops)
    assert tops[7]["bid_px"] == 6_000_007 and tops[7]["mid2"] == 12_000_015 and tops[7]["imbalance"] == 0.25
    assert pub.stats.published == n and pub.stats.book_tops_unchanged == n and pub.stats.queue_dropped == 0
    writer.close()
    await pub.close()
    await task
    assert not (sock_dir / "feed.sock").exists()


async def test_domain_objects_and_bad_items(sock_dir):
    pub, task = await started(sock_dir / "f.sock")
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    fill = Fill(
        1, 2, "BTCUSDT", Side.SELL, 6_000_000, 5, 123, "USDT", Liquidity.MAKER, 9, "m/1", 1, 0, 1.5, 2.5, 0.0
    )
    pub.offer(fill)
    pub.offer({"type": "features", "symbol": "BTCUSDT", "ts_ns": 1, "values": {"ofi": 0.5}})
    pub.offer({"type": "bad", "obj": object()})  # not encodable: counted, skipped
    pub.offer({"ts_ns": 2, "component": "trading", "state": "paused", "reason": "shabbat"}, kind="status")
    messages = await read_n(reader, 4)
    assert [m["type"] for m in messages] == ["hello", "fill", "features", "status"]
    assert messages[1]["side"] == -1 and messages[1]["liquidity"] == "maker" and messages[1]["fee"] == 123
    assert pub.stats.encode_errors == 1
    writer.close()
    await pub.close()
    await task


async def test_stuck_client_is_dropped_and_does_not_slow_the_others(sock_dir):
    n = 20_000
    pub, task = await started(sock_dir / "f.sock", client_buffer_bytes=256 * 1024)
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    await asyncio.get_running_loop().sock_connect(stuck, str(sock_dir / "f.sock"))
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(2)
    good = asyncio.create_task(read_n(reader, n + 1))
    started_ns = time.perf_counter_ns()
    for i in range(n):
        assert pub.offer(top(i)), "offer must never refuse while the queue has room"
        if i % 200 == 0:
            await asyncio.sleep(0)
    messages = await good
    elapsed_ms = (time.perf_counter_ns() - started_ns) / 1e6
    assert [m["update_id"] for m in messages[1:]] == [1000 + i for i in range(n)]
    assert pub.stats.clients_dropped_slow == 1
    assert pub.stats.queue_dropped == 0
    await pub.wait_for_clients(1)
    # The stuck socket was cut off by the publisher: it reads what was in flight, then end of stream.
    stuck.setblocking(True)
    stuck.settimeout(5)
    received = 0
    while chunk := stuck.recv(1 << 16):
        received += len(chunk)
    stuck.close()
    assert 0 < received < pub.stats.bytes_out / 2
    print(f"{n} messages to 1 reader with 1 stuck client: {elapsed_ms:.0f} ms")
    writer.close()
    await pub.close()
    await task


async def test_client_disconnecting_mid_message_is_cleaned_up(sock_dir):
    pub, task = await started(sock_dir / "f.sock", client_buffer_bytes=8 << 20)
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    await read_n(reader, 1)  # hello
    pub.offer({"type": "features", "symbol": "X", "ts_ns": 1, "values": {"blob": "x" * 2_000_000}})
    partial = await reader.readexactly(100)  # the length prefix and the start of the message only
    assert int.from_bytes(partial[:4], "big") > 2_000_000
    writer.transport.abort()
    await pub.wait_for_clients(0)
    for i in range(100):  # the feed carries on
        pub.offer(top(i))
    r2, w2 = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    pub.offer(top(999))
    got = await read_n(r2, 2)
    assert got[-1]["update_id"] == 1999
    assert pub.stats.clients_disconnected == 1 and pub.stats.clients_dropped_slow == 0
    w2.close()
    await pub.close()
    await task


async def test_bad_socket_paths(sock_dir):
    with pytest.raises(ConfigError, match="existing directory"):
        await Publisher(sock_dir / "missing" / "f.sock").start()
    regular = sock_dir / "file"
    regular.write_text("keep me")
    with pytest.raises(ConfigError, match="non-socket"):
        await Publisher(regular).start()
    assert regular.read_text() == "keep me"
    with pytest.raises(ConfigError, match="bytes long"):
        await Publisher(sock_dir / ("x" * 120)).start()


async def test_stale_socket_replaced_but_live_one_refused(sock_dir):
    path = sock_dir / "f.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))
    crashed.close()  # a crashed run leaves the file with nobody accepting on it
    assert path.exists()
    pub, task = await started(path)
    with pytest.raises(ConfigError, match="no other running process"):
        await Publisher(path).start()
    reader, writer = await asyncio.open_unix_connection(str(path))  # the first one still serves
    assert (await read_n(reader, 1))[0]["type"] == "hello"
    writer.close()
    await pub.close()
    await task


async def test_offer_after_close_and_full_queue_are_counted(sock_dir):
    pub = Publisher(sock_dir / "f.sock", max_queue=3)
    await pub.start()
    assert pub.offer(top(0)) and pub.queue_depth == 0 and pub.stats.unheard == 1  # nobody listens
    _reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    assert [pub.offer(top(i)) for i in range(5)] == [True, True, True, False, False]  # no await: no drain
    assert pub.stats.queue_dropped == 2
    writer.close()
    await pub.close()
    assert not pub.offer(top(9))
    assert pub.stats.queue_dropped == 3


async def test_new_client_gets_the_latest_tops_first(sock_dir):
    pub, task = await started(sock_dir / "f.sock")
    for i in range(10):  # nobody connected: nothing queued, the latest top per symbol kept
        pub.offer_book_top(top(i))
        pub.offer_book_top(top(100 + i, symbol="ETHUSDT"))
    assert pub.queue_depth == 0
    r1, w1 = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    got = await read_n(r1, 3)
    assert [(m["symbol"], m["update_id"]) for m in got[1:]] == [("BTCUSDT", 1009), ("ETHUSDT", 1109)]
    pub.offer_book_top(top(10))
    assert (await read_n(r1, 1))[0]["update_id"] == 1010
    r2, w2 = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))  # after live traffic
    await pub.wait_for_clients(2)
    got = await read_n(r2, 3)
    assert [m["update_id"] for m in got[1:]] == [1010, 1109]
    w1.close()
    w2.close()
    await pub.close()
    await task


async def test_tail_prints_json_lines(sock_dir):
    path = sock_dir / "f.sock"
    pub, task = await started(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "tail", "--socket", str(path), "--type", "book_top", "--count", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    await pub.wait_for_clients(1, timeout=20)
    pub.offer({"ts_ns": 1, "component": "feed", "state": "live", "reason": ""}, kind="status")
    for i in range(3):
        pub.offer(top(i))
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    lines = [orjson.loads(line) for line in out.decode().splitlines()]
    assert [line["update_id"] for line in lines] == [1000, 1001, 1002]
    assert all(line["type"] == "book_top" for line in lines)
    await pub.close()
    await task


async def test_tail_reports_missing_socket(sock_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "tail", "--socket", str(sock_dir / "nope.sock"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1 and b"cannot connect" in err and out == b""


async def test_clients_beyond_the_limit_are_refused(sock_dir):
    pub, task = await started(sock_dir / "f.sock", max_clients=1)
    r1, w1 = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    r2, w2 = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    assert await r2.read() == b""  # refused: closed without a hello
    assert pub.stats.clients_refused == 1 and pub.client_count == 1
    pub.offer(top(1))
    got = await read_n(r1, 2)
    assert [m["type"] for m in got] == ["hello", "book_top"]
    w1.close()
    w2.close()
    await pub.close()
    await task


async def test_engine_outputs_are_published_in_the_documented_shape(sock_dir):
    from worker.book import SyncState
    from worker.engine import BookTop as EngineTop
    from worker.engine import SyncChange
    from worker.events import FeedState, FeedStatus, Market

    pub, task = await started(sock_dir / "f.sock")
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    engine_top = EngineTop("BTCUSDT", Market.SPOT, 77, 100, 5, 103, 2, 0.4, 101.2, 11, 22)
    assert pub.offer_book_top(engine_top)
    assert not pub.offer_book_top(engine_top)
    moved = EngineTop("BTCUSDT", Market.SPOT, 78, 100, 5, 103, 2, -0.1, 101.0, 12, 23)
    assert pub.offer_book_top(moved)  # only the imbalance changed: still a change
    pub.offer(moved)  # offered as a plain item: same shape
    sync = SyncChange("BTCUSDT", Market.SPOT, SyncState.LIVE, "snapshot", 30)
    pub.offer(sync)
    pub.offer(FeedStatus("BTCUSDT", Market.SPOT, FeedState.STALE, "no frames for 10s", 40))
    got = await read_n(reader, 6)
    assert got[3] == got[2]
    del got[3]
    top_msg = got[1]
    assert top_msg == {
        "type": "book_top", "symbol": "BTCUSDT", "market": "spot", "ts_ns": 22, "update_id": 77,
        "bid_px": 100, "bid_qty": 5, "ask_px": 103, "ask_qty": 2, "mid2": 203, "mid": 101.5,
        "spread": 3, "imbalance": 0.4, "microprice": 101.2, "exchange_ns": 11,
    }  # fmt: skip
    assert got[2]["update_id"] == 78
    assert got[3] == {
        "type": "status", "component": "book", "symbol": "BTCUSDT", "market": "spot",
        "state": "live", "reason": "snapshot", "ts_ns": 30,
    }  # fmt: skip
    assert got[4]["component"] == "feed" and got[4]["state"] == "stale" and got[4]["ts_ns"] == 40
    writer.close()
    await pub.close()
    await task


async def test_tail_follow_waits_for_the_worker_and_reconnects(sock_dir):
    path = sock_dir / "f.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "tail", "--socket", str(path), "--follow", "--count", "2",
        "--type", "book_top", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    first = Publisher(path)  # the worker comes up after tail started
    await first.start()
    await first.wait_for_clients(1, timeout=20)
    first.offer(top(1))
    await first.close()  # the worker restarts
    second = Publisher(path)
    await second.start()
    await second.wait_for_clients(1, timeout=20)
    second.offer(top(2))
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert [orjson.loads(line)["update_id"] for line in out.decode().splitlines()] == [1001, 1002]
    assert b"reconnecting" in err
    await second.close()


async def test_feed_sink_forwards_what_clients_want(sock_dir):
    from worker.engine import BookTop as EngineTop
    from worker.events import FeedState, FeedStatus, Market, TimerTick
    from worker.publish import FeedSink

    pub, task = await started(sock_dir / "f.sock")
    reader, writer = await asyncio.open_unix_connection(str(sock_dir / "f.sock"))
    await pub.wait_for_clients(1)
    sink = FeedSink(pub)
    t = EngineTop("BTCUSDT", Market.SPOT, 1, 100, 5, 101, 2, 0.0, 100.5, 1, 2)
    sink(TimerTick(5), [t, t, object()])  # duplicate top filtered, unknown output ignored
    sink(FeedStatus("BTCUSDT", Market.SPOT, FeedState.DISCONNECTED, "ws closed", 9), [])
    got = await read_n(reader, 3)
    assert [m["type"] for m in got] == ["hello", "book_top", "status"]
    assert got[2]["state"] == "disconnected" and got[2]["component"] == "feed"
    writer.close()
    await pub.close()
    await task
