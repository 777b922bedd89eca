"""The report's charts, rendered with matplotlib's Agg backend into PNG bytes.

Design and invariants:
- Byte-reproducible: the same data gives the same PNG. Fixed size and dpi, the object-oriented
  `Figure` API (no pyplot global state carried between charts), fixed style values set here, and PNG
  metadata stripped of matplotlib's "Software" version text, so an upgrade of nothing but the data moves
  the bytes. No wall-clock text: every date on a chart comes from the data.
- A chart with no data is still drawn, as a placeholder that says what is missing, so the README's
  image links always resolve and a stale chart from an older run never survives.
- Times are UTC (the engine clock is epoch ns); the heatmap's weekday x hour grid is UTC too.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import matplotlib

matplotlib.use("Agg")  # no display, ever

import matplotlib.dates as mdates
import numpy as np
from matplotlib.figure import Figure

from jobs.stats import ReportData

SIZE = (9.0, 3.6)  # inches
DPI = 100
STYLE = {
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "quantumflow",
    "path.simplify": True,
}
PNG_METADATA = {"Software": None}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# name -> (file name, alt text)
CHARTS: dict[str, tuple[str, str]] = {
    "equity": ("equity.png", "Equity curve"),
    "drawdown": ("drawdown.png", "Drawdown (underwater)"),
    "trades": ("pnl_per_trade.png", "P&L per trade"),
    "heatmap": ("hourly_heatmap.png", "Hourly performance, weekday x hour (UTC)"),
    "fill_quality": ("fill_quality.png", "Fill quality: slippage and markouts"),
    "calibration": ("calibration.png", "Signal confidence calibration"),
}


def _figure(ncols: int = 1) -> tuple[Figure, list]:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=SIZE, dpi=DPI)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buffer.getvalue()


def placeholder(title: str, message: str) -> bytes:
    fig, (ax,) = _figure()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.35")
    ax.set_axis_off()
    return _png(fig)


def _times(seconds: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(int(s), UTC).replace(tzinfo=None) for s in seconds]


def _time_axis(ax, times: list[datetime], maxticks: int = 8) -> None:
    if times and min(times) == max(times):  # one point: a minute around it, not matplotlib's years
        ax.set_xlim(times[0] - timedelta(seconds=30), times[0] + timedelta(seconds=30))
    locator = mdates.AutoDateLocator(maxticks=maxticks)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("UTC")


def equity(data: ReportData) -> bytes:
    eq = data.equity
    if eq is None:
        return placeholder(CHARTS["equity"][1], "No equity samples yet")
    fig, (ax,) = _figure()
    times = _times(eq.bucket_s + eq.resolution_s)
    ax.plot(times, eq.close, color="#1f5fa8", linewidth=1.2, drawstyle="default")
    if eq.close.size == 1:
        ax.plot(times, eq.close, "o", color="#1f5fa8")
    ax.axhline(float(eq.open[0]), color="0.5", linewidth=0.8, linestyle="--")
    ret = data.stats.total_return
    suffix = f" ({ret:+.2%})" if ret is not None else ""
    spacing = data.stats.period_s or eq.resolution_s
    ax.set_title(f"Equity, {data.quote}{suffix}; one point per {spacing:,} s")
    ax.set_ylabel(data.quote)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    _time_axis(ax, times)
    return _png(fig)


def drawdown(data: ReportData) -> bytes:
    eq = data.equity
    if eq is None:
        return placeholder(CHARTS["drawdown"][1], "No equity samples yet")
    fig, (ax,) = _figure()
    with np.errstate(divide="ignore", invalid="ignore"):
        underwater = np.where(eq.peak > 0, (eq.close - eq.peak) / eq.peak * 100.0, 0.0)
        worst = np.where(eq.peak > 0, eq.max_drawdown / eq.peak * 100.0, 0.0)
    times = _times(eq.bucket_s + eq.resolution_s)
    ax.fill_between(times, underwater, 0.0, color="#c0392b", alpha=0.35, linewidth=0, step="post")
    ax.plot(times, underwater, color="#c0392b", linewidth=0.9, drawstyle="steps-post")
    ax.plot(times, worst, color="#7b241c", linewidth=0.6, linestyle=":", label="worst inside bar")
    dd = data.stats.max_drawdown_pct
    ax.set_title(f"Drawdown from peak, % (max {dd:.2%})" if dd is not None else "Drawdown from peak, %")
    ax.set_ylabel("%")
    ax.set_ylim(top=max(0.05, float(np.nanmax(underwater)) if underwater.size else 0.05))
    ax.legend(loc="lower left", frameon=False)
    _time_axis(ax, times)
    return _png(fig)


def trades(data: ReportData) -> bytes:
    pnl = data.trade_pnl
    if pnl.size == 0:
        return placeholder(CHARTS["trades"][1], "No closing fills yet")
    fig, (ax,) = _figure()
    bins = int(min(60, max(5, pnl.size // 4)))
    ax.hist(pnl, bins=bins, color="#2e86c1", edgecolor="white", linewidth=0.4)
    ax.axvline(0.0, color="0.3", linewidth=0.8)
    ax.axvline(
        float(pnl.mean()), color="#e67e22", linewidth=1.0, linestyle="--", label=f"mean {pnl.mean():+.4f}"
    )
    wins = int((pnl > 0).sum())
    ax.set_title(f"P&L per closing fill, net of its fee ({pnl.size} fills, {wins / pnl.size:.0%} positive)")
    ax.set_xlabel(data.quote)
    ax.set_ylabel("fills")
    ax.legend(loc="upper right", frameon=False)
    return _png(fig)


def heatmap(data: ReportData) -> bytes:
    hours, pnl = data.hourly_pnl
    if hours.size == 0:
        return placeholder(CHARTS["heatmap"][1], "No hourly data yet")
    sums = np.zeros((7, 24))
    counts = np.zeros((7, 24))
    for hour_s, value in zip(hours, pnl, strict=True):
        moment = datetime.fromtimestamp(int(hour_s), UTC)
        sums[moment.weekday(), moment.hour] += value
        counts[moment.weekday(), moment.hour] += 1
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan)
    limit = float(np.nanmax(np.abs(mean))) or 1.0
    fig, (ax,) = _figure()
    image = ax.imshow(mean, cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_xlabel("hour (UTC)")
    ax.grid(False)
    ax.set_title(f"Mean P&L per hour, {data.quote} ({int(counts.sum())} hours; blank = no data)")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    return _png(fig)


def fill_quality(data: ReportData) -> bytes:
    hours, slippage = data.slippage_hourly
    if hours.size == 0 and not data.markouts:
        return placeholder(CHARTS["fill_quality"][1], "No fills yet")
    fig, (left, right) = _figure(2)
    if hours.size:
        times = _times(hours)
        left.bar(times, slippage, width=1 / 24 * 0.9, align="edge", color="#8e44ad")
        left.axhline(0.0, color="0.3", linewidth=0.8)
        mean = data.stats.mean_slippage_bps
        left.set_title(f"Slippage per hour, bps (mean {mean:+.2f}; + = worse)")
        _time_axis(left, times, maxticks=4)
    else:
        left.set_title("Slippage: no fills")
    left.set_ylabel("bps per hour (mean)")
    if data.markouts:
        for symbol, rows in sorted(data.markouts.items()):
            horizons = [h for h, _, _ in rows]
            left_vals = [m for _, m, _ in rows]
            right.plot(horizons, left_vals, marker="o", linewidth=1.2, label=symbol)
        right.axhline(0.0, color="0.3", linewidth=0.8)
        all_h = sorted({h for rows in data.markouts.values() for h, _, _ in rows})
        if len(all_h) > 1 and all_h[0] > 0:
            right.set_xscale("log")
        right.set_xticks(all_h, [f"{h / 1000:g}s" for h in all_h])
        right.minorticks_off()
        right.set_title("Mean markout, bps (+ = in our favour)")
        right.set_xlabel("horizon after fill")
        right.legend(loc="best", frameon=False)
    else:
        right.set_title("Markouts: none recorded yet")
    return _png(fig)


def calibration(data: ReportData) -> bytes:
    cal = data.calibration
    if cal is None:
        return placeholder(CHARTS["calibration"][1], "No signal outcomes yet")
    fig, (left, right) = _figure(2)
    left.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=0.8, label="perfect")
    left.plot([0, 1], [0.5, 0.5], color="0.7", linestyle=":", linewidth=0.8, label="coin flip")
    sizes = 20 + 80 * cal.count / max(int(cal.count.max()), 1)
    left.scatter(cal.mean_confidence, cal.hit_rate, s=sizes, color="#16a085", zorder=3)
    left.plot(cal.mean_confidence, cal.hit_rate, color="#16a085", linewidth=1.0)
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.set_xlabel("confidence (decile mean)")
    left.set_ylabel("hit rate")
    left.set_title(f"Calibration at {cal.horizon_ms / 1000:g} s ({cal.signals} signals)")
    left.legend(loc="upper left", frameon=False)
    colors = ["#27ae60" if v >= 0 else "#c0392b" for v in cal.mean_return_bps]
    right.bar(cal.mean_confidence, cal.mean_return_bps, width=0.07, color=colors)
    right.axhline(0.0, color="0.3", linewidth=0.8)
    right.set_xlim(0, 1)
    right.set_xlabel("confidence (decile mean)")
    right.set_title("Mean outcome in the signal's direction, bps")
    return _png(fig)


RENDERERS: dict[str, Callable[[ReportData], bytes]] = {
    "equity": equity,
    "drawdown": drawdown,
    "trades": trades,
    "heatmap": heatmap,
    "fill_quality": fill_quality,
    "calibration": calibration,
}


def render_all(data: ReportData) -> dict[str, bytes]:
    """File name -> PNG bytes for every chart."""
    return {CHARTS[name][0]: render(data) for name, render in RENDERERS.items()}
