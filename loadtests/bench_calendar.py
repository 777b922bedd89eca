"""Cost of the Shabbat check on the hot path: `CalendarClock.is_paused` per event.

Run: python loadtests/bench_calendar.py [events]. Feeds a year of event times (evenly spread, as a
replay would) through one clock, which builds its windows lazily as time advances, and prints ns/call.
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from worker.calendar import CalendarClock, CalendarConfig, pause_windows


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    start_ns = int(start.timestamp()) * 10**9
    step = 365 * 86_400 * 10**9 // events
    stamps = [start_ns + i * step for i in range(events)]
    clock = CalendarClock(CalendarConfig())
    began = time.perf_counter()
    paused = sum(1 for ts in stamps if clock.is_paused(ts))
    elapsed = time.perf_counter() - began
    began = time.perf_counter()
    windows = pause_windows(CalendarConfig(), start, start + dt.timedelta(days=365))
    year_s = time.perf_counter() - began
    per_call = elapsed / events * 1e9
    print(f"is_paused: {per_call:.0f} ns/call over {events} events, {paused / events:.1%} paused")
    print(f"pause_windows for one year: {len(windows)} windows in {year_s * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
