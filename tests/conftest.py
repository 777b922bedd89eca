"""Shared test fixtures: where the recorded Binance data lives, and skipping cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QF_SHARED", ROOT.parent / "shared"))
BINANCE_DATA = SHARED / "data" / "binance"

RECORDINGS = {
    "spot": (
        BINANCE_DATA / "spot_btcusdt_20240808T2354Z.ws.jsonl.gz",
        BINANCE_DATA / "spot_btcusdt_20240808T2354Z.snapshots.jsonl",
    ),
    "usdm": (
        BINANCE_DATA / "usdm_btcusdt_20240808T2354Z.ws.jsonl.gz",
        BINANCE_DATA / "usdm_btcusdt_20240808T2354Z.snapshots.jsonl",
    ),
}


def recording(market: str) -> tuple[Path, Path]:
    """Paths of a real recording, or skip the test saying why."""
    ws, snaps = RECORDINGS[market]
    if not ws.exists() or not snaps.exists():
        pytest.skip(f"recorded Binance data not found at {BINANCE_DATA} (set QF_SHARED to ../shared)")
    return ws, snaps


@pytest.fixture(params=["spot", "usdm"])
def real_recording(request: pytest.FixtureRequest) -> tuple[str, Path, Path]:
    ws, snaps = recording(request.param)
    return request.param, ws, snaps
