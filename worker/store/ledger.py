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


@dataclass(slots=True)
class Position:
    qty: int = 0
    cost: int = 0
    realized_pnl: int = 0
    fees: int = 0
    funding: int = 0  # USD-M funding credited (negative = paid); not touched by fills
    fills: int = 0
    last_fill_id: int = 0


def _release(cost: int, closed: int, qty: int) -> int:
    """Cost basis of `closed` lots out of `qty` (same sign as `cost`), truncated toward zero."""
    magnitude = abs(cost) * closed // abs(qty)
    return magnitude if cost >= 0 else -magnitude


def apply_fill(position: Position, side: int, qty: int, notional: int, fee_quote: int, fill_id: int) -> int:
    """Apply one fill in place; return the P&L it realized (money, gross of fees)."""
    realized = 0
    if position.qty == 0 or (position.qty > 0) == (side > 0):
        position.qty += side * qty
        position.cost += side * notional
    else:
        closing = min(qty, abs(position.qty))
        released = _release(position.cost, closing, position.qty)
        proceeds = notional * closing // qty if closing != qty else notional
        # Long closed by a sell: proceeds - cost; short closed by a buy: cost(neg) ... = -released - paid.
        realized = proceeds - released if position.qty > 0 else -released - proceeds
        position.cost -= released
        position.qty += side * closing
        rest = qty - closing
        if rest:
            position.qty += side * rest
            position.cost += side * (notional - proceeds)
        elif position.qty == 0:
            position.cost = 0
    position.realized_pnl += realized
    position.fees += fee_quote
    position.fills += 1
    position.last_fill_id = max(position.last_fill_id, fill_id)
    return realized
