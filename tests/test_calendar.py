"""Shabbat / Yom Tov pause windows against times and dates PUBLISHED by others.

Every expected minute below was published by hebcal (its engine's own test fixtures or its JSON API);
every Yom Tov date by hebcal's fixtures or public Jewish calendars. None is computed by our code.
Sources, by key used in the comments:

- [es6-ts]  hebcal/hebcal-es6 `test/candles.spec.ts` (vitest era, NOAA algorithm via @hebcal/noaa).
- [es6-js]  hebcal/hebcal-es6 `src/candles.spec.js`, the ava-era revision that calls
            `makeCandleEvent(undefined, hd, hd.getDay(), location, {candleLightingMins: -18})` with no
            `useElevation` (sea level, as hebcal.com publishes by default).
- [es6-z]   hebcal/hebcal-es6 `test/zmanim.spec.js` (exact seconds from @hebcal/noaa).
- [api-sp]  hebcal.com JSON API response for geonameid=3448439 (São Paulo), 2015-05-22..25, generated
            2022-05-30T17:38:40Z, quoted verbatim in a public Go client's source comment (search index
            file id 41090945810).
- [go]      hebcal/hebcal-go `hebcal/hebcal_test.go` (TestHebrewCalendar, TestNoModern, ...).
- [ist]     istanbullife.org/tour/jewish-holidays (table 2021-2026, evening start to end).
- [rs]      rodephsholom.org/holidays (holiday calendar 2024-2025, evening start to end).
- [ja]      jewishaustralia.com/events.asp?EventID=1989 (Shavuot 2026: begins Thursday evening May 21).

City coordinates are hebcal's classic cities (hebcal/hebcal-es6 `src/location.js`).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from zoneinfo import ZoneInfo

import pytest

from worker import __main__ as worker_main
from worker.calendar import (
    MINUTE_NS,
    CalendarClock,
    CalendarConfig,
    Location,
    candle_lighting,
    holy_days_between,
    pause_windows,
    published_havdalah,
    sunset,
    tzeit,
)
from worker.errors import ConfigError

JERUSALEM_SEA_LEVEL = Location(31.76904, 35.21633, "Asia/Jerusalem")  # [es6-ts] jerusalemSeaLevel
TEL_AVIV = Location(32.08088, 34.78057, "Asia/Jerusalem")
PROVIDENCE = Location(41.82399, -71.41283, "America/New_York")
BOSTON = Location(42.35843, -71.05977, "America/New_York")
MIAMI = Location(25.77427, -80.19366, "America/New_York")
HELSINKI = Location(60.16952, 24.93545, "Europe/Helsinki")
SAO_PAULO = Location(-23.5475, -46.63611, "America/Sao_Paulo")


def local_hm(moment: dt.datetime, location: Location) -> str:
    return moment.astimezone(location.zone).strftime("%Y-%m-%d %H:%M")


def candles(location: Location, day: str, minutes: int = 18) -> str:
    config = CalendarConfig(location=location, candle_minutes=minutes)
    return local_hm(candle_lighting(config, dt.date.fromisoformat(day)), location)


def havdalah_pub(location: Location, day: str, minutes: int | None = None) -> str | None:
    config = CalendarConfig(location=location, havdalah_minutes=minutes)
    moment = published_havdalah(config, dt.date.fromisoformat(day))
    return None if moment is None else local_hm(moment, location)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


# ------------------------------------------------------------------ hebcal's published minutes


def test_jerusalem_40_minutes_every_friday_jan_to_mar_2020_including_the_dst_friday() -> None:
    # [es6-ts] test 'jerusalem40': sea-level Jerusalem, hebcal's 40-minute custom. 2020-03-27 is the
    # Friday Israel moved to summer time (+03:00).
    expected = [
        "2020-01-03 16:07", "2020-01-10 16:12", "2020-01-17 16:19", "2020-01-24 16:25",
        "2020-01-31 16:31", "2020-02-07 16:38", "2020-02-14 16:44", "2020-02-21 16:50",
        "2020-02-28 16:55", "2020-03-06 17:00", "2020-03-13 17:05", "2020-03-20 17:10",
        "2020-03-27 18:15",
    ]  # fmt: skip
    fridays = [dt.date(2020, 1, 3) + dt.timedelta(weeks=i) for i in range(13)]
    assert [candles(JERUSALEM_SEA_LEVEL, d.isoformat(), 40) for d in fridays] == expected
    # [es6-ts] test 'jerusalem31'
    assert [candles(JERUSALEM_SEA_LEVEL, d, 31) for d in ("2020-03-06", "2020-03-13", "2020-03-20")] == [
        "2020-03-06 17:09",
        "2020-03-13 17:14",
        "2020-03-20 17:19",
    ]
    assert candles(JERUSALEM_SEA_LEVEL, "2020-03-27", 31) == "2020-03-27 18:24"


def test_sao_paulo_shabbat_then_two_day_shavuot_2015_api_response() -> None:
    # [api-sp] Candle lighting Fri 17:11; Sat and Sun "candle lighting" at nightfall 18:05 (the second
    # day's candles are lit after tzeit); Havdalah Mon 18:05. Southern hemisphere, late autumn.
    assert candles(SAO_PAULO, "2015-05-22") == "2015-05-22 17:11"
    assert havdalah_pub(SAO_PAULO, "2015-05-23") == "2015-05-23 18:05"
    assert havdalah_pub(SAO_PAULO, "2015-05-24") == "2015-05-24 18:05"
    assert havdalah_pub(SAO_PAULO, "2015-05-25") == "2015-05-25 18:05"


def test_providence_candles_and_tzeit_havdalah() -> None:
    # [es6-ts] 'chanukah-candles', 'fastStartEnd-friday' (Erev Pesach), 'fastStartEnd-9av'.
    assert candles(PROVIDENCE, "2020-12-11") == "2020-12-11 15:56"
    assert havdalah_pub(PROVIDENCE, "2020-12-12") == "2020-12-12 17:01"
    assert candles(PROVIDENCE, "2020-12-18") == "2020-12-18 15:58"
    assert havdalah_pub(PROVIDENCE, "2020-12-19") == "2020-12-19 17:04"
    assert candles(PROVIDENCE, "2022-04-15") == "2022-04-15 19:08"
    assert havdalah_pub(PROVIDENCE, "2022-08-06") == "2022-08-06 20:44"


def test_providence_fixed_47_minute_havdalah() -> None:
    # [es6-ts] 'havdalah-mins': hebcal rounds sunset to the nearest minute, then adds 47.
    days = ["2020-04-04", "2020-04-11", "2020-04-16", "2020-04-18", "2020-04-25"]
    assert [havdalah_pub(PROVIDENCE, d, 47) for d in days] == [
        "2020-04-04 20:02",
        "2020-04-11 20:10",
        "2020-04-16 20:15",
        "2020-04-18 20:17",
        "2020-04-25 20:25",
    ]


def test_miami_shavuot_after_shabbat_2022() -> None:
    # [es6-ts] 'candle-lighting-at-tzeit-motzei-shabbat': Fri candles 19:51; tzeit 20:48 / 20:49.
    assert candles(MIAMI, "2022-06-03") == "2022-06-03 19:51"
    assert havdalah_pub(MIAMI, "2022-06-04") == "2022-06-04 20:48"
    assert havdalah_pub(MIAMI, "2022-06-05") == "2022-06-05 20:49"
    assert havdalah_pub(MIAMI, "2022-06-06") == "2022-06-06 20:49"


def test_tel_aviv_30_and_18_minutes() -> None:
    # [es6-js] 'candleLightingMins' (no elevation), May 2020.
    days = ["2020-05-01", "2020-05-08", "2020-05-15", "2020-05-22", "2020-05-28", "2020-05-29"]
    assert [candles(TEL_AVIV, d, 30)[-5:] for d in days] == [
        "18:51",
        "18:56",
        "19:01",
        "19:06",
        "19:10",
        "19:10",
    ]
    assert [candles(TEL_AVIV, d, 18)[-5:] for d in days] == [
        "19:03",
        "19:08",
        "19:13",
        "19:18",
        "19:22",
        "19:22",
    ]


def test_helsinki_above_60_degrees_late_nightfall_and_none() -> None:
    # [es6-js] 'makeCandleEvent-nosunset': Helsinki, May-June 2020. Nightfall on Sat 2020-05-23 is
    # after local midnight (00:31 on the 24th): it still belongs to that Saturday's evening. On
    # 05-30 and 06-06 the sun never gets 8.5° below the horizon: hebcal publishes no havdalah.
    assert [candles(HELSINKI, d) for d in ("2020-05-15", "2020-05-22", "2020-05-29", "2020-06-05")] == [
        "2020-05-15 21:36",
        "2020-05-22 21:52",
        "2020-05-29 22:06",
        "2020-06-05 22:18",
    ]
    assert havdalah_pub(HELSINKI, "2020-05-16") == "2020-05-16 23:49"
    assert havdalah_pub(HELSINKI, "2020-05-23") == "2020-05-24 00:31"
    assert havdalah_pub(HELSINKI, "2020-05-30") is None
    assert havdalah_pub(HELSINKI, "2020-06-06") is None
    # Same revision, havdalahMins: 72.
    assert [
        havdalah_pub(HELSINKI, d, 72) for d in ("2020-05-16", "2020-05-23", "2020-05-30", "2020-06-06")
    ] == [
        "2020-05-16 23:09",
        "2020-05-23 23:25",
        "2020-05-30 23:39",
        "2020-06-06 23:50",
    ]


def test_exact_seconds_match_noaa_within_two_seconds() -> None:
    # [es6-z] 'zmanim-tlv' and 'nightHourMins-dst' (Boston across the 2022-03-13 US DST change).
    cases = [
        (sunset(TEL_AVIV, dt.date(2021, 3, 6)), "2021-03-06T17:42:22+02:00"),
        (tzeit(TEL_AVIV, dt.date(2021, 3, 6)), "2021-03-06T18:18:39+02:00"),
        (sunset(BOSTON, dt.date(2022, 3, 12)), "2022-03-12T17:47:15-05:00"),
        (sunset(BOSTON, dt.date(2022, 3, 13)), "2022-03-13T18:48:25-04:00"),
        (sunset(BOSTON, dt.date(2022, 3, 14)), "2022-03-14T18:49:35-04:00"),
    ]
    for ours, theirs in cases:
        assert ours is not None
        assert abs((ours - dt.datetime.fromisoformat(theirs)).total_seconds()) < 2, theirs


# ------------------------------------------------------------------ windows: rounding and merging


def only_window(config: CalendarConfig, start: dt.datetime, end: dt.datetime):
    windows = pause_windows(config, start, end)
    assert len(windows) == 1, windows
    return windows[0]


def test_window_starts_at_candle_lighting_and_never_ends_before_published_havdalah() -> None:
    config = CalendarConfig(location=PROVIDENCE)
    w = only_window(config, utc(2020, 12, 11, 12), utc(2020, 12, 12, 12))
    assert local_hm(w.start, PROVIDENCE) == "2020-12-11 15:56"  # [es6-ts] chanukah-candles
    published = dt.datetime(2020, 12, 12, 17, 1, tzinfo=ZoneInfo("America/New_York"))  # Havdalah 17:01
    assert published <= w.end <= published + dt.timedelta(minutes=1)
    exact = tzeit(PROVIDENCE, dt.date(2020, 12, 12))
    assert exact is not None and exact <= w.end < exact + dt.timedelta(minutes=1)
    assert w.start_ns % MINUTE_NS == 0 and w.end_ns % MINUTE_NS == 0
    assert w.holy_days == ("Shabbat",)


def test_shabbat_and_two_day_yom_tov_merge_into_one_window_sao_paulo_2015() -> None:
    # [api-sp]: Shabbat 05-23 then Shavuot 05-24/25 (diaspora): one pause from Friday's 17:11 to
    # Monday's havdalah 18:05, with no resume between.
    w = only_window(CalendarConfig(), utc(2015, 5, 22, 12), utc(2015, 5, 26))
    assert local_hm(w.start, SAO_PAULO) == "2015-05-22 17:11"
    assert local_hm(w.end, SAO_PAULO) in ("2015-05-25 18:05", "2015-05-25 18:06")
    assert [d.date.isoformat() for d in w.days] == ["2015-05-23", "2015-05-24", "2015-05-25"]
    assert w.holy_days == ("Shabbat", "Shavuot")


def test_yom_tov_on_friday_then_shabbat_is_one_window_in_diaspora_and_israel() -> None:
    # Shavuot 2026 begins Thursday evening May 21 [ja]: Friday Yom Tov, then Shabbat.
    for israel, dates in ((False, ["2026-05-22", "2026-05-23"]), (True, ["2026-05-22", "2026-05-23"])):
        config = CalendarConfig(israel=israel)
        w = only_window(config, utc(2026, 5, 21, 12), utc(2026, 5, 23, 12))
        assert [d.date.isoformat() for d in w.days] == dates
        assert w.holy_days == ("Shavuot", "Shabbat")
        assert w.start.astimezone(SAO_PAULO.zone).date() == dt.date(2026, 5, 21)  # Thursday evening
        friday_sunset = sunset(SAO_PAULO, dt.date(2026, 5, 22))
        assert friday_sunset is not None and w.start < friday_sunset < w.end
    # Pesach 2026 begins the evening of April 1 [ist]: Thu + Fri Yom Tov + Shabbat, three days.
    w = only_window(CalendarConfig(), utc(2026, 4, 1, 12), utc(2026, 4, 4, 12))
    assert [d.date.isoformat() for d in w.days] == ["2026-04-02", "2026-04-03", "2026-04-04"]


def test_israel_dst_friday_does_not_shift_the_window() -> None:
    # Israel's clocks jumped +1h at 02:00 on Friday 2020-03-27; candle lighting that evening was
    # published at 18:15+03:00 [es6-ts jerusalem40], i.e. 15:15 UTC.
    config = CalendarConfig(location=JERUSALEM_SEA_LEVEL, candle_minutes=40)
    w = only_window(config, utc(2020, 3, 27, 6), utc(2020, 3, 28, 12))
    assert w.start == utc(2020, 3, 27, 15, 15)
    hours = (w.end_ns - w.start_ns) / 3.6e12
    assert 24.5 < hours < 26.0  # an hour's error either way would land outside
    # The week before (standard time) has the same length to within a few minutes.
    before = only_window(config, utc(2020, 3, 20, 6), utc(2020, 3, 21, 12))
    assert before.start == utc(2020, 3, 20, 15, 10)  # published 17:10+02:00
    assert abs((w.end_ns - w.start_ns) - (before.end_ns - before.start_ns)) < 10 * MINUTE_NS


def test_us_dst_weekend_window_in_utc() -> None:
    # 2022-03-12/13: Shabbat ends the night before the US change; the window is computed in UTC.
    config = CalendarConfig(location=BOSTON)
    w = only_window(config, utc(2022, 3, 11, 12), utc(2022, 3, 12, 12))
    exact_friday = sunset(BOSTON, dt.date(2022, 3, 11))
    assert exact_friday is not None
    assert w.start_ns <= int(exact_friday.timestamp() * 1e9) - 18 * MINUTE_NS
    assert 24.5 < (w.end_ns - w.start_ns) / 3.6e12 < 26.0


# ------------------------------------------------------------------ Yom Tov days


def yom_tov_dates(year: int, israel: bool) -> dict[str, str]:
    config = CalendarConfig(israel=israel)
    days = holy_days_between(config, dt.date(year, 1, 1), dt.date(year, 12, 31))
    out = {}
    for day in days:
        names = [n for n in day.names if n != "Shabbat"]
        if names:
            out[day.date.isoformat()] = names[0]
    return out


def test_israel_2022_every_yom_tov_day() -> None:
    # [go] TestNoModern (IL: true, year 2022): Pesach I, Pesach VII, Shavuot, Rosh Hashana x2,
    # Yom Kippur, Sukkot I, Shmini Atzeret. Nothing else is Yom Tov in Israel that year.
    assert yom_tov_dates(2022, israel=True) == {
        "2022-04-16": "Pesach",
        "2022-04-22": "Pesach",
        "2022-06-05": "Shavuot",
        "2022-09-26": "Rosh Hashana",
        "2022-09-27": "Rosh Hashana",
        "2022-10-05": "Yom Kippur",
        "2022-10-10": "Sukkot",
        "2022-10-17": "Shmini Atzeret",
    }


def test_diaspora_2022_pesach_and_rosh_hashana() -> None:
    # [go] TestHebrewCalendar (April 2022): Pesach I 04-16, II 04-17, VII 04-22, VIII 04-23;
    # TestHebrewCalendarCandles: Rosh Hashana 5783 on 09-26 and 09-27.
    dates = yom_tov_dates(2022, israel=False)
    assert [d for d, n in dates.items() if n == "Pesach"] == [
        "2022-04-16",
        "2022-04-17",
        "2022-04-22",
        "2022-04-23",
    ]
    assert [d for d, n in dates.items() if n == "Rosh Hashana"] == ["2022-09-26", "2022-09-27"]


def test_diaspora_2025_and_2026_every_yom_tov_day() -> None:
    # 2025 [ist][rs]: Passover eve Apr 12 - Apr 20, Shavuot eve Jun 1 - Jun 3, Rosh Hashanah eve
    # Sep 22 - 24, Yom Kippur eve Oct 1 - 2, Sukkot first days eve Oct 6 - 8, Simchat Torah
    # eve Oct 13 - 15.
    assert yom_tov_dates(2025, israel=False) == {
        "2025-04-13": "Pesach", "2025-04-14": "Pesach", "2025-04-19": "Pesach", "2025-04-20": "Pesach",
        "2025-06-02": "Shavuot", "2025-06-03": "Shavuot",
        "2025-09-23": "Rosh Hashana", "2025-09-24": "Rosh Hashana",
        "2025-10-02": "Yom Kippur",
        "2025-10-07": "Sukkot", "2025-10-08": "Sukkot",
        "2025-10-14": "Shmini Atzeret", "2025-10-15": "Simchat Torah",
    }  # fmt: skip
    # 2026 [ist]: Passover eve Apr 1 - Apr 9, Rosh Hashanah eve Sep 11 - 13, Yom Kippur eve Sep 20 -
    # 21, Sukkot eve Sep 25 - 27, Simchat Torah eve Oct 2 - 4; Shavuot eve May 21 [ja].
    assert yom_tov_dates(2026, israel=False) == {
        "2026-04-02": "Pesach", "2026-04-03": "Pesach", "2026-04-08": "Pesach", "2026-04-09": "Pesach",
        "2026-05-22": "Shavuot", "2026-05-23": "Shavuot",
        "2026-09-12": "Rosh Hashana", "2026-09-13": "Rosh Hashana",
        "2026-09-21": "Yom Kippur",
        "2026-09-26": "Sukkot", "2026-09-27": "Sukkot",
        "2026-10-03": "Shmini Atzeret", "2026-10-04": "Simchat Torah",
    }  # fmt: skip


def test_pesach_2025_begins_saturday_night_and_merges_with_shabbat() -> None:
    # Passover 2025 begins the evening of Saturday April 12 [rs]: the pause runs from Friday's candle
    # lighting through the two first days, without resuming on Saturday night.
    w = only_window(CalendarConfig(), utc(2025, 4, 11, 12), utc(2025, 4, 14, 12))
    assert [d.date.isoformat() for d in w.days] == ["2025-04-12", "2025-04-13", "2025-04-14"]
    assert w.start.astimezone(SAO_PAULO.zone).date() == dt.date(2025, 4, 11)
    assert w.end.astimezone(SAO_PAULO.zone).date() == dt.date(2025, 4, 14)


# ------------------------------------------------------------------ high latitude


def test_helsinki_fallback_when_the_sun_never_reaches_8_5_degrees_never_resumes_early() -> None:
    config = CalendarConfig(location=HELSINKI)
    w = only_window(config, utc(2020, 5, 29, 12), utc(2020, 5, 30, 12))
    assert w.havdalah_fallback
    set_at = sunset(HELSINKI, dt.date(2020, 5, 30))
    assert set_at is not None
    # Never earlier than Rabbeinu Tam's 72 minutes, which hebcal publishes at 23:39 [es6-js] ...
    assert w.end >= dt.datetime(2020, 5, 30, 23, 39, tzinfo=HELSINKI.zone)
    # ... nor than the latest nightfall hebcal published the week before (00:31 after midnight).
    assert w.end >= dt.datetime(2020, 5, 31, 0, 31, tzinfo=HELSINKI.zone)
    assert w.end - set_at < dt.timedelta(hours=4)  # and still that night, not the next day
    # Where nightfall exists (2020-05-23, after local midnight) no fallback is used.
    w23 = only_window(config, utc(2020, 5, 22, 12), utc(2020, 5, 23, 12))
    assert not w23.havdalah_fallback
    assert local_hm(w23.end, HELSINKI) in ("2020-05-24 00:31", "2020-05-24 00:32")


@pytest.mark.parametrize(
    "location",
    [
        Location(1.87, -157.4, "Pacific/Kiritimati"),  # UTC+14 on a western longitude
        Location(-13.83, -171.76, "Pacific/Apia"),
        Location(-43.95, -176.55, "Pacific/Chatham"),
    ],
)
def test_evening_of_the_civil_date_across_the_date_line(location: Location) -> None:
    """astral answers per UTC date; on these islands its answer for the civil date is the wrong evening.

    Invariants (no expected values): every sunset and tzeit falls between local noon of its date and
    local noon of the next, and each Shabbat window starts on a Friday evening and ends on Saturday.
    """
    day = dt.date(2026, 1, 1)
    for _ in range(0, 365, 5):
        for moment in (sunset(location, day), tzeit(location, day)):
            assert moment is not None
            local = moment.astimezone(location.zone)
            assert local.date() == day or (local.date() == day + dt.timedelta(days=1) and local.hour < 12)
            assert local.date() > day or local.hour >= 12
        day += dt.timedelta(days=5)
    config = CalendarConfig(location=location)
    for w in pause_windows(config, utc(2026, 1, 1), utc(2026, 3, 1)):
        assert w.start.astimezone(location.zone).weekday() == 4  # Friday
        assert w.end.astimezone(location.zone).weekday() == 5  # Saturday
        assert 24 < (w.end_ns - w.start_ns) / 3.6e12 < 26


def test_sun_that_never_sets_refuses_the_location_at_start() -> None:
    with pytest.raises(ConfigError) as error:
        CalendarConfig(location=Location(69.6496, 18.956, "Europe/Oslo"))  # Tromsø
    assert error.value.parameter == "latitude"
    assert "sun" in str(error.value)
    with pytest.raises(ConfigError):
        CalendarConfig(location=Location(-77.85, 166.67, "Antarctica/McMurdo"))
    CalendarConfig(location=Location(64.13548, -21.89541, "Atlantic/Reykjavik"))  # sets every day


# ------------------------------------------------------------------ bad configuration


@pytest.mark.parametrize(
    ("make", "parameter"),
    [
        (lambda: Location(90.5, 0.0, "UTC"), "latitude"),
        (lambda: Location(-91, 0.0, "UTC"), "latitude"),
        (lambda: Location(float("nan"), 0.0, "UTC"), "latitude"),
        (lambda: Location(0.0, 180.01, "UTC"), "longitude"),
        (lambda: Location(0.0, -200, "UTC"), "longitude"),
        (lambda: Location(0.0, 0.0, "Mars/Olympus_Mons"), "tz"),
        (lambda: Location(0.0, 0.0, ""), "tz"),
        (lambda: Location(0.0, 0.0, "../etc/passwd"), "tz"),
        (lambda: CalendarConfig(candle_minutes=-1), "candle_minutes"),
        (lambda: CalendarConfig(candle_minutes=18.5), "candle_minutes"),  # type: ignore[arg-type]
        (lambda: CalendarConfig(havdalah_minutes=-42), "havdalah_minutes"),
        (lambda: CalendarConfig(havdalah_minutes=0), "havdalah_minutes"),
        (lambda: CalendarConfig(israel="yes"), "israel"),  # type: ignore[arg-type]
    ],
)
def test_bad_configuration_is_refused_with_the_parameter_named(make, parameter: str) -> None:
    with pytest.raises(ConfigError) as error:
        make()
    assert error.value.parameter == parameter
    assert parameter in str(error.value)


def test_default_is_sao_paulo() -> None:
    config = CalendarConfig()
    assert (config.location.latitude, config.location.longitude) == (-23.5475, -46.63611)
    assert config.location.tz == "America/Sao_Paulo"
    assert (config.candle_minutes, config.havdalah_minutes, config.israel) == (18, None, False)


# ------------------------------------------------------------------ the hot-path clock


def test_clock_agrees_with_pause_windows_at_every_boundary_over_two_years() -> None:
    config = CalendarConfig()
    windows = pause_windows(config, utc(2026, 1, 1), utc(2028, 1, 1))
    assert len(windows) > 100
    clock = CalendarClock(config)
    for w in windows:
        assert not clock.is_paused(w.start_ns - 1)
        assert clock.next_change(w.start_ns - 1) == w.start_ns
        assert clock.is_paused(w.start_ns)
        assert clock.window_at(w.start_ns) == w
        assert clock.next_change(w.start_ns) == w.end_ns
        assert clock.is_paused(w.end_ns - 1)
        assert not clock.is_paused(w.end_ns)
    known = [w for w in clock.windows if w.start_ns < windows[-1].end_ns and w.end_ns > windows[0].start_ns]
    assert known == windows  # lazily built, nothing duplicated or split


def test_clock_random_times_match_a_linear_scan_including_backward_jumps() -> None:
    config = CalendarConfig(location=JERUSALEM_SEA_LEVEL, candle_minutes=40, israel=True)
    lo, hi = utc(2025, 1, 1), utc(2027, 1, 1)
    windows = pause_windows(config, lo, hi)
    clock = CalendarClock(config)
    rng = random.Random(7)
    lo_ns, hi_ns = int(lo.timestamp()) * 10**9, int(hi.timestamp()) * 10**9
    for _ in range(3000):
        ts = rng.randrange(lo_ns + 10 * 86_400 * 10**9, hi_ns - 10 * 86_400 * 10**9)
        expected = any(w.start_ns <= ts < w.end_ns for w in windows)
        assert clock.is_paused(ts) == expected


def test_next_window_on_a_fresh_clock_and_inside_a_window() -> None:
    config = CalendarConfig()
    rosh_hashana = only_window(config, utc(2026, 9, 11, 12), utc(2026, 9, 13, 12))
    tuesday = int(utc(2026, 9, 8, 12).timestamp()) * 10**9
    friday_shabbat = CalendarClock(config).next_window(tuesday)  # nothing asked before
    assert friday_shabbat == rosh_hashana  # 2026-09-11 evening: Rosh Hashana on Shabbat
    inside = rosh_hashana.start_ns + 3_600 * 10**9
    clock = CalendarClock(config)
    assert clock.next_window(inside) == rosh_hashana
    assert clock.next_change(inside) == rosh_hashana.end_ns


def test_advance_reports_one_pause_and_one_resume_per_window() -> None:
    config = CalendarConfig()
    clock = CalendarClock(config)
    start = int(utc(2026, 9, 1).timestamp()) * 10**9
    step = 37 * 1_000_000_000  # one event every 37 s, like a quiet replay
    transitions = []
    assert clock.advance(start) is None  # first call only records the state
    ts = start
    while ts < int(utc(2026, 10, 11).timestamp()) * 10**9:
        ts += step
        t = clock.advance(ts)
        if t is not None:
            transitions.append(t)
    expected = pause_windows(config, utc(2026, 9, 1), utc(2026, 10, 11))
    assert [t.paused for t in transitions] == [True, False] * len(expected)
    assert [t.at_ns for t in transitions] == [x for w in expected for x in (w.start_ns, w.end_ns)]


# ------------------------------------------------------------------ CLI


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = worker_main.main(["calendar", *argv])
    except SystemExit as exit_:  # argparse refuses its own way
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_lines_for_2026(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "--from", "2026-01-01", "--to", "2026-12-31", "--json")
    assert code == 0 and err == ""
    rows = [json.loads(line) for line in out.splitlines()]
    assert 50 <= len(rows) <= 56
    rosh_hashana = [r for r in rows if "Rosh Hashana" in r["holy_days"]]
    assert len(rosh_hashana) == 1
    assert rosh_hashana[0]["dates"] == ["2026-09-12", "2026-09-13"]
    for row in rows:
        start = dt.datetime.fromisoformat(row["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(row["end"].replace("Z", "+00:00"))
        assert row["start"].endswith("Z") and row["end"].endswith("Z")
        assert start.utcoffset() == dt.timedelta(0) and start < end


def test_cli_overrides_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    jerusalem = ["--lat", "31.76904", "--lon", "35.21633", "--tz", "Asia/Jerusalem"]
    code, out, _ = run_cli(
        capsys, "--from", "2020-03-27", "--to", "2020-03-28", *jerusalem, "--candle-minutes", "40", "--israel"
    )
    assert code == 0
    assert "2020-03-27 18:15" in out  # hebcal's published Jerusalem candle lighting [es6-ts]
    assert "Israel" in out and "1 window(s)" in out
    providence = ["--lat", "41.82399", "--lon", "-71.41283", "--tz", "America/New_York"]
    code, out, _ = run_cli(
        capsys, "--from", "2020-04-11", "--to", "2020-04-11", *providence, "--havdalah-minutes", "47"
    )
    assert code == 0 and "2020-04-11 20:1" in out  # 47-min havdalah published 20:10 [es6-ts]


@pytest.mark.parametrize(
    "argv",
    [
        ["--from", "2026-01-01", "--to", "2026-02-01", "--lat", "95"],
        ["--from", "2026-01-01", "--to", "2026-02-01", "--tz", "Nowhere/Land"],
        ["--from", "2026-01-01", "--to", "2026-02-01", "--candle-minutes", "-5"],
        ["--from", "2026-01-01", "--to", "2026-02-01", "--havdalah-minutes", "-42"],
        ["--from", "2026-02-30", "--to", "2026-03-01"],
        ["--from", "2026-03-01", "--to", "2026-02-01"],
        ["--from", "2026-01-01", "--to", "2026-02-01", "--lat", "north"],
        ["--to", "2026-02-01"],
    ],
)
def test_cli_bad_input_exits_2_with_a_message(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.strip() and "Traceback" not in err


def test_cli_refusal_as_a_process_has_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "calendar", "--from", "2026-06-01", "--to", "2026-06-30",
         "--lat", "78.22", "--lon", "15.63", "--tz", "Arctic/Longyearbyen"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "latitude" in proc.stderr and "Traceback" not in proc.stderr
