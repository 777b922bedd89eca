"""Telegram notifier against the loopback Bot API stand-in: pacing, 429, retries, digests, redaction."""

from __future__ import annotations

import itertools
import logging
from decimal import Decimal

import pytest

from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram, RateLimited
from worker import logs, notify
from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import Instrument
from worker.notify import FillNote, Notifier, TelegramConfig
from worker.orders import Fill, Liquidity, Side

INTERVAL = 0.1


@pytest.fixture(autouse=True)
def _forget_tokens():
    yield
    logs.clear_secrets()  # the redaction registry is process-wide; leave it as we found it


@pytest.fixture
async def fake():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def config(fake: FakeTelegram, **overrides) -> TelegramConfig:
    values = dict(
        token=DEFAULT_TOKEN,
        chat_id="42",
        base_url=fake.base_url,
        timeout_s=0.3,
        min_interval_s=INTERVAL,
        backoff_s=0.02,
        max_attempts=3,
    )
    values.update(overrides)
    return TelegramConfig(**values)


async def drained(notifier: Notifier, timeout: float = 10.0) -> None:
    """Close the notifier, which returns once every queued note was delivered or dropped."""
    await notifier.close(flush_timeout=timeout)


async def started(cfg: TelegramConfig) -> Notifier:
    notifier = Notifier(cfg)
    await notifier.start()
    return notifier


def fill(symbol="BTCUSDT", side="BUY", qty="0.01", price="60000.10") -> FillNote:
    return FillNote(symbol, side, Decimal(qty), Decimal(price), Decimal("0.00001"), "BNB", "maker")


async def test_messages_sent_in_order_and_paced_per_chat(fake):
    n = await started(config(fake))
    for i in range(4):
        assert n.offer(f"message {i}")
    await drained(n)
    assert fake.texts() == [f"message {i}" for i in range(4)]
    times = [r.at for r in fake.requests]
    assert all(b - a >= INTERVAL * 0.99 for a, b in itertools.pairwise(times))
    assert n.stats.sent == 4 and n.stats.failed == 0


async def test_429_retry_after_is_obeyed(fake):
    fake.script(RateLimited(1))
    n = await started(config(fake))
    n.offer("first")
    n.offer("second")
    await drained(n)
    assert [r.status for r in fake.requests] == [429, 200, 200]
    assert fake.requests[1].at - fake.requests[0].at >= 1.0
    assert fake.texts() == ["first", "second"]
    assert n.stats.rate_limited == 1 and n.stats.sent == 2


async def test_flood_wait_beyond_limit_drops_the_note(fake):
    fake.script(RateLimited(3600))
    n = await started(config(fake))
    n.offer("dropped")
    n.offer("kept")
    await drained(n)
    assert fake.texts() == ["kept"]
    assert n.stats.failed == 1 and n.stats.rate_limited == 1


async def test_timeouts_and_5xx_retried_then_dropped_and_counted(fake):
    fake.script("timeout", 500, "ok")  # first note: succeeds on the third attempt
    fake.script(502, 503, 500)  # second note: three failures, dropped
    n = await started(config(fake))
    n.offer("survives")
    n.offer("lost")
    n.offer("after")
    await drained(n)
    assert [r.status for r in fake.requests] == [0, 500, 200, 502, 503, 500, 200]
    assert fake.texts() == ["survives", "after"]
    assert n.stats.sent == 2 and n.stats.failed == 1 and n.stats.retries == 4


async def test_network_error_is_counted_not_raised():
    cfg = TelegramConfig(
        DEFAULT_TOKEN, 42, base_url="http://127.0.0.1:1", backoff_s=0.01, max_attempts=2, min_interval_s=0.01
    )
    n = Notifier(cfg)
    await n.start()
    task = n._run_task
    assert task is not None
    n.offer("nobody listens")
    await n.close(5)
    assert task.done() and task.exception() is None
    assert n.stats.failed == 1 and n.stats.retries == 1


async def test_invalid_token_disables_notifier_without_crashing(fake, caplog):
    n = await started(config(fake, token="999:WrongTokenWrongTokenWrong"))
    n.offer("a")
    n.offer("b")
    await drained(n)
    assert [r.status for r in fake.requests] == [401]
    assert n.stats.unauthorized == 1 and n.disabled and n.stats.disabled_dropped == 1
    assert not n.offer("c") and n.stats.disabled_dropped == 2
    assert any("bot token" in r.getMessage() for r in caplog.records)


async def test_bad_chat_is_rejected_and_counted(fake):
    n = await started(config(fake, chat_id="7"))
    n.offer("to nowhere")
    n.offer("to the right chat", chat_id=42)
    await drained(n)
    assert [r.status for r in fake.requests] == [400, 200]
    assert n.stats.rejected == 1 and n.stats.sent == 1


async def test_burst_of_fills_becomes_one_digest(fake):
    n = Notifier(config(fake))
    for i in range(10):
        n.offer_fill(fill(price=f"600{i}0.00", side="BUY" if i % 3 else "SELL"))
    n.offer("breaker text")
    n.offer_fill(fill(symbol="ETHUSDT"))  # queued behind the text: joins the digest anyway (same chat)
    await n.start()
    await drained(n)
    texts = fake.texts()
    assert len(texts) == 2 and texts[1] == "breaker text"
    digest = texts[0]
    assert digest.startswith("💱 11 fills")
    assert "BTCUSDT BUY: 6 fills, 0.06 @ avg" in digest and "BTCUSDT SELL: 4 fills" in digest
    assert "ETHUSDT BUY: 1 fills" in digest
    assert n.stats.digests == 1 and n.stats.sent == 2


async def test_any_burst_of_fills_takes_one_queue_slot(fake):
    n = Notifier(config(fake, max_queue=2))
    for i in range(5000):
        assert n.offer_fill(fill(qty="0.001", side="SELL" if i % 2 else "BUY"))
    assert n.queue_depth == 1
    assert n.offer("text") and not n.offer("no room")
    await n.start()
    await drained(n)
    texts = fake.texts()
    assert texts[0].splitlines() == [
        "💱 5000 fills",
        "BTCUSDT BUY: 2500 fills, 2.500 @ avg 60000.10, fee 0.02500 BNB",
        "BTCUSDT SELL: 2500 fills, 2.500 @ avg 60000.10, fee 0.02500 BNB",
    ]
    assert texts[1] == "text" and n.stats.queue_dropped == 1


async def test_single_fill_and_photo(fake):
    n = await started(config(fake))
    instrument = Instrument("BTCUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.00001"), Decimal("5"))
    record = Fill(
        1,
        1,
        "BTCUSDT",
        Side.SELL,
        6_000_012,
        150,
        2_000,
        "USDT",
        Liquidity.TAKER,
        0,
        "m",
        0,
        0,
        0.0,
        0.0,
        0.0,
    )
    n.offer_fill(notify.fill_note(record, instrument))
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10
    n.offer_photo(png, caption="equity curve")
    await drained(n)
    expected = "💱 SELL 0.00150 BTCUSDT @ 60000.12 (taker), fee 0.00002000 USDT"
    assert fake.requests[0].fields["text"] == expected
    photo = fake.requests[1]
    assert photo.api_method == "sendPhoto" and photo.files["photo"] == png
    assert photo.fields == {"chat_id": "42", "caption": "equity curve"}


async def test_token_redacted_from_every_log_record(fake, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    fake.script("ok", RateLimited(1), "timeout", 500, 502, 503)
    n = await started(config(fake, max_attempts=3))
    for i in range(3):
        n.offer(f"note {i}")
    n.offer(notify.error("sender", f"boom with {DEFAULT_TOKEN} inside"))
    await drained(n)
    bad = await started(config(fake, token=DEFAULT_TOKEN[:-3] + "zzz"))  # 401 path, a different secret
    bad.offer("x")
    await drained(bad)
    records = caplog.records
    http_lines = [r for r in records if r.name == "httpx"]
    assert http_lines and all(logs.REDACTED in r.getMessage() for r in http_lines)
    assert any(r.levelno >= logging.WARNING and r.name == "worker.notify" for r in records)
    formatter = logs.JsonFormatter()
    for secret in (DEFAULT_TOKEN, DEFAULT_TOKEN[:-3] + "zzz"):
        for r in records:
            assert secret not in r.getMessage()
            assert secret not in repr(vars(r))
            assert secret not in formatter.format(r)
    assert DEFAULT_TOKEN not in "".join(fake.texts())
    assert DEFAULT_TOKEN not in repr(n.config)


async def test_queue_bound_and_config_errors(fake):
    n = Notifier(config(fake, max_queue=2))
    assert [n.offer("a"), n.offer("b"), n.offer("c")] == [True, True, False]
    assert n.stats.queue_dropped == 1
    off = Notifier(TelegramConfig(None, None))
    assert not off.offer("x") and off.stats.disabled_dropped == 1
    with pytest.raises(ConfigError, match="base_url"):
        TelegramConfig(DEFAULT_TOKEN, 1, base_url="api.telegram.org")
    with pytest.raises(ConfigError, match="max_queue"):
        TelegramConfig(DEFAULT_TOKEN, 1, max_queue=0)


def test_builders():
    assert "TRIPPED" in notify.breaker_tripped("daily_loss", "loss limit", "-120 USDT", "-100 USDT")
    assert "reset by operator" in notify.breaker_reset("daily_loss")
    assert "12 book resyncs in 1m 0s" in notify.resync_storm("BTCUSDT", 12, 60)
    assert "no message for 7.5 s" in notify.stale_feed("BTCUSDT", 7.5)
    assert "until 2026-11-28 17:31" in notify.shabbat_pause("2026-11-28 17:31")
    assert "resumed" in notify.shabbat_resume()
    summary = notify.daily_summary("2026-11-26", {"P&L": "12.30 USDT", "fills": 41})
    assert summary.splitlines()[1:] == ["P&L: 12.30 USDT", "fills: 41"]
    assert "after 1h 1m" in notify.stopped("SIGTERM", 3660)
    assert "BTCUSDT, ETHUSDT" in notify.started("0.1.0", ["BTCUSDT", "ETHUSDT"])
    assert len(notify.error("x", "y" * 10_000)) == notify.MAX_TEXT


async def test_keyed_alerts_are_suppressed_inside_their_cooldown(fake):
    n = Notifier(config(fake))
    assert n.offer("stale BTC", key="stale:BTCUSDT", cooldown_s=60)
    assert not n.offer("stale BTC again", key="stale:BTCUSDT", cooldown_s=60)
    assert n.offer("stale ETH", key="stale:ETHUSDT", cooldown_s=60)
    assert n.offer("stale BTC, no cooldown", key="stale:BTCUSDT", cooldown_s=0)
    assert n.stats.suppressed == 1 and n.queue_depth == 3
    await n.close()  # never started: the queued notes are counted as lost, not silently forgotten
    assert n.stats.failed == 3 and n.queue_depth == 0


def test_storm_detector_reports_once_per_storm():
    storms = notify.StormDetector(threshold=3, window_s=60)
    seen = [storms.observe("spot:BTCUSDT", t) for t in (0, 10, 20, 30, 40)]
    assert seen == [None, None, 3, None, None]
    assert storms.observe("usdm:BTCUSDT", 20) is None  # keys are independent
    assert storms.observe("spot:BTCUSDT", 200) is None  # window emptied: calm again
    assert [storms.observe("spot:BTCUSDT", t) for t in (210, 220)] == [None, 3]
    with pytest.raises(ConfigError):
        notify.StormDetector(threshold=1)


async def test_alert_sink_digests_fills_and_alerts_storms_and_feed_state(fake):
    from worker.book import SyncState
    from worker.engine import SyncChange
    from worker.events import FeedState, FeedStatus, TimerTick

    n = Notifier(config(fake))
    instrument = Instrument("BTCUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.00001"), Decimal("5"))
    sink = notify.AlertSink(n, {"BTCUSDT": instrument}, notify.StormDetector(threshold=3, window_s=60))
    record = Fill(
        1, 1, "BTCUSDT", Side.BUY, 6_000_000, 100, 0, "USDT", Liquidity.MAKER, 0, "m", 0, 0, 0.0, 0.0, 0.0
    )
    sink(TimerTick(1), [record, record])
    for i in range(5):  # five resyncs in 5 s: one storm alert
        sink(TimerTick(i), [SyncChange("BTCUSDT", Market.SPOT, SyncState.SYNCING, "gap", i * 1_000_000_000)])
    down = FeedStatus("BTCUSDT", Market.SPOT, FeedState.STALE, "no frames for 10s", 10_000_000_000)
    sink(down, [])
    sink(down, [])  # still stale: suppressed by the cooldown
    sink(FeedStatus("BTCUSDT", Market.SPOT, FeedState.CONNECTED, "", 70_000_000_000), [])
    await n.start()
    await drained(n)
    texts = fake.texts()
    assert texts[0].startswith("💱 2 fills") and "0.00200 @ avg 60000.00" in texts[0]
    assert texts[1] == "⚠️ Resync storm on spot:BTCUSDT: 3 book resyncs in 1m 0s"
    assert texts[2] == "⚠️ Feed stale on spot:BTCUSDT: no message yet (no frames for 10s)"
    assert texts[3] == "✅ Feed on spot:BTCUSDT back after 1m 0s"
    assert len(texts) == 4 and n.stats.suppressed == 1
