"""`python -m jobs.report --db PATH --out DIR --readme README.md [--telegram]`: the daily report.

Design and invariants:
- Reads the trades database (a restored replica in CI) through ONE read-only connection, computes the
  statistics from its rollups (`jobs.stats`), renders the charts to PNG bytes in memory (`jobs.charts`)
  and the README section (`jobs.readme`); only when all of that has succeeded does it write anything.
  A missing, corrupt or foreign database, or a README with broken markers, is a clear one-line error,
  exit status 1, and no file is created or changed.
- Idempotent: a second run over the same data changes no byte, and a file whose bytes would not change
  is not rewritten at all (its mtime stays; git sees nothing). Writes go through a temporary file and
  `os.replace`, so a crash never leaves half a PNG or half a README.
- An empty or tiny database is fine: the section says there is no data yet and the charts are
  placeholders; ratios that need two periods say n/a.
- `--telegram` sends the daily summary and the equity chart through `jobs.telegram` (the worker's
  Notifier); delivery problems are reported but do not fail the report.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from jobs import charts, readme, stats
from worker.store.db import StoreError, connect_readonly


class ReportError(RuntimeError):
    """The report cannot be made from this input; nothing was written."""


def load(db_path: Path) -> stats.ReportData:
    try:
        conn = connect_readonly(db_path)
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    try:
        conn.execute("BEGIN")  # one snapshot for every query, even while a follower updates the file
        return stats.load(conn)
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"cannot read {db_path}: {exc}") from None
    finally:
        conn.close()


def _write_if_changed(path: Path, content: bytes) -> bool:
    try:
        if path.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def summary_figures(data: stats.ReportData) -> dict[str, str]:
    rows = dict(readme.stats_rows(data))
    keys = (
        "Total return",
        "Net P&L (equity change)",
        "Max drawdown",
        "Win rate (closing fills, gross)",
        "Fills (maker share)",
        "Fees",
        "Mean slippage vs decision mid",
    )
    figures = {k: rows[k] for k in keys if k in rows}
    figures.update({k: v for k, v in rows.items() if k.startswith("Sharpe")})
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, required=True, help="the trades SQLite file (opened read-only)")
    parser.add_argument("--out", type=Path, default=Path("docs/charts"), help="folder for the PNG charts")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="README to rewrite")
    parser.add_argument(
        "--telegram",
        action="store_true",
        help="also send the summary and equity chart (TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        data = load(args.db)
        old_readme = args.readme.read_text(encoding="utf-8") if args.readme.exists() else ""
        new_readme = readme.rewrite(old_readme, readme.section(data, args.out, args.readme))
        pngs = charts.render_all(data)
    except (ReportError, readme.ReadmeError) as exc:
        print(f"report: {exc}; nothing written", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"report: cannot read {exc.filename}: {exc.strerror}; nothing written", file=sys.stderr)
        return 1
    changed = [name for name, png in pngs.items() if _write_if_changed(args.out / name, png)]
    if _write_if_changed(args.readme, new_readme.encode("utf-8")):
        changed.append(str(args.readme))
    if data.empty:
        print(f"report: {args.db} has no trading data yet; wrote placeholder charts", flush=True)
    else:
        s = data.stats
        ret = f"{s.total_return:+.2%}" if s.total_return is not None else "n/a"
        print(f"report: {data.totals.fills} fills, total return {ret}", flush=True)
    print(f"report: {len(changed)} file(s) changed" + (f": {', '.join(changed)}" if changed else ""))
    if args.telegram:
        from jobs import telegram

        last = data.last_s
        day = datetime.fromtimestamp(last, UTC).strftime("%Y-%m-%d") if last is not None else "no data"
        from worker.notify import daily_summary

        text = daily_summary(
            day, summary_figures(data) if not data.empty else {"status": "no trading data yet"}
        )
        print(telegram.send([text], [(pngs[charts.CHARTS["equity"][0]], f"Equity {day}")]), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
