"""Incremental market features of one symbol: O(1) work per event, constant memory.

Design and invariants:
- Time is the event's own (`recv_ns`), never the wall clock. A timestamp older than the last one seen
  (two streams interleaving) is treated as the last one: time never runs backwards here.
- Rolling windows are exact over a fixed bucket grid (`bucket_ms`, default 100 ms): a window of K buckets
  at time t covers every event whose bucket lies in (bucket(t) - K, bucket(t)]. Each series keeps one
  running cumulative total plus a ring of its value at the end of each of the last `max window` buckets;
  a window sum is `cum - ring[bucket - K]`. One store per series per bucket crossed, no rescans, and the
  memory is the ring, however long the worker runs.
- OFI, multi-level OFI and trade flow are integer lots, so their sums are exact Python ints: no float
  drift, and a brute-force recomputation gives the same number (the tests check it).
- OFI is Cont, Kukanov & Stoikov (2014), per book event n with best bid P^B, size q^B, best ask P^A, q^A:
  e_n = 1[P^B_n >= P^B_n-1] q^B_n - 1[P^B_n <= P^B_n-1] q^B_n-1
        - 1[P^A_n <= P^A_n-1] q^A_n + 1[P^A_n >= P^A_n-1] q^A_n-1
  Multi-level OFI applies the same formula to the m-th best level for m = 1..levels and sums them
  (equal weights; Xu, Larsson & Kyle 2019). A missing level is price 0 (bids) / +inf (asks), size 0.
- The first book after construction or `reset()` (a resync) has no predecessor: its e_n is 0, so a
  rebuilt book never shows up as a burst of order flow.
- Realized volatility: EWMA of squared mid log-returns sampled on a fixed grid (`vol_sample_ms`); a
  stretch with no book events is k samples of zero return, folded in one `pow`. Momentum over window K
  is the log return of the mid from the end of bucket (b - K) to now, on the same grid as the sums.
- The hot path builds one `FeatureVector` per book event: a NamedTuple (immutable, no __dict__) because
  a frozen dataclass of this width costs several µs to construct, a NamedTuple well under one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, Protocol

from worker.errors import ConfigError, is_finite_number, is_whole
from worker.events import Level, Trade

_NS_PER_MS = 1_000_000
_MAX_BUCKETS = 100_000  # ring length cap: 60 s at 1 ms, an hour at 36 ms
_NO_ASK = 1 << 62  # the price of a missing ask level: worse than any real ask
_MISSING_BID: Level = (0, 0)
_MISSING_ASK: Level = (_NO_ASK, 0)


class BookView(Protocol):
    """The part of `worker.book.OrderBook` the features read (tests use a small double)."""

    def top_bids(self, n: int) -> list[Level]: ...
    def top_asks(self, n: int) -> list[Level]: ...


def reject_unknown(cls: type, data: Mapping[str, Any]) -> None:
    """Refuse parameter names the config does not have (a typo must not silently become a default)."""
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(str(key), f"a known parameter of {cls.__name__}: one of {sorted(known)}")


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Feature parameters. Defaults suit one liquid symbol on Binance's 100 ms / 0 ms depth streams."""

    bucket_ms: int = 100  # rolling-window resolution; every window is a whole number of buckets
    windows_ms: tuple[int, ...] = (1_000, 10_000, 60_000)  # OFI, trade flow and momentum horizons
    levels: int = 5  # top-N levels for imbalance, depth and multi-level OFI
    vol_sample_ms: int = 1_000  # realized-volatility sampling grid
    vol_halflife_s: float = 60.0  # EWMA half-life of squared returns
    vol_warmup_samples: int = 30  # grid samples before the volatility (and the vector) counts as warm

    def __post_init__(self) -> None:
        if not is_whole(self.bucket_ms) or not 1 <= self.bucket_ms <= 60_000:
            raise ConfigError("bucket_ms", f"an integer in [1, 60000] ms, got {self.bucket_ms!r}")
        windows = self.windows_ms
        if not isinstance(windows, tuple) or not windows:
            raise ConfigError("windows_ms", f"a non-empty tuple of integers in ms, got {windows!r}")
        for w in windows:
            if not is_whole(w) or w <= 0 or w % self.bucket_ms:
                raise ConfigError(
                    "windows_ms",
                    f"positive integers, each a multiple of bucket_ms={self.bucket_ms}, got {w!r}",
                )
        if list(windows) != sorted(set(windows)):
            raise ConfigError("windows_ms", f"strictly increasing, got {windows!r}")
        if windows[-1] // self.bucket_ms > _MAX_BUCKETS:
            raise ConfigError(
                "windows_ms",
                f"at most {_MAX_BUCKETS} buckets long (max window / bucket_ms), got {windows[-1]}",
            )
        if not is_whole(self.levels) or not 1 <= self.levels <= 50:
            raise ConfigError("levels", f"an integer in [1, 50], got {self.levels!r}")
        if not is_whole(self.vol_sample_ms) or not 1 <= self.vol_sample_ms <= 3_600_000:
            raise ConfigError("vol_sample_ms", f"an integer in [1, 3600000] ms, got {self.vol_sample_ms!r}")
        if not is_finite_number(self.vol_halflife_s) or not 0 < self.vol_halflife_s <= 86_400:
            raise ConfigError("vol_halflife_s", f"a number in (0, 86400] s, got {self.vol_halflife_s!r}")
        if not is_whole(self.vol_warmup_samples) or not 0 <= self.vol_warmup_samples <= 100_000:
            raise ConfigError(
                "vol_warmup_samples", f"an integer in [0, 100000], got {self.vol_warmup_samples!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureConfig:
        """Build from configuration (TOML/JSON): unknown names are refused, lists become tuples."""
        reject_unknown(cls, data)
        values = dict(data)
        if isinstance(values.get("windows_ms"), list):
            values["windows_ms"] = tuple(values["windows_ms"])
        return cls(**values)


# Index of each series in a ring entry (and in `FeatureVector.starts[j]`).
OFI, MLOFI, FLOW, VOLUME, MID2 = range(5)
_EMPTY_ENTRY = (0, 0, 0, 0, 0)


class FeatureVector(NamedTuple):
    """The features of one symbol right after one book event: immutable, cheap to build.

    Stored: the top of book, the top-N volumes, this event's OFI and the running totals, plus `starts`,
    the ring entries (ofi, mlofi, flow, volume, mid2) at the start of each window (a tuple shared by
    every vector of one bucket). Everything else is a property computed on read, so the hot path pays
    only for what the strategy looks at. Prices are ticks; flows are lots; returns and vol are bps.
    """

    symbol: str
    ts_ns: int
    bid: int
    bid_qty: int
    ask: int
    ask_qty: int
    bid_depth: int  # volume of the top `levels` bids
    ask_depth: int
    ofi_event: int  # e_n of this event, best level
    mlofi_event: int  # this event's multi-level OFI
    cum_ofi: int  # running totals since the last reset
    cum_mlofi: int
    cum_flow: int
    cum_volume: int
    starts: tuple[tuple[int, int, int, int, int], ...]  # per window: ring entry at its start
    vol_bps: float | None  # EWMA realized volatility per vol sample interval; None before any return
    windows_ms: tuple[int, ...]
    warm: bool  # every window covered since the last reset and the volatility warmed up

    @property
    def mid2(self) -> int:
        return self.bid + self.ask

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2

    @property
    def spread_ticks(self) -> int:
        return self.ask - self.bid

    @property
    def spread_bps(self) -> float:
        return (self.ask - self.bid) * 2e4 / (self.bid + self.ask)

    @property
    def imbalance(self) -> float:
        """(bid volume - ask volume) / (sum) over the top `levels`."""
        total = self.bid_depth + self.ask_depth
        return (self.bid_depth - self.ask_depth) / total if total else 0.0

    @property
    def microprice(self) -> float:
        """Size-weighted mid in ticks: leans toward the side with less size (the likelier next move)."""
        return (self.bid * self.ask_qty + self.ask * self.bid_qty) / (self.bid_qty + self.ask_qty)

    @property
    def depth(self) -> float:
        """Mean top-`levels` volume per side, lots: the natural scale of OFI (CKS: beta ~ 1/depth)."""
        return (self.bid_depth + self.ask_depth) / 2

    @property
    def ofi(self) -> tuple[int, ...]:
        """Best-level OFI summed over each window."""
        return tuple([self.cum_ofi - s[OFI] for s in self.starts])

    @property
    def mlofi(self) -> tuple[int, ...]:
        """Multi-level OFI summed over each window."""
        return tuple([self.cum_mlofi - s[MLOFI] for s in self.starts])

    @property
    def trade_flow(self) -> tuple[int, ...]:
        """Signed aggressor volume per window (+ buyer-initiated)."""
        return tuple([self.cum_flow - s[FLOW] for s in self.starts])

    @property
    def volume(self) -> tuple[int, ...]:
        return tuple([self.cum_volume - s[VOLUME] for s in self.starts])

    @property
    def momentum_bps(self) -> tuple[float | None, ...]:
        """Mid log return since each window's start; None while the window starts before any mid."""
        mid2 = self.bid + self.ask
        return tuple([math.log(mid2 / s[MID2]) * 1e4 if s[MID2] else None for s in self.starts])

    def as_dict(self) -> dict[str, Any]:
        """Every feature by name, for signals, storage and the feed."""
        return {
            "symbol": self.symbol,
            "ts_ns": self.ts_ns,
            "bid": self.bid,
            "bid_qty": self.bid_qty,
            "ask": self.ask,
            "ask_qty": self.ask_qty,
            "mid": self.mid,
            "spread_ticks": self.spread_ticks,
            "spread_bps": self.spread_bps,
            "imbalance": self.imbalance,
            "microprice": self.microprice,
            "depth": self.depth,
            "ofi_event": self.ofi_event,
            "mlofi_event": self.mlofi_event,
            "windows_ms": list(self.windows_ms),
            "ofi": list(self.ofi),
            "mlofi": list(self.mlofi),
            "trade_flow": list(self.trade_flow),
            "volume": list(self.volume),
            "momentum_bps": list(self.momentum_bps),
            "vol_bps": self.vol_bps,
            "warm": self.warm,
        }


class Features:
    """Rolling features of one symbol. Call `on_book` after every applied depth event, `on_trade` per
    trade, `reset()` when the symbol resyncs (its book is rebuilt, so book deltas would be bogus)."""

    __slots__ = (
        "_alpha",
        "_cap",
        "_cum_flow",
        "_cum_mlofi",
        "_cum_ofi",
        "_cum_volume",
        "_first_bucket",
        "_keep",
        "_last_ts",
        "_mid2",
        "_prev_asks",
        "_prev_bids",
        "_ring",
        "_starts",
        "_var",
        "_vol_bps",
        "_vol_g",
        "_vol_mid2",
        "_vol_samples",
        "_warm",
        "bucket",
        "bucket_ns",
        "config",
        "events",
        "last",
        "levels",
        "symbol",
        "vol_ns",
        "window_buckets",
        "windows_ms",
    )

    def __init__(self, symbol: str, config: FeatureConfig | None = None) -> None:
        self.symbol = symbol
        self.config = config = config or FeatureConfig()
        self.bucket_ns = config.bucket_ms * _NS_PER_MS
        self.vol_ns = config.vol_sample_ms * _NS_PER_MS
        self.window_buckets = tuple(w // config.bucket_ms for w in config.windows_ms)
        self.levels = config.levels
        self.windows_ms = config.windows_ms
        self._cap = self.window_buckets[-1]
        # keep = 1 - alpha per vol sample, from the half-life in samples
        self._keep = 0.5 ** (config.vol_sample_ms / (config.vol_halflife_s * 1000.0))
        self._alpha = 1.0 - self._keep
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next book is a first book (e_n = 0) and every window starts empty."""
        # ring[i]: (ofi, mlofi, flow, volume, mid2) at the END of the bucket mapped to i; mid2 0 = unknown
        self._ring: list[tuple[int, int, int, int, int]] = [_EMPTY_ENTRY] * self._cap
        self._starts = tuple(_EMPTY_ENTRY for _ in self.window_buckets)
        self._cum_ofi = self._cum_mlofi = self._cum_flow = self._cum_volume = 0
        self.bucket = -1
        self._first_bucket = -1
        self._last_ts = 0
        self._mid2 = 0
        self._prev_bids: list[Level] = []
        self._prev_asks: list[Level] = []
        self._var = 0.0
        self._vol_bps: float | None = None
        self._vol_g = -1
        self._vol_mid2 = 0
        self._vol_samples = 0
        self._warm = False
        self.events = 0
        self.last: FeatureVector | None = None

    # --- time ---
    def _advance(self, ts_ns: int) -> int:
        """Clamp `ts_ns` to never run backwards, and roll the bucket grid forward to it."""
        if ts_ns < self._last_ts:
            ts_ns = self._last_ts  # interleaved streams: never run time backwards
        self._last_ts = ts_ns
        if ts_ns // self.bucket_ns != self.bucket:
            self._roll(ts_ns // self.bucket_ns)
        return ts_ns

    def _roll(self, b: int) -> None:
        """A new bucket: record end-of-bucket totals for every bucket passed, move the window starts."""
        cur = self.bucket
        self.bucket = b
        if cur < 0:
            self._first_bucket = b
            return
        cap = self._cap
        ring = self._ring
        entry = (self._cum_ofi, self._cum_mlofi, self._cum_flow, self._cum_volume, self._mid2)
        n = b - cur
        if n == 1:
            ring[cur % cap] = entry
        elif n >= cap:
            ring[:] = [entry] * cap
        else:  # buckets cur..b-1 all end with the same totals: nothing happened in between
            start = cur % cap
            end = start + n
            if end <= cap:
                ring[start:end] = [entry] * n
            else:
                ring[start:] = [entry] * (cap - start)
                ring[: end - cap] = [entry] * (end - cap)
        # a window of k buckets starts after bucket b - k; the ring slot of b - k is not written again
        # until bucket b - k + cap >= b closes, so `starts` holds for the whole of bucket b
        wb = self.window_buckets
        if len(wb) == 3:  # the default shape, spelled out: a comprehension costs more than the lookups
            self._starts = (ring[(b - wb[0]) % cap], ring[(b - wb[1]) % cap], ring[(b - wb[2]) % cap])
        else:
            self._starts = tuple([ring[(b - k) % cap] for k in wb])
        if not self._warm and b - self._first_bucket >= cap:
            self._warm = self._vol_samples >= self.config.vol_warmup_samples

    def _sample_vol(self, ts_ns: int) -> None:
        """Fold in the grid samples passed since the last book event (the mid was constant meanwhile)."""
        g = ts_ns // self.vol_ns
        last_g = self._vol_g
        self._vol_g = g
        mid2 = self._mid2  # the mid that prevailed at the grid points just passed
        if last_g < 0 or not mid2:
            return
        if self._vol_mid2:
            r = math.log(mid2 / self._vol_mid2)
            var = self._keep * self._var + self._alpha * r * r
            k = g - last_g
            if k > 1:  # k - 1 further samples of zero return
                var *= self._keep ** (k - 1)
            self._var = var
            self._vol_samples += k
            self._vol_bps = math.sqrt(var) * 1e4
        self._vol_mid2 = mid2

    # --- events ---
    def on_trade(self, trade: Trade) -> None:
        """Add one public trade to the flow windows (signed by its aggressor)."""
        self._advance(trade.recv_ns)
        qty = trade.qty
        self._cum_volume += qty
        self._cum_flow += -qty if trade.buyer_is_maker else qty

    def on_book(self, book: BookView, ts_ns: int) -> FeatureVector | None:
        """Update from the book as it stands after one applied depth event at `ts_ns`.

        Returns the new vector, or None while a side is empty (no mid, nothing to trade on).
        """
        if ts_ns < self._last_ts:
            ts_ns = self._last_ts  # interleaved streams: never run time backwards
        self._last_ts = ts_ns
        if ts_ns // self.bucket_ns != self.bucket:
            self._roll(ts_ns // self.bucket_ns)
        if ts_ns // self.vol_ns != self._vol_g:
            self._sample_vol(ts_ns)
        n = self.levels
        bids = book.top_bids(n)
        asks = book.top_asks(n)
        if not bids or not asks:
            return None
        if len(bids) < n:
            bids = bids + [_MISSING_BID] * (n - len(bids))
        if len(asks) < n:
            asks = asks + [_MISSING_ASK] * (n - len(asks))
        bid, bid_q = bids[0]
        ask, ask_q = asks[0]
        prev_bids = self._prev_bids
        if prev_bids:
            # level 1 is e_n; levels 1..n summed is the multi-level OFI
            pb, pq = prev_bids[0]
            e1 = bid_q - pq if bid == pb else (bid_q if bid > pb else -pq)
            pa, pq = self._prev_asks[0]
            e1 += pq - ask_q if ask == pa else (pq if ask > pa else -ask_q)
            e = e1
            bid_vol = bid_q
            ask_vol = ask_q
            if n > 1:
                for (pb, pq), (b, q) in zip(prev_bids[1:], bids[1:]):  # noqa: B905 (both padded to n)
                    bid_vol += q
                    if b == pb:
                        e += q - pq
                    elif b > pb:
                        e += q
                    else:
                        e -= pq
                for (pa, pq), (a, q) in zip(self._prev_asks[1:], asks[1:]):  # noqa: B905
                    ask_vol += q
                    if a == pa:
                        e += pq - q
                    elif a < pa:
                        e -= q
                    else:
                        e += pq
            self._cum_ofi += e1
            self._cum_mlofi += e
        else:
            e1 = e = bid_vol = ask_vol = 0
            for _, q in bids:
                bid_vol += q
            for _, q in asks:
                ask_vol += q
        self._prev_bids = bids
        self._prev_asks = asks
        self._mid2 = bid + ask
        self.events += 1
        fv = FeatureVector(
            self.symbol,
            ts_ns,
            bid,
            bid_q,
            ask,
            ask_q,
            bid_vol,
            ask_vol,
            e1,
            e,
            self._cum_ofi,
            self._cum_mlofi,
            self._cum_flow,
            self._cum_volume,
            self._starts,
            self._vol_bps,
            self.windows_ms,
            self._warm,
        )
        self.last = fv
        return fv

    @property
    def cumulative(self) -> dict[str, int]:
        """Running totals since the last reset (the study differences them over its own intervals)."""
        return {
            "ofi": self._cum_ofi,
            "mlofi": self._cum_mlofi,
            "trade_flow": self._cum_flow,
            "volume": self._cum_volume,
        }
