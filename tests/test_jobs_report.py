"""The report job: statistics from a database seeded through the store's write path, charts, the README
section, byte-for-byte idempotency, empty/tiny databases, and bad input that must touch nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jobs import charts, readme, report, stats
from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram
from tests.jobs_seed import INSTRUMENT, T0, seed, seed_empty
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, fill, new_order
from worker.store import records
from worker.store.writer import RunInfo, StoreWriter

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHART_FILES = sorted(name for name, _ in charts.CHARTS.values())


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeded") / "trades.db"
    asyncio.run(seed(path))
    return path


def snapshot(folder: Path, readers_shm: bool = False) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: content hash and mtime (ns). `readers_shm`: leave out a WAL database's
    -shm file, which every reader (even read-only) touches by design."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if readers_shm and path.name.endswith("-shm"):
            continue
        if path.is_file():
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return out


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def section_of(text: str) -> str:
    return text[text.index(readme.START) : text.index(readme.END) + len(readme.END)]


# ---- a seeded database ------------------------------------------------------------------------------------
def test_report_on_seeded_db_writes_charts_and_rewrites_only_the_section(
    seeded_db: Path, tmp_path: Path
) -> None:
    readme_path = tmp_path / "README.md"
    before = "# Project\n\nIntro text.\n\n<!-- report:start -->\nOLD STUFF\n<!-- report:end -->\n"
    before += "\n## After\nkept\n"
    readme_path.write_text(before)
    out = tmp_path / "docs" / "charts"
    assert report.main(["--db", str(seeded_db), "--out", str(out), "--readme", str(readme_path)]) == 0

    assert sorted(p.name for p in out.iterdir()) == CHART_FILES
    for name in CHART_FILES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert b"Matplotlib" not in data  # no version text in the metadata
    text = readme_path.read_text()
    assert text.startswith("# Project\n\nIntro text.\n\n<!-- report:start -->\n")
    assert text.endswith("<!-- report:end -->\n\n## After\nkept\n")
    assert "OLD STUFF" not in text
    for name in CHART_FILES:
        assert f"(docs/charts/{name})" in text  # relative to the README's folder
    assert "| Fills (maker share) | 240 (" in text


def test_statistics_agree_with_the_raw_rows(seeded_db: Path) -> None:
    conn = sqlite3.connect(seeded_db)
    data = report.load(seeded_db)
    s = data.stats
    # Totals (from rollups) against sums over the raw fills.
    n, fees, wins, losses, slip = conn.execute(
        "SELECT count(*), sum(fee_quote), sum(realized_pnl > 0), sum(realized_pnl < 0), sum(slippage_bps) "
        "FROM fills"
    ).fetchone()
    assert data.totals.fills == n == 240
    assert s.fees == pytest.approx(fees / 1e8)
    assert s.win_rate == pytest.approx(wins / (wins + losses))
    assert s.mean_slippage_bps == pytest.approx(slip / n)
    gp, gl = conn.execute("SELECT sum(max(realized_pnl, 0)), sum(min(realized_pnl, 0)) FROM fills").fetchone()
    assert s.profit_factor == pytest.approx(gp / -gl)
    # Equity: total return and max drawdown from the raw samples.
    equity = np.array(
        [
            r[0]
            for r in conn.execute("SELECT close FROM equity_bars WHERE resolution_s = 1 ORDER BY bucket_s")
        ],
        float,
    )
    assert s.total_return == pytest.approx(equity[-1] / equity[0] - 1)
    peak = np.maximum.accumulate(equity)
    assert s.max_drawdown_pct == pytest.approx(((equity - peak) / peak).min(), rel=1e-9)
    returns = equity[1:] / equity[:-1] - 1
    assert s.period_s == 60
    expected_sharpe = returns.mean() / returns.std(ddof=1) * np.sqrt(365 * 86400 / 60)
    assert s.sharpe == pytest.approx(expected_sharpe)
    # Markouts and calibration against raw rows.
    for horizon, mean in s.markouts_bps.items():
        raw = conn.execute(
            "SELECT avg(markout_bps) FROM markouts WHERE horizon_ms = ?", (horizon,)
        ).fetchone()[0]
        assert mean == pytest.approx(raw)
    cal = data.calibration
    assert cal is not None and cal.signals == 400 and cal.horizon_ms == 5000
    hits = conn.execute("SELECT avg(return_bps > 0) FROM signal_outcomes").fetchone()[0]
    assert float((cal.hit_rate * cal.count).sum() / cal.count.sum()) == pytest.approx(hits)
    conn.close()


def test_equity_resolution_is_the_finest_complete_one(seeded_db: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(f"file:{seeded_db}?mode=ro", uri=True)
    assert stats.read_equity(conn).resolution_s == 1  # 1800 raw samples, all kept
    assert stats.read_equity(conn, max_points=1000).resolution_s == 3600  # 1800 minute bars: too many
    conn.close()
    # Retention deleted the raw samples older than an hour: 1 s rows no longer cover the history.
    trimmed = tmp_path / "trimmed.db"
    asyncio.run(seed(trimmed, hours=4, trades=10, signals=10, retention_s=3600))
    conn = sqlite3.connect(f"file:{trimmed}?mode=ro", uri=True)
    raw = conn.execute("SELECT count(*) FROM equity_bars WHERE resolution_s = 1").fetchone()[0]
    assert 0 < raw < 240
    equity = stats.read_equity(conn)
    assert equity.resolution_s == 60 and equity.close.size == 240
    conn.close()


def test_second_run_changes_no_byte_and_rewrites_nothing(seeded_db: Path, tmp_path: Path) -> None:
    args = [
        "--db",
        str(seeded_db),
        "--out",
        str(tmp_path / "charts"),
        "--readme",
        str(tmp_path / "README.md"),
    ]
    assert report.main(args) == 0
    first = snapshot(tmp_path)
    assert report.main(args) == 0
    assert snapshot(tmp_path) == first  # same hashes AND same mtimes: nothing was rewritten


def test_a_separate_process_renders_the_same_bytes(seeded_db: Path, tmp_path: Path) -> None:
    assert (
        report.main(
            ["--db", str(seeded_db), "--out", str(tmp_path / "a"), "--readme", str(tmp_path / "a.md")]
        )
        == 0
    )
    done = run_cli("--db", str(seeded_db), "--out", str(tmp_path / "b"), "--readme", str(tmp_path / "b.md"))
    assert done.returncode == 0, done.stderr
    for name in CHART_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a.md").read_text().replace("(a/", "(b/") == (tmp_path / "b.md").read_text()


def test_new_data_changes_the_report(seeded_db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    asyncio.run(seed(other, hours=6, trades=20, signals=50, seed=99))
    out, md = tmp_path / "c", tmp_path / "README.md"
    report.main(["--db", str(seeded_db), "--out", str(out), "--readme", str(md)])
    first = snapshot(tmp_path / "c"), md.read_text()
    report.main(["--db", str(other), "--out", str(out), "--readme", str(md)])
    second = snapshot(tmp_path / "c"), md.read_text()
    assert all(first[0][k][0] != second[0][k][0] for k in first[0])  # every chart redrawn
    assert first[1] != second[1] and "| Fills (maker share) | 40 (" in second[1]


def test_markers_are_appended_when_missing(seeded_db: Path, tmp_path: Path) -> None:
    md = tmp_path / "README.md"
    md.write_text("# Title\n\nBody.\n")
    assert report.main(["--db", str(seeded_db), "--out", str(tmp_path / "charts"), "--readme", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("# Title\n\nBody.\n\n<!-- report:start -->") and text.endswith(
        "<!-- report:end -->\n"
    )


# ---- empty and tiny databases ---------------------------------------------------------------------
def test_empty_db_says_so_with_placeholder_charts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "empty.db"
    asyncio.run(seed_empty(db))
    md = tmp_path / "README.md"
    assert report.main(["--db", str(db), "--out", str(tmp_path / "charts"), "--readme", str(md)]) == 0
    assert "no trading data yet" in capsys.readouterr().out
    assert "_No trading data yet" in md.read_text()
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == CHART_FILES
    first = snapshot(tmp_path, readers_shm=True)
    assert report.main(["--db", str(db), "--out", str(tmp_path / "charts"), "--readme", str(md)]) == 0
    assert snapshot(tmp_path, readers_shm=True) == first


async def _tiny(path: Path) -> None:
    writer = StoreWriter(path, [INSTRUMENT], RunInfo("test", "test", "tiny"))
    await writer.start()
    order = new_order(1, "BTCUSDT", Side.BUY, OrderType.MARKET, TimeInForce.IOC, 100, None, T0)
    writer.submit(records.OrderUpdate(order, T0))
    writer.submit(
        Fill(
            1,
            1,
            "BTCUSDT",
            Side.BUY,
            6_000_000,
            100,
            60_000,
            "USDT",
            Liquidity.TAKER,
            T0 + 5,
            "t/1",
            0,
            0,
            5_999_999.5,
            6_000_000.0,
            0.8,
        )
    )
    writer.submit(records.OrderUpdate(fill(order, 100), T0 + 5))
    writer.submit(records.EquitySample(T0 + 10, 10_000 * 10**8, 9_940 * 10**8, 0, 0, 60_000, 60 * 10**8))
    await writer.close()


def test_tiny_db_reports_what_it_can(tmp_path: Path) -> None:
    db = tmp_path / "tiny.db"
    asyncio.run(_tiny(db))
    md = tmp_path / "README.md"
    assert report.main(["--db", str(db), "--out", str(tmp_path / "charts"), "--readme", str(md)]) == 0
    text = md.read_text()
    assert "| Sharpe (annualized; no returns yet) | n/a |" in text  # one sample: no ratio
    assert "| Win rate (closing fills, gross) | n/a |" in text  # nothing closed yet
    assert "| Fills (maker share) | 1 (0.0%) |" in text
    assert "| Mean slippage vs decision mid | +0.80 bps |" in text


# ---- bad input touches nothing ----------------------------------------------------------------------------
def _assert_refused(done: subprocess.CompletedProcess, tmp_path: Path, before: dict, words: str) -> None:
    assert done.returncode == 1
    assert words in done.stderr and "nothing written" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(tmp_path) == before


def test_missing_db_fails_clearly_and_touches_nothing(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# keep\n")
    before = snapshot(tmp_path)
    done = run_cli(
        "--db",
        str(tmp_path / "nope.db"),
        "--out",
        str(tmp_path / "charts"),
        "--readme",
        str(tmp_path / "README.md"),
    )
    _assert_refused(done, tmp_path, before, "does not exist")


@pytest.mark.parametrize("content", [b"this is not a database" * 200, b""], ids=["garbage", "zero-bytes"])
def test_corrupt_db_fails_clearly_and_touches_nothing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.db").write_bytes(content)
    (tmp_path / "README.md").write_text("# keep\n")
    before = snapshot(tmp_path)
    done = run_cli(
        "--db",
        str(tmp_path / "bad.db"),
        "--out",
        str(tmp_path / "charts"),
        "--readme",
        str(tmp_path / "README.md"),
    )
    _assert_refused(done, tmp_path, before, "bad.db")


def test_foreign_sqlite_db_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = snapshot(tmp_path)
    assert (
        report.main(
            [
                "--db",
                str(tmp_path / "other.db"),
                "--out",
                str(tmp_path / "c"),
                "--readme",
                str(tmp_path / "R.md"),
            ]
        )
        == 1
    )
    assert snapshot(tmp_path) == before


def test_broken_markers_are_refused_before_anything_is_written(seeded_db: Path, tmp_path: Path) -> None:
    md = tmp_path / "README.md"
    md.write_text("# x\n<!-- report:end -->\n<!-- report:start -->\n")
    before = snapshot(tmp_path)
    assert report.main(["--db", str(seeded_db), "--out", str(tmp_path / "charts"), "--readme", str(md)]) == 1
    assert snapshot(tmp_path) == before


def test_rewrite_rules() -> None:
    new = f"{readme.START}\nX\n{readme.END}"
    assert readme.rewrite("", new) == new + "\n"
    assert readme.rewrite(f"a\n{readme.START}\nold\n{readme.END}\nb", new) == f"a\n{new}\nb"
    for broken in (readme.START, readme.END, readme.START * 2 + readme.END, readme.END + readme.START):
        with pytest.raises(readme.ReadmeError):
            readme.rewrite(broken, new)


def test_ratios_need_two_periods_and_spread() -> None:
    assert stats.ratios(np.array([0.01]), 60) == (None, None)
    assert stats.ratios(np.array([0.01, 0.01]), 60) == (None, None)  # no spread, no downside
    sharpe, sortino = stats.ratios(np.array([0.01, -0.01, 0.02]), 86400)
    assert sharpe == pytest.approx(
        np.mean([0.01, -0.01, 0.02]) / np.std([0.01, -0.01, 0.02], ddof=1) * np.sqrt(365)
    )
    assert sortino == pytest.approx(np.mean([0.01, -0.01, 0.02]) / np.sqrt(0.0001 / 3) * np.sqrt(365))


# ---- Telegram -------------------------------------------------------------------------------------
async def test_telegram_gets_the_summary_and_the_equity_chart(seeded_db: Path, tmp_path: Path) -> None:
    fake = await FakeTelegram().start()
    try:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_CHAT_ID": "42",
            "TELEGRAM_API_BASE": fake.base_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jobs.report", "--db", str(seeded_db), "--out", str(tmp_path / "c"),
            "--readme", str(tmp_path / "R.md"), "--telegram", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        assert "telegram: sent 2 message(s)" in out.decode()
        sent = await fake.wait_requests(2)
        assert [r.api_method for r in sent] == ["sendMessage", "sendPhoto"]
        assert sent[0].fields["text"].startswith("📊 Daily summary 2024-08-10")
        assert "Total return: " in sent[0].fields["text"]
        assert sent[1].files["photo"] == (tmp_path / "c" / "equity.png").read_bytes()
    finally:
        await fake.stop()
