"""Performance statistics for the report job, read from the trades database's rollups.

Design and invariants:
- Reads only, through one read-only connection (`worker.store.db.connect_readonly`); never scans raw
  history where the writer keeps a rollup: equity comes from `equity_bars`, fill and order counts, fees,
  wins/losses and slippage from `totals_symbol` / `totals_hourly`, markouts from `totals_markouts`,
  signal calibration is a GROUP BY inside SQLite. The one raw read is P&L per closing fill (the
  histogram), capped at `MAX_TRADES` most recent rows.
- Everything returned is a pure function of the file's contents (no wall clock), so two runs over the
  same file give identical numbers, hence identical charts and README bytes.
- Money is converted to floats in quote units only here, for statistics and display; the database keeps
  it exact.
- Equity resolution: the finest of 1 s / 60 s / 3600 s bars that covers the whole history (raw 1 s rows
  are deleted after the writer's retention age) with at most `MAX_POINTS` points.
- Annualization: crypto trades every day, so a year is 365 days of bars at the chosen resolution.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field

import numpy as np

from worker.store.schema import MONEY_SCALE

MAX_POINTS = 5000
MAX_TRADES = 200_000
YEAR_S = 365 * 86_400


@dataclass(frozen=True, slots=True)
class EquitySeries:
    resolution_s: int
    bucket_s: np.ndarray  # int64, bucket start (epoch seconds, engine clock)
    open: np.ndarray  # quote units
    close: np.ndarray
    peak: np.ndarray
    max_drawdown: np.ndarray  # most negative (equity - peak) inside each bucket, quote units (<= 0)


@dataclass(frozen=True, slots=True)
class Totals:
    fills: int = 0
    maker_fills: int = 0
    volume: float = 0.0
    fees: float = 0.0
    realized_pnl: float = 0.0
    funding: float = 0.0
    wins: int = 0
    losses: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0  # <= 0
    slippage_bps_sum: float = 0.0
    orders: int = 0
    orders_denied: int = 0
    orders_rejected: int = 0
    orders_cancelled: int = 0
    orders_filled: int = 0
    first_ns: int = 0
    last_ns: int = 0


@dataclass(frozen=True, slots=True)
class Calibration:
    horizon_ms: int
    mean_confidence: np.ndarray  # per confidence decile that has signals
    hit_rate: np.ndarray  # share of signals whose outcome moved in their direction
    mean_return_bps: np.ndarray
    count: np.ndarray
    signals: int


@dataclass(frozen=True, slots=True)
class Stats:
    """The headline numbers; None where the data cannot support the figure."""

    total_return: float | None = None
    net_pnl: float | None = None
    sharpe: float | None = None
    sortino: float | None = None
    max_drawdown: float | None = None  # quote units, <= 0
    max_drawdown_pct: float | None = None  # fraction, <= 0
    win_rate: float | None = None
    profit_factor: float | None = None
    turnover: float | None = None  # traded volume / mean equity
    fees: float = 0.0
    mean_slippage_bps: float | None = None
    markouts_bps: dict[int, float] = field(default_factory=dict)  # horizon -> mean over all fills
    periods: int = 0  # returns the ratios were computed from
    period_s: int = 0  # their typical spacing (median gap between bars), the annualization unit


@dataclass(frozen=True, slots=True)
class ReportData:
    quote: str
    symbols: tuple[str, ...]
    equity: EquitySeries | None
    totals: Totals
    trade_pnl: np.ndarray  # quote units per closing fill, net of that fill's fee
    hourly_pnl: tuple[np.ndarray, np.ndarray]  # (hour_s, P&L in quote units)
    slippage_hourly: tuple[np.ndarray, np.ndarray]  # (hour_s, mean slippage bps)
    markouts: dict[str, list[tuple[int, float, int]]]  # symbol -> [(horizon_ms, mean bps, n)]
    calibration: Calibration | None
    stats: Stats

    @property
    def empty(self) -> bool:
        return self.equity is None and self.totals.fills == 0 and self.calibration is None

    @property
    def first_s(self) -> int | None:
        candidates = []
        if self.equity is not None:
            candidates.append(int(self.equity.bucket_s[0]))
        if self.totals.first_ns:
            candidates.append(self.totals.first_ns // 1_000_000_000)
        return min(candidates) if candidates else None

    @property
    def last_s(self) -> int | None:
        candidates = []
        if self.equity is not None:
            candidates.append(int(self.equity.bucket_s[-1]) + self.equity.resolution_s)
        if self.totals.last_ns:
            candidates.append(self.totals.last_ns // 1_000_000_000)
        return max(candidates) if candidates else None


def _money(value: int | float | None) -> float:
    return (value or 0) / MONEY_SCALE


def read_equity(conn: sqlite3.Connection, max_points: int = MAX_POINTS) -> EquitySeries | None:
    rows = conn.execute(
        "SELECT resolution_s, count(*), min(bucket_s) FROM equity_bars GROUP BY resolution_s"
    ).fetchall()
    info = {int(r): (int(n), int(first)) for r, n, first in rows}
    if not info:
        return None
    chosen = max(info)
    minute_first = info.get(60, (0, None))[1]
    for res in sorted(info):
        count, first = info[res]
        complete = res != 1 or minute_first is None or first - minute_first < 60
        if complete and count <= max_points:
            chosen = res
            break
    data = conn.execute(
        "SELECT bucket_s, open, close, peak, max_drawdown FROM equity_bars WHERE resolution_s = ? "
        "ORDER BY bucket_s",
        (chosen,),
    ).fetchall()
    arr = np.array(data, dtype=np.float64).reshape(-1, 5)
    return EquitySeries(
        resolution_s=chosen,
        bucket_s=arr[:, 0].astype(np.int64),
        open=arr[:, 1] / MONEY_SCALE,
        close=arr[:, 2] / MONEY_SCALE,
        peak=arr[:, 3] / MONEY_SCALE,
        max_drawdown=arr[:, 4] / MONEY_SCALE,
    )


def read_totals(conn: sqlite3.Connection) -> Totals:
    row = conn.execute(
        "SELECT sum(fills), sum(maker_fills), sum(volume), sum(fees), sum(realized_pnl), sum(funding), "
        "sum(wins), sum(losses), sum(gross_profit), sum(gross_loss), sum(slippage_bps_sum), sum(orders), "
        "sum(orders_denied), sum(orders_rejected), sum(orders_cancelled), sum(orders_filled), "
        "min(CASE WHEN first_ns > 0 THEN first_ns END), max(last_ns) FROM totals_symbol"
    ).fetchone()
    if row is None or row[0] is None:
        return Totals()
    (fills, maker, volume, fees, realized, funding, wins, losses, gp, gl, slip, orders, denied, rejected,
     cancelled, filled, first, last) = row  # fmt: skip
    return Totals(
        fills=int(fills or 0),
        maker_fills=int(maker or 0),
        volume=_money(volume),
        fees=_money(fees),
        realized_pnl=_money(realized),
        funding=_money(funding),
        wins=int(wins or 0),
        losses=int(losses or 0),
        gross_profit=_money(gp),
        gross_loss=_money(gl),
        slippage_bps_sum=float(slip or 0.0),
        orders=int(orders or 0),
        orders_denied=int(denied or 0),
        orders_rejected=int(rejected or 0),
        orders_cancelled=int(cancelled or 0),
        orders_filled=int(filled or 0),
        first_ns=int(first or 0),
        last_ns=int(last or 0),
    )


def read_trade_pnl(conn: sqlite3.Connection, limit: int = MAX_TRADES) -> np.ndarray:
    """Net P&L of each closing fill (realized P&L minus that fill's fee), the most recent `limit`."""
    rows = conn.execute(
        "SELECT realized_pnl - fee_quote FROM fills WHERE realized_pnl != 0 ORDER BY fill_id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return np.array([r[0] for r in reversed(rows)], dtype=np.float64) / MONEY_SCALE


def read_hourly_pnl(conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray]:
    """P&L per clock hour: the change of hourly equity closes (marks included); without equity samples,
    realized P&L minus fees plus funding from `totals_hourly`."""
    rows = conn.execute(
        "SELECT bucket_s, open, close FROM equity_bars WHERE resolution_s = 3600 ORDER BY bucket_s"
    ).fetchall()
    if rows:
        hours = np.array([r[0] for r in rows], dtype=np.int64)
        closes = np.array([r[2] for r in rows], dtype=np.float64)
        previous = np.concatenate(([rows[0][1]], closes[:-1]))
        return hours, (closes - previous) / MONEY_SCALE
    rows = conn.execute(
        "SELECT hour_s, sum(realized_pnl - fees + funding) FROM totals_hourly GROUP BY hour_s ORDER BY hour_s"
    ).fetchall()
    hours = np.array([r[0] for r in rows], dtype=np.int64)
    return hours, np.array([r[1] for r in rows], dtype=np.float64) / MONEY_SCALE


def read_slippage_hourly(conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(
        "SELECT hour_s, sum(slippage_bps_sum) / sum(fills) FROM totals_hourly GROUP BY hour_s "
        "HAVING sum(fills) > 0 ORDER BY hour_s"
    ).fetchall()
    return (
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.float64),
    )


def read_markouts(conn: sqlite3.Connection) -> dict[str, list[tuple[int, float, int]]]:
    out: dict[str, list[tuple[int, float, int]]] = {}
    for symbol, horizon, n, total in conn.execute(
        "SELECT symbol, horizon_ms, sum(n), sum(markout_bps_sum) FROM totals_markouts "
        "GROUP BY symbol, horizon_ms HAVING sum(n) > 0 ORDER BY symbol, horizon_ms"
    ):
        out.setdefault(symbol, []).append((int(horizon), float(total) / int(n), int(n)))
    return out


def read_calibration(conn: sqlite3.Connection) -> Calibration | None:
    """Hit rate and mean outcome per confidence decile, at the horizon with the most outcomes."""
    best = conn.execute(
        "SELECT horizon_ms FROM signal_outcomes GROUP BY horizon_ms "
        "ORDER BY count(*) DESC, horizon_ms LIMIT 1"
    ).fetchone()
    if best is None:
        return None
    rows = conn.execute(
        "SELECT min(CAST(s.confidence * 10 AS INTEGER), 9) AS bin, avg(s.confidence), "
        "avg(o.return_bps > 0), avg(o.return_bps), count(*) "
        "FROM signals s JOIN signal_outcomes o ON o.signal_id = s.signal_id "
        "WHERE o.horizon_ms = ? AND s.direction != 0 GROUP BY bin ORDER BY bin",
        (best[0],),
    ).fetchall()
    if not rows:
        return None
    arr = np.array([r[1:] for r in rows], dtype=np.float64)
    return Calibration(
        horizon_ms=int(best[0]),
        mean_confidence=arr[:, 0],
        hit_rate=arr[:, 1],
        mean_return_bps=arr[:, 2],
        count=arr[:, 3].astype(np.int64),
        signals=int(arr[:, 3].sum()),
    )


def period_returns(equity: EquitySeries) -> np.ndarray:
    """Simple returns from one bar's close to the next."""
    prev, values = equity.close[:-1], equity.close[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(prev > 0, values / prev - 1.0, np.nan)
    return returns[np.isfinite(returns)]


def sample_spacing(equity: EquitySeries) -> int:
    """Seconds between consecutive bars (median): samples sparser than the bar resolution (a worker
    sampling once a minute into 1 s bars) must be annualized by their real spacing."""
    if equity.bucket_s.size < 2:
        return equity.resolution_s
    return max(int(np.median(np.diff(equity.bucket_s))), equity.resolution_s)


def ratios(returns: np.ndarray, period_s: int) -> tuple[float | None, float | None]:
    """Annualized Sharpe and Sortino (risk-free rate 0); None with fewer than two periods or no spread."""
    if returns.size < 2:
        return None, None
    scale = math.sqrt(YEAR_S / period_s)
    mean = float(returns.mean())
    std = float(returns.std(ddof=1))
    sharpe = mean / std * scale if std > 0 else None
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    sortino = mean / downside * scale if downside > 0 else None
    return sharpe, sortino


def compute_stats(
    equity: EquitySeries | None, totals: Totals, markouts: dict[str, list[tuple[int, float, int]]]
) -> Stats:
    total_return = net_pnl = sharpe = sortino = max_dd = max_dd_pct = turnover = None
    periods = period_s = 0
    if equity is not None and equity.close.size:
        start = float(equity.open[0])
        net_pnl = float(equity.close[-1]) - start
        total_return = net_pnl / start if start > 0 else None
        returns = period_returns(equity)
        periods = int(returns.size)
        period_s = sample_spacing(equity)
        sharpe, sortino = ratios(returns, period_s)
        max_dd = float(min(equity.max_drawdown.min(), 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            pct = np.where(equity.peak > 0, equity.max_drawdown / equity.peak, 0.0)
        max_dd_pct = float(min(pct.min(), 0.0))
        mean_equity = float(equity.close.mean())
        turnover = totals.volume / mean_equity if mean_equity > 0 else None
    decided = totals.wins + totals.losses
    win_rate = totals.wins / decided if decided else None
    profit_factor = totals.gross_profit / -totals.gross_loss if totals.gross_loss < 0 else None
    by_horizon: dict[int, tuple[float, int]] = {}
    for rows in markouts.values():
        for horizon, mean, n in rows:
            total, count = by_horizon.get(horizon, (0.0, 0))
            by_horizon[horizon] = (total + mean * n, count + n)
    return Stats(
        total_return=total_return,
        net_pnl=net_pnl,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=max_dd,
        max_drawdown_pct=max_dd_pct,
        win_rate=win_rate,
        profit_factor=profit_factor,
        turnover=turnover,
        fees=totals.fees,
        mean_slippage_bps=totals.slippage_bps_sum / totals.fills if totals.fills else None,
        markouts_bps={h: t / n for h, (t, n) in sorted(by_horizon.items()) if n},
        periods=periods,
        period_s=period_s,
    )


def load(conn: sqlite3.Connection) -> ReportData:
    quotes = [r[0] for r in conn.execute("SELECT DISTINCT quote_asset FROM instruments ORDER BY 1")]
    symbols = tuple(r[0] for r in conn.execute("SELECT DISTINCT symbol FROM instruments ORDER BY 1"))
    equity = read_equity(conn)
    totals = read_totals(conn)
    markouts = read_markouts(conn)
    return ReportData(
        quote=quotes[0] if len(quotes) == 1 else "quote",
        symbols=symbols,
        equity=equity,
        totals=totals,
        trade_pnl=read_trade_pnl(conn),
        hourly_pnl=read_hourly_pnl(conn),
        slippage_hourly=read_slippage_hourly(conn),
        markouts=markouts,
        calibration=read_calibration(conn),
        stats=compute_stats(equity, totals, markouts),
    )
