"""Shabbat and Yom Tov pause windows: when trading must stop, computed from time as data.

Design and invariants:
- A civil day D is holy when it is a Saturday or pyluach (with the Israel/diaspora switch) names it a
  Yom Tov: Rosh Hashana, Yom Kippur, Sukkot (first days), Shmini Atzeret/Simchat Torah, Pesach (first
  and last days), Shavuot. The holiness of D begins on the evening of D-1, so a run of consecutive holy
  days D1..Dn is ONE window: from candle lighting on the evening of D1-1 to havdalah on the evening
  of Dn. Yom Tov next to Shabbat and two-day Yom Tov therefore merge, with no gap between them.
- Sun times follow NOAA's algorithm as hebcal.com uses it: astral's `time_of_transit` with zenith
  90.833° (sunset) or 98.5° (tzeit, sun 8.5° below the horizon), refraction off, sea level, for the
  evening that belongs to the civil date (the transit between local noon of the date and local noon of
  the next day). astral's `sunset()`/`dusk()` are never used: they pick the wrong evening after local
  midnight at high latitude and add refraction.
- All arithmetic is in UTC nanoseconds; the IANA zone only says where a civil day's noon falls, so
  daylight-saving changes (Israel's spring change falls on a Friday) cannot shift a window.
- Rounding (hebcal publishes minutes): candle lighting = sunset rounded down to the minute minus N;
  published havdalah = tzeit rounded to the nearest minute, or sunset rounded to nearest plus N.
  The pause window STARTS at hebcal's candle-lighting minute (never later than the exact time) and ENDS
  at the havdalah time rounded UP to the minute, so trading never resumes before the published
  havdalah (at most one minute after it).
- High latitude: a location where the sun fails to set (or to rise) on some day of the year is refused
  when the config is built (ConfigError). Where the sun sets but never reaches 8.5° below the horizon,
  havdalah falls back to the LATER of solar midnight (the darkest moment of that night, which is also
  the limit the 8.5° time approaches as the depression shrinks) and sunset + 72 minutes; it is never
  earlier than any nightfall a stricter reading could give. Fixed-minute havdalah needs no fallback.
- Pure: no I/O, no wall clock. `CalendarClock` answers `is_paused(ts_ns)` in O(1) while the time
  stays inside the current segment and O(log n) otherwise, extending its precomputed windows lazily.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from astral import Observer, SunDirection
from astral.sun import midnight, time_of_transit
from pyluach.dates import GregorianDate

from worker.errors import ConfigError, is_finite_number, is_whole

__all__ = [
    "SAO_PAULO",
    "CalendarClock",
    "CalendarConfig",
    "HolyDay",
    "Location",
    "PauseTransition",
    "PauseWindow",
    "candle_lighting",
    "havdalah",
    "holy_days_between",
    "pause_windows",
    "published_havdalah",
    "sunset",
    "tzeit",
]

SUNSET_ZENITH = 90.833
TZEIT_ZENITH = 98.5  # 8.5° below the horizon: three small stars (hebcal's default havdalah)
FALLBACK_MINUTES = 72  # Rabbeinu Tam: the latest common fixed measure, a floor for the fallback
MINUTE_NS = 60 * 1_000_000_000
_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_DAY = dt.timedelta(days=1)

# pyluach's festival names -> hebcal's English names. Only Yom Tov days reach this map because
# `include_working_days=False` drops Chol HaMoed, Chanukah, Purim and the fasts.
_YOM_TOV_NAMES = {
    "Rosh Hashana": "Rosh Hashana",
    "Yom Kippur": "Yom Kippur",
    "Succos": "Sukkot",
    "Shmini Atzeres": "Shmini Atzeret",
    "Simchas Torah": "Simchat Torah",
    "Pesach": "Pesach",
    "Shavuos": "Shavuot",
}


# ---------------------------------------------------------------- small helpers


def _to_ns(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _from_ns(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def _floor_minute(ns: int) -> int:
    return ns - ns % MINUTE_NS


def _ceil_minute(ns: int) -> int:
    return -((-ns) // MINUTE_NS) * MINUTE_NS


def _round_minute(ns: int) -> int:
    """hebcal's rounding: 30 seconds or more rounds up."""
    return _floor_minute(ns + 30 * 1_000_000_000)


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Location:
    """Where the worker observes Shabbat. Defaults: São Paulo as hebcal's city list gives it."""

    latitude: float = -23.5475
    longitude: float = -46.63611
    tz: str = "America/Sao_Paulo"

    def __post_init__(self) -> None:
        if not is_finite_number(self.latitude) or not -90.0 <= self.latitude <= 90.0:
            raise ConfigError("latitude", f"a number of degrees in [-90, 90], got {self.latitude!r}")
        if not is_finite_number(self.longitude) or not -180.0 <= self.longitude <= 180.0:
            raise ConfigError("longitude", f"a number of degrees in [-180, 180], got {self.longitude!r}")
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            allowed = f"an IANA time zone name such as 'America/Sao_Paulo', got {self.tz!r}"
            raise ConfigError("tz", allowed) from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


SAO_PAULO = Location()


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    """Everything that decides the windows.

    `havdalah_minutes` None means tzeit (sun 8.5° below the horizon); a number means a fixed count
    of minutes after sunset (42, 50 and 72 are the common customs).
    """

    location: Location = SAO_PAULO
    candle_minutes: int = 18
    havdalah_minutes: int | None = None
    israel: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.location, Location):
            raise ConfigError("location", "a worker.calendar.Location")
        if not is_whole(self.candle_minutes) or not 0 <= self.candle_minutes <= 120:
            raise ConfigError(
                "candle_minutes", f"whole minutes before sunset in [0, 120], got {self.candle_minutes!r}"
            )
        if self.havdalah_minutes is not None and (
            not is_whole(self.havdalah_minutes) or not 1 <= self.havdalah_minutes <= 180
        ):
            raise ConfigError(
                "havdalah_minutes",
                f"whole minutes after sunset in [1, 180] (e.g. 42, 50, 72) or unset for 8.5° tzeit, "
                f"got {self.havdalah_minutes!r}",
            )
        if not isinstance(self.israel, bool):
            raise ConfigError("israel", f"true or false, got {self.israel!r}")
        _refuse_if_sun_does_not_set(self.location)

    @property
    def havdalah_label(self) -> str:
        return "tzeit 8.5°" if self.havdalah_minutes is None else f"{self.havdalah_minutes} min after sunset"


@dataclass(frozen=True, slots=True)
class HolyDay:
    date: dt.date  # the civil (daytime) date
    names: tuple[str, ...]  # e.g. ("Shabbat",), ("Pesach",), ("Rosh Hashana", "Shabbat")


@dataclass(frozen=True, slots=True)
class PauseWindow:
    """Trading is paused for start_ns <= t < end_ns (UTC nanoseconds)."""

    start_ns: int
    end_ns: int
    days: tuple[HolyDay, ...]
    havdalah_fallback: bool = False  # True when the sun never reached 8.5° on the last evening

    @property
    def start(self) -> dt.datetime:
        return _from_ns(self.start_ns)

    @property
    def end(self) -> dt.datetime:
        return _from_ns(self.end_ns)

    @property
    def holy_days(self) -> tuple[str, ...]:
        """Distinct names in order, e.g. ("Rosh Hashana", "Shabbat")."""
        seen: dict[str, None] = {}
        for day in self.days:
            for name in day.names:
                seen.setdefault(name, None)
        return tuple(seen)

    def contains(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


@dataclass(frozen=True, slots=True)
class PauseTransition:
    """Returned by `CalendarClock.advance` when the paused state changes."""

    paused: bool  # True: a window began; False: it ended (havdalah)
    at_ns: int  # the boundary that was crossed
    window: PauseWindow


# ---------------------------------------------------------------- sun times


def _observer(location: Location) -> Observer:
    return Observer(latitude=location.latitude, longitude=location.longitude, elevation=0.0)


def _evening_transit(location: Location, day: dt.date, zenith: float) -> dt.datetime | None:
    """The setting transit of `zenith` that belongs to civil `day`, or None when there is none.

    astral answers per UTC date and wraps its result into that date, so the evening we want may come
    from the day before, of, or after: keep the one between local noon of `day` and local noon of the
    next day.
    """
    zone = location.zone
    noon = dt.datetime.combine(day, dt.time(12), zone).astimezone(_UTC)
    next_noon = dt.datetime.combine(day + _ONE_DAY, dt.time(12), zone).astimezone(_UTC)
    observer = _observer(location)
    for candidate in (day - _ONE_DAY, day, day + _ONE_DAY):
        try:
            moment = time_of_transit(observer, candidate, zenith, SunDirection.SETTING, with_refraction=False)
        except ValueError:  # the sun does not cross this zenith on that date
            continue
        if noon <= moment < next_noon:
            return moment
    return None


def sunset(location: Location, day: dt.date) -> dt.datetime | None:
    """Exact sunset (UTC) on the evening of civil `day`; None where the sun does not set."""
    return _evening_transit(location, day, SUNSET_ZENITH)


def tzeit(location: Location, day: dt.date) -> dt.datetime | None:
    """Exact nightfall, sun 8.5° below the horizon (UTC); None where it never gets that dark."""
    return _evening_transit(location, day, TZEIT_ZENITH)


def _solar_midnight_after(location: Location, after: dt.datetime) -> dt.datetime:
    observer = _observer(location)
    day = after.date()
    moments = sorted(midnight(observer, d) for d in (day - _ONE_DAY, day, day + _ONE_DAY, day + 2 * _ONE_DAY))
    return next(m for m in moments if m > after)


def _require_sunset(location: Location, day: dt.date) -> dt.datetime:
    moment = sunset(location, day)
    if moment is None:
        raise ConfigError(
            "latitude",
            f"a place where the sun sets every evening; at {location.latitude}° there is no sunset "
            f"on {day} (midnight sun or polar night)",
        )
    return moment


def candle_lighting(config: CalendarConfig, day: dt.date) -> dt.datetime:
    """hebcal's candle-lighting minute on the evening of `day`: sunset rounded down, minus N."""
    ns = _floor_minute(_to_ns(_require_sunset(config.location, day))) - config.candle_minutes * MINUTE_NS
    return _from_ns(ns)


def havdalah(config: CalendarConfig, day: dt.date) -> tuple[dt.datetime, bool]:
    """Exact end of the holy day on the evening of `day` (UTC) and whether the fallback was used."""
    set_at = _require_sunset(config.location, day)
    if config.havdalah_minutes is not None:
        return set_at + dt.timedelta(minutes=config.havdalah_minutes), False
    night = tzeit(config.location, day)
    if night is not None:
        return night, False
    fallback = max(
        _solar_midnight_after(config.location, set_at), set_at + dt.timedelta(minutes=FALLBACK_MINUTES)
    )
    return fallback, True


def published_havdalah(config: CalendarConfig, day: dt.date) -> dt.datetime | None:
    """The havdalah minute hebcal publishes: tzeit rounded to nearest, or round(sunset) + N.

    None where hebcal publishes nothing (the sun never reaches 8.5°).
    """
    if config.havdalah_minutes is not None:
        ns = _round_minute(_to_ns(_require_sunset(config.location, day)))
        return _from_ns(ns + config.havdalah_minutes * MINUTE_NS)
    night = tzeit(config.location, day)
    return None if night is None else _from_ns(_round_minute(_to_ns(night)))


def _refuse_if_sun_does_not_set(location: Location) -> None:
    """Refuse at start a place with midnight sun or polar night on any day of the year.

    Solar geometry repeats yearly to well under a minute, so one reference year covers every year.
    """
    if abs(location.latitude) < 60.0:  # the sun sets every day below the polar circles' margin
        return
    day = dt.date(2026, 1, 1)
    while day.year == 2026:
        _require_sunset(location, day)
        day += _ONE_DAY


# ---------------------------------------------------------------- holy days and windows


def _names(config: CalendarConfig, day: dt.date) -> tuple[str, ...]:
    names: list[str] = []
    festival = (
        GregorianDate(day.year, day.month, day.day)
        .to_heb()
        .festival(israel=config.israel, include_working_days=False)
    )
    if festival is not None and festival in _YOM_TOV_NAMES:
        names.append(_YOM_TOV_NAMES[festival])
    if day.weekday() == 5:
        names.append("Shabbat")
    return tuple(names)


def holy_days_between(config: CalendarConfig, first: dt.date, last: dt.date) -> list[HolyDay]:
    """Every holy civil day in [first, last], in order."""
    found = []
    day = first
    while day <= last:
        names = _names(config, day)
        if names:
            found.append(HolyDay(day, names))
        day += _ONE_DAY
    return found


def _window(config: CalendarConfig, run: list[HolyDay]) -> PauseWindow:
    start = candle_lighting(config, run[0].date - _ONE_DAY)
    end, fallback = havdalah(config, run[-1].date)
    return PauseWindow(_to_ns(start), _ceil_minute(_to_ns(end)), tuple(run), fallback)


def _windows_starting(config: CalendarConfig, first: dt.date, last: dt.date) -> Iterator[PauseWindow]:
    """Windows whose first holy day lies in [first, last]; a run may continue past `last`."""
    day = first
    while _names(config, day - _ONE_DAY):  # `first` continues a run that began earlier: not ours
        if not _names(config, day):
            break
        day += _ONE_DAY
    run: list[HolyDay] = []
    while day <= last or run:
        names = _names(config, day)
        if names:
            run.append(HolyDay(day, names))
        elif run:
            yield _window(config, run)
            run = []
        day += _ONE_DAY


def pause_windows(config: CalendarConfig, start_utc: dt.datetime, end_utc: dt.datetime) -> list[PauseWindow]:
    """All pause windows overlapping [start_utc, end_utc), merged, in order."""
    if start_utc.tzinfo is None or end_utc.tzinfo is None:
        raise ValueError("start_utc and end_utc must be timezone-aware")
    start_ns, end_ns = _to_ns(start_utc), _to_ns(end_utc)
    zone = config.location.zone
    # A window starts at most a day before its first holy date and ends at most 4 days after it.
    first = start_utc.astimezone(zone).date() - dt.timedelta(days=5)
    last = end_utc.astimezone(zone).date() + dt.timedelta(days=2)
    return [w for w in _windows_starting(config, first, last) if w.end_ns > start_ns and w.start_ns < end_ns]


# ---------------------------------------------------------------- hot-path clock


@dataclass(slots=True)
class CalendarClock:
    """`is_paused(ts_ns)` for every event on the hot path.

    Keeps the current segment [seg_start, seg_end) with one paused state, so the common call is two
    integer comparisons; crossing a boundary costs a bisect over precomputed windows, which are
    extended `chunk_days` at a time as time advances (never recomputed, never the wall clock).
    """

    config: CalendarConfig = field(default_factory=CalendarConfig)
    chunk_days: int = 60
    _windows: list[PauseWindow] = field(default_factory=list, init=False)
    _starts: list[int] = field(default_factory=list, init=False)
    _next_date: dt.date | None = field(default=None, init=False)  # first date not yet scanned
    _covered_ns: int = field(default=-(2**63), init=False)  # no window can start before this is known
    _first_ns: int = field(default=2**63, init=False)  # answers are valid from here on
    _seg_start: int = field(default=1, init=False)
    _seg_end: int = field(default=0, init=False)
    _seg_paused: bool = field(default=False, init=False)
    _seg_window: PauseWindow | None = field(default=None, init=False)
    _last_paused: bool | None = field(default=None, init=False)

    def is_paused(self, ts_ns: int) -> bool:
        if self._seg_start <= ts_ns < self._seg_end:
            return self._seg_paused
        self._locate(ts_ns)
        return self._seg_paused

    def window_at(self, ts_ns: int) -> PauseWindow | None:
        """The window containing ts_ns, or None when trading is allowed."""
        return self._seg_window if self.is_paused(ts_ns) else None

    def next_change(self, ts_ns: int) -> int:
        """The first instant after ts_ns where `is_paused` changes (a window's start or end)."""
        self.is_paused(ts_ns)
        return self._seg_end

    def next_window(self, ts_ns: int) -> PauseWindow:
        """The window in force at ts_ns, or else the next one to begin (e.g. to act before it)."""
        if self.is_paused(ts_ns):
            assert self._seg_window is not None
            return self._seg_window
        return self._windows[bisect.bisect_left(self._starts, self._seg_end)]

    def advance(self, ts_ns: int) -> PauseTransition | None:
        """Feed event time in order; returns the transition when the paused state changes.

        The first call only records the state (the caller reads `is_paused` to start paused or not).
        A jump in time over a whole window (a long outage) changes no state and reports nothing.
        """
        paused = self.is_paused(ts_ns)
        previous, self._last_paused = self._last_paused, paused
        if previous is None or previous == paused:
            return None
        if paused:
            window = self._seg_window
            assert window is not None
            return PauseTransition(True, window.start_ns, window)
        i = bisect.bisect_right(self._starts, ts_ns) - 1
        ended = self._windows[i] if i >= 0 else self.next_window(ts_ns)
        return PauseTransition(False, ended.end_ns, ended)

    @property
    def windows(self) -> tuple[PauseWindow, ...]:
        return tuple(self._windows)

    # -- internals

    def _locate(self, ts_ns: int) -> None:
        if ts_ns < self._first_ns:
            self._reset(ts_ns)
        # Know every window that could start up to 8 days after ts, so seg_end is final.
        self._extend_to(ts_ns + 8 * 86_400 * 1_000_000_000)
        i = bisect.bisect_right(self._starts, ts_ns) - 1
        if i >= 0 and self._windows[i].contains(ts_ns):
            w = self._windows[i]
            self._seg_start, self._seg_end, self._seg_paused, self._seg_window = w.start_ns, w.end_ns, True, w
            return
        previous_end = self._windows[i].end_ns if i >= 0 else self._first_ns
        while i + 1 >= len(self._windows):
            self._extend_chunk()
        self._seg_start = max(previous_end, self._first_ns)
        self._seg_end = self._windows[i + 1].start_ns
        self._seg_paused, self._seg_window = False, None

    def _reset(self, ts_ns: int) -> None:
        """(Re)start coverage a little before ts (first call, or time jumped backwards)."""
        local = _from_ns(ts_ns).astimezone(self.config.location.zone).date()
        start = local - dt.timedelta(days=6)
        self._windows.clear()
        self._starts.clear()
        self._next_date = start
        self._first_ns = _to_ns(dt.datetime.combine(start + _ONE_DAY, dt.time(0), _UTC))
        self._covered_ns = self._first_ns
        # A window that began before `start` and is still running at ts must be known too.
        for w in _windows_starting(self.config, start - dt.timedelta(days=4), start - _ONE_DAY):
            self._append(w)
        self._seg_start, self._seg_end = 1, 0

    def _append(self, window: PauseWindow) -> None:
        if self._windows and window.start_ns <= self._windows[-1].start_ns:
            return
        self._windows.append(window)
        self._starts.append(window.start_ns)
        self._first_ns = min(self._first_ns, window.start_ns)

    def _extend_to(self, ts_ns: int) -> None:
        while self._covered_ns < ts_ns:
            self._extend_chunk()

    def _extend_chunk(self) -> None:
        assert self._next_date is not None
        first = self._next_date
        last = first + dt.timedelta(days=self.chunk_days - 1)
        for w in _windows_starting(self.config, first, last):
            self._append(w)
        self._next_date = last + _ONE_DAY
        # Every window not yet known needs a first holy day after `last`, so it starts at candle
        # lighting on the evening of `last` or later: after `last - 1 day` 00:00 UTC in any zone.
        self._covered_ns = _to_ns(dt.datetime.combine(last - _ONE_DAY, dt.time(0), _UTC))
