"""Average-cost position ledger in exact integers: what the store writes beside each fill.

Invariants:
- `qty` is signed lots, `cost` the signed money (1e-8 quote) paid for the open quantity; both are exact.
- A fill that grows the position adds its notional to the cost; one that shrinks it releases the
  proportional cost `cost * closed / qty`, truncated toward zero, and realizes `proceeds - released`.
  Truncation is deterministic, so a rebuild from the same fills always gives the same integers.
- A fill that crosses zero closes the old position completely and opens the rest at the fill price.
- Realized P&L is gross of fees; fees are summed apart (in quote money).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.portfolio import average_cost


@dataclass(slots=True)
class Position:
    qty: int = 0
    cost: int = 0
    realized_pnl: int = 0
    fees: int = 0
    funding: int = 0  # USD-M funding credited (negative = paid); not touched by fills
    fills: int = 0
    last_fill_id: int = 0


def apply_fill(position: Position, side: int, qty: int, notional: int, fee_quote: int, fill_id: int) -> int:
    """Apply one fill in place; return the P&L it realized (money, gross of fees)."""
    position.qty, position.cost, realized = average_cost(position.qty, position.cost, side, qty, notional)
    position.realized_pnl += realized
    position.fees += fee_quote
    position.fills += 1
    position.last_fill_id = max(position.last_fill_id, fill_id)
    return realized
