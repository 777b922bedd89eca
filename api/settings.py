"""API settings: one frozen value built from command-line flags and environment variables.

- Every knob has an environment variable (Fly sets them in fly.toml) and a flag (local runs).
- Bad values raise `worker.errors.ConfigError(param, allowed)` at start, never at the first request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.calendar import CalendarConfig, Location
from worker.errors import ConfigError

DEFAULT_CURSOR_KEY = "quantumflow-api-cursor-v1"


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: str
    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_max_age_s: float = 30.0  # /health: older than this -> 503
    query_time_limit_ms: int = 500  # per request, enforced by a SQLite progress handler
    max_rows: int = 5000  # hard cap on rows any one request may read back
    max_page_size: int = 500  # documented maximum `limit` of list endpoints
    default_page_size: int = 50
    cursor_key: bytes = DEFAULT_CURSOR_KEY.encode()
    replica_url: str = ""  # set when the file is a litestream follow copy (lag is then reported)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    threads: int = 4  # concurrent SQLite readers (threads); more only adds contention on a small machine
    fresh_connections: bool = False  # True: open/close a connection per request (see api.db)
    cache_ttl_s: float = 2.0  # response cache of DB-pure GETs, invalidated by any file change; 0 = off

    def __post_init__(self) -> None:
        if not self.db_path:
            raise ConfigError("db", "a path to the worker's SQLite file (--db or QF_API_DB)")
        if not 0 < self.port < 65536:
            raise ConfigError("port", f"1..65535, got {self.port}")
        if not (math.isfinite(self.heartbeat_max_age_s) and self.heartbeat_max_age_s > 0):
            raise ConfigError(
                "heartbeat_max_age_s", f"a positive number of seconds, got {self.heartbeat_max_age_s}"
            )
        if not 10 <= self.query_time_limit_ms <= 60_000:
            raise ConfigError("query_time_limit_ms", f"10..60000, got {self.query_time_limit_ms}")
        if not 1 <= self.default_page_size <= self.max_page_size <= self.max_rows:
            raise ConfigError("max_page_size", "1 <= default_page_size <= max_page_size <= max_rows")
        if not 1 <= self.threads <= 64:
            raise ConfigError("threads", f"1..64, got {self.threads}")


def _num(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(name, f"a {'whole ' if kind is int else ''}number, got {text!r}") from None


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from QF_API_* / QF_CALENDAR_* variables; keyword overrides (flags) win when not None."""
    env = os.environ if env is None else env
    havdalah = env.get("QF_CALENDAR_HAVDALAH_MINUTES")
    location = Location(
        _num(env, "QF_CALENDAR_LAT", Location().latitude),
        _num(env, "QF_CALENDAR_LON", Location().longitude),
        env.get("QF_CALENDAR_TZ") or Location().tz,
    )
    values: dict[str, object] = {
        "db_path": env.get("QF_API_DB") or env.get("QF_DB") or "",
        "host": env.get("QF_API_HOST") or "127.0.0.1",
        "port": int(_num(env, "QF_API_PORT", 8080, int)),
        "heartbeat_max_age_s": _num(env, "QF_API_HEARTBEAT_MAX_AGE_S", 30.0),
        "query_time_limit_ms": int(_num(env, "QF_API_QUERY_TIME_LIMIT_MS", 500, int)),
        "replica_url": env.get("QF_API_REPLICA_URL", ""),
        "cache_ttl_s": _num(env, "QF_API_CACHE_TTL_S", 2.0),
        "threads": int(_num(env, "QF_API_THREADS", 4, int)),
        # Over a litestream follow copy a connection must not outlive its request: an open connection,
        # even idle, stops `restore -f` from applying new transactions (measured: the copy froze).
        "fresh_connections": env.get(
            "QF_API_FRESH_CONNECTIONS", "1" if env.get("QF_API_REPLICA_URL") else ""
        ).lower()
        in ("1", "true", "yes"),
        "cursor_key": (env.get("QF_API_CURSOR_KEY") or DEFAULT_CURSOR_KEY).encode(),
        "calendar": CalendarConfig(
            location=location,
            candle_minutes=int(_num(env, "QF_CALENDAR_CANDLE_MINUTES", 18, int)),
            havdalah_minutes=int(havdalah) if havdalah and havdalah.isdigit() else None,
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
