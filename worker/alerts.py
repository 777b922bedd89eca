"""Trading-state notifications: breaker trips and resets, Shabbat pause and resume, incidents, daily summary.

Design:
- `TradingNotes` has the worker's sink signature `(event, outputs) -> None` and sits beside
  `notify.AlertSink` (fills, resync storms, stale feeds): together they cover every message issue 8
  lists. It only calls `Notifier.offer` (a bounded deque append), so it never slows the hot path.
- Matching is by class name (`PauseChange`, `BreakerChanged`, `Incident`), like the store adapter, so
  this module imports nothing from the trading core.
- Repeats are keyed with a cooldown (an incident that recurs every event alerts once per cooldown);
  breaker trips and pauses are state changes and always go out.
- `daily_due(ts_ns)` says when a UTC day has ended (by the worker's tick time), and `daily_text` builds
  the summary from `engine.summary()["trading"]` with money shown in the quote asset.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from worker import notify
from worker.instruments import money_decimal

NS = 1_000_000_000
DAY_NS = 86_400 * NS


def _utc(ts_ns: int | None) -> str:
    if not ts_ns:
        return "further notice"
    return dt.datetime.fromtimestamp(ts_ns / NS, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


class TradingNotes:
    """Engine outputs that an operator must hear about, as Telegram notes."""

    def __init__(self, notifier: notify.Notifier, cooldown_s: float = 300.0) -> None:
        self.notifier = notifier
        self.cooldown_s = cooldown_s
        self.sent = 0
        self._day: int | None = None

    def __call__(self, event: Any, outputs: list[Any]) -> None:
        for out in outputs:
            name = type(out).__name__
            if name == "PauseChange":
                text = (
                    notify.shabbat_pause(_utc(out.until_ns), out.reason or "Shabbat")
                    if out.paused
                    else notify.shabbat_resume(out.reason or "Shabbat")
                )
                self._offer(text)
            elif name == "BreakerChanged":
                self._breaker(out)
            elif name == "Incident":
                text = notify.error(f"engine ({out.kind})", str(out.detail))
                self._offer(text, key=f"incident:{out.kind}")

    def _breaker(self, change: Any) -> None:
        detail = dict(getattr(change, "detail", None) or {})
        if change.breaker == "storage_lag":
            if change.tripped:
                text = notify.error(
                    "store", "the database writer is behind: no new positions until it catches up"
                )
                self._offer(text, key="storage_lag")
            return
        if change.tripped:
            self._offer(
                notify.breaker_tripped(
                    change.breaker, change.reason, detail.get("value"), detail.get("limit")
                )
            )
        else:
            self._offer(notify.breaker_reset(change.breaker, change.reason or "operator"))

    def _offer(self, text: str, key: str | None = None) -> None:
        if key is None:
            ok = self.notifier.offer(text)
        else:
            ok = self.notifier.offer(text, key=key, cooldown_s=self.cooldown_s)
        self.sent += int(bool(ok))

    # ---- daily summary -----------------------------------------------------------------------------
    def daily_due(self, ts_ns: int) -> str | None:
        """The UTC day (YYYY-MM-DD) that just ended, once, when `ts_ns` is the first tick of a new day."""
        day = ts_ns // DAY_NS
        previous, self._day = self._day, day
        if previous is None or day == previous:
            return None
        return dt.datetime.fromtimestamp(previous * 86_400, dt.UTC).strftime("%Y-%m-%d")


def daily_text(day: str, summary: Mapping[str, Any], quote: str = "USDT") -> str:
    """The daily note from `Engine.summary()` (its `trading` part when the trading core runs)."""
    trading = summary.get("trading") or {}
    figures: dict[str, Any] = {}
    for key, label in (
        ("equity", "equity"),
        ("realized_pnl", "realized P&L"),
        ("unrealized_pnl", "unrealized P&L"),
        ("fees", "fees"),
        ("max_drawdown", "max drawdown"),
    ):
        if isinstance(trading.get(key), int):
            figures[label] = f"{money_decimal(trading[key]).normalize():f} {quote}"
    if "signals" in trading:
        figures["signals"] = trading["signals"]
    if trading.get("trading_state"):
        reason = trading.get("trading_state_reason") or ""
        figures["state"] = f"{trading['trading_state']} {reason}".strip()
    figures["gaps / resyncs"] = f"{summary.get('gaps', 0)} / {summary.get('resyncs', 0)}"
    figures["events"] = summary.get("events", 0)
    return notify.daily_summary(day, figures)
