"""SQL expressions that render rows as JSON inside SQLite, for the hot list and chart endpoints.

Why: building a 50-row fills page or a 300-point equity series as Python dicts costs more CPU than
the query (a dozen exact-decimal conversions per row); SQLite's `printf` and `json_object` do the
same in C. The output is byte-for-byte the format of `api.render` (tests compare the two), and the
same rules hold: money is integer 1e-8 units printed with 8 decimals, prices and quantities are
`ticks x mantissa` printed with the instrument's decimals, times are RFC 3339 with nanoseconds.

- `instrument_cte` binds each instrument's grid (mantissa, 10^decimals, decimals) as a VALUES table
  so a row can be joined to it; an unknown instrument falls back to plain integers.
"""

from __future__ import annotations

from api import render


def money(col: str) -> str:
    return (
        f"printf('%s%d.%08d', CASE WHEN {col} < 0 THEN '-' ELSE '' END, abs({col}) / 100000000, "
        f"abs({col}) % 100000000)"
    )


def nullable_money(col: str) -> str:
    return f"CASE WHEN {col} IS NULL THEN NULL ELSE {money(col)} END"


def decimal(col: str, mantissa: str, power: str, decimals: str) -> str:
    """`col x mantissa x 10^-decimals` as exact text; NULL stays NULL."""
    v = f"({col} * {mantissa})"
    return (
        f"CASE WHEN {col} IS NULL THEN NULL WHEN {decimals} = 0 THEN CAST({v} AS TEXT) "
        f"ELSE printf('%s%d.%0*d', CASE WHEN {v} < 0 THEN '-' ELSE '' END, abs({v}) / {power}, {decimals}, "
        f"abs({v}) % {power}) END"
    )


def price_float(col: str, mantissa: str, power: str, decimals: str) -> str:
    return f"round({col} * {mantissa} / CAST({power} AS REAL), {decimals} + 2)"


def iso_ns(col: str) -> str:
    return (
        f"strftime('%Y-%m-%dT%H:%M:%S', {col} / 1000000000, 'unixepoch') || "
        f"printf('.%09dZ', {col} % 1000000000)"
    )


def iso_s(col: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%SZ', {col}, 'unixepoch')"


def instrument_cte(instruments: dict[tuple[str, str], render.InstrumentView]) -> tuple[str, list]:
    """`g(market, symbol, pm, pp, pd, qm, qp, qd)` with one row per instrument (and a dummy row)."""
    rows = ["('', '', 1, 1, 0, 1, 1, 0)"]
    params: list = []
    for (market, symbol), inst in instruments.items():
        (pm, pd), (qm, qd) = inst.price_grid, inst.qty_grid
        rows.append("(?, ?, ?, ?, ?, ?, ?, ?)")
        params += [market, symbol, pm, 10**pd, pd, qm, 10**qd, qd]
    return f"g(market, symbol, pm, pp, pd, qm, qp, qd) AS (VALUES {', '.join(rows)})", params


def _p(col: str) -> str:
    return decimal(col, "coalesce(g.pm, 1)", "coalesce(g.pp, 1)", "coalesce(g.pd, 0)")


def _q(col: str) -> str:
    return decimal(col, "coalesce(g.qm, 1)", "coalesce(g.qp, 1)", "coalesce(g.qd, 0)")


def _pf(col: str) -> str:
    return price_float(col, "coalesce(g.pm, 1)", "coalesce(g.pp, 1)", "coalesce(g.pd, 0)")


FILL_JSON = f"""json_object(
    'fill_id', f.fill_id, 'order_id', f.order_id, 'market', f.market, 'symbol', f.symbol,
    'side', CASE f.side WHEN 1 THEN 'BUY' WHEN -1 THEN 'SELL' ELSE CAST(f.side AS TEXT) END,
    'price', {_p("f.price")}, 'qty', {_q("f.qty")}, 'notional', {money("f.notional")},
    'fee', {money("f.fee")}, 'fee_asset', f.fee_asset, 'fee_quote', {money("f.fee_quote")},
    'liquidity', f.liquidity, 'realized_pnl', {money("f.realized_pnl")},
    'position_after', {_q("f.position_after")}, 'time', {iso_ns("f.ts_ns")}, 'ts_ns', f.ts_ns,
    'model', f.model, 'latency_us', f.latency_ns / 1000.0, 'queue_ahead', {_q("f.queue_ahead")},
    'decision_mid', {_pf("f.decision_mid")}, 'fill_mid', {_pf("f.fill_mid")},
    'slippage_bps', f.slippage_bps)"""
