"""The order-flow-imbalance strategy: normalized OFI in, entry/exit `Signal`s out.

Design and invariants:
- Input is one `FeatureVector` per book event of a LIVE symbol plus the current position (lots, signed)
  and its entry price (ticks); output is at most one `Signal`. The engine never calls it for a SYNCING
  symbol and calls `reset()` when the symbol resyncs: all normalization state is then rebuilt from
  scratch, and nothing is emitted until it is warm again.
- Score: the best-level OFI summed over `signal_window_ms` (Cont, Kukanov & Stoikov 2014), normalized
  either as a z-score against an EWMA mean/variance of that same window sum (`zscore`, default), or by
  an EWMA of the top-N depth per side (`depth`: OFI / depth, the paper's price-impact scale). The EWMAs
  are sampled on a fixed time grid (`sample_ms`) with the value that prevailed at each grid point, so a
  burst of events does not weigh more than a quiet second.
- Entry (flat only): |score| >= `entry_threshold`, side = sign(score), and the filters pass: spread at
  most `max_spread_bps`, realized vol within [`min_vol_bps`, `max_vol_bps`]. Confidence grows linearly
  with |score| and saturates at `full_confidence_score`; the desired size scales with it between
  `min_lots` and `max_lots`.
- Exit (in a position), first that applies: stop-loss, take-profit (ticks, marked at the exit side: bid
  for a long, ask for a short), time stop (`max_hold_ms` since the position was first seen, or the time
  given), signal reversal (score against the position by at least `exit_threshold`).
- A signal is not repeated (same kind and side) while the position is unchanged, for `cooldown_ms`:
  the order it asked for is in flight.
- Deterministic: pure arithmetic on the inputs, no clock, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.errors import ConfigError, is_finite_number, is_whole
from worker.features import OFI, FeatureVector, reject_unknown
from worker.orders import Side

_NS_PER_MS = 1_000_000


class SignalKind(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class Normalization(StrEnum):
    ZSCORE = "zscore"
    DEPTH = "depth"


@dataclass(frozen=True, slots=True)
class Signal:
    """What the strategy wants: built only when it wants something, so a frozen dataclass is affordable."""

    symbol: str
    side: Side
    size_lots: int
    confidence: float  # [0, 1]
    kind: SignalKind
    reason: str  # ofi_long / ofi_short / stop_loss / take_profit / time_stop / reversal
    score: float  # the normalized OFI at the time
    ts_ns: int
    features: FeatureVector

    # The shape the store's signal rows read (worker/store/records.py classifies by these names).
    @property
    def direction(self) -> int:
        return int(self.side)

    @property
    def value(self) -> float:
        return self.score

    @property
    def mid(self) -> float:
        """Mid in ticks when the signal fired."""
        return self.features.mid

    @property
    def model(self) -> str:
        return "ofi"


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """Strategy parameters. Price distances are in ticks of the symbol (defaults sized for BTCUSDT
    spot, tick 0.01 USDT: 500 ticks = 5 USDT, about 0.8 bps at 60k); sizes in lots of its step."""

    signal_window_ms: int = 10_000  # which OFI window drives the score (must be in FeatureConfig.windows_ms)
    normalization: str = "zscore"  # "zscore" (EWMA mean/std of the window OFI) or "depth" (OFI / depth)
    sample_ms: int = 1_000  # grid on which the normalizing EWMAs are sampled
    norm_halflife_s: float = 120.0  # half-life of those EWMAs
    warmup_samples: int = 60  # grid samples before any signal (after start or reset)
    entry_threshold: float = 2.0  # |score| needed to enter
    exit_threshold: float = 1.0  # |score| against the position that exits it (reversal)
    full_confidence_score: float = 4.0  # |score| at which confidence reaches 1
    max_spread_bps: float = 2.0  # no entry when the spread is wider
    min_vol_bps: float = 0.0  # no entry when realized vol (per vol sample interval) is below ...
    max_vol_bps: float = 10.0  # ... or above this
    min_lots: int = 1
    max_lots: int = 100
    take_profit_ticks: int = 500
    stop_loss_ticks: int = 500
    max_hold_ms: int = 30_000  # time stop
    cooldown_ms: int = 1_000  # no repeat of the same signal while the position is unchanged

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ConfigError(name, f"{allowed}, got {getattr(self, name)!r}")

        need(
            is_whole(self.signal_window_ms) and self.signal_window_ms > 0,
            "signal_window_ms",
            "a positive int",
        )
        need(self.normalization in set(Normalization), "normalization", "one of 'zscore', 'depth'")
        need(
            is_whole(self.sample_ms) and 1 <= self.sample_ms <= 3_600_000,
            "sample_ms",
            "an int in [1, 3600000]",
        )
        need(
            is_finite_number(self.norm_halflife_s) and 0 < self.norm_halflife_s <= 86_400,
            "norm_halflife_s",
            "a number in (0, 86400] s",
        )
        need(
            is_whole(self.warmup_samples) and 1 <= self.warmup_samples <= 100_000,
            "warmup_samples",
            "an int in [1, 100000]",
        )
        need(
            is_finite_number(self.entry_threshold) and 0 < self.entry_threshold <= 50,
            "entry_threshold",
            "a number in (0, 50]",
        )
        need(
            is_finite_number(self.exit_threshold) and 0 < self.exit_threshold <= 50,
            "exit_threshold",
            "a number in (0, 50]",
        )
        need(
            is_finite_number(self.full_confidence_score)
            and self.entry_threshold <= self.full_confidence_score <= 100,
            "full_confidence_score",
            f"a number in [entry_threshold={self.entry_threshold}, 100]",
        )
        need(
            is_finite_number(self.max_spread_bps) and self.max_spread_bps > 0,
            "max_spread_bps",
            "a number > 0",
        )
        need(is_finite_number(self.min_vol_bps) and self.min_vol_bps >= 0, "min_vol_bps", "a number >= 0")
        need(
            is_finite_number(self.max_vol_bps) and self.max_vol_bps > self.min_vol_bps,
            "max_vol_bps",
            f"a number > min_vol_bps={self.min_vol_bps}",
        )
        need(is_whole(self.min_lots) and self.min_lots >= 1, "min_lots", "an int >= 1")
        need(
            is_whole(self.max_lots) and self.min_lots <= self.max_lots <= 10**12,
            "max_lots",
            f"an int in [min_lots={self.min_lots}, 1e12]",
        )
        need(
            is_whole(self.take_profit_ticks) and self.take_profit_ticks >= 1,
            "take_profit_ticks",
            "an int >= 1",
        )
        need(is_whole(self.stop_loss_ticks) and self.stop_loss_ticks >= 1, "stop_loss_ticks", "an int >= 1")
        need(is_whole(self.max_hold_ms) and self.max_hold_ms >= 1, "max_hold_ms", "an int >= 1 ms")
        need(is_whole(self.cooldown_ms) and self.cooldown_ms >= 0, "cooldown_ms", "an int >= 0 ms")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StrategyConfig:
        """Build from configuration: unknown names are refused with the list of known ones."""
        reject_unknown(cls, data)
        return cls(**dict(data))


class Strategy:
    """The OFI strategy for one symbol. `on_features` per book event of a LIVE book; `reset()` on resync."""

    __slots__ = (
        "_alpha",
        "_center",
        "_cool_ns",
        "_depth",
        "_entry_ts",
        "_g",
        "_hold_ns",
        "_keep",
        "_last_fv",
        "_last_key",
        "_last_ns",
        "_last_pos",
        "_m",
        "_ready",
        "_samples",
        "_scale",
        "_v",
        "_window",
        "_zscore",
        "config",
        "sample_ns",
        "signals",
        "symbol",
    )

    def __init__(
        self, symbol: str, windows_ms: tuple[int, ...], config: StrategyConfig | None = None
    ) -> None:
        """`windows_ms` is the feature config's; the signal window must be one of them."""
        self.symbol = symbol
        self.config = config = config or StrategyConfig()
        if config.signal_window_ms not in windows_ms:
            raise ConfigError("signal_window_ms", f"one of the feature windows {list(windows_ms)}")
        self._window = windows_ms.index(config.signal_window_ms)
        self._zscore = config.normalization == Normalization.ZSCORE
        self.sample_ns = config.sample_ms * _NS_PER_MS
        self._keep = 0.5 ** (config.sample_ms / (config.norm_halflife_s * 1000.0))
        self._alpha = 1.0 - self._keep
        self._hold_ns = config.max_hold_ms * _NS_PER_MS
        self._cool_ns = config.cooldown_ms * _NS_PER_MS
        self.signals = 0
        self.reset()

    def reset(self) -> None:
        """Forget all normalization and position tracking (the symbol resynced): warm up again."""
        self._g = -1
        self._samples = 0
        self._m = 0.0  # EWMA mean of the window OFI (zscore)
        self._v = 0.0  # EWMA variance
        self._depth = 0.0  # EWMA depth per side (depth)
        self._last_fv: FeatureVector | None = None  # the last event's vector: its values held at the grid
        self._center = 0.0
        self._scale = 0.0
        self._ready = False
        self._entry_ts = 0
        self._last_pos = 0
        self._last_key: tuple[SignalKind, Side, int] | None = None
        self._last_ns = 0

    @property
    def warm(self) -> bool:
        return self._ready

    def _sample(self, g: int) -> None:
        """Grid point(s) passed: fold in the values that prevailed there (those of the last event)."""
        last_g = self._g
        self._g = g
        last = self._last_fv
        if last_g < 0 or last is None:
            return
        k = g - last_g
        x = last.cum_ofi - last.starts[self._window][OFI]
        depth = (last.bid_depth + last.ask_depth) / 2
        keep, alpha = self._keep, self._alpha
        if self._samples == 0:
            self._m, self._v, self._depth = float(x), 0.0, depth
        else:
            d = x - self._m
            self._m += alpha * d
            self._v = keep * (self._v + alpha * d * d)  # West's EWMA variance
            self._depth += alpha * (depth - self._depth)
        if k > 1:  # the same value held at the k - 1 further grid points: fold them in one step
            w = keep ** (k - 1)
            d = x - self._m
            self._m = x - w * d
            self._v = w * self._v + w * (1 - w) * d * d
            self._depth = depth - w * (depth - self._depth)
        self._samples += k
        # score = (x - center) * scale; scale 0 = not computable yet (no spread of values, no depth)
        if self._zscore:
            self._center = self._m
            self._scale = 1.0 / math.sqrt(self._v) if self._v > 0.0 else 0.0
        else:
            self._scale = 1.0 / self._depth if self._depth > 0.0 else 0.0
        self._ready = self._samples >= self.config.warmup_samples and self._scale > 0.0

    def score(self, fv: FeatureVector) -> float | None:
        """The normalized OFI of this vector under the current state; None until it can be computed."""
        if self._scale <= 0.0:
            return None
        return (fv.cum_ofi - fv.starts[self._window][OFI] - self._center) * self._scale

    def on_features(
        self,
        fv: FeatureVector,
        position_lots: int,
        entry_price_ticks: int | None,
        ts_ns: int | None = None,
        entry_ts_ns: int | None = None,
    ) -> Signal | None:
        """One book event of a LIVE symbol. `position_lots` is signed (+ long); `entry_price_ticks` is the
        position's average entry (None when flat). `ts_ns` defaults to the vector's time; `entry_ts_ns`
        (when the position was opened) defaults to the first event this strategy saw it."""
        if ts_ns is None:
            ts_ns = fv.ts_ns
        if ts_ns // self.sample_ns != self._g:
            self._sample(ts_ns // self.sample_ns)
        self._last_fv = fv
        if position_lots != self._last_pos:
            last = self._last_pos
            if not position_lots or not last or (position_lots > 0) != (last > 0):
                self._entry_ts = ts_ns
            self._last_pos = position_lots
            self._last_key = None  # the position moved: the last request was served
        if entry_ts_ns is not None:
            self._entry_ts = entry_ts_ns
        if not self._ready or not fv.warm:
            # No score yet (a restart or a resync): entries wait, but a held position keeps its
            # stop-loss, take-profit and time stop; only the reversal exit needs the score.
            if position_lots:
                return self._exit(fv, None, position_lots, entry_price_ticks, ts_ns)
            return None
        score = (fv.cum_ofi - fv.starts[self._window][OFI] - self._center) * self._scale
        cfg = self.config
        if position_lots:
            return self._exit(fv, score, position_lots, entry_price_ticks, ts_ns)
        if abs(score) < cfg.entry_threshold:
            return None
        spread_bps = (fv.ask - fv.bid) * 2e4 / (fv.bid + fv.ask)
        if spread_bps > cfg.max_spread_bps:
            return None
        vol = fv.vol_bps
        if vol is None or not cfg.min_vol_bps <= vol <= cfg.max_vol_bps:
            return None
        side = Side.BUY if score > 0 else Side.SELL
        confidence = min(1.0, abs(score) / cfg.full_confidence_score)
        size = max(cfg.min_lots, min(cfg.max_lots, round(cfg.max_lots * confidence)))
        reason = "ofi_long" if side is Side.BUY else "ofi_short"
        return self._emit(fv, side, size, confidence, SignalKind.ENTRY, reason, score, ts_ns)

    def _exit(
        self, fv: FeatureVector, score: float | None, position: int, entry: int | None, ts_ns: int
    ) -> Signal | None:
        """Stop-loss and take-profit on the exit side's price, then the time stop, then a reversal of the
        score (`score` None: not computable yet, so no reversal exit)."""
        cfg = self.config
        long = position > 0
        side = Side.SELL if long else Side.BUY
        reason = None
        if entry is not None:
            pnl_ticks = fv.bid - entry if long else entry - fv.ask
            if pnl_ticks <= -cfg.stop_loss_ticks:
                reason = "stop_loss"
            elif pnl_ticks >= cfg.take_profit_ticks:
                reason = "take_profit"
        if reason is None:
            if ts_ns - self._entry_ts >= self._hold_ns:
                reason = "time_stop"
            elif score is None:
                return None
            elif (score <= -cfg.exit_threshold) if long else (score >= cfg.exit_threshold):
                reason = "reversal"
            else:
                return None
        if score is None:
            score = 0.0  # not computable yet; this exit (a stop, never a reversal) did not depend on it
        confidence = min(1.0, abs(score) / cfg.full_confidence_score) if reason == "reversal" else 1.0
        return self._emit(fv, side, abs(position), confidence, SignalKind.EXIT, reason, score, ts_ns)

    def _emit(
        self,
        fv: FeatureVector,
        side: Side,
        size: int,
        confidence: float,
        kind: SignalKind,
        reason: str,
        score: float,
        ts_ns: int,
    ) -> Signal | None:
        key = (kind, side, self._last_pos)
        if key == self._last_key and ts_ns - self._last_ns < self._cool_ns:
            return None  # the same request is still in flight
        self._last_key = key
        self._last_ns = ts_ns
        self.signals += 1
        return Signal(self.symbol, side, size, confidence, kind, reason, score, ts_ns, fv)
