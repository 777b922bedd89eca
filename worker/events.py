"""Typed market events: the only shape of exchange data the core ever sees.

Design:
- `worker/binance/` turns Binance's JSON into these; nothing else knows the wire format.
- Prices are integer ticks and quantities integer lots of the symbol's `Instrument`;
  a quantity of 0 in a depth level removes that level.
- Every event carries `recv_ns`, the local receive time in ns since the epoch (the engine's clock), and
  where the venue gives one, `exchange_ns`, the venue's event time. The core never reads the wall clock.
- Events are frozen and slot-only: cheap to build on the hot path and safe to share between consumers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# One price level: (price in ticks, quantity in lots).
Level = tuple[int, int]


class Market(StrEnum):
    """Which Binance venue a symbol trades on; it decides the sync rules and the fee defaults."""

    SPOT = "spot"
    USDM = "usdm"


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One diff-depth event. `first_id`/`final_id` are Binance's `U`/`u`; `prev_final_id` is USD-M's `pu`."""

    symbol: str
    market: Market
    first_id: int
    final_id: int
    prev_final_id: int | None
    bids: list[Level]
    asks: list[Level]
    exchange_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class DepthSnapshot:
    """A REST depth snapshot; `last_update_id` is Binance's `lastUpdateId`."""

    symbol: str
    market: Market
    last_update_id: int
    bids: list[Level]
    asks: list[Level]
    recv_ns: int


@dataclass(frozen=True, slots=True)
class Trade:
    """One public trade. `buyer_is_maker` True means the aggressor sold (Binance's `m`)."""

    symbol: str
    market: Market
    trade_id: int
    price: int
    qty: int
    buyer_is_maker: bool
    exchange_ns: int
    recv_ns: int

    @property
    def aggressor_sign(self) -> int:
        """+1 for a buyer-initiated trade, -1 for a seller-initiated one."""
        return -1 if self.buyer_is_maker else 1


@dataclass(frozen=True, slots=True)
class BookTicker:
    """Best bid/ask as Binance's bookTicker stream reports it; used to cross-check the local book."""

    symbol: str
    market: Market
    update_id: int
    bid_price: int
    bid_qty: int
    ask_price: int
    ask_qty: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """USD-M mark price and funding: `funding_rate_e8` (1e-8 units) settles at `next_funding_ns`.

    `mark_price` is in ticks, rounded to the nearest tick (Binance's mark carries more decimals than the
    tick size). The core settles funding when an update's `exchange_ns` reaches the previous update's
    `next_funding_ns`, with that previous update's rate and mark.
    """

    symbol: str
    market: Market
    mark_price: int
    funding_rate_e8: int
    next_funding_ns: int
    exchange_ns: int
    recv_ns: int


@dataclass(frozen=True, slots=True)
class TimerTick:
    """The passage of time with no market event: drives samples, latency queues and the calendar."""

    recv_ns: int


class FeedState(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STALE = "stale"
    MALFORMED = "malformed"  # the source dropped an unparseable depth frame of this symbol: resync it


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A change in a stream's connection state, reported by the source (not by the venue)."""

    symbol: str
    market: Market
    state: FeedState
    reason: str
    recv_ns: int


MarketEvent = DepthDiff | DepthSnapshot | Trade | BookTicker | MarkPrice
Event = DepthDiff | DepthSnapshot | Trade | BookTicker | MarkPrice | TimerTick | FeedStatus
