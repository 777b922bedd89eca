"""`python -m worker calendar`: print the Shabbat and Yom Tov pause windows for a location.

- The range is civil dates in the location's time zone, both ends included; a window is printed when
  it overlaps the range.
- Default location and customs are the worker's configured `[calendar]` section, loaded with the same
  layers as `run` (`--config PATH` or $QF_CONFIG, then QF_* environment variables, then `--set`), so the
  windows printed are the ones the worker pauses for; without any configuration that is
  `CalendarConfig()` (São Paulo, 18 minutes, tzeit 8.5°). Flags override the configuration. Bad input
  (flags or configuration) exits 2 with one clear line on stderr, never a traceback.
- `--json` prints one JSON object per line: start/end in ISO 8601 UTC, the civil dates and holy days.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Mapping

from worker import config as worker_config
from worker.calendar import CalendarConfig, Location, PauseWindow, pause_windows
from worker.errors import ConfigError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="first", type=_date, required=True, help="first civil date, YYYY-MM-DD"
    )
    parser.add_argument("--to", dest="last", type=_date, required=True, help="last civil date, YYYY-MM-DD")
    parser.add_argument(
        "--config", default=None, metavar="PATH", help="worker TOML file (default: $QF_CONFIG)"
    )
    parser.add_argument(
        "--set", action="append", default=[], dest="sets", metavar="SECTION.KEY=VALUE",
        help="override a configuration key, as for run (e.g. --set calendar.tz=Asia/Jerusalem)",
    )  # fmt: skip
    parser.add_argument("--lat", type=float, default=None, help="latitude, degrees north (default: config)")
    parser.add_argument("--lon", type=float, default=None, help="longitude, degrees east (default: config)")
    parser.add_argument("--tz", default=None, help="IANA time zone, e.g. America/Sao_Paulo (default: config)")
    parser.add_argument(
        "--candle-minutes", type=int, default=None, help="minutes before sunset (default: config, 18)"
    )
    parser.add_argument(
        "--havdalah-minutes",
        type=int,
        default=None,
        help="fixed minutes after sunset (42, 50, 72); default: config, else tzeit (sun 8.5° below)",
    )
    parser.add_argument(
        "--israel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Israel's Yom Tov schedule (one-day festivals); default: config",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per window per line")


def configured(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CalendarConfig:
    """The worker's `[calendar]` (same layers as `run`; also when the pause is disabled), then the flags."""
    cfg = worker_config.load(getattr(args, "config", None), env, None, getattr(args, "sets", None))
    base = worker_config.calendar_settings(cfg)
    loc = base.location
    return CalendarConfig(
        location=Location(
            loc.latitude if args.lat is None else args.lat,
            loc.longitude if args.lon is None else args.lon,
            loc.tz if args.tz is None else args.tz,
        ),
        candle_minutes=base.candle_minutes if args.candle_minutes is None else args.candle_minutes,
        havdalah_minutes=base.havdalah_minutes if args.havdalah_minutes is None else args.havdalah_minutes,
        israel=base.israel if args.israel is None else args.israel,
    )


def window_json(window: PauseWindow) -> dict[str, object]:
    return {
        "start": _iso_utc(window.start),
        "end": _iso_utc(window.end),
        "holy_days": list(window.holy_days),
        "dates": [day.date.isoformat() for day in window.days],
        "havdalah_fallback": window.havdalah_fallback,
    }


def main(args: argparse.Namespace) -> int:
    try:
        config = configured(args)
    except ConfigError as error:
        print(f"calendar: {error}", file=sys.stderr)
        return 2
    if args.last < args.first:
        print(f"calendar: --to {args.last} is before --from {args.first}", file=sys.stderr)
        return 2
    zone = config.location.zone
    start = dt.datetime.combine(args.first, dt.time(0), zone).astimezone(dt.UTC)
    end = dt.datetime.combine(args.last + dt.timedelta(days=1), dt.time(0), zone).astimezone(dt.UTC)
    try:
        windows = pause_windows(config, start, end)
    except ConfigError as error:  # e.g. a date in the range where the sun does not set
        print(f"calendar: {error}", file=sys.stderr)
        return 2
    if args.json:
        for window in windows:
            print(json.dumps(window_json(window), ensure_ascii=False))
        return 0
    print(_table(config, windows))
    return 0


def _table(config: CalendarConfig, windows: list[PauseWindow]) -> str:
    loc = config.location
    lines = [
        f"Pause windows at {loc.latitude}, {loc.longitude} ({loc.tz}); candle lighting "
        f"{config.candle_minutes} min before sunset, havdalah {config.havdalah_label}, "
        f"{'Israel' if config.israel else 'diaspora'} schedule",
        f"{'start (local)':<22} {'end (local)':<22} {'start (UTC)':<17} {'end (UTC)':<17} "
        f"{'hours':>6}  holy days",
    ]
    for w in windows:
        start_local, end_local = w.start.astimezone(loc.zone), w.end.astimezone(loc.zone)
        hours = (w.end_ns - w.start_ns) / 3.6e12
        note = " (havdalah fallback: sun never 8.5° below)" if w.havdalah_fallback else ""
        lines.append(
            f"{start_local:%a %Y-%m-%d %H:%M}   {end_local:%a %Y-%m-%d %H:%M}   "
            f"{w.start:%Y-%m-%d %H:%M}  {w.end:%Y-%m-%d %H:%M}  {hours:6.2f}  "
            f"{', '.join(w.holy_days)}{note}"
        )
    lines.append(f"{len(windows)} window(s)")
    return "\n".join(lines)


def _iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
