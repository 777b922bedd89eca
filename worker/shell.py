"""Shell pieces shared by `run` (live) and `replay`: build the engine, open the store, recover, gate.

Design and invariants:
- `make_engine(config, instruments, traded, schedule)` builds the books for every instrument and the
  trading core for the traded ones from the validated configuration sections.
- `open_store` checks the file BEFORE anything else touches it (newer schema, another application's
  file, corrupt file, read-only volume -> `StoreError`, the file untouched), records the run (code
  version, config digest, canonical config JSON) and returns the writer and the `RecoveredState`.
- `restore(engine, state, ts_ns, submit)`: open orders left by the previous run are cancelled with reason
  `restart` (never assumed filled) and written; then `engine.restore(...)` rebuilds portfolio, P&L,
  breakers and id counters from the persisted fills and breakers; then the persisted risk state
  (`risk_state`: peak since the last reset, day anchor, order-count windows) replaces the breaker rows and
  the all-time peak, which remain the fallback for a file without one. Its outputs go to `submit`.
- `RiskStateSink` keeps that risk state in the file: written on every breaker / state change, risk
  decision and equity sample when it changed, and once more at shutdown.
- `StorageLagGate.check(ts_ns)`: when `writer.is_lagging` flips, `engine.set_storage_lag(lagging, ts_ns)`
  so the risk engine opens no positions (reason `storage_lag`) until the writer catches up; each flip is
  also a `storage_lag` system event.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from worker.calendar import CalendarClock
from worker.config import WorkerConfig
from worker.engine import Engine
from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import Instrument
from worker.store import db, recovery
from worker.store.records import RiskState, SystemEvent
from worker.store.writer import RunInfo, StoreWriter
from worker.trader import ScheduledOrder, Trader

log = logging.getLogger("worker.shell")


def code_version() -> str:
    """Package version plus the commit when known ($QF_CODE_VERSION, Fly's image ref, or .git)."""
    for name in ("QF_CODE_VERSION", "FLY_IMAGE_REF"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        version = metadata.version("quantumflow")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (root / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = root / head[5:]
            head = ref.read_text().strip() if ref.exists() else ""
        if head:
            version = f"{version}+g{head[:12]}"
    except OSError:
        pass
    return version


def make_trader(
    config: WorkerConfig,
    traded: Mapping[tuple[Market, str], Instrument],
    schedule: Sequence[ScheduledOrder] | None = None,
) -> Trader:
    """The trading half (features, strategy, risk, broker, portfolio, calendar) for `traded` symbols;
    `schedule` (scripted orders) replaces the strategy's orders."""
    return Trader(
        list(traded.values()),
        trading=config.trading,
        features=config.features,
        strategy=config.strategy,
        risk=config.risk,
        broker=config.broker,
        calendar=CalendarClock(config.calendar) if config.calendar is not None else None,
        schedule=schedule,
    )


def make_engine(
    config: WorkerConfig,
    instruments: Mapping[tuple[Market, str], Instrument],
    traded: Mapping[tuple[Market, str], Instrument] | None = None,
    schedule: Sequence[ScheduledOrder] | None = None,
) -> Engine:
    """Books for `instruments`; the trading core for `traded` (default: all of them)."""
    trader = make_trader(config, instruments if traded is None else traded, schedule)
    return Engine(instruments, depth=config.depth, max_buffer=config.max_buffer, trader=trader)


def preflight(path: str | os.PathLike[str]) -> None:
    """Refuse an unusable database before the network is touched (exchangeInfo, streams).

    A live worker also refuses a file that holds replay runs: it rebuilds its portfolio from EVERY fill in
    the file, so a replay's fills would become live positions (`replay` writes ./quantumflow-replay.db by
    default, but `--db` can point it anywhere). Raises `db.MixedRunsError` naming the runs and what to do
    instead."""
    conn = db.open_writer_sync(path)
    try:
        rows = conn.execute("SELECT run_id FROM runs WHERE mode = 'replay' ORDER BY run_id").fetchall()
    finally:
        conn.close()
    if rows:
        ids = ", ".join(str(r[0]) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
        raise db.MixedRunsError(
            f"{path} holds {len(rows)} replay run(s) (run id {ids}); a live worker rebuilds its portfolio "
            "from every fill in the file, so it refuses it: give the live worker its own database "
            "(--db PATH or $QF_DB) and replays another (python -m worker replay ... --db OTHER)"
        )


async def open_store(
    config: WorkerConfig,
    instruments: Mapping[tuple[Market, str], Instrument],
    mode: str,
    path: str | os.PathLike[str] | None = None,
    run_extra: Mapping[str, Any] | None = None,
) -> tuple[StoreWriter, recovery.RecoveredState]:
    """Open the store and record the run; `run_extra` keys are added to the run's `config_json` (not to
    its digest), e.g. a replay's `replay_of`, so a later replay can tell a crash re-run from another input."""
    config_json = config.canonical_json()
    if run_extra:
        config_json = orjson.dumps(
            {**orjson.loads(config_json), **run_extra}, option=orjson.OPT_SORT_KEYS
        ).decode()
    run = RunInfo(mode, code_version(), config.digest(), config_json)
    writer = StoreWriter(path or config.db, instruments.values(), run, config.store)
    try:
        state = await writer.start()
    except sqlite3.Error as exc:  # anything db.py did not already turn into a StoreError
        raise db.StoreError(f"cannot use {path or config.db}: {exc}") from exc
    previous = state.previous_run
    log.info(
        "store open",
        extra={
            "db": str(path or config.db),
            "run_id": writer.run_id,
            "schema_version": state.schema_version,
            "fills": state.fills,
            "open_orders": len(state.open_orders),
            "tripped_breakers": [b.breaker for b in state.tripped_breakers],
            "previous_run_crashed": bool(previous and previous.get("stop_reason") is None),
        },
    )
    return writer, state


def restore(
    engine: Any,
    state: recovery.RecoveredState,
    ts_ns: int,
    submit: Callable[[list[Any]], None],
    db_path: str | os.PathLike[str] | None = None,
) -> list[Any]:
    """Cancel what the previous run left open, then hand the engine its recovered state."""
    cancels = recovery.restart_cancellations(state, ts_ns)
    if cancels:
        log.warning("cancelling orders left open by the previous run", extra={"orders": len(cancels)})
        submit(cancels)
    outputs: list[Any] = []
    if getattr(engine, "trader", None) is not None and db_path is not None:
        fills: list[Any] = []
        funding: list[Any] = []
        conn = db.connect_readonly(db_path)
        try:
            if state.fills:
                fills = list(recovery.iter_fills(conn))
            funding = list(recovery.iter_funding(conn))
        finally:
            conn.close()
        if fills or funding:
            log.info("portfolio rebuilt from fills", extra={"fills": len(fills), "funding": len(funding)})
        saved = state.risk_state
        outputs = engine.restore(
            fills,
            funding=funding,
            last_order_id=state.max_order_id,
            last_fill_id=state.max_fill_id,
            breakers=() if saved else state.breakers.values(),
            equity_peak=state.equity_peak,
            ts_ns=ts_ns,
        )
        if saved:
            outputs.extend(restore_risk_state(engine.trader.risk, saved, state, ts_ns))
    if outputs:
        submit(outputs)
    return outputs


def restore_risk_state(
    risk: Any, saved: Mapping[str, Any], state: recovery.RecoveredState, ts_ns: int
) -> list[Any]:
    """Load the persisted `RiskEngine.export_state()`: breakers, the drawdown peak since the last reset or
    cool-down, the UTC day's opening equity and Binance's order-count windows all carry over.

    The pause is not restored: the calendar re-derives it from the time of the first event (a Shabbat that
    ended while the worker was down must not keep it paused). A state this code cannot read falls back to
    the persisted breaker rows with the all-time equity peak, and says so."""
    try:
        risk.restore_state({**saved, "paused": None}, ts_ns)
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        log.error("persisted risk state unreadable (%s): breakers restored from their rows", exc)
        risk.restore_breakers(state.breakers.values(), ts_ns, state.equity_peak)
    log.info(
        "risk state restored",
        extra={"state": risk.state.value, "peak": risk.peak, "day_open_equity": risk.day_open_equity},
    )
    return list(risk.drain())


class RiskStateSink:
    """`(event, outputs) -> None`: persist the risk engine's state whenever it may have changed.

    Triggers: a breaker or trading-state change, a risk decision (the order-count windows) and every
    equity sample (the peak and the day anchor move with equity); the state is exported only then and
    submitted only when it differs from the last one written, so the hot path pays one dict lookup per
    output. `save()` writes it unconditionally-if-changed (operator actions, shutdown)."""

    TRIGGERS = frozenset({"BreakerChanged", "TradingStateChanged", "RiskDecisionEvent", "EquitySample"})

    def __init__(self, engine: Any, submit: Callable[[Any], Any]) -> None:
        trader = getattr(engine, "trader", None)
        self.risk = None if trader is None else trader.risk
        self.engine = engine
        self.submit = submit
        self.saves = 0
        self._last: dict[str, Any] | None = None
        self._is_trigger: dict[type, bool] = {}

    def __call__(self, event: Any, outputs: list[Any]) -> None:
        if self.risk is None:
            return
        hits = self._is_trigger
        for out in outputs:
            kind = type(out)
            hit = hits.get(kind)
            if hit is None:
                hit = hits[kind] = kind.__name__ in self.TRIGGERS
            if hit:
                self.save(getattr(out, "ts_ns", None))
                return

    def save(self, ts_ns: int | None = None) -> bool:
        if self.risk is None:
            return False
        state = self.risk.export_state()
        if state == self._last:
            return False
        self._last = state
        ts = ts_ns if ts_ns is not None else int(getattr(self.engine, "last_recv_ns", 0) or 0)
        self.submit(RiskState(ts, state))
        self.saves += 1
        return True


def apply_operator_action(engine: Engine, action: recovery.OperatorAction, ts_ns: int) -> list[Any] | None:
    """Apply one operator action; None when it is not one we know (the action then stays pending).

    `risk_reset` clears the breakers through `RiskEngine.reset`, re-anchored at the current equity."""
    trader = engine.trader
    if trader is None or action.action != "risk_reset":
        return None
    reason = f"operator {action.operator}: {action.reason}".strip()
    trader.risk.reset(ts_ns, reason, trader.portfolio.equity)
    return list(trader.risk.drain())


def trading_state(engine: Engine) -> tuple[str, str]:
    """(state, reason) of the risk engine; ACTIVE for a market-only engine."""
    if engine.trader is None:
        return "ACTIVE", ""
    risk = engine.trader.risk
    return risk.state.value, risk.state_reason()


class StorageLagGate:
    """Tells the engine when the writer falls behind and when it caught up (edge-triggered)."""

    def __init__(self, engine: Any, writer: StoreWriter, emit: Callable[[list[Any]], None]) -> None:
        self.engine = engine
        self.writer = writer
        self.emit = emit
        self.lagging = False
        self.flips = 0

    def check(self, ts_ns: int) -> None:
        lagging = self.writer.is_lagging
        if lagging == self.lagging:
            return
        self.lagging = lagging
        self.flips += 1
        detail = {
            "lag_s": round(self.writer.lag_seconds(), 3),
            "queue": self.writer.queue_depth,
            "error": self.writer.stats.last_error if lagging else "",
        }
        if lagging:
            log.error("store writer lagging: no new positions until it catches up", extra=detail)
        else:
            log.info("store writer caught up", extra=detail)
        outputs = self.engine.set_storage_lag(lagging, ts_ns)
        severity = "error" if lagging else "info"
        kind = "storage_lag" if lagging else "storage_caught_up"
        self.emit([SystemEvent(ts_ns, kind, severity, "", "", detail), *outputs])
