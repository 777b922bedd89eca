"""What every benchmark shares: where the real recordings are, and how a percentile is read.

- The recordings live in `../shared/data/binance/` beside the project and are never copied into it;
  a benchmark given no files uses both (spot and USD-M BTCUSDT).
- `percentile` is nearest-rank on an already sorted sequence (0 for an empty one), so every script
  quotes p50 / p99 the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "binance"
SPOT_FILE = DATA / "spot_btcusdt_20240808T2354Z.ws.jsonl.gz"
USDM_FILE = DATA / "usdm_btcusdt_20240808T2354Z.ws.jsonl.gz"
DEFAULT_FILES = [SPOT_FILE, USDM_FILE]


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """The value at quantile `q` of `sorted_values` (nearest rank)."""
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]
