"""Engine outputs -> store records: what the SQLite sink hands `StoreWriter.submit`.

Design and invariants:
- `StoreSink(writer)` has the worker's sink signature `(event, outputs) -> None`; `StoreAdapter.convert`
  is the pure part (one output -> zero or more records) so replay, live and tests share it.
- Dispatch is by class name, cached per type (one dict lookup per output): the adapter must not import
  strategy / risk / broker types that may not exist yet, and must not pay `isinstance` chains per event.
- Never dropped: fills (`worker.orders.Fill`), order updates (anything with `.order` and `.ts_ns`),
  orders, markouts, cancel rejections, signals, risk decisions, trading-state and breaker changes, pause
  changes, funding payments. They go to the writer unchanged or as the writer's record types.
- Samples: the trader's 1 s `TopSample` and `EquitySample` go to the writer as they are (it classifies
  records by their fields); the engine's per-change `BookTop` is for the feed, not the store.
- Book sync changes and feed-status events become `system_events` (`gap`, `resync`, `synced`,
  `disconnect`, `reconnect`, `stale`), which the schema counts per symbol for the API.
- Outputs the store does not persist (features, ...) are skipped; an unknown output type is skipped too
  but counted and logged once by name, so a new engine output is noticed rather than lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from worker.store import records

log = logging.getLogger(__name__)

NS = 1_000_000_000
Convert = Callable[[Any], list[Any]]

# Engine outputs the store has no table for (the feed publishes them instead).
NOT_PERSISTED = frozenset({"BookTop", "Features", "FeatureSample", "FeatureVector", "Intent", "OrderIntent"})
# Already in a shape the writer takes as is (its own records, or duck-typed by the writer).
PASS_THROUGH = frozenset(
    {
        "Fill",
        "Order",
        "OrderUpdate",
        "Markout",
        "FundingPayment",
        "SignalOutcome",
        "PositionSnapshot",
        "OperatorActionApplied",
        "SystemEvent",
        "Heartbeat",
        "RiskDecision",
        "TradingStateChange",
        "BreakerChange",
    }
)


class StoreAdapter:
    """Turns engine outputs into `worker.store.records` values. Stateful only for top sampling."""

    def __init__(self, markets: Mapping[str, str] | None = None) -> None:
        self.markets = dict(markets or {})  # symbol -> market, for outputs that carry no market
        self._by_type: dict[type, Convert] = {}
        self.skipped: dict[str, int] = {}
        self.unknown: dict[str, int] = {}

    def convert(self, out: Any) -> list[Any]:
        kind = type(out)
        fn = self._by_type.get(kind)
        if fn is None:
            fn = self._by_type[kind] = self._resolve(kind)
        return fn(out)

    def convert_all(self, outputs: list[Any]) -> list[Any]:
        result: list[Any] = []
        for out in outputs:
            result.extend(self.convert(out))
        return result

    def event_records(self, event: Any) -> list[Any]:
        """Records for the source's own events (feed status), which are not engine outputs."""
        if type(event).__name__ != "FeedStatus":
            return []
        state = str(event.state)
        kind = {"disconnected": "disconnect", "connected": "reconnect"}.get(state, state)
        severity = "info" if kind == "reconnect" else "warning"
        return [
            records.SystemEvent(
                event.recv_ns, kind, severity, str(event.market), event.symbol, {"reason": event.reason}
            )
        ]

    # ---- dispatch ------------------------------------------------------------------------------------
    def _resolve(self, kind: type) -> Convert:
        name = kind.__name__
        if name in PASS_THROUGH:
            return _same
        table: dict[str, Convert] = {
            "TopSample": _same,  # the writer takes the trader's samples and risk's changes as they are
            "EquitySample": _same,
            "SyncChange": _sync_change,
            "CancelRejected": _cancel_rejected,
            "Signal": lambda out: _signal(out, self.markets),
            "RiskDecisionEvent": _risk_decision,
            "TradingStateChanged": _same,
            "BreakerChanged": _same,
            "PauseChange": _pause_change,
            "Incident": _incident,
        }
        fn = table.get(name)
        if fn is not None:
            return fn
        if name in NOT_PERSISTED:
            return self._skip
        return self._unknown

    def _skip(self, out: Any) -> list[Any]:
        name = type(out).__name__
        self.skipped[name] = self.skipped.get(name, 0) + 1
        return []

    def _unknown(self, out: Any) -> list[Any]:
        name = type(out).__name__
        count = self.unknown.get(name, 0) + 1
        self.unknown[name] = count
        if count == 1:
            log.warning("store: no table for engine output %s; skipped (counted)", name)
        return []


def _same(out: Any) -> list[Any]:
    return [out]


def _sync_change(c: Any) -> list[Any]:
    market, detail = str(c.market), {"reason": c.reason, "state": str(c.state)}
    if str(c.state) == "live":
        return [records.SystemEvent(c.recv_ns, "synced", "info", market, c.symbol, detail)]
    out = []
    if c.reason == "gap":
        out.append(records.SystemEvent(c.recv_ns, "gap", "warning", market, c.symbol, detail))
    out.append(records.SystemEvent(c.recv_ns, "resync", "warning", market, c.symbol, detail))
    return out


def _cancel_rejected(c: Any) -> list[Any]:
    detail = {"order_id": c.order_id, "reason": c.reason}
    return [records.SystemEvent(c.ts_ns, "cancel_rejected", "warning", "", "", detail)]


def _signal(s: Any, markets: Mapping[str, str] | None = None) -> list[Any]:
    """The strategy's Signal (`side, size_lots, confidence, kind, reason, score, features`) as the
    writer's record: value = the normalized score, direction = side, model = "ofi:<kind>"."""
    if isinstance(s, records.Signal):
        return [s]
    vector = getattr(s, "features", None)
    bid, ask = getattr(vector, "bid", None), getattr(vector, "ask", None)
    mid = (bid + ask) / 2 if isinstance(bid, int) and isinstance(ask, int) else getattr(s, "mid", None)
    kind = str(getattr(s, "kind", ""))
    detail: dict[str, Any] = {"kind": kind, "reason": str(getattr(s, "reason", ""))}
    if hasattr(s, "size_lots"):
        detail["size_lots"] = s.size_lots
    as_dict = getattr(vector, "as_dict", None)
    if as_dict is not None:  # the feature values that produced the signal
        detail = {**as_dict(), **detail}
    elif isinstance(bid, int) and isinstance(ask, int):
        detail.update(bid=bid, ask=ask, bid_qty=vector.bid_qty, ask_qty=getattr(vector, "ask_qty", None))
    side = getattr(s, "side", getattr(s, "direction", 0))
    value = getattr(s, "score", getattr(s, "value", 0.0))
    return [
        records.Signal(
            ts_ns=s.ts_ns,
            market=str(getattr(s, "market", "") or (markets or {}).get(s.symbol, "")),
            symbol=s.symbol,
            model=f"ofi:{kind}" if kind else str(getattr(s, "model", "")),
            value=float(value),
            direction=int(side),
            confidence=float(getattr(s, "confidence", 0.0)),
            mid=mid,
            order_id=getattr(s, "order_id", None),
            features=detail,
            signal_id=getattr(s, "signal_id", None),
        )
    ]


def _risk_decision(d: Any) -> list[Any]:
    detail = dict(getattr(d, "detail", None) or {})
    tag = getattr(d, "tag", "")
    if tag:
        detail["tag"] = tag
    return [
        records.RiskDecision(
            ts_ns=d.ts_ns,
            market=str(d.market),
            symbol=d.symbol,
            verdict=d.verdict,
            reason=d.reason,
            order_id=getattr(d, "order_id", None),
            side=None if d.side is None else int(d.side),
            qty_requested=d.qty_requested,
            qty_approved=d.qty_approved,
            price=d.price,
            detail=detail,
        )
    ]


def _pause_change(p: Any) -> list[Any]:
    kind = "pause" if p.paused else "resume"
    detail = {"reason": p.reason, "until_ns": p.until_ns}
    return [records.SystemEvent(p.ts_ns, kind, "info", "", "", detail)]


def _incident(i: Any) -> list[Any]:
    """Something the core refused or could not do: an error system event, never raised."""
    return [records.SystemEvent(i.ts_ns, str(i.kind), "error", "", "", {"detail": str(i.detail)})]


class StoreSink:
    """`(event, outputs) -> None`: adapt and `submit` to the writer. O(outputs), never awaits."""

    def __init__(self, writer: Any, adapter: StoreAdapter | None = None) -> None:
        self.writer = writer
        self.adapter = adapter or StoreAdapter()
        self.records = 0

    def __call__(self, event: Any, outputs: list[Any]) -> None:
        submit = self.writer.submit
        convert = self.adapter.convert
        if type(event).__name__ == "FeedStatus":
            for record in self.adapter.event_records(event):
                submit(record)
                self.records += 1
        for out in outputs:
            for record in convert(out):
                submit(record)
                self.records += 1

    def submit_outputs(self, outputs: list[Any]) -> None:
        """Outputs that did not come from an event (restore, storage-lag gate, ...)."""
        self(None, outputs)
