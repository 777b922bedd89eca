"""The worker's shell wired end to end: config layers, store, feed socket, Telegram, health, SIGTERM, replay.

The live test runs the real `python -m worker run` process against the loopback Binance and Telegram
stand-ins; it waits on log lines, socket messages, HTTP answers and rows, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fakes.binance import FakeBinance, FakeSymbol
from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram
from worker import config, shell
from worker.binance.recording import FrameWriter, SnapshotWriter
from worker.broker import BrokerConfig
from worker.errors import ConfigError
from worker.events import Market
from worker.features import FeatureConfig
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, new_order
from worker.orders import fill as fill_order
from worker.publish import Publisher, decode_stream
from worker.replay import replay, replay_async
from worker.store.adapt import StoreAdapter, StoreSink
from worker.store.db import connect_readonly
from worker.store.records import OrderUpdate
from worker.strategy import StrategyConfig
from worker.trader import TradingConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "config.example.toml"
BTC = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="qfw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 10.0, every: float = 0.05) -> Any:
    """Poll a condition until it holds (a timeout, not a sleep, decides failure)."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if value:
                return value
            await asyncio.sleep(every)  # polling interval of a condition wait
    raise AssertionError(what)  # pragma: no cover


class WorkerProcess:
    """`python -m worker run` as a child; its JSON log lines are parsed as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args, self.env, self.cwd = args, env, cwd
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.changed = asyncio.Condition()
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(self) -> WorkerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "run",
            *self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").rstrip()
            self.raw.append(text)
            try:
                record = orjson.loads(text)
            except orjson.JSONDecodeError:
                record = {"message": text, "level": "raw"}
            async with self.changed:
                self.lines.append(record)
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    async def wait_log(self, message: str, timeout: float = 15.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((r for r in self.lines if r.get("message") == message), None)

        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(lambda: find() is not None or self._reader.done())  # type: ignore[union-attr]
        except TimeoutError:
            raise AssertionError(f"no log line {message!r}; output:\n" + "\n".join(self.raw[-30:])) from None
        found = find()
        assert found is not None, f"worker ended before {message!r}:\n" + "\n".join(self.raw[-30:])
        return found

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return rc

    async def exited(self, timeout: float = 20.0) -> int:
        """Wait for the process to end by itself (a refused start)."""
        assert self.proc is not None
        rc = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout)
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


def worker_env(fake: FakeBinance, **extra: str) -> dict[str, str]:
    endpoints = fake.endpoints()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QF_", "TELEGRAM_"))}
    env.update(
        QF_BINANCE_SPOT_WS=endpoints.spot_ws,
        QF_BINANCE_SPOT_REST=endpoints.spot_rest,
        QF_BINANCE_USDM_WS=endpoints.usdm_ws,
        QF_BINANCE_USDM_REST=endpoints.usdm_rest,
        QF_SYMBOLS="btcusdt",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


async def read_feed(reader: asyncio.StreamReader, sink: list[dict], arrived: asyncio.Event) -> None:
    buffer = bytearray()
    while chunk := await reader.read(1 << 16):
        buffer += chunk
        messages = decode_stream(buffer)
        if messages:
            sink.extend(messages)
            arrived.set()


# ---- the live worker, end to end ----------------------------------------------------------------------
async def test_live_worker_feed_store_health_telegram_and_sigterm(short_dir: Path) -> None:
    db_path = short_dir / "live.db"
    sock = short_dir / "feed.sock"
    async with FakeBinance(interval=0.005) as fake:
        telegram = await FakeTelegram().start()
        fake.pause()  # no diffs yet: the book must stay SYNCING and /health must say 503
        env = worker_env(
            fake,
            TELEGRAM_BOT_TOKEN=DEFAULT_TOKEN,
            TELEGRAM_CHAT_ID="42",
            TELEGRAM_API_BASE=telegram.base_url,
            QF_PUBLISH_SOCKET=str(sock),
        )
        args = ["--db", str(db_path), "--health-port", "0", "--set", "health.heartbeat_interval_s=0.2"]
        worker = await WorkerProcess(args, env, short_dir).start()
        try:
            port = (await worker.wait_log("health endpoint listening"))["port"]
            await worker.wait_log("worker started")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
                before = await http.get("/health")
                assert before.status_code == 503
                assert any("syncing" in p for p in before.json()["problems"]), before.json()

                reader, writer = await asyncio.open_unix_connection(str(sock))
                messages: list[dict] = []
                arrived = asyncio.Event()
                feed_task = asyncio.create_task(read_feed(reader, messages, arrived))
                fake.resume()

                def tops() -> list[dict]:
                    return [m for m in messages if m["type"] == "book_top"]

                await eventually(lambda: len(tops()) >= 30, "30 book tops on the feed socket")
                seen = tops()
                assert messages[0]["type"] == "hello" and "BTCUSDT" in messages[0]["instruments"]
                ids = [m["update_id"] for m in seen]
                assert ids == sorted(ids) and len(set(ids)) == len(ids), "book tops out of order"
                assert all(m["bid_px"] < m["ask_px"] and m["mid2"] == m["bid_px"] + m["ask_px"] for m in seen)

                async def healthy() -> httpx.Response:
                    while (r := await http.get("/health")).status_code != 200:
                        await asyncio.sleep(0.05)  # polling interval of a condition wait
                    return r

                ok = await asyncio.wait_for(healthy(), 10)
                body = ok.json()
                assert body["symbols"]["spot:BTCUSDT"]["state"] == "live" and body["problems"] == []

            def heartbeat() -> tuple | None:
                if not db_path.exists():
                    return None
                conn = connect_readonly(db_path)
                try:
                    return conn.execute("SELECT trading_state, sync_json, wall_ns FROM heartbeat").fetchone()
                finally:
                    conn.close()

            row = await eventually(
                lambda: (r := heartbeat()) is not None and "live" in r[1] and r, "a live heartbeat row"
            )
            assert orjson.loads(row[1]) == {"spot:BTCUSDT": "live"}

            await telegram.wait_requests(1)
            assert "started" in telegram.texts()[0]

            rc = await worker.stop(signal.SIGTERM)
            assert rc == 0, "\n".join(worker.raw[-20:])
            writer.close()
            feed_task.cancel()
        finally:
            worker.kill()
        await telegram.wait_requests(2)
        assert "stopped" in telegram.texts()[-1] and "sigterm" in telegram.texts()[-1]
        await telegram.stop()
    assert not any(DEFAULT_TOKEN in line for line in worker.raw), "the bot token reached a log line"
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = conn.execute("SELECT mode, stop_reason, config_digest, config_json FROM runs").fetchone()
        assert run[0] == "live" and run[1] == "sigterm" and len(run[2]) == 64
        assert DEFAULT_TOKEN not in run[3] and hashlib.sha256(run[3].encode()).hexdigest() == run[2]
        kinds = [k for (k,) in conn.execute("SELECT kind FROM system_events ORDER BY event_id")]
        assert kinds[0] == "start" and kinds[-1] == "stop" and "synced" in kinds
        # The flush on SIGTERM: the stop event and the final heartbeat are committed.
        assert conn.execute("SELECT count(*) FROM book_top_bars WHERE resolution_s = 1").fetchone()[0] >= 1
        assert conn.execute("SELECT count(*) FROM heartbeat").fetchone()[0] == 1
    finally:
        conn.close()


async def test_sigterm_during_start_up_exits_cleanly(short_dir: Path) -> None:
    """exchangeInfo never answers: a SIGTERM then still ends the worker at once, exit 0, file closed."""
    held: list[asyncio.StreamWriter] = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read, never answer

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with FakeBinance() as fake:
        env = worker_env(fake, QF_BINANCE_SPOT_REST=f"http://127.0.0.1:{port}")
        db_path = short_dir / "early.db"
        worker = await WorkerProcess(["--db", str(db_path)], env, short_dir).start()
        try:
            await worker.wait_log("fetching instruments")
            rc = await worker.stop(signal.SIGTERM, timeout=10)
        finally:
            worker.kill()
    server.close()
    for writer in held:
        writer.close()
    assert rc == 0, "\n".join(worker.raw[-20:])
    assert any(r.get("message") == "stopped during start-up" for r in worker.lines)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


async def test_worker_refuses_a_database_from_a_newer_schema(short_dir: Path) -> None:
    db_path = short_dir / "newer.db"
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA application_id = 1363561559")  # 0x51464C57: ours
    conn.execute("PRAGMA user_version = 999")
    conn.execute("CREATE TABLE future (x INTEGER)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    async with FakeBinance() as fake:
        worker = await WorkerProcess(["--db", str(db_path)], worker_env(fake), short_dir).start()
        rc = await worker.exited()
    assert rc == 1, "\n".join(worker.raw)
    errors = [r["message"] for r in worker.lines if r.get("level") == "error"]
    assert len(errors) == 1 and "cannot start" in errors[0] and "999" in errors[0], errors
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before, "a refused file was modified"
    assert fake.depth_requests == 0  # refused before any network


async def test_bad_config_exits_2_naming_the_parameter(short_dir: Path) -> None:
    async with FakeBinance() as fake:
        env = worker_env(fake, QF_HEALTH_PORT="eighty")
        worker = await WorkerProcess(["--db", str(short_dir / "x.db")], env, short_dir).start()
        rc = await worker.exited()
    assert rc == 2
    errors = [r["message"] for r in worker.lines if r.get("level") == "error"]
    assert errors and "health.port" in errors[0] and "QF_HEALTH_PORT" in errors[0], errors
    assert not (short_dir / "x.db").exists()


# ---- configuration layers -------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    f = write(
        tmp_path / "w.toml",
        '[worker]\nsymbols = ["ethusdt"]\ndb = "file.db"\nlog_level = "debug"\n'
        "[health]\nport = 9000\nmax_msg_age_s = 3.5\n[store]\nmax_lag_s = 4\n",
    )
    cfg = config.load(f, env={})
    assert cfg.symbols == ("ETHUSDT",) and cfg.db == "file.db" and cfg.health.port == 9000
    assert cfg.log_level == "DEBUG" and cfg.health.limits.max_msg_age_s == 3.5 and cfg.store.max_lag_s == 4.0
    assert cfg.store.max_batch == config.SCHEMA["store"]["max_batch"].default  # untouched: default
    env = {"QF_DB": "env.db", "QF_HEALTH_PORT": "9100", "QF_SYMBOLS": "btcusdt, ethusdt"}
    cfg = config.load(f, env=env)
    assert cfg.db == "env.db" and cfg.health.port == 9100 and cfg.symbols == ("BTCUSDT", "ETHUSDT")
    assert cfg.origins["worker.db"] == "env QF_DB" and cfg.origins["health.max_msg_age_s"].startswith("file")
    cfg = config.load(f, env=env, cli={"db": "cli.db", "health_port": 9200}, sets=["health.port=9300"])
    assert (
        cfg.db == "cli.db" and cfg.health.port == 9300 and cfg.origins["health.port"] == "--set health.port"
    )
    assert config.load(None, env={"QF_CONFIG": str(f)}).db == "file.db"  # $QF_CONFIG names the file


def test_unknown_sections_and_keys_are_refused_by_name(tmp_path: Path) -> None:
    cases = {
        "[risk]\nmax_leverge = 2\n": "risk.max_leverge",
        "[riks]\nmax_leverage = 2\n": "riks",
        "[broker]\nqueue_modle = 'conservative'\n": "broker.queue_modle",
        "[strategy]\nentry_treshold = 2.0\n": "strategy.entry_treshold",
        "[risk.symbols.BTCUSDT]\nmax_positon = 1\n": "risk.symbols.BTCUSDT.max_positon",
        "[risk.symbols.DOGEUSDT]\nmax_position = 1\n": "risk.symbols.DOGEUSDT",
    }
    for text, param in cases.items():
        with pytest.raises(ConfigError) as err:
            config.load(write(tmp_path / "bad.toml", text), env={})
        assert err.value.parameter == param, (text, err.value)
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path / "broken.toml", "[worker\n"), env={})
    assert err.value.parameter == "--config"


def test_bad_values_name_the_parameter_and_where_it_came_from(tmp_path: Path) -> None:
    cases = [
        ({"env": {"QF_HEALTH_PORT": "abc"}}, "health.port", "env QF_HEALTH_PORT"),
        ({"env": {"QF_MARKET": "margin"}}, "worker.market", "spot"),
        ({"sets": ["store.max_lag_s=-1"]}, "store.max_lag_s", "positive"),
        ({"sets": ["telegram.base_url='ftp://x'"]}, "telegram.base_url", "http"),
        ({"sets": ["calendar.candle_minutes=500"]}, "calendar.candle_minutes", "[0, 120]"),
        ({"sets": ["calendar.tz='Mars/Olympus'"]}, "calendar.tz", "IANA"),
        ({"sets": ["risk.max_leverage=0"]}, "risk.max_leverage", "positive"),
        ({"sets": ["broker.market_protection_bps=0"]}, "broker.market_protection_bps", "(0, 10000]"),
        ({"sets": ["trading.order_style='yolo'"]}, "trading.order_style", "taker"),
        ({"sets": ["binance.spot_ws='http://x'"]}, "binance.spot_ws", "ws://"),
        ({"sets": ["worker.book_ticker=maybe"]}, "worker.book_ticker", "true or false"),
        ({"sets": ["store.signal_retention_s=60"]}, "store.signal_retention_s", "0 (keep everything)"),
        (
            {"sets": ["store.approved_decision_retention_s=-1"]},
            "store.approved_decision_retention_s",
            ">= 3600",
        ),
    ]
    for kwargs, param, hint in cases:
        with pytest.raises(ConfigError) as err:
            config.load(None, **({"env": {}} | kwargs))  # type: ignore[arg-type]
        assert err.value.parameter == param and hint in str(err.value), (kwargs, err.value)


def test_digest_is_canonical_and_leaves_secrets_out() -> None:
    base = config.load(None, env={})
    same = config.load(None, env={"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "TELEGRAM_CHAT_ID": "42"})
    assert DEFAULT_TOKEN not in same.canonical_json()
    assert same.telegram.token == DEFAULT_TOKEN and same.telegram_enabled and not base.telegram_enabled
    other = config.load(None, env={}, sets=["risk.max_leverage=2"])
    assert other.digest() != base.digest()
    assert config.load(None, env={}).digest() == base.digest()
    assert orjson.loads(base.canonical_json())["risk"]["max_leverage"] == "3"  # exact decimal text


def test_toml_floats_stay_exact_decimals(tmp_path: Path) -> None:
    f = write(tmp_path / "r.toml", "[risk]\nmax_order_notional = 100.1\ndaily_loss_limit = 0.1\n")
    cfg = config.load(f, env={})
    assert str(cfg.risk.default_limits.max_order_notional) == "100.1"
    assert str(cfg.risk.daily_loss_limit) == "0.1"


def documented_keys(text: str) -> dict[str, set[str]]:
    """Keys per section, set or commented out (`# key = value` documents an unset default)."""
    keys: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        m = re.match(r"^#?\s*\[([\w.]+)\]\s*$", line)
        if m:
            section = m.group(1)
            keys.setdefault(section, set())
            continue
        m = re.match(r"^#?\s?(\w+) = ", line)
        if m and section:
            keys[section].add(m.group(1))
    return keys


def test_example_config_documents_every_key_with_its_default() -> None:
    keys = documented_keys(EXAMPLE.read_text())
    for section, spec in config.SCHEMA.items():
        assert keys.get(section) == set(spec), (section, set(spec) ^ keys.get(section, set()))
    assert keys["risk.symbols.BTCUSDT"] == set(config.SYMBOL_LIMIT_KEYS)
    components = (("features", FeatureConfig), ("strategy", StrategyConfig), ("trading", TradingConfig))
    for section, cls in components:
        assert keys[section] == {f.name for f in dataclasses.fields(cls)}, section
    broker = {f.name for f in dataclasses.fields(BrokerConfig)} - {"fees"}
    broker |= {"spot_maker", "spot_taker", "usdm_maker", "usdm_taker"}
    assert keys["broker"] == broker
    # The example holds the defaults: loading it gives the same effective configuration as nothing.
    tomllib.loads(EXAMPLE.read_text())
    example = config.load(EXAMPLE, env={})
    assert example.canonical_json() == config.load(None, env={}).canonical_json()


# ---- replay through the live sinks --------------------------------------------------------------------
def synthetic_recording(directory: Path, seconds: int = 20, step_ms: int = 100) -> Path:
    """A small spot recording made by the stand-in's book model: a snapshot, then `seconds` of diffs."""
    import random

    book = FakeSymbol(Market.SPOT, "BTCUSDT", BTC, random.Random(3))
    start_ns = 1_723_161_600_037_000_000  # a Thursday (no Shabbat window); events off the 1 s ticks
    frames = directory / "spot_btcusdt_test.ws.jsonl.gz"
    with FrameWriter(frames) as fw, SnapshotWriter(directory / "spot_btcusdt_test.snapshots.jsonl") as sw:
        t = start_ns
        for i in range(seconds * 1000 // step_ms):
            t = start_ns + i * step_ms * 1_000_000
            depth, trade = book.step(t // 1_000_000)
            fw.write(t, orjson.dumps({"stream": "btcusdt@depth@100ms", "data": depth}))
            fw.write(t + 1, orjson.dumps({"stream": "btcusdt@trade", "data": trade}))
            if i == 3:
                sw.write(t + 2, "BTCUSDT", Market.SPOT, orjson.dumps(book.snapshot(1000, t // 1_000_000)))
    return frames


async def test_replay_into_a_db_writes_what_the_engine_sampled_and_feeds_a_client(short_dir: Path) -> None:
    frames = synthetic_recording(short_dir)
    snapshots = short_dir / "spot_btcusdt_test.snapshots.jsonl"
    cfg = config.load(None, env={})
    # The reference: the same engine over the same file with no sinks, adapted to store records.
    traded = {(Market.SPOT, "BTCUSDT"): BTC}
    engine = shell.make_engine(cfg, DEFAULT_INSTRUMENTS, traded)
    adapter = StoreAdapter()
    expected_tops: list[Any] = []
    samples: dict[int, Any] = {}  # second -> first sample in it (the store keeps the first)

    def collect(outputs: list[Any]) -> None:
        for out in outputs:
            if type(out).__name__ == "BookTop":
                expected_tops.append(out)
            for record in adapter.convert(out):
                if type(record).__name__ == "TopSample":
                    samples.setdefault(record.ts_ns // 1_000_000_000, record)

    replay(frames, snapshots, engine=engine, on_outputs=collect, tick_ns=int(cfg.tick_interval_s * 1e9))
    assert len(expected_tops) >= 20 and len(samples) >= 15

    received: list[dict] = []
    arrived = asyncio.Event()
    tasks: list[asyncio.Task] = []

    writers: list[asyncio.StreamWriter] = []  # held: a collected StreamWriter closes its connection

    async def connect(publisher: Publisher) -> None:
        reader, writer = await asyncio.open_unix_connection(str(publisher.path))
        writers.append(writer)
        tasks.append(asyncio.create_task(read_feed(reader, received, arrived)))
        await publisher.wait_for_clients(1)

    db_path = short_dir / "replay.db"
    outcome = await replay_async(
        frames,
        snapshots,
        config=cfg,
        db_path=db_path,
        publish_socket=short_dir / "r.sock",
        publisher_ready=connect,
    )
    await asyncio.wait_for(tasks[0], 10)  # the feed closes at the end: the client has read everything
    tops = [m for m in received if m["type"] == "book_top"]
    assert [m["update_id"] for m in tops] == [t.update_id for t in expected_tops]
    assert outcome.store is not None and outcome.store["samples_dropped"] == 0
    conn = connect_readonly(db_path)
    try:
        rows = conn.execute(
            "SELECT last_ns, bid_price, ask_price FROM book_top_bars WHERE resolution_s = 1 ORDER BY bucket_s"
        ).fetchall()
        run = conn.execute("SELECT mode, config_digest FROM runs").fetchone()
    finally:
        conn.close()
    # One row per second of event time: the engine's 1 s samples, exactly what the sink-less reference
    # pass produced.
    assert [(s.ts_ns, s.bid, s.ask) for s in samples.values()] == rows
    assert all(bid < ask for _, bid, ask in rows)
    assert run == ("replay", cfg.digest())


async def test_replay_cli_db_and_no_db(short_dir: Path) -> None:
    frames = synthetic_recording(short_dir, seconds=5)
    db_path = short_dir / "cli.db"

    async def run(*extra: str) -> tuple[int, dict]:
        summary_path = short_dir / "s.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker",
            "replay",
            str(frames),
            "--no-progress",
            "--summary-json",
            str(summary_path),
            *extra,
            cwd=short_dir,
            env={**os.environ, "PYTHONPATH": str(ROOT), "QF_DB": str(short_dir / "live.db")},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        return proc.returncode, orjson.loads(summary_path.read_bytes())

    _, summary = await run("--db", str(db_path))
    assert summary["store"]["db"] == str(db_path) and summary["store"]["rows_written"] > 0
    conn = connect_readonly(db_path)
    try:
        assert conn.execute("SELECT count(*) FROM book_top_bars WHERE resolution_s = 1").fetchone()[0] >= 3
    finally:
        conn.close()
    _, summary = await run("--no-db")
    assert "store" not in summary
    _, summary = await run()  # default: ./quantumflow-replay.db in the working directory, never $QF_DB
    assert (short_dir / "quantumflow-replay.db").exists() and not (short_dir / "live.db").exists()
    assert not (short_dir / "quantumflow.db").exists(), "the live worker's default file is left alone"


# ---- recovery and the storage-lag gate, in process ------------------------------------------------------
def _fill(fill_id: int, order_id: int, side: Side, price: int, qty: int, ts_ns: int) -> Fill:
    return Fill(
        fill_id, order_id, "BTCUSDT", side, price, qty, 0, "USDT", Liquidity.TAKER, ts_ns, "test", 0, 0.0,
        float(price), float(price), 0.0,
    )  # fmt: skip


async def test_restart_continues_ids_rebuilds_the_portfolio_and_cancels_open_orders(tmp_path: Path) -> None:
    cfg = config.load(None, env={})
    traded = {(Market.SPOT, "BTCUSDT"): BTC}
    db_path = tmp_path / "restart.db"
    t0 = 1_723_161_600_000_000_000
    writer, _ = await shell.open_store(cfg, traded, "test", db_path)
    buy = new_order(7, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 300, 6_000_000, t0)
    resting = new_order(9, "BTCUSDT", Side.SELL, OrderType.LIMIT, TimeInForce.GTC, 100, 6_100_000, t0 + 2)
    writer.submit(buy)
    writer.submit(OrderUpdate(fill_order(buy, 300), t0 + 1, "fill"))
    writer.submit(_fill(41, 7, Side.BUY, 6_000_000, 300, t0 + 1))
    writer.submit(resting)
    await writer.close("crash")

    engine = shell.make_engine(cfg, traded)
    writer, state = await shell.open_store(cfg, traded, "test", db_path)
    emitted: list[Any] = []
    sink = StoreSink(writer)
    shell.restore(
        engine, state, t0 + 10, lambda outs: (emitted.extend(outs), sink.submit_outputs(outs)), db_path
    )
    await writer.close("stop")

    trader = engine.trader
    assert trader.portfolio.qty("BTCUSDT") == 300  # rebuilt from the fill, not assumed
    assert trader._next_order_id == 10 and trader.broker._fill_id == 41  # ids continue, never reused
    cancels = [o for o in emitted if getattr(o, "event", "") == "restart"]
    assert [c.order.order_id for c in cancels] == [9] and cancels[0].order.status.reason == "restart"
    conn = connect_readonly(db_path)
    try:
        status = conn.execute("SELECT status, reason FROM orders WHERE order_id = 9").fetchone()
        assert status == ("Cancelled", "restart")
        assert conn.execute("SELECT count(*) FROM fills").fetchone()[0] == 1
    finally:
        conn.close()


class LaggingWriter:
    """Just what the gate reads from a writer."""

    def __init__(self) -> None:
        self.is_lagging = False
        self.queue_depth = 0
        self.stats = type("S", (), {"last_error": "disk I/O error"})()

    def lag_seconds(self) -> float:
        return 3.0 if self.is_lagging else 0.0


def test_storage_lag_gate_tells_the_risk_engine_on_each_flip() -> None:
    cfg = config.load(None, env={})
    engine = shell.make_engine(cfg, {(Market.SPOT, "BTCUSDT"): BTC})
    writer = LaggingWriter()
    out: list[Any] = []
    gate = shell.StorageLagGate(engine, writer, out.extend)  # type: ignore[arg-type]
    gate.check(1)
    assert out == [] and not engine.trader.risk.storage_lag
    writer.is_lagging = True
    gate.check(2)
    gate.check(3)  # edge-triggered: no repeat while it stays behind
    assert engine.trader.risk.storage_lag
    kinds = [(type(o).__name__, getattr(o, "kind", getattr(o, "breaker", ""))) for o in out]
    assert kinds == [("SystemEvent", "storage_lag"), ("BreakerChanged", "storage_lag")]
    writer.is_lagging = False
    gate.check(4)
    assert not engine.trader.risk.storage_lag and gate.flips == 2
    assert [getattr(o, "kind", "") for o in out][-2] == "storage_caught_up"


# ---- trading notes (Telegram) ---------------------------------------------------------------------------
class RecordingNotifier:
    def __init__(self) -> None:
        self.notes: list[tuple[str, str | None]] = []
        self.keys: set[str] = set()

    def offer(self, text: str, chat_id: Any = None, key: str | None = None, cooldown_s: float = 0) -> bool:
        if key is not None and key in self.keys:
            return False  # the real Notifier's cooldown, reduced to "once"
        if key is not None:
            self.keys.add(key)
        self.notes.append((text, key))
        return True


def test_trading_notes_cover_pauses_breakers_incidents_and_the_daily_summary() -> None:
    from worker.alerts import TradingNotes, daily_text
    from worker.risk import BreakerChanged
    from worker.trader import Incident, PauseChange

    notifier = RecordingNotifier()
    notes = TradingNotes(notifier)  # type: ignore[arg-type]
    until = 1_723_330_800_000_000_000  # 2024-08-10 23:00 UTC
    notes(
        None,
        [
            PauseChange(1, True, "Shabbat", until),
            BreakerChanged(2, "drawdown", True, "drawdown_halt", {"value": 510, "limit": 500}),
            Incident(3, "impossible_fill", "sell beyond position"),
            Incident(4, "impossible_fill", "again"),
            BreakerChanged(5, "storage_lag", True, "storage_lag"),
            BreakerChanged(6, "drawdown", False, "operator"),
            PauseChange(7, False, "Shabbat", None),
        ],
    )
    texts = [t for t, _ in notifier.notes]
    assert "paused until 2024-08-10 23:00 UTC" in texts[0]
    assert "drawdown TRIPPED" in texts[1] and "510 vs limit 500" in texts[1]
    assert "impossible_fill" in texts[2] and "sell beyond position" in texts[2]
    assert "writer is behind" in texts[3]
    assert "reset" in texts[4] and "resumed" in texts[5] and len(texts) == 6  # the repeat was keyed out
    day0 = 1_723_161_600_000_000_000  # 2024-08-09 00:00 UTC
    assert notes.daily_due(day0 + 5) is None  # first tick: nothing has ended yet
    assert notes.daily_due(day0 + 3_600 * 10**9) is None
    assert notes.daily_due(day0 + 86_400 * 10**9) == "2024-08-09"
    assert notes.daily_due(day0 + 86_401 * 10**9) is None
    summary = {
        "events": 10,
        "gaps": 1,
        "resyncs": 2,
        "trading": {"equity": 1_000_012_345_000_000, "realized_pnl": -150_000_000, "signals": 4},
    }
    text = daily_text("2024-08-09", summary)
    assert "equity: 10000123.45 USDT" in text and "realized P&L: -1.5 USDT" in text
    assert "gaps / resyncs: 1 / 2" in text


def test_operator_reset_clears_a_restored_breaker() -> None:
    from worker.store.recovery import BreakerState, OperatorAction

    cfg = config.load(None, env={})
    engine = shell.make_engine(cfg, {(Market.SPOT, "BTCUSDT"): BTC})
    risk = engine.trader.risk
    tripped = BreakerState("drawdown", True, "drawdown_halt", 5, {"level": "HALTED"})
    risk.restore_breakers([tripped], 10)
    risk.drain()
    assert risk.state.value == "HALTED"
    action = OperatorAction(1, "risk_reset", "checked the feed", "ops", 0)
    outputs = shell.apply_operator_action(engine, action, 20)
    assert outputs is not None and risk.state.value == "ACTIVE"
    cleared = [o for o in outputs if type(o).__name__ == "BreakerChanged"]
    assert cleared and not cleared[0].tripped and "ops" in cleared[0].reason
    unknown = OperatorAction(2, "flatten_all", "", "ops", 0)
    assert shell.apply_operator_action(engine, unknown, 30) is None  # left pending, not lost
