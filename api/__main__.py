"""`python -m api --db PATH --port N`: serve the read-only API under uvicorn.

Flags override the environment (QF_API_DB, QF_API_PORT, QF_API_HOST, QF_API_HEARTBEAT_MAX_AGE_S,
QF_API_QUERY_TIME_LIMIT_MS, QF_API_REPLICA_URL, QF_CALENDAR_LAT/LON/TZ, ...), which is how Fly sets them.
A bad setting exits 2 with one line naming it.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn

from api.app import create_app
from api.settings import from_env
from worker.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="SQLite file to read (default $QF_API_DB, then $QF_DB)")
    parser.add_argument("--host", help="bind address (default $QF_API_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default $QF_API_PORT or 8080)")
    parser.add_argument("--heartbeat-max-age", type=float, dest="heartbeat_max_age_s", help="seconds")
    parser.add_argument("--query-time-limit-ms", type=int, dest="query_time_limit_ms")
    parser.add_argument("--lat", type=float, help="calendar latitude (default $QF_CALENDAR_LAT or São Paulo)")
    parser.add_argument("--lon", type=float, help="calendar longitude (default $QF_CALENDAR_LON)")
    parser.add_argument("--tz", help="calendar IANA time zone (default $QF_CALENDAR_TZ)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    for flag, name in (("lat", "QF_CALENDAR_LAT"), ("lon", "QF_CALENDAR_LON"), ("tz", "QF_CALENDAR_TZ")):
        if getattr(args, flag) is not None:
            env[name] = str(getattr(args, flag))
    try:
        settings = from_env(
            env,
            db_path=args.db,
            host=args.host,
            port=args.port,
            heartbeat_max_age_s=args.heartbeat_max_age_s,
            query_time_limit_ms=args.query_time_limit_ms,
        )
    except ConfigError as exc:
        print(f"api: {exc}", file=sys.stderr)
        return 2
    # SQLite work runs in threads that re-take the GIL per row; a 5 ms switch interval (the default)
    # lets the event loop thread hold them off for whole intervals under load.
    sys.setswitchinterval(0.0005)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
