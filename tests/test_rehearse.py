"""The deploy rehearsal (`infra/rehearse.sh`): the whole shape on loopback, run end to end.

moto_server as S3, Litestream running the worker as its child against the Binance stand-in, the API's
start script following the replica into its own copy, the report job on a restored copy, the health job
against both. The script must end with the API listing the worker's fills, the charts written, both
health checks green, and every process it started gone.

While the worker's strategy is not wired (the worker writes no signals and no orders at all), fills
cannot exist: the test then re-runs the rehearsal without the fills step, checks everything else, and
skips saying exactly that. Any other failure fails the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "infra" / "rehearse.sh"
FILLS_TIMEOUT_S = 40

pytestmark = pytest.mark.timeout(170)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _groups(work: Path) -> list[tuple[int, str]]:
    path = work / "pgids"
    if not path.exists():
        return []
    return [
        (int(pid), name) for pid, name in (line.split() for line in path.read_text().splitlines() if line)
    ]


def rehearse(work: Path, **env: str) -> subprocess.CompletedProcess:
    work.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            env={
                **os.environ,
                "REHEARSE_DIR": str(work),
                "REHEARSE_FILLS_TIMEOUT": str(FILLS_TIMEOUT_S),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=150,
        )
    finally:
        leftovers = [(pgid, name) for pgid, name in _groups(work) if _alive(pgid)]
        for pgid, _ in leftovers:  # only the groups this rehearsal started (their ids are in its file)
            os.killpg(pgid, signal.SIGKILL)
        assert not leftovers, f"rehearse.sh left processes running: {leftovers}"


def _strategy_silent(work: Path) -> bool:
    """True when the worker wrote no signal and no order: nothing upstream of fills is wired yet."""
    db = work / "worker" / "quantumflow.db"
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        signals, orders = conn.execute(
            "SELECT (SELECT count(*) FROM signals), (SELECT count(*) FROM orders)"
        ).fetchone()
    finally:
        conn.close()
    return signals == 0 and orders == 0


def _digest(out: str) -> str:
    """The rehearsal's own lines and the components' log tails, without moto's access log."""
    return "\n".join(line for line in out.splitlines() if 'HTTP/1.1" ' not in line)[-8000:]


def _assert_rest_of_the_shape(out: str, work: Path) -> None:
    assert "worker /health: HTTP 200" in out
    assert "api /health: HTTP 200" in out
    lines = out.splitlines()
    health = [line for line in lines if line.startswith(("api http://127.0.0.1", "worker http://127.0.0.1"))]
    assert len(health) == 2 and all(": healthy (200 in " in line for line in health), health
    charts = sorted(p.name for p in (work / "report" / "charts").glob("*.png"))
    assert len(charts) == 6, charts
    assert "<!-- report:end -->" in (work / "report" / "README.md").read_text()
    # The API read its own replica copy, not the worker's file.
    api_copy, worker_db = work / "api" / "quantumflow.db", work / "worker" / "quantumflow.db"
    assert api_copy.exists() and worker_db.exists() and not api_copy.samefile(worker_db)
    assert {name for _, name in _groups(work)} == {"s3", "binance", "worker", "api"}


@pytest.mark.skipif(
    not (shutil.which("moto_server") and shutil.which("litestream") and shutil.which("setsid")),
    reason="moto_server, litestream and setsid are needed for the rehearsal",
)
def test_rehearsal_runs_the_whole_shape_on_loopback(tmp_path: Path) -> None:
    work = tmp_path / "full"
    done = rehearse(work)
    out = done.stdout + done.stderr
    if done.returncode == 0:
        assert (
            "REHEARSAL OK: fills in the API, 6 charts from a restored copy, both health checks green" in out
        )
        assert "api fills: " in out and "rows, first: {" in out
        assert "replica lag: worker heartbeat age seen by the API " in out
        assert "api fills match the worker's file: " in out
        _assert_rest_of_the_shape(done.stdout, work)
        return
    if "FAILED at step: fills visible in the API" not in out or not _strategy_silent(work):
        pytest.fail(f"rehearsal failed:\n{_digest(out)}")
    # Fills cannot exist yet: rehearse everything else, then say what is missing.
    rest = rehearse(tmp_path / "rest", REHEARSE_SKIP_FILLS="1")
    assert rest.returncode == 0, _digest(rest.stdout + rest.stderr)
    _assert_rest_of_the_shape(rest.stdout, tmp_path / "rest")
    pytest.skip(
        "rehearsal green except fills: the worker wrote no signals and no orders in "
        f"{FILLS_TIMEOUT_S} s (strategy/trader not wired into the live worker yet)"
    )
