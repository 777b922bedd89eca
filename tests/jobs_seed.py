"""Seed a trades database for the report job's tests, through the store's real write path.

Everything goes through `worker.store.writer.StoreWriter` (never raw INSERTs), so the rollups and
running totals the report reads are the ones the triggers maintain. The data is a pure function of the
arguments (a seeded generator, engine-clock timestamps), so two seeded files hold the same rows.
"""

from __future__ import annotations

import numpy as np

from worker.broker import Markout
from worker.events import Market
from worker.instruments import DEFAULT_INSTRUMENTS
from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, fill, new_order
from worker.store import records
from worker.store.writer import RunInfo, StoreWriter, WriterConfig

INSTRUMENT = DEFAULT_INSTRUMENTS[(Market.SPOT, "BTCUSDT")]
T0 = 1_723_161_240_000_000_000  # 2024-08-08T23:54Z, the recordings' start
NS = 1_000_000_000
HORIZONS_MS = (1_000, 5_000, 30_000)


async def seed(
    path,
    *,
    hours: int = 30,
    trades: int = 120,
    signals: int = 400,
    seed: int = 7,
    retention_s: int | None = None,
) -> dict:
    """Equity once a minute for `hours`, `trades` round trips (buy then sell), markouts, signals with
    outcomes. Returns the expected counts."""
    rng = np.random.default_rng(seed)
    config = (
        WriterConfig() if retention_s is None else WriterConfig(retention_s=retention_s, retention_every_s=60)
    )
    writer = StoreWriter(path, [INSTRUMENT], RunInfo("test", "test", "seed"), config)
    await writer.start()
    equity = 10_000 * 10**8
    cash = equity
    minutes = hours * 60
    trade_minutes = np.sort(rng.choice(np.arange(1, minutes - 2), size=trades, replace=False))
    trade_at = set(int(m) for m in trade_minutes)
    fill_id = order_id = 0
    fees_total = 0
    for minute in range(minutes):
        ts = T0 + minute * 60 * NS
        if minute in trade_at:
            price = 6_000_000 + int(rng.integers(-20_000, 20_000))
            move = int(rng.normal(300, 2_000))
            qty = 1_000
            outputs: list = []
            for side, px, dt in ((Side.BUY, price, 0), (Side.SELL, price + move, 30 * NS)):
                order_id += 1
                fill_id += 1
                at = ts + dt
                order = new_order(
                    order_id, "BTCUSDT", side, OrderType.LIMIT, TimeInForce.GTC, qty, px, at, "seed"
                )
                notional = INSTRUMENT.notional(px, qty)
                fee = notional // 1000
                fees_total += fee
                maker = bool(rng.random() < 0.6)
                f = Fill(
                    fill_id,
                    order_id,
                    "BTCUSDT",
                    side,
                    px,
                    qty,
                    fee,
                    "USDT",
                    Liquidity.MAKER if maker else Liquidity.TAKER,
                    at + 1_000_000,
                    "seed/1",
                    2_000_000,
                    0,
                    float(px) - 0.5,
                    float(px),
                    float(rng.normal(0.4, 1.0)),
                )
                outputs += [
                    records.OrderUpdate(order, at),
                    f,
                    records.OrderUpdate(fill(order, qty), at + 1_000_000),
                ]
                for horizon in HORIZONS_MS:
                    bps = float(rng.normal(-0.2 + horizon / 30_000, 1.5))
                    outputs.append(
                        Markout(
                            fill_id,
                            order_id,
                            "BTCUSDT",
                            side,
                            horizon,
                            at,
                            at + horizon * 1_000_000,
                            px,
                            float(px),
                            float(px) * (1 + int(side) * bps / 10_000),
                            bps,
                            bps,
                        )
                    )
            cash += INSTRUMENT.notional(price + move, qty) - INSTRUMENT.notional(price, qty)
            cash -= outputs[1].fee + outputs[4 + len(HORIZONS_MS)].fee
            writer.submit_many(outputs)
        drift = int(rng.normal(0, 2) * 10**8)
        sample = cash + drift
        writer.submit(records.EquitySample(ts, sample, cash, cash - equity, drift, fees_total, 0))
    for i in range(signals):
        ts = T0 + int(rng.integers(0, minutes * 60)) * NS
        confidence = float(rng.random())
        direction = 1 if rng.random() < 0.5 else -1
        right = rng.random() < 0.35 + 0.4 * confidence
        signal = records.Signal(
            ts, "spot", "BTCUSDT", "ofi/1", direction * confidence, direction, confidence, 6_000_000.0,
            None, {"ofi": direction * confidence}, i + 1,
        )  # fmt: skip
        ret = abs(float(rng.normal(1.0, 0.8))) * (1 if right else -1)
        writer.submit(signal)
        writer.submit(records.SignalOutcome(i + 1, 5_000, ts + 5 * NS, 6_000_000.0, ret))
    await writer.close()
    return {"fills": fill_id, "orders": order_id, "signals": signals, "minutes": minutes}


async def seed_empty(path) -> None:
    """A migrated database with a run but no trading data (a worker that started and stopped)."""
    writer = StoreWriter(path, [INSTRUMENT], RunInfo("test", "test", "seed"))
    await writer.start()
    await writer.close()
