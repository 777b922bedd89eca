"""The paper venue's swappable models: latency, queue position and fees (hftbacktest's separation).

Design:
- Each model is small, pure and testable alone; `BrokerConfig` picks them by name and `worker.broker`
  composes them. Randomness comes only from `random.Random(seed)` instances owned by a model, so a
  replay with the same seed and the same events draws the same latencies.
- Latency is drawn in integer nanoseconds: `constant`, `lognormal` (median, log-space sigma) or `normal`
  (median, sigma as a fraction of the median), always clipped to `[min_ns, max_ns]`.
- Queue models track `front`, the lots ahead of our resting order at its price:
  - `conservative` (hftbacktest `RiskAverseQueueModel`): only trades at our price advance it; a depth
    decrease only caps it at the new depth (the level cannot hold more ahead of us than it holds).
  - `probabilistic` (hftbacktest `PowerProbQueueModel` family): a depth decrease not explained by trades
    comes from ahead of us with probability 1 - p, p = f(back) / (f(back) + f(front)), f(x) = x**n;
    the expected share is removed from `front`.
- Invariant both keep: `0 <= front`, and for the same event stream the probabilistic `front` is never
  larger than the conservative one (each step is monotone and the probabilistic step only removes more),
  so the conservative model never fills more.
- Fees are rates in 1e-8 units (exact integers); a fee is `round_half_up(notional * rate)` in 1e-8 of the
  fee asset, per fill, like Binance's commission rounded to 8 decimals.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal

from worker.errors import ConfigError
from worker.events import Market

MS = 1_000_000  # ns per ms
RATE_SCALE = 10**8  # fee rates are integers of 1e-8


# --- latency -----------------------------------------------------------------------------------------
LATENCY_KINDS = ("constant", "lognormal", "normal")


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """One latency distribution. `sigma`: lognormal log-space sigma; normal: std as a fraction of median."""

    kind: str = "constant"
    median_ns: int = 0
    sigma: float = 0.0
    min_ns: int = 0
    max_ns: int = 10_000 * MS

    def validate(self, name: str) -> None:
        if self.kind not in LATENCY_KINDS:
            raise ConfigError(f"{name}.kind", f"one of {', '.join(LATENCY_KINDS)}, got {self.kind!r}")
        if not isinstance(self.median_ns, int) or self.median_ns < 0:
            raise ConfigError(f"{name}.median_ns", f"an integer >= 0, got {self.median_ns!r}")
        if not (isinstance(self.sigma, int | float) and math.isfinite(self.sigma) and 0 <= self.sigma <= 5):
            raise ConfigError(f"{name}.sigma", f"a number in [0, 5], got {self.sigma!r}")
        if not (isinstance(self.min_ns, int) and isinstance(self.max_ns, int) and self.min_ns >= 0):
            raise ConfigError(f"{name}.min_ns/max_ns", "integers >= 0")
        if not self.min_ns <= self.median_ns <= self.max_ns:
            raise ConfigError(f"{name}", f"min_ns <= median_ns <= max_ns, got {self}")

    @staticmethod
    def parse(text: str, name: str = "latency") -> LatencySpec:
        """`140ms`, `constant:140ms`, `lognormal:140ms:0.1`, `normal:140ms:0.05` (ms or us or ns units)."""
        parts = text.strip().split(":")
        if len(parts) == 1:
            parts = ["constant", parts[0]]
        kind = parts[0]
        try:
            median = _duration_ns(parts[1])
            sigma = float(parts[2]) if len(parts) > 2 else 0.0
        except (IndexError, ValueError, ArithmeticError):
            raise ConfigError(name, f"KIND:DURATION[:SIGMA] like lognormal:140ms:0.1, got {text!r}") from None
        lo = median if kind == "constant" else median // 2
        spec = LatencySpec(kind, median, sigma, lo, max(median * 4, median))
        spec.validate(name)
        return spec


def _duration_ns(text: str) -> int:
    for suffix, scale in (("ms", MS), ("us", 1_000), ("ns", 1), ("s", 1_000_000_000)):
        if text.endswith(suffix):
            return int(Decimal(text[: -len(suffix)]) * scale)
    return int(Decimal(text) * MS)


class LatencyModel:
    """Draws latencies from a `LatencySpec` with its own seeded generator."""

    __slots__ = ("_rng", "spec")

    def __init__(self, spec: LatencySpec, seed: int) -> None:
        self.spec = spec
        self._rng = random.Random(seed)

    def draw(self) -> int:
        spec = self.spec
        if spec.kind == "constant" or spec.sigma == 0:
            value = spec.median_ns
        elif spec.kind == "lognormal":
            value = int(spec.median_ns * math.exp(self._rng.gauss(0.0, spec.sigma)))
        else:
            value = int(spec.median_ns * (1.0 + self._rng.gauss(0.0, spec.sigma)))
        return min(max(value, spec.min_ns), spec.max_ns)


# São Paulo (Fly region gru) to Binance's matching engine in Tokyo (AWS ap-northeast-1): the fibre path
# runs through North America, RTT about 250-300 ms; we take 270 ms, i.e. 135 ms one way. Order entry and
# cancel add ~5 ms of gateway + matching time (median 140 ms, lognormal sigma 0.10, tail clipped at
# 400 ms); market data is the one-way 135 ms with a little jitter.
DEFAULT_ENTRY_LATENCY = LatencySpec("lognormal", 140 * MS, 0.10, 125 * MS, 400 * MS)
DEFAULT_CANCEL_LATENCY = LatencySpec("lognormal", 140 * MS, 0.10, 125 * MS, 400 * MS)
DEFAULT_MD_LATENCY = LatencySpec("lognormal", 135 * MS, 0.05, 125 * MS, 300 * MS)


# --- queue position ----------------------------------------------------------------------------------
class QueuePos:
    """Where one resting order stands: `front` lots ahead (float for the probabilistic model)."""

    __slots__ = ("front", "traded")

    def __init__(self, depth: int) -> None:
        self.front: float = depth
        self.traded = 0  # lots traded at our price since the last depth change (hftbacktest's q[1])


class ConservativeQueue:
    """Only trades at our price move us forward; a shrinking level only caps what can be ahead."""

    name = "conservative"
    version = 1
    __slots__ = ()

    def on_trade(self, pos: QueuePos, qty: int) -> None:
        pos.front = max(pos.front - qty, 0)
        pos.traded += qty

    def on_depth(self, pos: QueuePos, prev_qty: int, new_qty: int) -> None:
        pos.traded = 0
        if pos.front > new_qty:
            pos.front = new_qty

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


class PowerProbQueue:
    """Depth decreases advance us with probability 1 - f(back)/(f(back)+f(front)), f(x) = x**n."""

    name = "probabilistic"
    version = 1
    __slots__ = ("n",)

    def __init__(self, n: float = 3.0) -> None:
        self.n = n

    def on_trade(self, pos: QueuePos, qty: int) -> None:
        pos.front = max(pos.front - qty, 0)
        pos.traded += qty

    def on_depth(self, pos: QueuePos, prev_qty: int, new_qty: int) -> None:
        # Trades at our price already moved `front`; the book's decrease includes them, so only the
        # remainder is cancellations (hftbacktest subtracts the same way to avoid double counting).
        chg = prev_qty - new_qty - pos.traded
        pos.traded = 0
        front = pos.front
        if chg > 0:
            back = max(prev_qty - front, 0.0)
            fb, ff = back**self.n, front**self.n
            prob = fb / (fb + ff) if fb + ff > 0 else 1.0  # share of the decrease taken from behind us
            est = front - (1.0 - prob) * chg + min(back - prob * chg, 0.0)
            front = max(est, 0.0)
        pos.front = min(front, new_qty)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}(n={self.n:g})"


QueueModel = ConservativeQueue | PowerProbQueue
QUEUE_MODELS = ("conservative", "probabilistic")


def make_queue_model(name: str, power_n: float = 3.0) -> QueueModel:
    if name == "conservative":
        return ConservativeQueue()
    if name == "probabilistic":
        return PowerProbQueue(power_n)
    raise ConfigError("queue_model", f"one of {', '.join(QUEUE_MODELS)}, got {name!r}")


# --- fees --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeeSchedule:
    """Maker and taker rates as decimals (0.001 = 0.1%); must be whole multiples of 1e-8."""

    maker: Decimal
    taker: Decimal

    def validate(self, name: str) -> None:
        for label, rate in (("maker", self.maker), ("taker", self.taker)):
            if not isinstance(rate, Decimal) or not Decimal("-0.001") <= rate <= Decimal("0.01"):
                raise ConfigError(f"{name}.{label}", f"a Decimal rate in [-0.001, 0.01], got {rate!r}")
            if (rate * RATE_SCALE) != (rate * RATE_SCALE).to_integral_value():
                raise ConfigError(f"{name}.{label}", f"a multiple of 1e-8, got {rate}")

    def rate_units(self, maker: bool) -> int:
        """The rate in 1e-8 units, exact."""
        return int((self.maker if maker else self.taker) * RATE_SCALE)


# Binance's base rates (no BNB discount, VIP 0): spot 0.1% / 0.1%, USD-M futures 0.02% / 0.05%.
DEFAULT_FEES: dict[Market, FeeSchedule] = {
    Market.SPOT: FeeSchedule(Decimal("0.001"), Decimal("0.001")),
    Market.USDM: FeeSchedule(Decimal("0.0002"), Decimal("0.0005")),
}


def fee_units(amount_units: int, rate_units: int) -> int:
    """Fee on an amount in 1e-8 units: amount * rate / 1e8, rounded half up to a whole 1e-8 unit."""
    return (amount_units * rate_units * 2 + RATE_SCALE) // (2 * RATE_SCALE)
