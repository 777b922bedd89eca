"""JSON-lines logging and secret redaction."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from worker import logs

SECRET = "123456789:AAHsecretTOKENvalue_xyz-0123456789"


@pytest.fixture(autouse=True)
def _clean_secrets():
    logs.clear_secrets()
    yield
    logs.clear_secrets()


@pytest.fixture
def json_stream():
    stream = io.StringIO()
    logs.setup_logging("DEBUG", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_qf_json", False):
            root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_extra_fields(json_stream):
    log = logging.getLogger("worker.test")
    log.info("book %s synced", "BTCUSDT", extra={"symbol": "BTCUSDT", "gaps": 2})
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("failed")
    out = lines(json_stream)
    assert len(out) == 2
    first, second = out
    assert first["level"] == "info" and first["logger"] == "worker.test"
    assert first["message"] == "book BTCUSDT synced"
    assert first["symbol"] == "BTCUSDT" and first["gaps"] == 2
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "error" and "RuntimeError: boom" in second["exc"]


def test_secret_redacted_in_message_args_extra_and_traceback(json_stream, caplog):
    logs.add_secret(SECRET)
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("worker.test")
    log.info("url https://api.telegram.org/bot%s/sendMessage", SECRET)
    log.warning("extra", extra={"url": f"/bot{SECRET}/x"})
    log.debug("quoted %s", SECRET.replace(":", "%3A"))
    try:
        raise ValueError(f"bad {SECRET}")
    except ValueError:
        log.exception("with traceback")
    text = json_stream.getvalue()
    assert SECRET not in text and SECRET.replace(":", "%3A") not in text
    assert text.count(logs.REDACTED) >= 4
    for record in caplog.records:  # pytest's own handler sees scrubbed records too
        assert SECRET not in record.getMessage()
        assert SECRET not in (record.exc_text or "")


def test_bad_format_args_do_not_raise_and_stay_redacted(json_stream):
    logs.add_secret(SECRET)
    logging.getLogger("worker.test").info("two %s %s", SECRET)
    assert SECRET not in json_stream.getvalue()


def test_short_secret_ignored():
    logs.add_secret("ab")
    assert logs.redact("abc") == "abc"


def test_records_without_secrets_are_left_as_logged(caplog):
    logs.add_secret(SECRET)
    caplog.set_level(logging.INFO)
    logging.getLogger("worker.test").info("fill %s at %d", "BTCUSDT", 42)
    record = caplog.records[-1]
    assert record.msg == "fill %s at %d" and record.args == ("BTCUSDT", 42)
