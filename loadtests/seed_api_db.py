"""Seed a realistic trades database through the store's own write path (`StoreWriter`), for the API.

- Every row goes through `StoreWriter.submit` (orders, transitions, fills, markouts, signals, risk
  decisions, equity samples, book tops, state changes, system events, heartbeat): the rollups and
  running totals are the ones the triggers build, so the API is measured on what the worker writes.
- Deterministic for a given seed. Time runs `days` back from `end_ns`; equity is sampled every
  `equity_step_s` seconds (1 = the real 1 s cadence), orders and fills are spread uniformly.
- Fast enough for a month of 1 s samples and hundreds of thousands of fills in a few minutes: records
  are submitted in chunks and the writer commits each chunk in one transaction (raw retention is set
  past the seeded span so the month of 1 s samples stays).

    python loadtests/seed_api_db.py PATH [--days 30] [--fills 500000] [--orders 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from worker.events import Market  # noqa: E402
from worker.instruments import DEFAULT_INSTRUMENTS  # noqa: E402
from worker.orders import (  # noqa: E402
    Fill,
    Liquidity,
    OrderType,
    Side,
    TimeInForce,
    cancel,
    denied_order,
    fill,
    new_order,
    reject,
)
from worker.store import records  # noqa: E402
from worker.store.writer import RunInfo, StoreWriter, WriterConfig  # noqa: E402

SYMBOLS = {
    "BTCUSDT": (DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")], 6_000_000),  # 60000.00
    "ETHUSDT": (DEFAULT_INSTRUMENTS[(Market.SPOT, "ETHUSDT")], 300_000),  # 3000.00
}
NS = 1_000_000_000
START_EQUITY = 10_000 * 10**8  # 10,000 USDT


@dataclass(frozen=True, slots=True)
class Markout:
    """Shaped like the broker's Markout (the writer reads these fields)."""

    fill_id: int
    horizon_ms: int
    ts_ns: int
    symbol: str
    mid: float | None
    markout_bps: float | None


@dataclass(frozen=True, slots=True)
class SeedSummary:
    orders: int
    fills: int
    equity_samples: int
    first_ns: int
    last_ns: int
    seconds: float


async def seed(
    path: str | Path,
    *,
    days: float = 1.0,
    equity_step_s: int = 1,
    orders: int = 1000,
    fills_target: int = 1600,
    end_ns: int | None = None,
    seed_value: int = 7,
    chunk: int = 50_000,
    heartbeat: bool = True,
    progress: bool = False,
) -> SeedSummary:
    started = time.perf_counter()
    rng = random.Random(seed_value)
    end_ns = end_ns if end_ns is not None else (time.time_ns() // NS) * NS
    span_s = int(days * 86_400)
    start_ns = end_ns - span_s * NS
    writer = StoreWriter(
        path,
        [inst for inst, _ in SYMBOLS.values()],
        RunInfo("test", "seed", "0" * 64),
        WriterConfig(
            retention_s=span_s + 86_400,
            max_batch=chunk * 2,
            sample_capacity=chunk * 4,
            critical_soft_limit=10**9,
            max_lag_s=3600,
            signal_retention_s=None,  # the seeded month is kept whole
            approved_decision_retention_s=None,
        ),
    )
    await writer.start()
    # Orders at uniformly spread times; each gets 0..3 fills so that the total is near fills_target.
    order_times = sorted(start_ns + rng.randrange(span_s * NS) for _ in range(orders))
    fills_per_order = fills_target / max(1, orders)
    price = {s: base for s, (_, base) in SYMBOLS.items()}
    equity = START_EQUITY
    cash = START_EQUITY
    realized = fees = 0
    pending: list[object] = []
    fill_id = 0
    order_id = 0
    signal_id = 0
    sample_count = 0
    oi = 0
    book_every = 60
    names = list(SYMBOLS)

    async def flush_if(force: bool = False) -> None:
        if len(pending) >= chunk or (force and pending):
            writer.submit_many(pending)
            pending.clear()
            await writer.flush(timeout=600)

    pending.append(records.TradingStateChange(start_ns, "ACTIVE", None, "start", "restart"))
    for second in range(0, span_s, equity_step_s):
        ts = start_ns + second * NS
        for s in names:
            price[s] = max(
                1000, price[s] + rng.choice((-3, -1, 0, 0, 1, 3)) * ((equity_step_s**0.5 > 3 and 5) or 1)
            )
        # Orders whose time falls in this step.
        while oi < len(order_times) and order_times[oi] < ts + equity_step_s * NS:
            t = order_times[oi]
            oi += 1
            order_id += 1
            symbol = names[order_id % len(names)]
            inst, _ = SYMBOLS[symbol]
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            qty = rng.randrange(10, 200)
            limit = price[symbol] - side * rng.randrange(0, 5)
            signal_id += 1
            direction = int(side)
            pending.append(
                records.Signal(
                    t,
                    "spot",
                    symbol,
                    "ofi/1",
                    direction * rng.random(),
                    direction,
                    rng.random(),
                    float(price[symbol]),
                    order_id,
                    {"ofi": rng.random()},
                    signal_id,
                )
            )
            roll = rng.random()
            if roll < 0.05:
                order = denied_order(
                    order_id,
                    symbol,
                    side,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    qty,
                    limit,
                    t,
                    "max_position",
                    "strategy",
                )
                pending.append(
                    records.RiskDecision(
                        t, "spot", symbol, "denied", "max_position", order_id, int(side), qty, 0, limit
                    )
                )
                pending.append(records.OrderUpdate(order, t))
                continue
            pending.append(
                records.RiskDecision(
                    t, "spot", symbol, "approved", "ok", order_id, int(side), qty, qty, limit
                )
            )
            order = new_order(
                order_id, symbol, side, OrderType.LIMIT, TimeInForce.GTC, qty, limit, t, "strategy"
            )
            pending.append(records.OrderUpdate(order, t))
            if roll < 0.07:
                pending.append(records.OrderUpdate(reject(order, "PRICE_FILTER"), t + 1_000_000))
                continue
            mean = fills_per_order / 0.86  # 14% of orders never fill (denied, rejected, cancelled)
            n_fills = int(mean) + (rng.random() < mean - int(mean)) if roll < 0.93 else 0
            n_fills = min(n_fills, qty)
            left = qty
            ft = t
            for k in range(n_fills):
                part = left if k == n_fills - 1 else rng.randrange(1, left - (n_fills - k - 1) + 1)
                if k == n_fills - 1 and rng.random() < 0.1 and left > 1:
                    part = left - 1  # partially filled then cancelled
                ft += rng.randrange(1, 50) * 1_000_000
                fill_id += 1
                maker = rng.random() < 0.7
                fee = inst.notional(limit, part) // (10_000 if maker else 2_500)
                pending.append(
                    Fill(
                        fill_id,
                        order_id,
                        symbol,
                        side,
                        limit,
                        part,
                        fee,
                        "USDT",
                        Liquidity.MAKER if maker else Liquidity.TAKER,
                        ft,
                        "conservative/1",
                        rng.randrange(1, 20) * 1_000_000,
                        rng.randrange(0, 500),
                        float(price[symbol]),
                        float(price[symbol]),
                        rng.gauss(0.3, 1.0),
                    )
                )
                order = fill(order, part)
                pending.append(records.OrderUpdate(order, ft))
                for horizon in (1000, 10000):
                    pending.append(
                        Markout(
                            fill_id,
                            horizon,
                            ft + horizon * 1_000_000,
                            symbol,
                            float(price[symbol]),
                            rng.gauss(0, 2),
                        )
                    )
                fees += fee
                left -= part
            if not order.is_terminal:
                pending.append(records.OrderUpdate(cancel(order, "ttl"), ft + 500_000_000))
        pnl_step = rng.choice((-3, -2, -1, 0, 1, 2, 3)) * 10**6 * max(1, int(equity_step_s**0.5))
        equity += pnl_step
        realized += pnl_step // 2
        pending.append(
            records.EquitySample(
                ts, equity, cash, realized, equity - START_EQUITY - realized, fees, abs(pnl_step) * 100
            )
        )
        sample_count += 1
        if second % book_every < equity_step_s:
            for s in names:
                p = price[s]
                pending.append(
                    records.BookTop(
                        ts, "spot", s, p, rng.randrange(1, 500), p + 1, rng.randrange(1, 500), p + 0.4, 0.1
                    )
                )
        if second % 21_600 < equity_step_s and second:
            pending.append(records.SystemEvent(ts, "reconnect", "warning", "spot", names[second % 2]))
            pending.append(records.SystemEvent(ts, "resync", "warning", "spot", names[second % 2]))
        await flush_if()
        if progress and second % 86_400 < equity_step_s and second:
            print(f"  seeded day {second // 86_400}/{days:g}: {fill_id} fills, {order_id} orders", flush=True)
    pending.append(records.SystemEvent(end_ns - NS, "gap", "warning", "spot", "BTCUSDT", {"missing": 3}))
    pending.append(records.BreakerChange(end_ns - NS, "daily_loss", False, "armed"))
    if heartbeat:
        pending.append(
            records.Heartbeat(
                end_ns, "ACTIVE", "trading", {"spot:BTCUSDT": "live", "spot:ETHUSDT": "live"}, {"ok": True}
            )
        )
    await flush_if(force=True)
    await writer.close("seeded")
    return SeedSummary(order_id, fill_id, sample_count, start_ns, end_ns, time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--fills", type=int, default=500_000)
    parser.add_argument("--equity-step", type=int, default=1)
    args = parser.parse_args()
    summary = asyncio.run(
        seed(
            args.path,
            days=args.days,
            orders=args.orders,
            fills_target=args.fills,
            equity_step_s=args.equity_step,
            progress=True,
        )
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
