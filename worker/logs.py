"""Structured logging: one JSON object per line on stdout, with secrets redacted everywhere.

Design:
- `setup_logging(level)` installs one stdout handler on the root logger whose `JsonFormatter` writes
  `{"ts", "level", "logger", "message", ...extra fields, "exc"?}` per line: what Fly's log shipping
  expects. Multi-line tracebacks stay inside one JSON string, so one event is always one line.
- Secrets (the Telegram bot token, ...) are registered with `add_secret()`. Redaction happens when the
  log record is CREATED (a wrapped `logging.setLogRecordFactory`), so it covers every handler, including
  pytest's capture and third-party loggers such as `httpx`, which logs full request URLs
  (`.../bot<token>/sendMessage`). A record whose rendered message holds a secret is rewritten
  (redacted text, `args = ()`); a traceback holding one is redacted into `exc_text`; other records
  are left exactly as logged. `RedactingFilter` and `JsonFormatter` redact again
  as a belt for `extra` fields, which `logging` attaches after the factory ran.
- Invariant: after `add_secret(s)`, no record created afterwards carries `s` (or its URL-encoded form)
  in its message, args or traceback text, and no line `JsonFormatter` writes contains it.
- `redact(text)` is public: error messages built from exceptions (which may embed URLs) go through it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Iterable
from typing import Any

import orjson

REDACTED = "<redacted>"

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()
_factory_installed = False

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted as a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def add_secret(secret: str | None) -> None:
    """Register a value that must never appear in a log line; installs the record factory once."""
    global _secrets
    if not secret or len(secret) < 4:  # redacting "" or "ab" would shred every message
        return
    variants = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)}
    with _lock:
        # Longest first, so a secret that contains another is replaced whole.
        _secrets = tuple(sorted(set(_secrets) | variants, key=len, reverse=True))
    _install_factory()


def clear_secrets() -> None:
    """Forget every registered secret (tests)."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `<redacted>`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(repr(value)) if _contains_secret(repr(value)) else value


def _contains_secret(text: str) -> bool:
    return any(secret in text for secret in _secrets)


def _scrub(record: logging.LogRecord) -> logging.LogRecord:
    """Redact the message, traceback and extra fields of one record, in place.

    A record is only rewritten when a secret is actually in it, so everything else keeps its
    `msg`/`args` exactly as logged (handlers and tests that inspect them see no difference).
    """
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # bad format args: keep what we can, redacted
        message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), ()
    else:
        if _contains_secret(message):
            record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if _contains_secret(text):
            record.exc_text = redact(text)
    elif record.exc_text and _contains_secret(record.exc_text):
        record.exc_text = redact(record.exc_text)
    if record.stack_info and _contains_secret(record.stack_info):
        record.stack_info = redact(record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS:
            setattr(record, key, _redact_value(value))
    return record


def _install_factory() -> None:
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return _scrub(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _factory_installed = True


class RedactingFilter(logging.Filter):
    """Handler filter: scrubs records (including `extra` fields) before any formatter sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra=` fields become top-level keys; the line is redacted last."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                event[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            event["exc"] = record.exc_text
        if record.stack_info:
            event["stack"] = record.stack_info
        try:
            line = orjson.dumps(event, default=_fallback).decode()
        except TypeError:  # e.g. an int beyond 64 bits in an extra field
            safe = {k: (v if isinstance(v, str) else repr(v)) for k, v in event.items()}
            line = orjson.dumps(safe).decode()
        return redact(line)


def _fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return repr(value)


def setup_logging(level: int | str = "INFO", secrets: Iterable[str | None] = (), stream: Any = None) -> None:
    """Route all logging to JSON lines on `stream` (stdout by default); idempotent.

    httpx logs every request URL at INFO; we keep it at WARNING unless the worker runs at DEBUG, so the
    log stays about our events (its URLs are redacted either way).
    """
    for secret in secrets:
        add_secret(secret)
    _install_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_qf_json", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler._qf_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
