"""Features: hand-computed values on small books, the CKS OFI cases, and window sums vs brute force."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.book import OrderBook
from worker.errors import ConfigError
from worker.events import Level, Market, Trade
from worker.features import MID2, FeatureConfig, Features, FeatureVector
from worker.instruments import Instrument

INST = Instrument("BTCUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.00001"), Decimal("5"), "BTC")
MS = 1_000_000
S = 1_000_000_000


class Book:
    """The two reads Features needs, from plain lists (best first): a test double of OrderBook."""

    def __init__(self, bids: list[Level], asks: list[Level]) -> None:
        self.bids, self.asks = bids, asks

    def top_bids(self, n: int) -> list[Level]:
        return self.bids[:n]

    def top_asks(self, n: int) -> list[Level]:
        return self.asks[:n]


def real_book(bids: list[Level], asks: list[Level]) -> OrderBook:
    book = OrderBook(INST)
    book.load(bids, asks, 1)
    return book


def trade(ts: int, qty: int, buyer_is_maker: bool, price: int = 100) -> Trade:
    return Trade("BTCUSDT", Market.SPOT, 1, price, qty, buyer_is_maker, ts, ts)


def cks(prev: tuple[int, int, int, int], cur: tuple[int, int, int, int]) -> int:
    """Reference e_n, written from the paper's definition (independent of the implementation)."""
    pb0, qb0, pa0, qa0 = prev
    pb1, qb1, pa1, qa1 = cur
    e = 0
    e += qb1 if pb1 >= pb0 else 0
    e -= qb0 if pb1 <= pb0 else 0
    e -= qa1 if pa1 <= pa0 else 0
    e += qa0 if pa1 >= pa0 else 0
    return e


# --- configuration ---
@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"bucket_ms": 0}, "bucket_ms", "[1, 60000]"),
        ({"bucket_ms": True}, "bucket_ms", "[1, 60000]"),
        ({"windows_ms": ()}, "windows_ms", "non-empty"),
        ({"windows_ms": (-1000,)}, "windows_ms", "positive"),
        ({"windows_ms": (150,)}, "windows_ms", "multiple of bucket_ms=100"),
        ({"windows_ms": (1000, 1000)}, "windows_ms", "strictly increasing"),
        ({"windows_ms": (10000, 1000)}, "windows_ms", "strictly increasing"),
        ({"windows_ms": (100_000_000,)}, "windows_ms", "buckets long"),
        ({"levels": 0}, "levels", "[1, 50]"),
        ({"levels": 2.5}, "levels", "[1, 50]"),
        ({"vol_sample_ms": -5}, "vol_sample_ms", "[1, 3600000]"),
        ({"vol_halflife_s": 0}, "vol_halflife_s", "(0, 86400]"),
        ({"vol_halflife_s": float("nan")}, "vol_halflife_s", "(0, 86400]"),
        ({"vol_warmup_samples": -1}, "vol_warmup_samples", "[0, 100000]"),
    ],
)
def test_config_refuses_with_parameter_and_range(kwargs: dict, param: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        FeatureConfig(**kwargs)
    assert err.value.parameter == param
    assert fragment in str(err.value)
    assert param in str(err.value)


def test_config_from_dict_refuses_unknown_and_converts_lists() -> None:
    with pytest.raises(ConfigError) as err:
        FeatureConfig.from_dict({"window_ms": [1000]})
    assert err.value.parameter == "window_ms"
    assert "windows_ms" in str(err.value)  # the message lists the known names
    cfg = FeatureConfig.from_dict({"windows_ms": [500, 2000], "levels": 3})
    assert cfg.windows_ms == (500, 2000) and cfg.levels == 3
    with pytest.raises(ConfigError):
        FeatureConfig.from_dict({"windows_ms": [500, 250]})


# --- book features on hand-made books ---
@pytest.mark.parametrize("make", [Book, real_book])
def test_top_of_book_features_hand_computed(make) -> None:
    f = Features("BTCUSDT", FeatureConfig(levels=2))
    fv = f.on_book(make([(100, 30), (99, 10)], [(102, 10), (103, 50)]), 1 * S)
    assert isinstance(fv, FeatureVector)
    assert (fv.bid, fv.bid_qty, fv.ask, fv.ask_qty) == (100, 30, 102, 10)
    assert fv.mid == 101.0 and fv.mid2 == 202
    assert fv.spread_ticks == 2
    assert fv.spread_bps == pytest.approx(2 / 101 * 1e4)
    assert fv.imbalance == pytest.approx((40 - 60) / 100)
    assert fv.microprice == pytest.approx((100 * 10 + 102 * 30) / 40)  # leans to the thin ask
    assert fv.depth == 50.0
    assert fv.ofi_event == 0 and fv.mlofi_event == 0  # a first book has no predecessor
    assert fv.ofi == (0, 0, 0) and fv.momentum_bps == (None, None, None)
    assert fv.warm is False and fv.vol_bps is None
    assert fv.as_dict()["imbalance"] == fv.imbalance


def test_empty_side_gives_no_vector() -> None:
    f = Features("BTCUSDT")
    assert f.on_book(Book([(100, 1)], []), S) is None
    assert f.on_book(Book([], [(101, 1)]), S) is None


# (bid_prev, bid_cur, ask_prev, ask_cur, expected e_n), each level (price, qty); hand-computed:
OFI_CASES = [
    # bid side, ask unchanged
    ((100, 5), (101, 7), (103, 4), (103, 4), +7),  # bid price up: + new bid size
    ((100, 5), (100, 8), (103, 4), (103, 4), +3),  # bid same, size up: + change
    ((100, 5), (100, 2), (103, 4), (103, 4), -3),  # bid same, size down
    ((100, 5), (99, 9), (103, 4), (103, 4), -5),  # bid price down: - old bid size
    # ask side, bid unchanged
    ((100, 5), (100, 5), (103, 4), (102, 6), -6),  # ask price down: - new ask size
    ((100, 5), (100, 5), (103, 4), (103, 9), -5),  # ask same, size up: - change
    ((100, 5), (100, 5), (103, 4), (103, 1), +3),  # ask same, size down
    ((100, 5), (100, 5), (103, 4), (104, 2), +4),  # ask price up: + old ask size
    # both sides at once: contributions add
    ((100, 5), (101, 2), (103, 4), (104, 8), +2 + 4),
    ((100, 5), (99, 2), (103, 4), (102, 8), -5 - 8),
    ((100, 5), (100, 5), (103, 4), (103, 4), 0),
]


@pytest.mark.parametrize(("b0", "b1", "a0", "a1", "expected"), OFI_CASES)
def test_cks_ofi_cases(b0: Level, b1: Level, a0: Level, a1: Level, expected: int) -> None:
    assert cks((*b0, *a0), (*b1, *a1)) == expected  # the reference agrees with the hand value
    f = Features("BTCUSDT", FeatureConfig(levels=1))
    f.on_book(Book([b0], [a0]), S)
    fv = f.on_book(Book([b1], [a1]), S + 10 * MS)
    assert fv.ofi_event == expected
    assert fv.mlofi_event == expected  # one level: the same thing
    assert fv.ofi == (expected, expected, expected)


def test_ofi_with_real_book_diffs() -> None:
    book = real_book([(100, 5), (99, 3)], [(103, 4), (104, 6)])
    f = Features("BTCUSDT", FeatureConfig(levels=2))
    f.on_book(book, S)
    book.apply([(101, 2)], [])  # a better bid appears
    assert f.on_book(book, S + MS).ofi_event == 2
    book.apply([], [(103, 0)])  # the best ask is taken out: ask price up, + old size
    fv = f.on_book(book, S + 2 * MS)
    assert fv.ofi_event == 4
    assert fv.ofi[0] == 6


def test_multi_level_ofi_hand_computed() -> None:
    f = Features("BTCUSDT", FeatureConfig(levels=2))
    f.on_book(Book([(100, 5), (99, 3)], [(103, 4), (104, 6)]), S)
    # level 1 bid same price 5 -> 6: +1; level 2 bid 99x3 -> 98x7 (down): -3
    # level 1 ask 103x4 -> 103x4: 0; level 2 ask 104x6 -> 105x1 (up): +6
    fv = f.on_book(Book([(100, 6), (98, 7)], [(103, 4), (105, 1)]), S + MS)
    assert fv.ofi_event == 1
    assert fv.mlofi_event == 1 - 3 + 6


def test_missing_levels_count_as_empty() -> None:
    f = Features("BTCUSDT", FeatureConfig(levels=3))
    f.on_book(Book([(100, 5)], [(103, 4)]), S)
    # a second bid level appears (from nothing: price 0): + its size; a second ask appears: - its size
    fv = f.on_book(Book([(100, 5), (99, 2)], [(103, 4), (104, 7)]), S + MS)
    assert fv.mlofi_event == 2 - 7
    assert fv.imbalance == pytest.approx((7 - 11) / 18)


def test_reset_forgets_the_previous_book_and_windows() -> None:
    f = Features("BTCUSDT", FeatureConfig(levels=1))
    f.on_book(Book([(100, 5)], [(103, 4)]), S)
    f.on_trade(trade(S + MS, 3, False))
    assert f.on_book(Book([(101, 9)], [(103, 4)]), S + 2 * MS).ofi_event == 9
    f.reset()
    fv = f.on_book(Book([(90, 1)], [(120, 1)]), S + 3 * MS)  # a rebuilt book after a resync
    assert fv.ofi_event == 0 and fv.ofi == (0, 0, 0) and fv.trade_flow == (0, 0, 0)
    assert fv.momentum_bps == (None, None, None)


def test_trade_flow_signs_and_windows() -> None:
    cfg = FeatureConfig(bucket_ms=100, windows_ms=(1000, 2000))
    f = Features("BTCUSDT", cfg)
    f.on_trade(trade(10 * S, 5, buyer_is_maker=False))  # buyer-initiated: +
    f.on_trade(trade(10 * S + 500 * MS, 2, buyer_is_maker=True))  # seller-initiated: -
    fv = f.on_book(Book([(100, 1)], [(101, 1)]), 10 * S + 900 * MS)
    assert fv.trade_flow == (3, 3) and fv.volume == (7, 7)
    # 1.05 s after the first trade: its bucket (100) has left the 1 s window (buckets 101..110)
    fv = f.on_book(Book([(100, 1)], [(101, 1)]), 11 * S + 50 * MS)
    assert fv.trade_flow == (-2, 3) and fv.volume == (2, 7)
    fv = f.on_book(Book([(100, 1)], [(101, 1)]), 30 * S)  # a long quiet stretch empties every window
    assert fv.trade_flow == (0, 0) and fv.volume == (0, 0)


def test_time_never_runs_backwards() -> None:
    f = Features("BTCUSDT", FeatureConfig(windows_ms=(1000,)))
    f.on_trade(trade(5 * S, 4, False))
    f.on_trade(trade(4 * S, 1, False))  # an older timestamp from another stream counts as "now"
    fv = f.on_book(Book([(100, 1)], [(101, 1)]), 5 * S + 950 * MS)
    assert fv.ts_ns == 5 * S + 950 * MS
    assert fv.trade_flow == (5,)


def test_momentum_hand_computed() -> None:
    f = Features("BTCUSDT", FeatureConfig(bucket_ms=100, windows_ms=(1000,)))
    f.on_book(Book([(100, 1)], [(102, 1)]), 10 * S)  # mid2 202
    f.on_book(Book([(104, 1)], [(106, 1)]), 10 * S + 150 * MS)  # mid2 210 in bucket 101
    fv = f.on_book(Book([(110, 1)], [(112, 1)]), 11 * S + 200 * MS)  # window start: end of bucket 102
    assert fv.momentum_bps[0] == pytest.approx(math.log(222 / 210) * 1e4)
    assert fv.starts[0][MID2] == 210


def test_realized_vol_ewma_on_grid() -> None:
    cfg = FeatureConfig(vol_sample_ms=1000, vol_halflife_s=2.0, vol_warmup_samples=0)
    keep = 0.5 ** (1 / 2)
    f = Features("BTCUSDT", cfg)
    f.on_book(Book([(999, 1)], [(1001, 1)]), 0 * S + 500 * MS)  # mid2 2000
    f.on_book(Book([(1009, 1)], [(1011, 1)]), 1 * S + 100 * MS)  # grid point 1: mid2 2000 prevailed
    fv = f.on_book(Book([(1009, 1)], [(1011, 1)]), 2 * S + 100 * MS)  # grid 2: 2020 vs 2000
    r = math.log(2020 / 2000)
    var = (1 - keep) * r * r
    assert fv.vol_bps == pytest.approx(math.sqrt(var) * 1e4)
    # three quiet grid points: three zero returns, the variance decays by keep**3
    fv = f.on_book(Book([(1009, 1)], [(1011, 1)]), 5 * S + 100 * MS)
    assert fv.vol_bps == pytest.approx(math.sqrt(var * keep**3) * 1e4)


def test_constant_mid_has_zero_vol_and_becomes_warm() -> None:
    cfg = FeatureConfig(windows_ms=(1000, 2000), vol_warmup_samples=3)
    f = Features("BTCUSDT", cfg)
    fv = None
    for i in range(60):
        fv = f.on_book(Book([(100, 1 + i % 3)], [(101, 2)]), S + i * 100 * MS)
    assert fv.vol_bps == 0.0
    assert fv.warm is True
    assert fv.momentum_bps == (0.0, 0.0)


def test_memory_is_constant() -> None:
    cfg = FeatureConfig(windows_ms=(1000, 5000))
    f = Features("BTCUSDT", cfg)
    for i in range(5000):
        f.on_book(Book([(100 + i % 7, 1 + i % 5)], [(110, 3)]), S + i * 37 * MS)
        f.on_trade(trade(S + i * 37 * MS, 1 + i % 4, i % 2 == 0))
    assert len(f._ring) == 50  # the ring never grows: max window / bucket


# --- window sums vs brute force on random streams ---
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 700),  # ms since the previous event (bursts and quiet stretches)
        st.booleans(),  # book event (True) or trade
        st.integers(-2, 2),  # bid price move
        st.integers(-2, 2),  # ask price move
        st.integers(1, 9),  # sizes
        st.integers(1, 9),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(events_strategy, st.sampled_from([(100, (300, 1000, 2500)), (50, (50, 400)), (250, (1000,))]))
def test_window_sums_equal_bruteforce(stream, grid) -> None:
    bucket_ms, windows = grid
    f = Features("BTCUSDT", FeatureConfig(bucket_ms=bucket_ms, windows_ms=windows, levels=2))
    bucket_ns = bucket_ms * MS
    ts = 7 * S + 13 * MS
    bid, ask = 1000, 1005
    prev = prev2 = None
    log: list[tuple[int, str, int, int]] = []  # (ts, kind, value, mid2)
    mlog: list[tuple[int, int]] = []  # (ts, multi-level e)
    for dt, is_book, db, da, q1, q2 in stream:
        ts += dt * MS
        if is_book:
            bid += db
            ask = max(ask + da, bid + 1)
            cur = (bid, q1, ask, q2)
            cur2 = (bid - 1 - q1 % 2, q2, ask + 1 + q2 % 3, q1)  # a second level that moves too
            e = cks(prev, cur) if prev else 0
            m = e + cks(prev2, cur2) if prev else 0
            prev, prev2 = cur, cur2
            log.append((ts, "ofi", e, bid + ask))
            mlog.append((ts, m))
            fv = f.on_book(Book([cur[:2], cur2[:2]], [cur[2:], cur2[2:]]), ts)
            assert fv.mlofi_event == m
            b = ts // bucket_ns
            for j, w in enumerate(windows):
                k = w // bucket_ms
                inside = [x for x in log if b - k < x[0] // bucket_ns <= b]
                assert fv.ofi[j] == sum(v for _, kind, v, _ in inside if kind == "ofi")
                assert fv.mlofi[j] == sum(v for t, v in mlog if b - k < t // bucket_ns <= b)
                assert fv.trade_flow[j] == sum(v for _, kind, v, _ in inside if kind == "flow")
                assert fv.volume[j] == sum(abs(v) for _, kind, v, _ in inside if kind == "flow")
                # momentum: the mid that prevailed at the end of bucket b - k (None before any mid)
                before = [x[3] for x in log if x[1] == "ofi" and x[0] // bucket_ns <= b - k]
                if before:
                    assert fv.momentum_bps[j] == pytest.approx(math.log((bid + ask) / before[-1]) * 1e4)
                else:
                    assert fv.momentum_bps[j] is None
        else:
            sign = 1 if q1 % 2 else -1
            f.on_trade(trade(ts, q2, buyer_is_maker=sign < 0))
            log.append((ts, "flow", sign * q2, 0))


def test_features_over_a_real_recording(real_recording) -> None:
    """Every applied event of a real replay: e_n from the book tops matches the reference, totals agree."""
    from loadtests.signal_study import replay

    _market, ws, _snaps = real_recording
    f = Features("BTCUSDT")
    prev = None
    total = 0
    warm_seen = False
    for kind, obj, ts in replay(ws):
        if kind == "trade":
            f.on_trade(obj)
            continue
        assert kind == "book"  # the recordings are gap-free
        fv = f.on_book(obj.book, ts)
        cur = (fv.bid, fv.bid_qty, fv.ask, fv.ask_qty)
        expected = cks(prev, cur) if prev else 0
        assert fv.ofi_event == expected
        total += expected
        prev = cur
        assert fv.spread_ticks > 0
        warm_seen = warm_seen or fv.warm
    assert f.cumulative["ofi"] == total
    assert warm_seen
    assert f.events > 6000
