"""Positions, P&L now, the equity series and performance statistics: answered from rollups only.

Design and invariants:
- Nothing here scans raw history. `positions` and `totals_*` are running totals the store's triggers keep
  in the same transaction as the fills; equity comes from `equity_bars` at resolution 1 / 60 / 3600 s.
- Equity series: the coarsest stored resolution that still gives the `points` asked for (3600 s, then
  60 s, then 1 s when the raw samples still cover the range), then grouped in SQL into buckets of
  `step_s` (a multiple of the resolution, aligned to the epoch so buckets do not jitter between
  refreshes). With the default 120 points a 30-day chart reads 720 hourly bars, a 7-day one 168, a
  24-hour one 1,440 minute bars and a 1-hour one 3,600 raw samples: bounded by the window and the points
  asked for (at most 60 x points rows), never by the size of the database.
- Open/close of a grouped bucket are its first/last bar's (two primary-key lookups per bucket); high and
  low, the worst drawdown inside the bucket and the sample count are aggregates.
- Unrealized P&L marks each position where it could be closed now (`book_top_latest`: a long at the
  bid, a short at the ask), in exact integer money.
- Statistics are floats (returns, ratios); money stays exact decimal text.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
from starlette.requests import Request

from api import render, sqljson
from api.context import JSON, ctx, query
from api.db import Reader
from api.params import bad_param

RESOLUTIONS = (3600, 60, 1)
DEFAULT_WINDOW_S = 86_400
MAX_SOURCE_BARS = 130_000  # rows one chart may aggregate (~60 x the largest `points`): ~100 ms
DEFAULT_POINTS = 120  # a chart's worth; keeps every window but the shortest on 60 s or 1 h bars
MAX_WINDOW_S = 400 * 86_400
HOURS_PER_YEAR = 24 * 365

_LATEST_EQUITY = (
    "SELECT bucket_s, close, cash, realized_pnl, unrealized_pnl, fees, exposure, peak, drawdown, last_ns "
    "FROM equity_bars WHERE resolution_s = ? ORDER BY bucket_s DESC LIMIT 1"
)


def _latest_equity(reader: Reader) -> tuple | None:
    for resolution in (1, 60, 3600):
        row = reader.one(_LATEST_EQUITY, (resolution,))
        if row is not None:
            return row
    return None


def _mark_value(inst: render.InstrumentView, qty: int, price_ticks: int) -> int:
    """Exact money value of `qty` lots at `price_ticks` (tick x step x 1e8 is an integer by contract)."""
    numerator, decimals = inst.money_per_tick_lot_e()
    return qty * price_ticks * numerator // 10**decimals


def _avg_price(inst: render.InstrumentView, qty: int, cost: int) -> str | None:
    """Average entry price = cost / (qty x money per tick-lot), a decimal string like every other price,
    to 1e-8 (rounded half-even there: an average need not sit on the tick grid)."""
    if not qty:
        return None
    numerator, decimals = inst.money_per_tick_lot_e()
    pm, pd = inst.price_grid
    ticks = Decimal(cost * 10**decimals) / Decimal(qty * numerator)
    average = (ticks * pm).scaleb(-pd).quantize(_EIGHT_PLACES, rounding=ROUND_HALF_EVEN)
    return format(average, "f")  # never str(): a price under 1e-6 would print as 1.2E-7


_EIGHT_PLACES = Decimal("1e-8")
_POSITIONS = (
    "SELECT p.market, p.symbol, p.qty, p.cost, p.realized_pnl, p.fees, p.fills, p.last_fill_id, "
    "p.updated_ns, b.bid_price, b.ask_price, b.ts_ns, p.funding FROM positions p LEFT JOIN book_top_latest b "
    "ON b.market = p.market AND b.symbol = p.symbol ORDER BY p.market, p.symbol LIMIT 1000"
)


def _positions(reader: Reader) -> tuple[list[dict[str, Any]], int, int]:
    instruments = reader.instruments()
    out = []
    total_unrealized = 0
    total_exposure = 0
    for r in reader.rows(_POSITIONS):
        market, symbol, qty, cost, realized, fees, fills, last_fill, updated, bid, ask, book_ns, funding = r
        inst = instruments.get((market, symbol)) or render.FALLBACK
        # The store's recipe: a long is worth what the bid pays, a short costs what the ask asks.
        mark = (bid if qty > 0 else ask) if bid is not None and ask is not None else None
        unrealized = value = None
        if mark is not None:
            value = _mark_value(inst, qty, mark)
            unrealized = value - cost
            total_unrealized += unrealized
            total_exposure += abs(value)
        out.append(
            {
                "market": market,
                "symbol": symbol,
                "qty": inst.qty(qty),
                "side": "LONG" if qty > 0 else "SHORT" if qty < 0 else "FLAT",
                "cost": render.money(cost),
                "avg_price": _avg_price(inst, qty, cost),
                "mark_price": inst.price(mark),
                "mark_time": render.iso(book_ns),
                "market_value": render.money(value),
                "unrealized_pnl": render.money(unrealized),
                "realized_pnl": render.money(realized),
                "fees": render.money(fees),
                "funding": render.money(funding),
                "fills": fills,
                "last_fill_id": last_fill,
                "updated": render.iso(updated),
            }
        )
    return out, total_unrealized, total_exposure


async def positions(request: Request) -> JSON:
    query(request, ())
    data, unrealized, exposure = await ctx(request).db.run(_positions)
    return JSON(
        {"data": data, "unrealized_pnl": render.money(unrealized), "exposure": render.money(exposure)}
    )


def _pnl(reader: Reader) -> dict[str, Any]:
    latest = _latest_equity(reader)
    first = reader.one(
        "SELECT open, bucket_s FROM equity_bars WHERE resolution_s = 3600 ORDER BY bucket_s LIMIT 1"
    )
    worst = reader.one(
        "SELECT min(max_drawdown), min(CAST(max_drawdown AS REAL) / nullif(peak, 0)) FROM equity_bars "
        "WHERE resolution_s = 3600"
    )
    totals = reader.one(
        "SELECT coalesce(sum(realized_pnl), 0), coalesce(sum(fees), 0), coalesce(sum(fills), 0), "
        "coalesce(sum(volume), 0) FROM totals_symbol"
    )
    positions_, unrealized_now, exposure_now = _positions(reader)
    body: dict[str, Any] = {"as_of": None, "as_of_ns": None}
    assert totals is not None
    body.update(
        {
            "realized_pnl": render.money(totals[0]),
            "fees": render.money(totals[1]),
            "net_realized_pnl": render.money(totals[0] - totals[1]),
            "fills": totals[2],
            "volume": render.money(totals[3]),
            "unrealized_pnl_at_book": render.money(unrealized_now),
            "exposure_at_book": render.money(exposure_now),
            "positions": positions_,
            "equity": None,
            "cash": None,
            "unrealized_pnl": None,
            "exposure": None,
            "peak": None,
            "drawdown": None,
            "drawdown_pct": None,
            "max_drawdown": render.money(worst[0]) if worst and worst[0] is not None else None,
            "max_drawdown_pct": _pct(worst[1]) if worst else None,
            "start_equity": render.money(first[0]) if first else None,
            "total_return_pct": None,
        }
    )
    if latest is not None:
        _, close, cash, _realized, unrealized, _fees, exposure, peak, drawdown, last_ns = latest
        body.update(
            {
                "as_of": render.iso(last_ns),
                "as_of_ns": last_ns,
                "equity": render.money(close),
                "cash": render.money(cash),
                "unrealized_pnl": render.money(unrealized),
                "exposure": render.money(exposure),
                "peak": render.money(peak),
                "drawdown": render.money(drawdown),
                "drawdown_pct": _pct(drawdown / peak) if peak else None,
                "total_return_pct": _pct(close / first[0] - 1) if first and first[0] else None,
            }
        )
    return body


def _pct(fraction: float | None) -> float | None:
    if fraction is None or not math.isfinite(fraction):
        return None
    return round(fraction * 100, 6)


async def pnl(request: Request) -> JSON:
    query(request, ())
    return JSON(await ctx(request).db.run(_pnl))


def _range(request: Request, q, latest_s: int | None) -> tuple[int, int]:
    """[start_s, end_s] from from/to/window; the default window ends at the newest sample."""
    start, end = q.time_range()
    window = q.window_s("window", 60, MAX_WINDOW_S)
    if window is not None and start is not None and end is not None:
        raise bad_param("window", "give at most two of from, to and window")
    end_s = end // 10**9 if end is not None else None
    start_s = start // 10**9 if start is not None else None
    if end_s is None:
        end_s = start_s + (window or DEFAULT_WINDOW_S) if start_s is not None and window else latest_s
        if end_s is None:
            end_s = 0
    if start_s is None:
        start_s = max(0, end_s - (window or DEFAULT_WINDOW_S))
    if end_s - start_s > MAX_WINDOW_S:
        raise bad_param("from", f"the range may span at most {MAX_WINDOW_S // 86400} days")
    return start_s, end_s


_GROUPED = f"""
SELECT '[' || coalesce(group_concat(j, ','), '') || ']', count(*) FROM (
WITH g AS (
    SELECT bucket_s / :step AS k, min(bucket_s) AS first_s, max(bucket_s) AS last_s, max(high) AS high,
           min(low) AS low, min(max_drawdown) AS mdd, sum(samples) AS samples
    FROM equity_bars WHERE resolution_s = :res AND bucket_s BETWEEN :a AND :b GROUP BY k
)
SELECT json_object(
    't', {sqljson.iso_s("g.k * :step")}, 't_s', g.k * :step, 'open', {sqljson.money("o.open")},
    'high', {sqljson.money("g.high")}, 'low', {sqljson.money("g.low")}, 'close', {sqljson.money("c.close")},
    'peak', {sqljson.money("c.peak")}, 'drawdown', {sqljson.money("c.drawdown")},
    'max_drawdown', {sqljson.money("g.mdd")}, 'samples', g.samples) AS j
FROM g JOIN equity_bars o ON o.resolution_s = :res AND o.bucket_s = g.first_s
       JOIN equity_bars c ON c.resolution_s = :res AND c.bucket_s = g.last_s
ORDER BY g.k)
"""


async def equity(request: Request) -> JSON:
    q = query(request, ("from", "to", "window", "points", "resolution"))
    points = q.integer("points", DEFAULT_POINTS, 2, 2000)
    assert points is not None
    wanted = q.choice("resolution", ("auto", "1", "60", "3600"))
    q.time_range()
    q.window_s("window", 60, MAX_WINDOW_S)

    def run(reader: Reader) -> dict[str, Any]:
        bounds = reader.one(
            "SELECT (SELECT max(bucket_s) FROM equity_bars WHERE resolution_s = 60), "
            "(SELECT bucket_s FROM equity_bars WHERE resolution_s = 1 ORDER BY bucket_s LIMIT 1), "
            "(SELECT bucket_s FROM equity_bars WHERE resolution_s = 1 ORDER BY bucket_s DESC LIMIT 1)"
        )
        newest_minute, oldest_raw, newest_raw = bounds if bounds else (None, None, None)
        latest_s = newest_raw
        if latest_s is None and newest_minute is not None:
            latest_s = newest_minute + 59
        start_s, end_s = _range(request, q, latest_s)
        span = end_s - start_s + 1
        if wanted in (None, "auto"):
            resolution = 1
            for r in RESOLUTIONS:
                if span // r >= points:
                    resolution = r
                    break
            if resolution == 1 and (oldest_raw is None or oldest_raw > start_s):
                resolution = 60  # raw samples past retention are gone; minute bars always exist
        else:
            resolution = int(wanted)
        if span // resolution > MAX_SOURCE_BARS:
            raise bad_param(
                "resolution",
                f"{resolution} s bars over this range would read {span // resolution} rows "
                f"(at most {MAX_SOURCE_BARS}); use a coarser resolution, auto, or a shorter range",
            )
        step = max(resolution, -(-span // points // resolution) * resolution)
        if span // step > reader.max_rows:
            raise bad_param("points", "too many points for this range")
        rows = reader.rows(_GROUPED, {"step": step, "res": resolution, "a": start_s, "b": end_s})
        return {
            "from": render.iso_s(start_s),
            "to": render.iso_s(end_s),
            "resolution_s": resolution,
            "step_s": step,
            "count": rows[0][1],
            "data": orjson.Fragment(rows[0][0]),
        }

    return JSON(await ctx(request).db.run(run))


_TOTALS_COLUMNS = (
    "fills, maker_fills, volume, fees, realized_pnl, wins, losses, gross_profit, gross_loss, "
    "slippage_bps_sum, orders, orders_denied"
)


def _sums(columns: str) -> str:
    return ", ".join(f"coalesce(sum({c.strip()}), 0)" for c in columns.split(","))


def _stats(reader: Reader, start_s: int | None, end_s: int | None) -> dict[str, Any]:
    a = start_s if start_s is not None else 0
    b = end_s if end_s is not None else 2**62
    bars = reader.rows(
        "SELECT bucket_s, open, close, max_drawdown, peak FROM equity_bars WHERE resolution_s = 3600 "
        "AND bucket_s BETWEEN ? AND ? ORDER BY bucket_s",
        (a - a % 3600, b),
    )
    if start_s is None and end_s is None:
        t = reader.one(f"SELECT {_sums(_TOTALS_COLUMNS)} FROM totals_symbol")
        markouts = reader.rows(
            "SELECT horizon_ms, sum(n), sum(markout_bps_sum) FROM totals_markouts GROUP BY horizon_ms "
            "ORDER BY horizon_ms"
        )
    else:
        t = reader.one(
            f"SELECT {_sums(_TOTALS_COLUMNS)} FROM totals_hourly WHERE hour_s BETWEEN ? AND ?",
            (a - a % 3600, b),
        )
        markouts = []  # running markout totals are all-time only
    assert t is not None
    fills, maker, volume, fees, realized, wins, losses, gross_profit, gross_loss, slip, orders, denied = t
    closes = [r[2] for r in bars]
    returns = [closes[i] / closes[i - 1] - 1 for i in range(1, len(closes)) if closes[i - 1] > 0]
    sharpe = sortino = vol = None
    if len(returns) >= 2:
        mean = sum(returns) / len(returns)
        var = sum((x - mean) ** 2 for x in returns) / (len(returns) - 1)
        downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in returns) / len(returns))
        vol = math.sqrt(var) * math.sqrt(HOURS_PER_YEAR)
        sharpe = mean / math.sqrt(var) * math.sqrt(HOURS_PER_YEAR) if var > 0 else None
        sortino = mean / downside * math.sqrt(HOURS_PER_YEAR) if downside > 0 else None
    first_open = bars[0][1] if bars else None
    last_close = bars[-1][2] if bars else None
    mdd = min((r[3] for r in bars), default=None)
    mdd_pct = min((r[3] / r[4] for r in bars if r[4]), default=None)
    mean_equity = sum(closes) / len(closes) if closes else None
    return {
        "from": render.iso_s(bars[0][0]) if bars else None,
        "to": render.iso_s(bars[-1][0] + 3600) if bars else None,
        "hours": len(bars),
        "start_equity": render.money(first_open),
        "end_equity": render.money(last_close),
        "pnl": render.money(last_close - first_open) if bars else None,
        "return_pct": _pct(last_close / first_open - 1) if bars and first_open else None,
        "volatility_annualized": _finite(vol),
        "sharpe": _finite(sharpe),
        "sortino": _finite(sortino),
        "max_drawdown": render.money(mdd),
        "max_drawdown_pct": _pct(mdd_pct),
        "fills": fills,
        "maker_ratio": _finite(maker / fills) if fills else None,
        "orders": orders,
        "orders_denied": denied,
        "wins": wins,
        "losses": losses,
        "win_rate": _finite(wins / (wins + losses)) if wins + losses else None,
        "profit_factor": _finite(gross_profit / -gross_loss) if gross_loss else None,
        "gross_profit": render.money(gross_profit),
        "gross_loss": render.money(gross_loss),
        "realized_pnl": render.money(realized),
        "fees": render.money(fees),
        "volume": render.money(volume),
        "turnover": _finite(volume / mean_equity) if mean_equity else None,
        "mean_slippage_bps": _finite(slip / fills) if fills else None,
        "markouts": [
            {"horizon_ms": h, "n": n, "mean_bps": _finite(s / n) if n else None} for h, n, s in markouts
        ],
        "annualization": "hourly returns x sqrt(8760) (crypto trades every hour of the year)",
    }


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


async def stats(request: Request) -> JSON:
    q = query(request, ("from", "to"))
    start, end = q.time_range()
    start_s = None if start is None else start // 10**9
    end_s = None if end is None else end // 10**9
    return JSON(await ctx(request).db.run(lambda reader: _stats(reader, start_s, end_s)))
