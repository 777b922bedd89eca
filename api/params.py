"""Query-string parsing: strict, bounded, and every failure names the parameter.

- Unknown parameters, repeated parameters and over-long values are refused (400), so a typo such as
  `symbl=BTCUSDT` never silently returns unfiltered data.
- Times are RFC 3339 / ISO 8601 (naive means UTC) or Unix seconds; they become integer ns.
- Integers are range-checked before they reach SQLite (no OverflowError, no absurd LIMIT).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from api.problems import Problem, bad_param

MAX_QUERY_BYTES = 2048
MAX_VALUE_CHARS = 512
MIN_NS = 0
MAX_NS = 4_102_444_800 * 10**9  # 2100-01-01: beyond that a timestamp is a typo
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")
_NUMBER = re.compile(r"[+-]?\d{1,12}(\.\d{1,9})?")
_WINDOW = re.compile(r"(\d{1,4})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MARKETS = ("spot", "usdm")


class Query:
    """The request's query parameters, checked against the names an endpoint accepts."""

    def __init__(self, raw_query: bytes, items: Iterable[tuple[str, str]], allowed: Iterable[str]) -> None:
        if len(raw_query) > MAX_QUERY_BYTES:
            raise Problem(
                400, f"query string is {len(raw_query)} bytes; at most {MAX_QUERY_BYTES}", parameter="query"
            )
        allowed = set(allowed)
        self.values: dict[str, str] = {}
        for name, value in items:
            if name not in allowed:
                shown = name if len(name) <= 40 else name[:40] + "..."
                known = ", ".join(sorted(allowed)) or "none"
                raise Problem(
                    400, f"unknown parameter {shown!r}; this endpoint takes: {known}", parameter=shown
                )
            if name in self.values:
                raise bad_param(name, "given more than once")
            if len(value) > MAX_VALUE_CHARS:
                raise bad_param(name, f"value longer than {MAX_VALUE_CHARS} characters")
            self.values[name] = value

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        return value if value not in (None, "") else None

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        text = self.text(name)
        if text is None:
            return default
        if not re.fullmatch(r"[+-]?\d{1,19}", text):
            raise bad_param(name, f"must be a whole number in {low}..{high}")
        value = int(text)
        if not low <= value <= high:
            raise bad_param(name, f"must be in {low}..{high}, got {value}")
        return value

    def choice(self, name: str, choices: Iterable[str], *, fold: bool = False) -> str | None:
        text = self.text(name)
        if text is None:
            return None
        options = tuple(choices)
        for option in options:
            if text == option or (fold and text.lower() == option.lower()):
                return option
        raise bad_param(name, f"must be one of {', '.join(options)}")

    def choices(self, name: str, choices: Iterable[str]) -> tuple[str, ...]:
        """A comma-separated subset of `choices` (e.g. status=Pending,PartiallyFilled)."""
        text = self.text(name)
        if text is None:
            return ()
        options = {c.lower(): c for c in choices}
        picked = []
        for part in text.split(","):
            option = options.get(part.strip().lower())
            if option is None:
                raise bad_param(name, f"each value must be one of {', '.join(options.values())}")
            if option not in picked:
                picked.append(option)
        return tuple(picked)

    def symbol(self, name: str = "symbol") -> str | None:
        text = self.text(name)
        if text is None:
            return None
        upper = text.upper()
        if not _SYMBOL.fullmatch(upper):
            raise bad_param(name, "must be 2-20 letters or digits, e.g. BTCUSDT")
        return upper

    def market(self, name: str = "market") -> str | None:
        return self.choice(name, MARKETS, fold=True)

    def time_ns(self, name: str) -> int | None:
        text = self.text(name)
        return None if text is None else parse_time_ns(name, text)

    def time_range(self) -> tuple[int | None, int | None]:
        start, end = self.time_ns("from"), self.time_ns("to")
        if start is not None and end is not None and start > end:
            raise bad_param("from", "is after `to` (reversed time range)")
        return start, end

    def window_s(self, name: str, low: int, high: int) -> int | None:
        text = self.text(name)
        if text is None:
            return None
        match = _WINDOW.fullmatch(text)
        if not match:
            raise bad_param(name, "must be a number and a unit s, m, h or d, e.g. 24h or 7d")
        seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
        if not low <= seconds <= high:
            raise bad_param(name, f"must be between {low} s and {high} s")
        return seconds


def parse_time_ns(name: str, text: str) -> int:
    """RFC 3339 (`2024-08-09T00:00:00Z`), a date, or Unix seconds (`1723161600.5`) -> ns since the epoch."""
    if _NUMBER.fullmatch(text):
        whole, _, frac = text.lstrip("+").partition(".")
        negative = whole.startswith("-")
        ns = abs(int(whole)) * 10**9 + int((frac or "0").ljust(9, "0"))
        ns = -ns if negative else ns
    else:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise bad_param(name, "must be an RFC 3339 time (2024-08-09T00:00:00Z) or Unix seconds") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        try:
            delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        except OverflowError:
            raise bad_param(name, "is out of range") from None
        ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    if not MIN_NS <= ns <= MAX_NS:
        raise bad_param(name, "must be between 1970-01-01 and 2100-01-01")
    return ns
