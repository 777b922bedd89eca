"""The OFI strategy: warm-up and reset, filters, entries and exits, cooldown, determinism, config refusals."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ConfigError
from worker.features import FeatureVector
from worker.orders import Side
from worker.strategy import Signal, SignalKind, Strategy, StrategyConfig

S = 1_000_000_000
MS = 1_000_000
WINDOWS = (1000, 10000, 60000)
ZERO = (0, 0, 0, 0, 0)
BID, ASK = 6_000_000, 6_000_001  # 60000.00 / 60000.01 in 0.01 ticks


def vec(
    ts: int,
    x: int,
    bid: int = BID,
    ask: int = ASK,
    vol: float | None = 1.0,
    warm: bool = True,
    depth: tuple[int, int] = (50, 50),
) -> FeatureVector:
    """A vector whose OFI over every window is `x` (running total x, every window starting at 0)."""
    return FeatureVector(
        "BTCUSDT", ts, bid, 5, ask, 5, depth[0], depth[1], 0, 0, x, 0, 0, 0, (ZERO,) * 3, vol, WINDOWS, warm
    )


def config(**kw) -> StrategyConfig:
    base = {"warmup_samples": 10, "norm_halflife_s": 10.0, "cooldown_ms": 1000}
    base.update(kw)
    return StrategyConfig(**base)


def warmed(cfg: StrategyConfig | None = None, start: int = 100 * S, n: int = 20) -> tuple[Strategy, int]:
    """A strategy fed n seconds of OFI alternating +-10 (mean ~0, std ~10): warm, flat. Returns next ts."""
    strat = Strategy("BTCUSDT", WINDOWS, cfg or config())
    for i in range(n):
        assert strat.on_features(vec(start + i * S, 10 if i % 2 else -10), 0, None) is None
    return strat, start + n * S


# --- configuration ---
@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"signal_window_ms": 0}, "signal_window_ms", "a positive int"),
        ({"normalization": "minmax"}, "normalization", "'zscore', 'depth'"),
        ({"sample_ms": 0}, "sample_ms", "[1, 3600000]"),
        ({"norm_halflife_s": -1.0}, "norm_halflife_s", "(0, 86400]"),
        ({"warmup_samples": 0}, "warmup_samples", "[1, 100000]"),
        ({"entry_threshold": 0}, "entry_threshold", "(0, 50]"),
        ({"entry_threshold": 51}, "entry_threshold", "(0, 50]"),
        ({"entry_threshold": float("inf")}, "entry_threshold", "(0, 50]"),
        ({"exit_threshold": -0.5}, "exit_threshold", "(0, 50]"),
        ({"full_confidence_score": 1.0}, "full_confidence_score", "[entry_threshold=2.0, 100]"),
        ({"max_spread_bps": 0}, "max_spread_bps", "> 0"),
        ({"min_vol_bps": -1}, "min_vol_bps", ">= 0"),
        ({"min_vol_bps": 5.0, "max_vol_bps": 5.0}, "max_vol_bps", "> min_vol_bps=5.0"),
        ({"min_lots": 0}, "min_lots", ">= 1"),
        ({"min_lots": 10, "max_lots": 5}, "max_lots", "[min_lots=10, 1e12]"),
        ({"take_profit_ticks": 0}, "take_profit_ticks", ">= 1"),
        ({"stop_loss_ticks": True}, "stop_loss_ticks", ">= 1"),
        ({"max_hold_ms": 0}, "max_hold_ms", ">= 1 ms"),
        ({"cooldown_ms": -1}, "cooldown_ms", ">= 0 ms"),
    ],
)
def test_config_refuses_with_parameter_and_range(kwargs: dict, param: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        StrategyConfig(**kwargs)
    assert err.value.parameter == param
    assert fragment in str(err.value)


def test_config_from_dict_and_unknown_names() -> None:
    assert StrategyConfig.from_dict({"entry_threshold": 3}).entry_threshold == 3
    with pytest.raises(ConfigError) as err:
        StrategyConfig.from_dict({"entry_treshold": 3})
    assert err.value.parameter == "entry_treshold"
    assert "entry_threshold" in str(err.value)


def test_signal_window_must_be_a_feature_window() -> None:
    with pytest.raises(ConfigError) as err:
        Strategy("BTCUSDT", WINDOWS, StrategyConfig(signal_window_ms=5000))
    assert err.value.parameter == "signal_window_ms"
    assert "[1000, 10000, 60000]" in str(err.value)


def test_defaults_are_valid_and_documented() -> None:
    cfg = StrategyConfig()
    assert cfg.entry_threshold < cfg.full_confidence_score
    Strategy("BTCUSDT", WINDOWS, cfg)


# --- warm-up, reset, syncing ---
def test_nothing_before_warm_even_on_huge_imbalance() -> None:
    strat = Strategy("BTCUSDT", WINDOWS, config(warmup_samples=10))
    out = []
    for i in range(10):  # 10 events, but only 9 grid samples folded in: still cold
        x = 10_000 if i == 9 else (10 if i % 2 else -10)
        out.append(strat.on_features(vec(i * S, x), 0, None))
    assert out == [None] * 10
    assert not strat.warm
    assert strat.on_features(vec(10 * S, 10_000), 0, None) is not None  # the 10th sample: warm


def test_nothing_while_features_are_cold() -> None:
    strat, ts = warmed()
    assert strat.on_features(vec(ts, 10_000, warm=False), 0, None) is None
    assert strat.on_features(vec(ts + 10 * MS, 10_000), 0, None) is not None


def test_reset_after_resync_waits_for_warm_again() -> None:
    strat, ts = warmed()
    strat.reset()  # what the engine does when the symbol goes SYNCING
    assert not strat.warm
    out = [strat.on_features(vec(ts + i * S, 10_000 if i % 2 else -10_000), 0, None) for i in range(10)]
    assert out == [None] * 10
    assert strat.on_features(vec(ts + 10 * S, 100_000), 0, None) is not None


def test_a_held_position_keeps_its_stops_while_the_strategy_is_cold() -> None:
    cfg = config(take_profit_ticks=100, stop_loss_ticks=100, max_hold_ms=10_000, exit_threshold=1.0)
    strat, ts = warmed(cfg)
    strat.reset()  # a resync (or a restart): no score for a while
    assert not strat.warm
    # no reversal exit without a score, however strong the opposite flow looks
    assert strat.on_features(vec(ts, -100_000, warm=False), 7, BID) is None
    sig = strat.on_features(vec(ts + MS, 0, bid=BID - 100, ask=BID - 99, warm=False), 7, BID)
    assert sig is not None and (sig.kind, sig.reason, sig.side, sig.size_lots) == (
        SignalKind.EXIT, "stop_loss", Side.SELL, 7
    )  # fmt: skip
    assert sig.score == 0.0 and sig.confidence == 1.0
    cold = Strategy("BTCUSDT", WINDOWS, cfg)  # a fresh start with a position opened 10 s ago
    sig = cold.on_features(vec(ts, 0, warm=False), -3, BID, entry_ts_ns=ts - 10 * S)
    assert sig is not None and sig.reason == "time_stop" and sig.side is Side.BUY
    assert cold.on_features(vec(ts, 0, warm=False), 0, None) is None  # flat and cold: no entry


# --- entries ---
def test_entry_long_and_short_with_confidence_and_size() -> None:
    cfg = config(max_lots=100, min_lots=3)
    strat, ts = warmed(cfg)
    sig = strat.on_features(vec(ts, 35), 0, None)
    assert isinstance(sig, Signal)
    assert sig.side is Side.BUY and sig.kind is SignalKind.ENTRY and sig.reason == "ofi_long"
    assert sig.score == pytest.approx(strat.score(vec(ts, 35)))
    assert sig.score >= cfg.entry_threshold
    assert sig.confidence == pytest.approx(min(1.0, sig.score / cfg.full_confidence_score))
    assert sig.size_lots == max(3, round(100 * sig.confidence))
    assert sig.features.cum_ofi == 35 and sig.ts_ns == ts and sig.symbol == "BTCUSDT"
    strat2, ts2 = warmed(cfg)
    sig = strat2.on_features(vec(ts2, -35), 0, None)
    assert sig.side is Side.SELL and sig.reason == "ofi_short" and sig.score < 0


def test_below_threshold_nothing() -> None:
    strat, ts = warmed()
    assert strat.on_features(vec(ts, 12), 0, None) is None
    assert strat.on_features(vec(ts + MS, -12), 0, None) is None


def test_confidence_saturates_at_one() -> None:
    strat, ts = warmed(config(max_lots=40))
    sig = strat.on_features(vec(ts, 10_000), 0, None)
    assert sig.confidence == 1.0 and sig.size_lots == 40


@pytest.mark.parametrize(
    ("kw", "fv_kw"),
    [
        ({"max_spread_bps": 1.0}, {"ask": BID + 1000}),  # ~1.7 bps wide
        ({"max_vol_bps": 2.0}, {"vol": 2.5}),
        ({"min_vol_bps": 0.5}, {"vol": 0.2}),
        ({}, {"vol": None}),  # no volatility estimate yet
    ],
)
def test_filters_block_entries(kw: dict, fv_kw: dict) -> None:
    strat, ts = warmed(config(**kw))
    assert strat.on_features(vec(ts, 50, **fv_kw), 0, None) is None
    # the same imbalance in a normal regime passes (the filter, not the score, blocked it)
    assert strat.on_features(vec(ts + MS, 50), 0, None) is not None


def test_cooldown_and_position_change() -> None:
    strat, ts = warmed(config(cooldown_ms=1000))
    assert strat.on_features(vec(ts, 50), 0, None) is not None
    assert strat.on_features(vec(ts + 500 * MS, 50), 0, None) is None  # the request is in flight
    assert strat.on_features(vec(ts + 1001 * MS, 50), 0, None) is not None  # not served: ask again
    # the position moved (the order filled and was closed): a new signal is allowed at once
    strat.on_features(vec(ts + 1100 * MS, 0), 10, 6_000_001)
    assert strat.on_features(vec(ts + 1200 * MS, 50), 0, None) is not None


# --- exits ---
def test_no_exit_while_nothing_applies() -> None:
    strat, ts = warmed(config(take_profit_ticks=100, stop_loss_ticks=100, max_hold_ms=30_000))
    assert strat.on_features(vec(ts, 0), 7, BID) is None
    assert strat.on_features(vec(ts + 5 * S, 30), 7, BID) is None  # the signal agrees: hold, no pyramiding


@pytest.mark.parametrize(
    ("position", "entry", "bid", "reason", "side"),
    [
        (7, BID + 100, BID, "stop_loss", Side.SELL),  # long, bid 100 ticks under entry
        (7, BID - 100, BID, "take_profit", Side.SELL),
        (-7, BID - 99, BID, "stop_loss", Side.BUY),  # short, marked at the ask (BID + 1)
        (-7, BID + 101, BID, "take_profit", Side.BUY),
    ],
)
def test_take_profit_and_stop_loss_in_ticks(position, entry, bid, reason, side) -> None:
    strat, ts = warmed(config(take_profit_ticks=100, stop_loss_ticks=100))
    sig = strat.on_features(vec(ts, 0, bid=bid, ask=bid + 1), position, entry)
    assert sig is not None
    assert (sig.kind, sig.reason, sig.side, sig.size_lots) == (SignalKind.EXIT, reason, side, 7)
    assert sig.confidence == 1.0


def test_stop_is_not_hit_one_tick_early() -> None:
    strat, ts = warmed(config(take_profit_ticks=100, stop_loss_ticks=100))
    assert strat.on_features(vec(ts, 0), 7, BID + 99) is None
    assert strat.on_features(vec(ts + MS, 0), 7, BID - 99) is None


def test_time_stop_from_first_sight_or_given_entry_time() -> None:
    strat, ts = warmed(config(max_hold_ms=10_000))
    assert strat.on_features(vec(ts, 0), 3, BID) is None  # position first seen now
    assert strat.on_features(vec(ts + 9_999 * MS, 0), 3, BID) is None
    sig = strat.on_features(vec(ts + 10_000 * MS, 0), 3, BID)
    assert sig.reason == "time_stop" and sig.side is Side.SELL and sig.size_lots == 3
    strat2, ts2 = warmed(config(max_hold_ms=10_000))
    sig = strat2.on_features(vec(ts2, 0), -3, BID, entry_ts_ns=ts2 - 10 * S)
    assert sig.reason == "time_stop" and sig.side is Side.BUY


def test_reversal_exit() -> None:
    strat, ts = warmed(config(exit_threshold=1.0))
    assert strat.on_features(vec(ts, -5), 4, BID) is None  # against, but weaker than exit_threshold
    sig = strat.on_features(vec(ts + MS, -25), 4, BID)
    assert sig.reason == "reversal" and sig.side is Side.SELL and sig.kind is SignalKind.EXIT
    assert 0 < sig.confidence <= 1
    strat2, ts2 = warmed(config(exit_threshold=1.0))
    assert strat2.on_features(vec(ts2, 25), -4, BID).reason == "reversal"


# --- normalization ---
def test_depth_normalization() -> None:
    cfg = config(normalization="depth", entry_threshold=2.0, full_confidence_score=4.0)
    strat = Strategy("BTCUSDT", WINDOWS, cfg)
    for i in range(20):  # depth 40 per side throughout
        strat.on_features(vec(100 * S + i * S, 0, depth=(40, 40)), 0, None)
    fv = vec(120 * S, 100, depth=(40, 40))
    assert strat.score(fv) == pytest.approx(100 / 40)
    sig = strat.on_features(fv, 0, None)
    assert sig.side is Side.BUY and sig.confidence == pytest.approx(2.5 / 4)
    assert strat.on_features(vec(120 * S + 2 * S, 60, depth=(40, 40)), 0, None) is None  # 1.5 < 2


def test_zscore_tracks_a_shifted_mean() -> None:
    """A persistent bias in OFI is not a signal: the EWMA mean follows it."""
    strat = Strategy("BTCUSDT", WINDOWS, config(norm_halflife_s=5.0))
    out = [strat.on_features(vec(i * S, 500 + (10 if i % 2 else -10)), 0, None) for i in range(60)]
    assert out == [None] * 60
    assert strat.score(vec(60 * S, 500)) == pytest.approx(0.0, abs=0.5)


def test_quiet_stretch_folds_grid_samples() -> None:
    """k grid points with no event count as k samples of the value that held (not one sample)."""
    a = Strategy("BTCUSDT", WINDOWS, config(warmup_samples=3))
    b = Strategy("BTCUSDT", WINDOWS, config(warmup_samples=3))
    for t, x in [(0, 5), (1 * S, 7), (6 * S, 9)]:
        a.on_features(vec(t, x), 0, None)
    for t, x in [(0, 5), (1 * S, 7), (2 * S, 7), (3 * S, 7), (4 * S, 7), (5 * S, 7), (6 * S, 9)]:
        b.on_features(vec(t, x), 0, None)
    assert a._samples == b._samples == 6  # the 5 at grid 1, then the 7 at grids 2..6
    assert a._m == pytest.approx(b._m) and a._v == pytest.approx(b._v)
    fv = vec(6 * S + MS, 20)
    assert a.score(fv) == pytest.approx(b.score(fv))


# --- determinism ---
stream = st.lists(
    st.tuples(st.integers(0, 1500), st.integers(-60, 60), st.sampled_from([0, 0, 0, 3, -3]), st.booleans()),
    min_size=1,
    max_size=150,
)


def run(strat: Strategy, events, start: int = 50 * S) -> list[tuple]:
    ts = start
    out = []
    for dt, x, pos, wide in events:
        ts += dt * MS
        sig = strat.on_features(vec(ts, x, ask=ASK + (2000 if wide else 0)), pos, BID if pos else None)
        out.append(
            None if sig is None else (sig.kind, sig.side, sig.size_lots, sig.reason, sig.score, sig.ts_ns)
        )
    return out


@settings(max_examples=80, deadline=None)
@given(stream)
def test_deterministic_and_reset_is_a_fresh_start(events) -> None:
    cfg = config(warmup_samples=5, norm_halflife_s=3.0, max_hold_ms=3000)
    first = run(Strategy("BTCUSDT", WINDOWS, cfg), events)
    assert run(Strategy("BTCUSDT", WINDOWS, cfg), events) == first
    used = Strategy("BTCUSDT", WINDOWS, cfg)
    run(used, events, start=1 * S)
    used.reset()
    assert run(used, events) == first
    for sig in first:
        if sig is not None:
            assert sig[2] >= 1
            assert math.isfinite(sig[4])


def test_signal_exposes_the_store_row_shape() -> None:
    strat, ts = warmed()
    sig = strat.on_features(vec(ts, -50), 0, None)
    assert sig.direction == -1 and sig.value == sig.score and sig.model == "ofi"
    assert sig.mid == (BID + ASK) / 2
    assert sig.features.as_dict()["ofi"] == [-50, -50, -50]
