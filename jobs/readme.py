"""The report's section of the README: a statistics table and the charts, between two marker comments.

Design and invariants:
- Only the text between `<!-- report:start -->` and `<!-- report:end -->` is ever replaced; the markers
  are appended at the end of the file when absent. A file with one marker but not the other, or with
  them out of order, is refused (`ReadmeError`) rather than guessed at.
- The section is a pure function of the report data: no generation time, only the data's own period, so
  a second run over the same database produces the same bytes (and the daily job commits nothing).
- Image links are relative to the README's folder, in POSIX form, so GitHub renders them.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from jobs.charts import CHARTS
from jobs.stats import ReportData

START = "<!-- report:start -->"
END = "<!-- report:end -->"


class ReadmeError(ValueError):
    """The README's markers are broken; nothing was written."""


def _utc(seconds: int | None) -> str:
    if seconds is None:
        return "n/a"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _pct(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2%}" if signed and value else f"{value:.2%}" if signed else f"{value:.1%}"


def _num(value: float | None, fmt: str = "+.2f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def stats_rows(data: ReportData) -> list[tuple[str, str]]:
    s, t, q = data.stats, data.totals, data.quote
    res = (
        f"{s.periods:,} return{'s' * (s.periods != 1)} of {s.period_s:,} s" if s.periods else "no returns yet"
    )
    rows = [
        ("Period", f"{_utc(data.first_s)} → {_utc(data.last_s)}"),
        ("Total return", _pct(s.total_return)),
        ("Net P&L (equity change)", _num(s.net_pnl, "+,.2f", f" {q}")),
        (f"Sharpe (annualized; {res})", _num(s.sharpe)),
        (f"Sortino (annualized; {res})", _num(s.sortino)),
        ("Max drawdown", f"{_pct(s.max_drawdown_pct)} ({_num(s.max_drawdown, '+,.2f', f' {q}')})"),
        ("Win rate (closing fills, gross)", _pct(s.win_rate, signed=False)),
        ("Profit factor (gross)", _num(s.profit_factor, ".2f")),
        ("Fills (maker share)", f"{t.fills:,} ({_pct(t.maker_fills / t.fills if t.fills else None, False)})"),
        ("Orders (filled / cancelled / denied / rejected)",
         f"{t.orders:,} ({t.orders_filled:,} / {t.orders_cancelled:,} / {t.orders_denied:,} / "
         f"{t.orders_rejected:,})"),
        ("Traded volume", f"{t.volume:,.2f} {q}"),
        ("Turnover (volume / mean equity)", _num(s.turnover, ".2f", "×")),
        ("Fees", f"{s.fees:,.2f} {q}"),
        ("Realized P&L (gross) / funding", f"{t.realized_pnl:+,.2f} / {t.funding:+,.2f} {q}"),
        ("Mean slippage vs decision mid", _num(s.mean_slippage_bps, "+.2f", " bps")),
    ]  # fmt: skip
    for horizon, mean in s.markouts_bps.items():
        rows.append((f"Mean markout at {horizon / 1000:g} s", f"{mean:+.2f} bps"))
    if data.calibration is not None:
        cal = data.calibration
        hit = float((cal.hit_rate * cal.count).sum() / cal.count.sum())
        rows.append((f"Signal hit rate at {cal.horizon_ms / 1000:g} s", f"{hit:.1%} of {cal.signals:,}"))
    return rows


def section(data: ReportData, out_dir: Path, readme: Path) -> str:
    """The Markdown between the markers (with the markers)."""
    rel = Path(os.path.relpath(out_dir.resolve(), readme.resolve().parent)).as_posix()
    lines = [START, "## Performance (paper trading)", ""]
    if data.empty:
        lines += [
            "_No trading data yet: the database has no equity samples, fills or signal outcomes. "
            "The charts below are placeholders._",
            "",
        ]
    else:
        lines += [
            "_Written by `python -m jobs.report` from the trades database "
            f"({', '.join(data.symbols) or '-'}); "
            "money in quote units, times UTC._",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in stats_rows(data)),
            "",
        ]
    for file_name, alt in CHARTS.values():
        lines.append(f"![{alt}]({rel}/{file_name})")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def rewrite(text: str, new_section: str) -> str:
    """`text` with its report section replaced (or appended). Raises ReadmeError on broken markers."""
    starts, ends = text.count(START), text.count(END)
    if starts == 0 and ends == 0:
        body = text.rstrip("\n")
        return (body + "\n\n" if body else "") + new_section + "\n"
    if starts != 1 or ends != 1:
        raise ReadmeError(f"expected one {START} and one {END}, found {starts} and {ends}")
    head, rest = text.split(START, 1)
    if END not in rest:
        raise ReadmeError(f"{END} comes before {START}")
    _, tail = rest.split(END, 1)
    return head + new_section + tail
