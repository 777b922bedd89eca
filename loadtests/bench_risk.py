"""Hot-path benchmark: what risk and the portfolio add per market event.

Usage: `python loadtests/bench_risk.py [--json] [--events N] [FILE ...]` (default: both real recordings).

What is measured, per top-of-book change (the events the strategy acts on):
  `Portfolio.mark` + `RiskEngine.update` (breakers on mark-to-market equity) + one `RiskEngine.check` of
  an order intent + `drain()` of the records, and on every 10th event a fill applied to the portfolio
  (`Portfolio.apply_fill` + `on_order`), all timed together with `perf_counter_ns`.
The tops come from the real recording replayed through the real `Engine` (outside the timer), so prices,
spreads and their changes are real; the recording's sequence is replayed back to back (time shifted)
until `--events` samples are taken, so the p99 rests on enough data. Without the data a seeded random
walk stands in (`source` says which).
The configuration makes every limit live (position, notional, total, order size, rate limits, drawdown
and daily-loss breakers), so checks exercise the adjust and deny paths, not just approvals.

Target (issue 4): risk check + portfolio update adds <= 20 µs p99 to the hot path.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loadtests.recordings import DEFAULT_FILES, percentile  # noqa: E402


def recorded_tops(path: Path, limit: int) -> list[tuple[int, int, int]]:
    """(recv_ns, bid, ask) of every top-of-book output of the LIVE book, repeated up to `limit`."""
    from loadtests.bench_broker import recorded_events
    from worker.engine import BookTop, Engine
    from worker.instruments import DEFAULT_INSTRUMENTS

    engine = Engine(DEFAULT_INSTRUMENTS)
    tops: list[tuple[int, int, int]] = []
    for event in recorded_events(path, 0):
        for out in engine.on_event(event):
            if type(out) is BookTop:
                tops.append((out.recv_ns, out.bid, out.ask))
    if not tops:
        return tops
    span = tops[-1][0] - tops[0][0] + 1
    out, lap = list(tops), 1
    while len(out) < limit:
        out.extend((t + lap * span, b, a) for t, b, a in tops)
        lap += 1
    return out[:limit]


def synthetic_tops(n: int) -> list[tuple[int, int, int]]:
    rng = random.Random(7)
    mid, t, out = 6_000_000, 1_723_161_240 * 10**9, []
    for _ in range(n):
        mid += rng.choice((-2, -1, 0, 1, 2))
        t += rng.randint(1_000_000, 50_000_000)
        out.append((t, mid - 1, mid + rng.randint(0, 2)))
    return out


def run(tops: list[tuple[int, int, int]], market_name: str) -> dict:
    from worker.events import Market
    from worker.instruments import DEFAULT_INSTRUMENTS
    from worker.orders import Fill, Liquidity, OrderType, Side, TimeInForce, fill, new_order
    from worker.portfolio import Portfolio
    from worker.risk import Adjusted, Denied, OrderIntent, RiskConfig, RiskEngine, SymbolLimits

    market = Market(market_name)
    inst = DEFAULT_INSTRUMENTS[(market, "BTCUSDT")]
    others = [i for (m, s), i in DEFAULT_INSTRUMENTS.items() if m is market and s != "BTCUSDT"]
    instruments = [inst, *others]
    config = RiskConfig(
        default_limits=SymbolLimits(
            max_position=Decimal("0.05"),
            max_notional=Decimal("3000"),
            max_order_qty=Decimal("0.01"),
            max_order_notional=Decimal("700"),
        ),
        max_total_notional=Decimal("5000"),
        orders_per_second=Decimal(50),
        orders_burst=50,
        drawdown_reduce_bps=300,
        drawdown_halt_bps=500,
        daily_loss_limit=Decimal("250"),
    )
    risk = RiskEngine(config, instruments)
    pf = Portfolio(instruments, 10_000 * 10**8)
    rng = random.Random(1)
    sides = (Side.BUY, Side.SELL)
    times, check_times, fill_times = array("q"), array("q"), array("q")
    verdicts = {"approved": 0, "adjusted": 0, "denied": 0}
    perf = time.perf_counter_ns
    order_id = fill_id = 0
    for i, (ts, bid, ask) in enumerate(tops):
        side = sides[rng.random() < 0.5 + (0.1 if pf.qty("BTCUSDT") > 2_000 else 0.0)]
        qty = rng.choice((50, 200, 800, 1_500)) if market is Market.SPOT else rng.choice((2, 5, 8, 15))
        price = bid if side is Side.SELL else ask
        intent = OrderIntent("BTCUSDT", side, OrderType.LIMIT, TimeInForce.GTC, qty, price, ts, "bench")
        t0 = perf()
        pf.mark("BTCUSDT", bid, ask)
        risk.update(pf, ts)
        decision = risk.check(intent, pf, (bid, ask), ts)
        records = risk.drain()
        elapsed = perf() - t0
        if i % 10 == 0 and not isinstance(decision, Denied):
            # The broker builds the order and the fill (its cost, outside the timer); the portfolio's
            # part — tracking the order, applying the fill, re-marking, breakers — is timed.
            n = decision.new_qty if isinstance(decision, Adjusted) else qty
            order_id += 1
            fill_id += 1
            order = new_order(order_id, "BTCUSDT", side, OrderType.LIMIT, TimeInForce.GTC, n, price, ts)
            done = fill(order, n)
            f = Fill(fill_id, order_id, "BTCUSDT", side, price, n, 0, inst.quote_asset, Liquidity.MAKER, ts,
                     "bench", 0, 0, 0.0, 0.0, 0.0)  # fmt: skip
            t1 = perf()
            pf.on_order(order)
            pf.apply_fill(f)
            pf.on_order(done)
            risk.update(pf, ts)
            records += risk.drain()
            elapsed += perf() - t1
            fill_times.append(elapsed)
        else:
            check_times.append(elapsed)
        times.append(elapsed)
        for rec in records:
            v = getattr(rec, "verdict", None)
            if v is not None:
                verdicts[v] += 1
    ordered = sorted(times)
    checks, fills = sorted(check_times), sorted(fill_times)
    return {
        "check_only_p99_ns": percentile(checks, 0.99),
        "with_fill_p50_ns": percentile(fills, 0.50),
        "with_fill_p99_ns": percentile(fills, 0.99),
        "market": market.value,
        "events": len(times),
        "p50_ns": percentile(ordered, 0.50),
        "p99_ns": percentile(ordered, 0.99),
        "p999_ns": percentile(ordered, 0.999),
        "max_ns": ordered[-1] if ordered else 0,
        "mean_ns": sum(times) // max(len(times), 1),
        "verdicts": verdicts,
        "fills": pf.fills,
        "final_state": risk.state.value,
        "equity": pf.equity,
        "risk_reasons": dict(sorted(risk.counts.items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", type=Path, default=DEFAULT_FILES)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    for path in args.files:
        if path.exists():
            tops, source = recorded_tops(path, args.events), path.name
        else:
            tops, source = synthetic_tops(args.events), f"synthetic random walk (no {path.name})"
        market = "usdm" if "usdm" in path.name else "spot"
        results.append({"source": source, **run(tops, market)})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(
            f"{r['source']} ({r['market']}): {r['events']:,} top changes, {r['fills']:,} fills\n"
            f"  mark+update+check+drain(+fill every 10th)  p50 {r['p50_ns'] / 1000:.1f} µs"
            f"  p99 {r['p99_ns'] / 1000:.1f} µs  p99.9 {r['p999_ns'] / 1000:.1f} µs"
            f"  max {r['max_ns'] / 1000:.1f} µs  mean {r['mean_ns'] / 1000:.1f} µs  (target p99 <= 20)\n"
            f"  events without a fill p99 {r['check_only_p99_ns'] / 1000:.1f} µs;"
            f" with a fill p50 {r['with_fill_p50_ns'] / 1000:.1f} µs"
            f" p99 {r['with_fill_p99_ns'] / 1000:.1f} µs\n"
            f"  verdicts {r['verdicts']}  final state {r['final_state']}\n"
            f"  reasons {r['risk_reasons']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
