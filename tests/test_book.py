"""The order book and Binance's sync procedure: unit cases plus property tests against naive models."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import book as book_module
from worker.book import DiffResult, OrderBook, SnapshotResult, SymbolBook, SyncState
from worker.events import DepthDiff, DepthSnapshot, Level, Market
from worker.instruments import Instrument

SPOT = Instrument("BTCUSDT", Market.SPOT, Decimal("0.01"), Decimal("0.00001"), Decimal("5"))
USDM = Instrument("BTCUSDT", Market.USDM, Decimal("0.1"), Decimal("0.001"), Decimal("100"))


def diff(
    first: int, final: int, bids: list[Level] = (), asks: list[Level] = (), pu: int | None = None
) -> DepthDiff:  # type: ignore[assignment]
    market = Market.SPOT if pu is None else Market.USDM
    return DepthDiff("BTCUSDT", market, first, final, pu, list(bids), list(asks), 0, final)


def snap(last: int, bids: list[Level], asks: list[Level], market: Market = Market.SPOT) -> DepthSnapshot:
    return DepthSnapshot("BTCUSDT", market, last, bids, asks, last)


BIDS = [(100, 5), (99, 3), (97, 1)]
ASKS = [(101, 2), (102, 4), (105, 9)]


# --- OrderBook ---
def test_order_book_reads() -> None:
    book = OrderBook(SPOT, depth=2)
    assert book.best_bid() is None and book.mid2() is None and book.imbalance(5) is None
    book.load([*BIDS, (90, 0)], ASKS, 7)
    assert book.last_update_id == 7
    assert book.best_bid() == (100, 5) and book.best_ask() == (101, 2)
    assert book.top_bids(2) == [(100, 5), (99, 3)]
    assert book.top_asks(5) == ASKS
    assert book.bid_qty(99) == 3 and book.bid_qty(90) == 0 and book.ask_qty(105) == 9
    assert book.mid2() == 201 and book.spread() == 1
    assert book.imbalance(1) == pytest.approx((5 - 2) / 7)
    assert book.imbalance(3) == pytest.approx((9 - 15) / 24)
    assert book.microprice() == pytest.approx((100 * 2 + 101 * 5) / 7)
    assert len(book) == 6 and not book.is_crossed()


def test_apply_reports_top_changes_only() -> None:
    book = OrderBook(SPOT, depth=2)
    book.load(BIDS, ASKS, 1)
    before = book.imbalance(2)
    assert book.apply([(97, 0), (50, 8)], [(200, 1)]) is False  # all below the top two
    assert book.imbalance(2) == before
    assert book.apply([(99, 10)], []) is True
    assert book.imbalance(2) == pytest.approx((15 - 6) / 21)
    assert book.apply([], [(101, 0)]) is True
    assert book.best_ask() == (102, 4)
    assert book.imbalance(2) == pytest.approx((15 - 13) / 28)
    assert book.apply([(100, 0), (99, 0)], []) is True
    assert book.best_bid() == (50, 8)  # a level added below the top becomes the best later
    assert book.bids() == [(50, 8)]


def test_deleting_an_absent_level_changes_nothing() -> None:
    book = OrderBook(SPOT)
    book.load(BIDS, ASKS, 1)
    version = book.top_version
    assert book.apply([(98, 0)], [(103, 0)]) is False
    assert book.top_version == version
    assert book.bids() == BIDS and book.asks() == ASKS


@pytest.fixture(params=["wide band", "narrow band"])
def band(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The narrow band keeps only 2 to 6 levels sorted, so refills and trims happen all the time."""
    if request.param == "narrow band":
        monkeypatch.setattr(book_module, "_BAND_MIN", 2)
        monkeypatch.setattr(book_module, "_BAND_TARGET", 4)
        monkeypatch.setattr(book_module, "_BAND_MAX", 6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    depth=st.integers(1, 6),
    snapshot=st.tuples(
        st.dictionaries(st.integers(1, 40), st.integers(1, 9), max_size=30),
        st.dictionaries(st.integers(41, 80), st.integers(1, 9), max_size=30),
    ),
    steps=st.lists(
        st.tuples(
            st.lists(st.tuples(st.integers(1, 40), st.integers(0, 9)), max_size=12),
            st.lists(st.tuples(st.integers(41, 80), st.integers(0, 9)), max_size=12),
            st.booleans(),
        ),
        max_size=30,
    ),
)
def test_order_book_matches_a_naive_model(band: None, depth: int, snapshot: tuple, steps: list) -> None:
    bids, asks = dict(snapshot[0]), dict(snapshot[1])
    book = OrderBook(SPOT, depth=depth)
    book.load(sorted(bids.items()), sorted(asks.items()), 1)
    for bid_changes, ask_changes, query in steps:
        book.apply(bid_changes, ask_changes)
        assert book.consistent()
        for side, changes in ((bids, bid_changes), (asks, ask_changes)):
            for price, qty in changes:
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
        if not query:  # skipping reads between applies checks that cached metrics get invalidated
            continue
        ref_bids = sorted(bids.items(), reverse=True)
        ref_asks = sorted(asks.items())
        assert book.bids() == ref_bids and book.asks() == ref_asks
        assert book.best_bid() == (ref_bids[0] if ref_bids else None)
        assert book.best_ask() == (ref_asks[0] if ref_asks else None)
        for n in range(1, 8):
            assert book.top_bids(n) == ref_bids[:n] and book.top_asks(n) == ref_asks[:n]
            bid_vol = sum(q for _, q in ref_bids[:n])
            ask_vol = sum(q for _, q in ref_asks[:n])
            expected = (bid_vol - ask_vol) / (bid_vol + ask_vol) if bid_vol + ask_vol else None
            assert book.imbalance(n) == expected
        if ref_bids and ref_asks:
            (bid, bid_qty), (ask, ask_qty) = ref_bids[0], ref_asks[0]
            assert book.mid2() == bid + ask and book.spread() == ask - bid
            assert book.microprice() == (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)
        else:
            assert book.mid2() is None and book.microprice() is None


# --- SymbolBook: spot ---
def live_spot() -> SymbolBook:
    sb = SymbolBook(SPOT)
    sb.on_diff(diff(8, 10, [(100, 1)]))
    assert sb.on_snapshot(snap(10, BIDS, ASKS)) is SnapshotResult.PENDING  # the diff was older
    assert sb.on_diff(diff(11, 12, [(100, 6)])) is DiffResult.APPLIED
    assert sb.state is SyncState.LIVE
    return sb


def test_spot_buffer_request_stale_then_sync() -> None:
    sb = SymbolBook(SPOT)
    assert not sb.wants_snapshot
    assert sb.on_diff(diff(50, 52, [(100, 1)])) is DiffResult.BUFFERED
    assert sb.on_diff(diff(53, 55, [(99, 7)])) is DiffResult.BUFFERED
    assert sb.wants_snapshot and sb.state is SyncState.SYNCING
    sb.snapshot_requested()
    assert not sb.wants_snapshot  # never two requests in flight
    assert sb.on_snapshot(snap(48, BIDS, ASKS)) is SnapshotResult.STALE  # 48 + 1 < 50
    assert sb.stale_snapshots == 1 and sb.wants_snapshot and sb.state is SyncState.SYNCING
    assert sb.on_snapshot(snap(49, BIDS, ASKS)) is SnapshotResult.SYNCED  # 49 + 1 == U: bridges exactly
    assert sb.book.best_bid() == (100, 1) and sb.book.bid_qty(99) == 7
    assert sb.book.last_update_id == 55 and sb.syncs == 1


def test_spot_snapshot_drops_covered_diffs() -> None:
    sb = SymbolBook(SPOT)
    for first, final, price in ((40, 45, 1), (46, 50, 2), (51, 53, 3)):
        sb.on_diff(diff(first, final, [(price, 1)]))
    assert sb.on_snapshot(snap(48, BIDS, ASKS)) is SnapshotResult.SYNCED
    assert sb.dropped_before_sync == 1  # u=45 <= 48; u=50 brackets 49 and is applied
    assert sb.book.bid_qty(1) == 0 and sb.book.bid_qty(2) == 1 and sb.book.bid_qty(3) == 1


def test_spot_gap_resyncs_and_keeps_the_gap_diff() -> None:
    sb = live_spot()
    assert sb.on_diff(diff(14, 15, [(100, 2)])) is DiffResult.GAP  # 13 is missing
    assert sb.state is SyncState.SYNCING and sb.gaps == 1 and sb.resyncs == 1
    assert sb.resync_reasons == {"gap": 1} and sb.buffered == 1 and sb.wants_snapshot
    assert sb.on_snapshot(snap(14, BIDS, ASKS)) is SnapshotResult.SYNCED
    assert sb.book.best_bid() == (100, 2)


def test_spot_duplicates_and_old_frames_are_ignored_overlap_is_applied() -> None:
    sb = live_spot()
    assert sb.on_diff(diff(11, 12, [(100, 99)])) is DiffResult.IGNORED_OLD
    assert sb.on_diff(diff(5, 9, [(100, 99)])) is DiffResult.IGNORED_OLD
    assert sb.ignored_old == 2 and sb.book.best_bid() == (100, 6)
    assert sb.on_diff(diff(12, 14, [(100, 8)])) is DiffResult.APPLIED  # overlaps 12: absolute qty
    assert sb.book.best_bid() == (100, 8) and sb.book.last_update_id == 14


def test_crossed_book_resyncs() -> None:
    sb = live_spot()
    assert sb.on_diff(diff(13, 13, [(101, 1)])) is DiffResult.CROSSED
    assert sb.state is SyncState.SYNCING and sb.crossed == 1 and sb.resync_reasons == {"crossed": 1}


def test_crossed_snapshot_is_invalid() -> None:
    sb = SymbolBook(SPOT)
    sb.on_diff(diff(5, 6))
    assert sb.on_snapshot(snap(5, [(101, 1)], [(101, 1)])) is SnapshotResult.INVALID
    assert sb.invalid_snapshots == 1 and sb.wants_snapshot


def test_snapshot_while_live_is_unneeded() -> None:
    sb = live_spot()
    assert sb.on_snapshot(snap(100, [], [])) is SnapshotResult.UNNEEDED
    assert sb.book.best_bid() == (100, 6)


def test_pending_snapshot_that_no_diff_can_bridge_is_stale() -> None:
    sb = SymbolBook(SPOT)
    assert sb.on_snapshot(snap(10, BIDS, ASKS)) is SnapshotResult.PENDING
    assert not sb.wants_snapshot  # it waits for a diff
    assert sb.on_diff(diff(20, 22)) is DiffResult.BUFFERED  # 11..19 were never seen
    assert sb.stale_snapshots == 1 and sb.wants_snapshot


def test_buffer_is_bounded() -> None:
    sb = SymbolBook(SPOT, max_buffer=3)
    for i in range(5):
        sb.on_diff(diff(10 * i + 1, 10 * i + 10))
    assert sb.buffered == 3 and sb.buffer_overflows == 2
    assert sb.on_snapshot(snap(15, BIDS, ASKS)) is SnapshotResult.STALE  # 21 is the oldest kept
    assert sb.on_snapshot(snap(25, BIDS, ASKS)) is SnapshotResult.SYNCED


def test_resync_and_failed_requests() -> None:
    sb = live_spot()
    sb.resync("reconnect")
    assert sb.state is SyncState.SYNCING and sb.book.best_bid() is None
    assert sb.resync_reasons == {"reconnect": 1}
    sb.on_diff(diff(30, 31))
    sb.snapshot_requested()
    sb.resync("reconnect")  # a request in flight stays in flight: no snapshot storm
    sb.on_diff(diff(40, 41))
    assert not sb.wants_snapshot and sb.snapshot_in_flight
    sb.snapshot_failed()
    assert sb.wants_snapshot


# --- SymbolBook: USD-M ---
def test_usdm_sync_uses_the_pu_chain() -> None:
    sb = SymbolBook(USDM)
    sb.on_diff(diff(90, 95, [(1, 1)], pu=80))  # u < L: dropped
    sb.on_diff(diff(97, 100, [(2, 1)], pu=95))  # u == L: U <= L <= u, applied
    sb.on_diff(diff(104, 110, [(3, 1)], pu=100))  # U != 101 but pu == prev u: continuous
    assert sb.on_snapshot(snap(100, BIDS, ASKS, Market.USDM)) is SnapshotResult.SYNCED
    assert sb.dropped_before_sync == 1
    assert [sb.book.bid_qty(p) for p in (1, 2, 3)] == [0, 1, 1]
    assert sb.on_diff(diff(111, 120, [(4, 1)], pu=110)) is DiffResult.APPLIED
    assert sb.on_diff(diff(111, 120, [(4, 9)], pu=110)) is DiffResult.IGNORED_OLD
    assert sb.on_diff(diff(130, 131, pu=125)) is DiffResult.GAP
    assert sb.gaps == 1


def test_usdm_snapshot_older_than_first_diff_is_stale() -> None:
    sb = SymbolBook(USDM)
    sb.on_diff(diff(100, 110, pu=90))
    assert sb.on_snapshot(snap(89, BIDS, ASKS, Market.USDM)) is SnapshotResult.STALE
    assert sb.stale_snapshots == 1
    assert sb.on_snapshot(snap(100, BIDS, ASKS, Market.USDM)) is SnapshotResult.SYNCED


def test_usdm_snapshot_between_two_events_bridges() -> None:
    # venue-wide ids: the symbol had no update between 90 and 100, so a snapshot at 95 is the book at 90
    sb = SymbolBook(USDM)
    sb.on_diff(diff(100, 110, [(1, 1)], pu=90))
    assert sb.on_snapshot(snap(95, BIDS, ASKS, Market.USDM)) is SnapshotResult.SYNCED
    assert sb.book.bid_qty(1) == 1 and sb.book.last_update_id == 110
    held = SymbolBook(USDM)  # the same through a snapshot held before any diff arrived
    assert held.on_snapshot(snap(95, BIDS, ASKS, Market.USDM)) is SnapshotResult.PENDING
    assert held.on_diff(diff(100, 110, [(1, 1)], pu=90)) is DiffResult.APPLIED
    early = SymbolBook(USDM)  # but a snapshot before pu misses the update at pu: refetch
    assert early.on_snapshot(snap(88, BIDS, ASKS, Market.USDM)) is SnapshotResult.PENDING
    assert early.on_diff(diff(100, 110, [(1, 1)], pu=90)) is DiffResult.BUFFERED
    assert early.stale_snapshots == 1 and early.wants_snapshot


# --- property: whatever arrives, a LIVE book equals the venue's book at its update id ---
def venue_history(data: st.DataObject, market: Market) -> tuple[list[DepthDiff], dict[int, tuple]]:
    """A venue: single-level updates with ids, grouped into diff events; the true book after each id."""
    bids: dict[int, int] = {p: data.draw(st.integers(1, 5)) for p in range(1, 6)}
    asks: dict[int, int] = {p: data.draw(st.integers(1, 5)) for p in range(31, 36)}
    states: dict[int, tuple] = {0: (dict(bids), dict(asks))}
    events: list[DepthDiff] = []
    update_id, prev_final = 0, 0
    for _ in range(data.draw(st.integers(1, 25))):
        changes: dict[tuple[str, int], int] = {}
        first = None
        for _ in range(data.draw(st.integers(1, 4))):
            update_id += 1 if market is Market.SPOT else data.draw(st.integers(1, 3))  # venue-wide ids
            first = first or update_id
            side = data.draw(st.sampled_from(["b", "a"]))
            price = data.draw(st.integers(1, 30) if side == "b" else st.integers(31, 60))
            qty = data.draw(st.integers(0, 4))
            book = bids if side == "b" else asks
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)
            changes[(side, price)] = qty
            states[update_id] = (dict(bids), dict(asks))
        event_bids = [(p, q) for (s, p), q in changes.items() if s == "b"]
        event_asks = [(p, q) for (s, p), q in changes.items() if s == "a"]
        pu = prev_final if market is Market.USDM else None
        events.append(DepthDiff("X", market, first, update_id, pu, event_bids, event_asks, 0, 0))
        prev_final = update_id
    return events, states


@pytest.mark.parametrize("market", [Market.SPOT, Market.USDM])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_live_book_always_equals_the_venue(band: None, market: Market, data: st.DataObject) -> None:
    instrument = SPOT if market is Market.SPOT else USDM
    events, states = venue_history(data, market)
    ids = sorted(states)
    sb = SymbolBook(instrument, max_buffer=data.draw(st.integers(2, 30)))
    delivered = 0
    for index, event in enumerate(events):
        action = data.draw(st.sampled_from(["send", "send", "send", "drop", "dup", "swap", "snap"]))
        if action == "snap":
            # a snapshot of the venue as of an id near the stream's position
            horizon = events[min(len(events) - 1, index + 1)].final_id
            last = data.draw(st.integers(0, horizon))  # any id: on USD-M it may fall between events
            bids, asks = states[max(i for i in ids if i <= last)]
            sb.on_snapshot(DepthSnapshot("X", market, last, sorted(bids.items()), sorted(asks.items()), 0))
        batch = {"send": [event], "snap": [event], "drop": [], "dup": [event, event]}.get(action)
        if action == "swap" and index + 1 < len(events):
            batch = [events[index + 1], event]
        for item in batch or [event]:
            sb.on_diff(item)
            delivered += 1
            if sb.state is SyncState.LIVE:
                bids, asks = states[sb.book.last_update_id]
                assert sb.book.bids() == sorted(bids.items(), reverse=True)
                assert sb.book.asks() == sorted(asks.items())
    if sb.state is SyncState.SYNCING and sb.buffered:
        # a fresh snapshot at the venue's last id always brings it back, exactly
        bids, asks = states[ids[-1]]
        result = sb.on_snapshot(
            DepthSnapshot("X", market, ids[-1], sorted(bids.items()), sorted(asks.items()), 0)
        )
        assert result in (SnapshotResult.SYNCED, SnapshotResult.PENDING, SnapshotResult.STALE)
        if result is SnapshotResult.SYNCED:
            assert sb.book.bids() == sorted(bids.items(), reverse=True)
    assert sb.gaps <= delivered
