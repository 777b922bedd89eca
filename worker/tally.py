"""What a run traded, summed from the engine's outputs: the replay report and its digest.

Design:
- A `TradingTally` is a sink: it sees every output once, keeps running sums and the latest status of
  each order, and never holds the fills themselves (constant memory over any recording).
- `fills_digest` is a SHA-256 over every fill's fields in emission order, so two runs have equal digests
  exactly when their fills are equal to the last digit (the determinism check of replay).
- Money stays integer (1e-8 quote units) until `summary()` renders it as decimal strings.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from worker.broker import Markout, OrderUpdate
from worker.instruments import Instrument, money_text
from worker.orders import Fill, Liquidity
from worker.strategy import Signal


class TradingTally:
    def __init__(self) -> None:
        self.signals = 0
        self.confidence_sum = 0.0
        self.order_status: dict[int, str] = {}
        self.fills = Counter[str]()
        self.ticks_lots: dict[str, int] = {}  # per symbol Σ price × qty (ticks × lots), priced at the end
        self.fees = 0
        self.slippage_sum = 0.0
        self.markout_sum: dict[int, float] = {}
        self.markout_n: dict[int, int] = {}
        self._digest = hashlib.sha256()

    def __call__(self, _event: Any, outputs: list[Any]) -> None:
        self.add(outputs)

    def add(self, outputs: list[Any]) -> None:
        for item in outputs:
            kind = type(item)
            if kind is Fill:
                self._fill(item)
            elif kind is OrderUpdate:
                self.order_status[item.order.order_id] = item.order.status_name
            elif kind is Signal:
                self.signals += 1
                self.confidence_sum += item.confidence
            elif kind is Markout and item.markout_bps is not None:
                h = item.horizon_ms
                self.markout_sum[h] = self.markout_sum.get(h, 0.0) + item.markout_bps
                self.markout_n[h] = self.markout_n.get(h, 0) + 1

    def _fill(self, f: Fill) -> None:
        self.fills[f.liquidity.value] += 1
        self.ticks_lots[f.symbol] = self.ticks_lots.get(f.symbol, 0) + f.price * f.qty
        self.fees += f.fee
        self.slippage_sum += f.slippage_bps
        fields = (
            f.fill_id,
            f.order_id,
            f.symbol,
            int(f.side),
            f.price,
            f.qty,
            f.fee,
            f.fee_asset,
            f.liquidity.value,
            f.ts_ns,
            f.model,
            f.latency_ns,
            f.queue_ahead,
            repr(f.decision_mid),
            repr(f.fill_mid),
            repr(f.slippage_bps),
        )
        self._digest.update(repr(fields).encode())

    @property
    def fill_count(self) -> int:
        return sum(self.fills.values())

    def summary(
        self, portfolio_summary: dict[str, Any], instruments: dict[str, Instrument]
    ) -> dict[str, Any]:
        """The trading half of the replay summary (JSON-ready; money as decimal strings)."""
        n = self.fill_count
        volume = sum(instruments[s].money_per_tick_lot * units for s, units in self.ticks_lots.items())
        by_status = Counter(self.order_status.values())
        return {
            "signals": self.signals,
            "mean_confidence": self.confidence_sum / self.signals if self.signals else None,
            "orders": len(self.order_status),
            "orders_by_status": dict(sorted(by_status.items())),
            "fills": n,
            "fills_maker": self.fills[Liquidity.MAKER.value],
            "fills_taker": self.fills[Liquidity.TAKER.value],
            "fills_digest": self._digest.hexdigest(),
            "volume": money_text(volume),
            "fees": money_text(self.fees),
            "realized_pnl": money_text(portfolio_summary["realized_pnl"]),
            "unrealized_pnl": money_text(portfolio_summary["unrealized_pnl"]),
            "equity": money_text(portfolio_summary["equity"]),
            "max_drawdown": money_text(portfolio_summary["max_drawdown"]),
            "mean_slippage_bps": self.slippage_sum / n if n else None,
            "mean_markout_bps": {
                f"{h // 1000}s": self.markout_sum[h] / self.markout_n[h] for h in sorted(self.markout_n)
            },
            "trading_state": portfolio_summary.get("trading_state"),
        }
