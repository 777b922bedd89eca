"""`python -m worker calendar` prints the windows of the CONFIGURED location (same layers as `run`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JERUSALEM = """
[calendar]
latitude = 31.76904
longitude = 35.21633
tz = "Asia/Jerusalem"
candle_minutes = 40
israel = true
"""


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QF_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", "calendar", *argv],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


@pytest.fixture
def jerusalem_toml(tmp_path: Path) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(JERUSALEM)
    return path


def test_config_file_sets_the_location_and_customs(jerusalem_toml: Path) -> None:
    # 2020-03-27: hebcal publishes Jerusalem candle lighting (40 min) at 18:15 local.
    proc = cli("--from", "2020-03-27", "--to", "2020-03-28", "--config", str(jerusalem_toml))
    assert proc.returncode == 0, proc.stderr
    assert "(Asia/Jerusalem)" in proc.stdout and "40 min" in proc.stdout and "Israel" in proc.stdout
    assert "2020-03-27 18:15" in proc.stdout
    same = cli("--from", "2020-03-27", "--to", "2020-03-28", env={"QF_CONFIG": str(jerusalem_toml)})
    assert same.returncode == 0 and same.stdout == proc.stdout  # $QF_CONFIG is the same layer


def test_flags_override_the_config_and_the_default_is_still_sao_paulo(jerusalem_toml: Path) -> None:
    proc = cli(
        "--from", "2020-03-27", "--to", "2020-03-28", "--config", str(jerusalem_toml),
        "--candle-minutes", "18", "--no-israel", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["start"] == "2020-03-27T15:37:00Z"  # 18 min before sunset, not the config's 40
    plain = cli("--from", "2020-03-27", "--to", "2020-03-28")
    assert "(America/Sao_Paulo)" in plain.stdout


def test_disabled_pause_still_prints_the_configured_location(tmp_path: Path) -> None:
    path = tmp_path / "off.toml"
    path.write_text(JERUSALEM + "enabled = false\n")
    proc = cli("--from", "2020-03-27", "--to", "2020-03-28", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "(Asia/Jerusalem)" in proc.stdout


def test_a_bad_configuration_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[calendar]\ntz = "Nowhere/Land"\n')
    proc = cli("--from", "2020-03-27", "--to", "2020-03-28", "--config", str(path))
    assert proc.returncode == 2 and "calendar" in proc.stderr and "Traceback" not in proc.stderr
