"""Errors and stale streams reach Telegram (the loopback stand-in), keyed and rate-limited.

- An engine exception (the event is dropped) and a failing sink become `notify.error` notes through the
  loop's `PumpCounters.on_error` -> `notify.ErrorNotes`: one per place and exception type per cooldown.
- A stream the source's watchdog closed for silence is reported with `notify.stale_feed` (age of the
  symbol's last message), not as a generic disconnect.
"""

from __future__ import annotations

import pytest

from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram
from worker import logs, notify
from worker.app import PumpCounters, deliver
from worker.events import DepthDiff, FeedState, FeedStatus, Market, TimerTick
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.notify import Notifier, TelegramConfig

NS = 1_000_000_000
BTC = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]


@pytest.fixture(autouse=True)
def _secrets():
    yield
    logs.clear_secrets()


@pytest.fixture
async def fake():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def notifier_for(fake: FakeTelegram) -> Notifier:
    cfg = TelegramConfig(
        token=DEFAULT_TOKEN, chat_id="42", base_url=fake.base_url, timeout_s=2.0, min_interval_s=0.0
    )
    return Notifier(cfg)


class BrokenEngine:
    def __init__(self) -> None:
        self.calls = 0

    def on_event(self, event: object) -> list:
        self.calls += 1
        if isinstance(event, TimerTick):
            raise ZeroDivisionError(f"division by zero in tick {self.calls}")
        return ["ok"]


class FailingSink:
    def __call__(self, event: object, outputs: list) -> None:
        raise KeyError("no such symbol")


async def test_engine_and_sink_errors_are_notified_once_per_cooldown(fake: FakeTelegram) -> None:
    notifier = notifier_for(fake)
    counters = PumpCounters(on_error=notify.ErrorNotes(notifier, cooldown_s=300))
    engine = BrokenEngine()
    for i in range(3):  # the same failure three times: one note, two counted repeats
        deliver(engine, [], counters, TimerTick(i))  # type: ignore[arg-type]
    received: list[list] = []
    sinks = [lambda event, outputs: received.append(outputs), FailingSink()]
    for i in range(2):
        status = FeedStatus("BTCUSDT", Market.SPOT, FeedState.CONNECTED, "", i)
        deliver(engine, sinks, counters, status)  # type: ignore[arg-type]
    assert counters.engine_errors == 3 and counters.sink_errors == 2
    assert len(received) == 2  # the sink before the failing one still got every output
    await notifier.start()
    await notifier.close(flush_timeout=10)
    texts = fake.texts()
    assert len(texts) == 2, texts
    assert texts[0].startswith("❗ Error in engine (TimerTick dropped): ZeroDivisionError: division by zero")
    assert "#1" in texts[0]
    assert texts[1].startswith("❗ Error in sink FailingSink: KeyError")
    assert notifier.stats.suppressed == 3 and notifier.stats.sent == 2


async def test_error_note_never_carries_the_token(fake: FakeTelegram) -> None:
    notifier = notifier_for(fake)
    notes = notify.ErrorNotes(notifier)
    notes("sink AlertSink", RuntimeError(f"POST https://api.telegram.org/bot{DEFAULT_TOKEN}/sendMessage"), 1)
    await notifier.start()
    await notifier.close(flush_timeout=10)
    (text,) = fake.texts()
    assert DEFAULT_TOKEN not in text and "RuntimeError" in text


async def test_a_stream_closed_for_silence_is_reported_as_stale(fake: FakeTelegram) -> None:
    notifier = notifier_for(fake)
    sink = notify.AlertSink(notifier, {"BTCUSDT": BTC})
    t0 = 1_723_161_600 * NS
    diff = DepthDiff("BTCUSDT", Market.SPOT, 1, 2, 1, [], [], t0 - 5, t0)
    sink(diff, [])
    # What the live source emits when its watchdog closed the connection (worker/binance/stream.py).
    silent = "reconnect: btcusdt@depth@100ms silent"
    sink(FeedStatus("BTCUSDT", Market.SPOT, FeedState.DISCONNECTED, silent, t0 + 12 * NS), [])
    sink(FeedStatus("BTCUSDT", Market.SPOT, FeedState.CONNECTED, "", t0 + 13 * NS), [])
    eth = "ETHUSDT"
    sink(FeedStatus(eth, Market.SPOT, FeedState.DISCONNECTED, "closed by server (code 1006)", t0), [])
    await notifier.start()
    await notifier.close(flush_timeout=10)
    texts = fake.texts()
    assert texts[0] == f"⚠️ Feed stale on spot:BTCUSDT: no message for 12.0 s ({silent})"
    assert texts[1] == "✅ Feed on spot:BTCUSDT back after 1s"
    assert texts[2] == "⚠️ Feed disconnected on spot:ETHUSDT: closed by server (code 1006)"
