"""The SQLite schema: the one source of truth read by the worker, the API and the jobs.

Design and invariants:
- Versioned migrations, recorded in `PRAGMA user_version`; `PRAGMA application_id` marks the file as
  ours. A file with a newer version, or another application's id, is refused and never touched.
- Every table is STRICT: a float can never slip into a money, price or quantity column.
- Exact numbers are INTEGER: prices in ticks, quantities in lots, money in 1e-8 units of the quote asset
  (`meta.money_scale`). `instruments` holds each symbol's tick and step size as decimal TEXT, so a reader
  renders `price_ticks * tick_size` exactly. Floats (REAL) only for statistics: mids, slippage, markouts,
  signal values.
- Time is `*_ns`: integer ns since the epoch on the engine's clock (the event receive time), so a replay
  into a fresh database writes the same rows a live run over the same messages would. Only `runs`,
  `heartbeat.wall_ns` and `operator_actions` carry wall-clock time.
- Rollups and running totals (`*_bars`, `totals_*`, `positions`, `event_counts`, `*_latest`) are updated
  by the writer in the same transaction as the rows they summarize, so a reader never scans raw history
  and never sees a total that disagrees with the rows it sums.
- Bars: one table per series with `resolution_s` in (1, 60, 3600) and `bucket_s` = the bucket's start
  (epoch seconds, engine clock). Resolution 1 is the raw 1 s sample; retention deletes old resolution-1
  rows only (their 60 s and 3600 s bars are written in the same transaction, so they always exist).
- Order statuses are `worker.orders` class names: Pending, PartiallyFilled, Filled, Cancelled, Rejected,
  Denied. `side` is +1 (buy) / -1 (sell).

Reader recipes (all index-backed; none scans history):
- equity chart: `SELECT bucket_s, open, high, low, close, drawdown FROM equity_bars WHERE resolution_s = ?
  AND bucket_s BETWEEN ? AND ? ORDER BY bucket_s` with the coarsest of 1/60/3600 that gives enough points
  (resolution 1 only exists for the last `retention_s`).
- P&L now: the latest `equity_bars` row at resolution 1 (or 60), plus `totals_symbol` sums; positions:
  `positions` marked with `book_top_latest` (long at bid, short at ask).
- fills/orders/signals pages: keyset on the integer id, e.g. `WHERE symbol = ? AND (ts_ns, fill_id) < (?, ?)
  ORDER BY ts_ns DESC, fill_id DESC LIMIT ?` (indexes `fills_symbol_ts`, `fills_ts`, ...).
- one order with its history: `orders` by `order_id`, `order_events` by `(order_id, seq)`.
- status: `heartbeat` (wall_ns freshness, trading_state, sync_json, writer lag), `event_counts` (gaps,
  resyncs, reconnects), `book_top_latest` (last prices), `breakers`, last `trading_state_events` row.
- risk events: `risk_decisions` WHERE verdict != 'approved' (partial index), `breaker_events`,
  `trading_state_events`; the risk engine's current anchors (peak, day-open equity): `risk_state`.
  Stats: `totals_symbol`, `totals_hourly`, `totals_markouts`, equity bars.
- money to decimal: `value / meta.money_scale`; price: `ticks * instruments.tick_size`; qty: `lots *
  instruments.step_size` (use Decimal, not float, for display of exact values).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

APPLICATION_ID = 0x51464C57  # "QFLW": marks a QuantumFlow trades database
MONEY_SCALE = 10**8
RESOLUTIONS_S = (1, 60, 3600)
OPEN_STATUSES = ("Pending", "PartiallyFilled")
TRADING_STATES = ("ACTIVE", "REDUCING", "HALTED", "PAUSED")


class SchemaError(RuntimeError):
    """The file is not a database this code may open or migrate; nothing was written to it."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per traded instrument: how readers turn ticks/lots into decimals.
CREATE TABLE instruments (
    market        TEXT NOT NULL,             -- 'spot' | 'usdm'
    symbol        TEXT NOT NULL,
    tick_size     TEXT NOT NULL,             -- decimal text, e.g. '0.01'
    step_size     TEXT NOT NULL,             -- decimal text, e.g. '0.00001'
    min_notional  TEXT NOT NULL,
    base_asset    TEXT NOT NULL,
    quote_asset   TEXT NOT NULL,
    price_decimals INTEGER NOT NULL,         -- digits after the point of tick_size
    qty_decimals  INTEGER NOT NULL,
    PRIMARY KEY (market, symbol)
) STRICT;

-- Each worker start (live or replay).
CREATE TABLE runs (
    run_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    mode          TEXT NOT NULL,             -- 'live' | 'replay' | 'test'
    code_version  TEXT NOT NULL,
    config_digest TEXT NOT NULL,             -- sha256 of the canonical config
    config_json   TEXT NOT NULL,
    started_wall_ns INTEGER NOT NULL,
    ended_wall_ns INTEGER,
    first_event_ns INTEGER,                  -- engine clock
    last_event_ns INTEGER,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    stop_reason   TEXT                       -- NULL while running or after a crash
) STRICT;

CREATE TABLE orders (
    order_id      INTEGER PRIMARY KEY,       -- engine-assigned, unique across runs
    run_id        INTEGER NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    side          INTEGER NOT NULL CHECK (side IN (1, -1)),
    type          TEXT NOT NULL,             -- LIMIT | MARKET | STOP_MARKET
    tif           TEXT NOT NULL,             -- GTC | IOC | GTX
    qty           INTEGER NOT NULL,          -- lots
    price         INTEGER,                   -- ticks; NULL for market orders
    tag           TEXT NOT NULL,
    status        TEXT NOT NULL,             -- a worker.orders status class name
    filled_qty    INTEGER NOT NULL,
    reason        TEXT,                      -- Cancelled/Rejected/Denied reason
    created_ns    INTEGER NOT NULL,
    updated_ns    INTEGER NOT NULL,
    transitions   INTEGER NOT NULL           -- number of rows in order_events
) STRICT;
CREATE INDEX orders_symbol_created ON orders (symbol, created_ns, order_id);
CREATE INDEX orders_created ON orders (created_ns, order_id);
CREATE INDEX orders_status ON orders (status, order_id);
CREATE INDEX orders_open ON orders (order_id) WHERE status IN ('Pending', 'PartiallyFilled');

-- Every state an order passed through, in order (seq 1 = its first state).
CREATE TABLE order_events (
    order_id      INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    ts_ns         INTEGER NOT NULL,
    status        TEXT NOT NULL,
    filled_qty    INTEGER NOT NULL,
    reason        TEXT,
    run_id        INTEGER NOT NULL,
    PRIMARY KEY (order_id, seq),
    UNIQUE (order_id, status, filled_qty)    -- a transition is recorded once, even if replayed twice
) STRICT, WITHOUT ROWID;

CREATE TABLE fills (
    fill_id       INTEGER PRIMARY KEY,       -- engine-assigned, unique across runs
    order_id      INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    side          INTEGER NOT NULL CHECK (side IN (1, -1)),
    price         INTEGER NOT NULL,          -- ticks
    qty           INTEGER NOT NULL CHECK (qty > 0),  -- lots
    notional      INTEGER NOT NULL,          -- money units
    fee           INTEGER NOT NULL,          -- money units of fee_asset
    fee_asset     TEXT NOT NULL,
    fee_quote     INTEGER NOT NULL,          -- the fee in quote money (= fee when fee_asset is the quote)
    liquidity     TEXT NOT NULL,             -- maker | taker
    realized_pnl  INTEGER NOT NULL,          -- money; gross of fees (average-cost), 0 when opening
    position_after INTEGER NOT NULL,         -- signed lots after this fill
    cost_after    INTEGER NOT NULL,          -- signed money: cost basis of the position after this fill
    ts_ns         INTEGER NOT NULL,
    model         TEXT NOT NULL,
    latency_ns    INTEGER NOT NULL,
    queue_ahead   INTEGER NOT NULL,
    decision_mid  REAL NOT NULL,             -- ticks (float: statistics only)
    fill_mid      REAL NOT NULL,
    slippage_bps  REAL NOT NULL              -- signed: positive is worse than the decision mid
) STRICT;
CREATE INDEX fills_symbol_ts ON fills (symbol, ts_ns, fill_id);
CREATE INDEX fills_ts ON fills (ts_ns, fill_id);
CREATE INDEX fills_order ON fills (order_id);

CREATE TABLE markouts (
    fill_id       INTEGER NOT NULL,
    horizon_ms    INTEGER NOT NULL,
    ts_ns         INTEGER NOT NULL,
    symbol        TEXT NOT NULL,
    mid           REAL NOT NULL,             -- ticks at fill time + horizon
    markout_bps   REAL NOT NULL,             -- signed: positive is in our favour
    PRIMARY KEY (fill_id, horizon_ms)
) STRICT, WITHOUT ROWID;

-- Current position per instrument, maintained in the same transaction as the fills.
CREATE TABLE positions (
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    qty           INTEGER NOT NULL,          -- signed lots
    cost          INTEGER NOT NULL,          -- signed money: cost basis of the open quantity
    realized_pnl  INTEGER NOT NULL,          -- money, gross of fees
    fees          INTEGER NOT NULL,          -- money (quote), sum of fills.fee_quote
    funding       INTEGER NOT NULL DEFAULT 0,  -- money credited by USD-M funding (negative = paid)
    fills         INTEGER NOT NULL,
    last_fill_id  INTEGER NOT NULL,
    updated_ns    INTEGER NOT NULL,
    PRIMARY KEY (market, symbol)
) STRICT;

-- USD-M funding settlements (what each funding event paid or credited one position).
CREATE TABLE funding_payments (
    symbol        TEXT NOT NULL,
    funding_ns    INTEGER NOT NULL,
    market        TEXT NOT NULL,
    rate_e8       INTEGER NOT NULL,          -- funding rate in 1e-8 units
    mark_price    INTEGER NOT NULL,          -- ticks
    position_qty  INTEGER NOT NULL,          -- signed lots at settlement
    amount        INTEGER NOT NULL,          -- money credited (negative = paid)
    run_id        INTEGER NOT NULL,
    PRIMARY KEY (symbol, funding_ns)
) STRICT, WITHOUT ROWID;

-- The portfolio's own periodic view (checked against a rebuild from fills on restart).
CREATE TABLE position_snapshots (
    snapshot_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    qty           INTEGER NOT NULL,
    cost          INTEGER NOT NULL,
    realized_pnl  INTEGER NOT NULL,
    fees          INTEGER NOT NULL,
    last_fill_id  INTEGER NOT NULL           -- the snapshot includes fills up to this id
) STRICT;
CREATE INDEX position_snapshots_symbol ON position_snapshots (market, symbol, snapshot_id);

-- Equity: resolution 1 = raw 1 s samples (deleted after the retention age), 60 and 3600 = rollups.
-- open/high/low/close of equity; the other money columns are the values at the bucket's last sample.
CREATE TABLE equity_bars (
    resolution_s  INTEGER NOT NULL,
    bucket_s      INTEGER NOT NULL,          -- bucket start, epoch seconds (engine clock)
    open          INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    low           INTEGER NOT NULL,
    close         INTEGER NOT NULL,
    cash          INTEGER NOT NULL,
    realized_pnl  INTEGER NOT NULL,
    unrealized_pnl INTEGER NOT NULL,
    fees          INTEGER NOT NULL,
    exposure      INTEGER NOT NULL,          -- gross notional of open positions
    peak          INTEGER NOT NULL,          -- highest equity ever, up to the bucket's last sample
    drawdown      INTEGER NOT NULL,          -- close - peak (<= 0)
    max_drawdown  INTEGER NOT NULL,          -- most negative (equity - peak) inside the bucket
    samples       INTEGER NOT NULL,
    last_ns       INTEGER NOT NULL,
    PRIMARY KEY (resolution_s, bucket_s)
) STRICT, WITHOUT ROWID;

-- Book tops: resolution 1 = raw 1 s samples, 60 and 3600 = rollups. mid2 = bid + ask in ticks (exact).
CREATE TABLE book_top_bars (
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    resolution_s  INTEGER NOT NULL,
    bucket_s      INTEGER NOT NULL,
    mid2_open     INTEGER NOT NULL,
    mid2_high     INTEGER NOT NULL,
    mid2_low      INTEGER NOT NULL,
    mid2_close    INTEGER NOT NULL,
    bid_price     INTEGER NOT NULL,          -- at the last sample
    bid_qty       INTEGER NOT NULL,
    ask_price     INTEGER NOT NULL,
    ask_qty       INTEGER NOT NULL,
    spread_min    INTEGER NOT NULL,          -- ticks
    spread_max    INTEGER NOT NULL,
    spread_sum    INTEGER NOT NULL,          -- mean = spread_sum / samples
    samples       INTEGER NOT NULL,
    last_ns       INTEGER NOT NULL,
    PRIMARY KEY (market, symbol, resolution_s, bucket_s)
) STRICT, WITHOUT ROWID;

-- Latest top of book per instrument (the status endpoint's last prices).
CREATE TABLE book_top_latest (
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    ts_ns         INTEGER NOT NULL,
    bid_price     INTEGER NOT NULL,
    bid_qty       INTEGER NOT NULL,
    ask_price     INTEGER NOT NULL,
    ask_qty       INTEGER NOT NULL,
    microprice    REAL,
    imbalance     REAL,
    PRIMARY KEY (market, symbol)
) STRICT;

CREATE TABLE signals (
    signal_id     INTEGER PRIMARY KEY,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    model         TEXT NOT NULL,             -- strategy name/version
    value         REAL NOT NULL,             -- raw score
    direction     INTEGER NOT NULL CHECK (direction IN (-1, 0, 1)),
    confidence    REAL NOT NULL,             -- 0..1
    mid           REAL,                      -- ticks at signal time
    order_id      INTEGER,                   -- the order it led to, if any
    features_json TEXT NOT NULL              -- the feature values it saw
) STRICT;
CREATE INDEX signals_symbol_ts ON signals (symbol, ts_ns, signal_id);
CREATE INDEX signals_ts ON signals (ts_ns, signal_id);

-- What happened after a signal (for the calibration chart), written when the horizon has passed.
CREATE TABLE signal_outcomes (
    signal_id     INTEGER NOT NULL,
    horizon_ms    INTEGER NOT NULL,
    ts_ns         INTEGER NOT NULL,
    mid           REAL NOT NULL,
    return_bps    REAL NOT NULL,             -- signed in the signal's direction
    PRIMARY KEY (signal_id, horizon_ms)
) STRICT, WITHOUT ROWID;

CREATE TABLE risk_decisions (
    decision_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    verdict       TEXT NOT NULL CHECK (verdict IN ('approved', 'adjusted', 'denied')),
    reason        TEXT NOT NULL,             -- reason code, e.g. 'max_position', 'storage_lag'
    order_id      INTEGER,
    side          INTEGER,
    qty_requested INTEGER,
    qty_approved  INTEGER,
    price         INTEGER,
    detail_json   TEXT NOT NULL
) STRICT;
CREATE INDEX risk_decisions_ts ON risk_decisions (ts_ns, decision_id);
CREATE INDEX risk_decisions_not_approved ON risk_decisions (ts_ns, decision_id) WHERE verdict != 'approved';

-- Trading state changes (ACTIVE/REDUCING/HALTED/PAUSED) with their cause.
CREATE TABLE trading_state_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED', 'PAUSED')),
    previous      TEXT,
    reason        TEXT NOT NULL,
    source        TEXT NOT NULL,             -- 'risk' | 'calendar' | 'operator' | 'restart' | 'storage'
    detail_json   TEXT NOT NULL
) STRICT;
CREATE INDEX trading_state_events_ts ON trading_state_events (ts_ns, event_id);

-- Persisted breaker state: one row per breaker, survives restarts (only an operator reset clears a trip).
CREATE TABLE breakers (
    breaker       TEXT PRIMARY KEY,          -- e.g. 'daily_loss', 'drawdown', 'storage_lag'
    tripped       INTEGER NOT NULL CHECK (tripped IN (0, 1)),
    reason        TEXT NOT NULL,
    since_ns      INTEGER NOT NULL,
    updated_ns    INTEGER NOT NULL,
    detail_json   TEXT NOT NULL
) STRICT;

CREATE TABLE breaker_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    breaker       TEXT NOT NULL,
    tripped       INTEGER NOT NULL CHECK (tripped IN (0, 1)),
    reason        TEXT NOT NULL,
    detail_json   TEXT NOT NULL
) STRICT;
CREATE INDEX breaker_events_ts ON breaker_events (ts_ns, event_id);

-- Actions written by `python -m worker risk reset`; the worker applies and stamps them.
CREATE TABLE operator_actions (
    action_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    action        TEXT NOT NULL CHECK (action IN ('risk_reset')),
    reason        TEXT NOT NULL,
    operator      TEXT NOT NULL,
    requested_wall_ns INTEGER NOT NULL,
    applied_wall_ns INTEGER,                 -- NULL until the worker has applied it
    applied_run_id INTEGER,
    applied_ns    INTEGER                    -- engine clock when applied
) STRICT;
CREATE INDEX operator_actions_pending ON operator_actions (action_id) WHERE applied_wall_ns IS NULL;

-- start, stop, gap, resync, reconnect, pause, resume, error, storage_lag, position_mismatch, ...
CREATE TABLE system_events (
    event_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns         INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error')),
    market        TEXT NOT NULL,             -- '' when not about one instrument
    symbol        TEXT NOT NULL,
    detail_json   TEXT NOT NULL
) STRICT;
CREATE INDEX system_events_ts ON system_events (ts_ns, event_id);
CREATE INDEX system_events_kind ON system_events (kind, ts_ns);

-- Running count of system events per kind and instrument (status: gaps, resyncs, reconnects).
CREATE TABLE event_counts (
    kind          TEXT NOT NULL,
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    last_ns       INTEGER NOT NULL,
    PRIMARY KEY (kind, market, symbol)
) STRICT, WITHOUT ROWID;

-- The worker's heartbeat: exactly one row, rewritten at least once a second.
CREATE TABLE heartbeat (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    run_id        INTEGER NOT NULL,
    wall_ns       INTEGER NOT NULL,          -- wall clock at write: freshness for /health
    ts_ns         INTEGER NOT NULL,          -- engine clock of the latest event
    trading_state TEXT NOT NULL,
    state_reason  TEXT NOT NULL,
    sync_json     TEXT NOT NULL,             -- {"spot:BTCUSDT": "live", ...}
    writer_lag_ms INTEGER NOT NULL,
    queue_depth   INTEGER NOT NULL,
    rows_written  INTEGER NOT NULL,
    samples_dropped INTEGER NOT NULL,
    detail_json   TEXT NOT NULL              -- counters and anything else the worker reports
) STRICT;

-- Running totals of fills and orders, per instrument and per instrument-hour.
-- win/loss: fills whose realized_pnl is > 0 / < 0 (gross of fees).
CREATE TABLE totals_symbol (
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    fills         INTEGER NOT NULL DEFAULT 0,
    maker_fills   INTEGER NOT NULL DEFAULT 0,
    buy_qty       INTEGER NOT NULL DEFAULT 0,
    sell_qty      INTEGER NOT NULL DEFAULT 0,
    volume        INTEGER NOT NULL DEFAULT 0,  -- money: sum of fill notionals
    fees          INTEGER NOT NULL DEFAULT 0,
    realized_pnl  INTEGER NOT NULL DEFAULT 0,
    funding       INTEGER NOT NULL DEFAULT 0,
    wins          INTEGER NOT NULL DEFAULT 0,
    losses        INTEGER NOT NULL DEFAULT 0,
    gross_profit  INTEGER NOT NULL DEFAULT 0,
    gross_loss    INTEGER NOT NULL DEFAULT 0,  -- <= 0
    slippage_bps_sum REAL NOT NULL DEFAULT 0,
    orders        INTEGER NOT NULL DEFAULT 0,  -- orders created (incl. denied)
    orders_denied INTEGER NOT NULL DEFAULT 0,
    orders_rejected INTEGER NOT NULL DEFAULT 0,
    orders_cancelled INTEGER NOT NULL DEFAULT 0,
    orders_filled INTEGER NOT NULL DEFAULT 0,
    first_ns      INTEGER NOT NULL DEFAULT 0,
    last_ns       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (market, symbol)
) STRICT;

CREATE TABLE totals_hourly (
    hour_s        INTEGER NOT NULL,            -- hour start, epoch seconds (engine clock)
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    fills         INTEGER NOT NULL DEFAULT 0,
    maker_fills   INTEGER NOT NULL DEFAULT 0,
    buy_qty       INTEGER NOT NULL DEFAULT 0,
    sell_qty      INTEGER NOT NULL DEFAULT 0,
    volume        INTEGER NOT NULL DEFAULT 0,
    fees          INTEGER NOT NULL DEFAULT 0,
    realized_pnl  INTEGER NOT NULL DEFAULT 0,
    funding       INTEGER NOT NULL DEFAULT 0,
    wins          INTEGER NOT NULL DEFAULT 0,
    losses        INTEGER NOT NULL DEFAULT 0,
    gross_profit  INTEGER NOT NULL DEFAULT 0,
    gross_loss    INTEGER NOT NULL DEFAULT 0,
    slippage_bps_sum REAL NOT NULL DEFAULT 0,
    orders        INTEGER NOT NULL DEFAULT 0,
    orders_denied INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_s, market, symbol)
) STRICT, WITHOUT ROWID;

-- Running markout statistics per instrument and horizon (stats: mean markout = sum / n).
CREATE TABLE totals_markouts (
    market        TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    horizon_ms    INTEGER NOT NULL,
    n             INTEGER NOT NULL,
    markout_bps_sum REAL NOT NULL,
    PRIMARY KEY (market, symbol, horizon_ms)
) STRICT, WITHOUT ROWID;
"""

_V1_TRIGGERS = """
-- Rollups and running totals live in triggers so they change in the same statement (hence the same
-- transaction) as the rows they summarize, whoever writes them. Inserts that hit an existing row use
-- ON CONFLICT DO NOTHING, which fires no trigger: replaying the same fill twice counts it once.

CREATE TRIGGER fills_totals AFTER INSERT ON fills
BEGIN
    INSERT INTO totals_symbol (market, symbol, fills, maker_fills, buy_qty, sell_qty, volume, fees,
                               realized_pnl, wins, losses, gross_profit, gross_loss, slippage_bps_sum,
                               first_ns, last_ns)
    VALUES (NEW.market, NEW.symbol, 1, NEW.liquidity = 'maker',
            CASE WHEN NEW.side = 1 THEN NEW.qty ELSE 0 END, CASE WHEN NEW.side = -1 THEN NEW.qty ELSE 0 END,
            NEW.notional, NEW.fee_quote, NEW.realized_pnl, NEW.realized_pnl > 0, NEW.realized_pnl < 0,
            max(NEW.realized_pnl, 0), min(NEW.realized_pnl, 0), NEW.slippage_bps, NEW.ts_ns, NEW.ts_ns)
    ON CONFLICT (market, symbol) DO UPDATE SET
        fills = fills + 1, maker_fills = maker_fills + excluded.maker_fills,
        buy_qty = buy_qty + excluded.buy_qty, sell_qty = sell_qty + excluded.sell_qty,
        volume = volume + excluded.volume, fees = fees + excluded.fees,
        realized_pnl = realized_pnl + excluded.realized_pnl,
        wins = wins + excluded.wins, losses = losses + excluded.losses,
        gross_profit = gross_profit + excluded.gross_profit, gross_loss = gross_loss + excluded.gross_loss,
        slippage_bps_sum = slippage_bps_sum + excluded.slippage_bps_sum,
        first_ns = CASE WHEN first_ns = 0 THEN excluded.first_ns ELSE min(first_ns, excluded.first_ns) END,
        last_ns = max(last_ns, excluded.last_ns);

    INSERT INTO totals_hourly (hour_s, market, symbol, fills, maker_fills, buy_qty, sell_qty, volume, fees,
                               realized_pnl, wins, losses, gross_profit, gross_loss, slippage_bps_sum)
    VALUES ((NEW.ts_ns / 3600000000000) * 3600, NEW.market, NEW.symbol, 1, NEW.liquidity = 'maker',
            CASE WHEN NEW.side = 1 THEN NEW.qty ELSE 0 END, CASE WHEN NEW.side = -1 THEN NEW.qty ELSE 0 END,
            NEW.notional, NEW.fee_quote, NEW.realized_pnl, NEW.realized_pnl > 0, NEW.realized_pnl < 0,
            max(NEW.realized_pnl, 0), min(NEW.realized_pnl, 0), NEW.slippage_bps)
    ON CONFLICT (hour_s, market, symbol) DO UPDATE SET
        fills = fills + 1, maker_fills = maker_fills + excluded.maker_fills,
        buy_qty = buy_qty + excluded.buy_qty, sell_qty = sell_qty + excluded.sell_qty,
        volume = volume + excluded.volume, fees = fees + excluded.fees,
        realized_pnl = realized_pnl + excluded.realized_pnl,
        wins = wins + excluded.wins, losses = losses + excluded.losses,
        gross_profit = gross_profit + excluded.gross_profit, gross_loss = gross_loss + excluded.gross_loss,
        slippage_bps_sum = slippage_bps_sum + excluded.slippage_bps_sum;

    INSERT INTO positions (market, symbol, qty, cost, realized_pnl, fees, fills, last_fill_id, updated_ns)
    VALUES (NEW.market, NEW.symbol, NEW.position_after, NEW.cost_after, NEW.realized_pnl, NEW.fee_quote, 1,
            NEW.fill_id, NEW.ts_ns)
    ON CONFLICT (market, symbol) DO UPDATE SET
        qty = excluded.qty, cost = excluded.cost, realized_pnl = realized_pnl + excluded.realized_pnl,
        fees = fees + excluded.fees, fills = fills + 1, last_fill_id = excluded.last_fill_id,
        updated_ns = excluded.updated_ns;
END;

CREATE TRIGGER order_events_apply AFTER INSERT ON order_events
BEGIN
    UPDATE orders SET status = NEW.status, filled_qty = NEW.filled_qty, reason = NEW.reason,
                      updated_ns = NEW.ts_ns, transitions = transitions + 1
    WHERE order_id = NEW.order_id;

    INSERT INTO totals_symbol (market, symbol, orders, orders_denied, orders_rejected, orders_cancelled,
                               orders_filled)
    SELECT market, symbol, NEW.seq = 1, NEW.status = 'Denied', NEW.status = 'Rejected',
           NEW.status = 'Cancelled', NEW.status = 'Filled'
    FROM orders WHERE order_id = NEW.order_id
    ON CONFLICT (market, symbol) DO UPDATE SET
        orders = orders + excluded.orders, orders_denied = orders_denied + excluded.orders_denied,
        orders_rejected = orders_rejected + excluded.orders_rejected,
        orders_cancelled = orders_cancelled + excluded.orders_cancelled,
        orders_filled = orders_filled + excluded.orders_filled;

    INSERT INTO totals_hourly (hour_s, market, symbol, orders, orders_denied)
    SELECT (NEW.ts_ns / 3600000000000) * 3600, market, symbol, NEW.seq = 1, NEW.status = 'Denied'
    FROM orders WHERE order_id = NEW.order_id AND (NEW.seq = 1 OR NEW.status = 'Denied')
    ON CONFLICT (hour_s, market, symbol) DO UPDATE SET
        orders = orders + excluded.orders, orders_denied = orders_denied + excluded.orders_denied;
END;

CREATE TRIGGER funding_apply AFTER INSERT ON funding_payments
BEGIN
    INSERT INTO positions (market, symbol, qty, cost, realized_pnl, fees, funding, fills, last_fill_id,
                           updated_ns)
    VALUES (NEW.market, NEW.symbol, 0, 0, 0, 0, NEW.amount, 0, 0, NEW.funding_ns)
    ON CONFLICT (market, symbol) DO UPDATE SET funding = funding + excluded.funding;

    INSERT INTO totals_symbol (market, symbol, funding) VALUES (NEW.market, NEW.symbol, NEW.amount)
    ON CONFLICT (market, symbol) DO UPDATE SET funding = funding + excluded.funding;

    INSERT INTO totals_hourly (hour_s, market, symbol, funding)
    VALUES ((NEW.funding_ns / 3600000000000) * 3600, NEW.market, NEW.symbol, NEW.amount)
    ON CONFLICT (hour_s, market, symbol) DO UPDATE SET funding = funding + excluded.funding;
END;

CREATE TRIGGER markouts_totals AFTER INSERT ON markouts
BEGIN
    INSERT INTO totals_markouts (market, symbol, horizon_ms, n, markout_bps_sum)
    SELECT market, symbol, NEW.horizon_ms, 1, NEW.markout_bps FROM fills WHERE fill_id = NEW.fill_id
    ON CONFLICT (market, symbol, horizon_ms) DO UPDATE SET
        n = n + 1, markout_bps_sum = markout_bps_sum + excluded.markout_bps_sum;
END;

CREATE TRIGGER system_events_count AFTER INSERT ON system_events
BEGIN
    INSERT INTO event_counts (kind, market, symbol, count, last_ns)
    VALUES (NEW.kind, NEW.market, NEW.symbol, 1, NEW.ts_ns)
    ON CONFLICT (kind, market, symbol) DO UPDATE SET
        count = count + 1, last_ns = max(last_ns, excluded.last_ns);
END;

CREATE TRIGGER breaker_events_state AFTER INSERT ON breaker_events
BEGIN
    INSERT INTO breakers (breaker, tripped, reason, since_ns, updated_ns, detail_json)
    VALUES (NEW.breaker, NEW.tripped, NEW.reason, NEW.ts_ns, NEW.ts_ns, NEW.detail_json)
    ON CONFLICT (breaker) DO UPDATE SET
        since_ns = CASE WHEN tripped != excluded.tripped THEN excluded.since_ns ELSE since_ns END,
        tripped = excluded.tripped, reason = excluded.reason, updated_ns = excluded.updated_ns,
        detail_json = excluded.detail_json;
END;

CREATE TRIGGER equity_rollup AFTER INSERT ON equity_bars WHEN NEW.resolution_s = 1
BEGIN
    INSERT INTO equity_bars (resolution_s, bucket_s, open, high, low, close, cash, realized_pnl,
                             unrealized_pnl, fees, exposure, peak, drawdown, max_drawdown, samples, last_ns)
    VALUES (60, NEW.bucket_s - NEW.bucket_s % 60, NEW.open, NEW.high, NEW.low, NEW.close, NEW.cash,
            NEW.realized_pnl, NEW.unrealized_pnl, NEW.fees, NEW.exposure, NEW.peak, NEW.drawdown,
            NEW.max_drawdown, 1, NEW.last_ns),
           (3600, NEW.bucket_s - NEW.bucket_s % 3600, NEW.open, NEW.high, NEW.low, NEW.close, NEW.cash,
            NEW.realized_pnl, NEW.unrealized_pnl, NEW.fees, NEW.exposure, NEW.peak, NEW.drawdown,
            NEW.max_drawdown, 1, NEW.last_ns)
    ON CONFLICT (resolution_s, bucket_s) DO UPDATE SET
        open = CASE WHEN excluded.last_ns < last_ns THEN excluded.open ELSE open END,
        high = max(high, excluded.high), low = min(low, excluded.low),
        close = CASE WHEN excluded.last_ns >= last_ns THEN excluded.close ELSE close END,
        cash = CASE WHEN excluded.last_ns >= last_ns THEN excluded.cash ELSE cash END,
        realized_pnl = CASE WHEN excluded.last_ns >= last_ns THEN excluded.realized_pnl ELSE realized_pnl END,
        unrealized_pnl = CASE WHEN excluded.last_ns >= last_ns
                              THEN excluded.unrealized_pnl ELSE unrealized_pnl END,
        fees = CASE WHEN excluded.last_ns >= last_ns THEN excluded.fees ELSE fees END,
        exposure = CASE WHEN excluded.last_ns >= last_ns THEN excluded.exposure ELSE exposure END,
        peak = max(peak, excluded.peak),
        drawdown = CASE WHEN excluded.last_ns >= last_ns THEN excluded.drawdown ELSE drawdown END,
        max_drawdown = min(max_drawdown, excluded.max_drawdown),
        samples = samples + 1, last_ns = max(last_ns, excluded.last_ns);
END;

CREATE TRIGGER book_top_rollup AFTER INSERT ON book_top_bars WHEN NEW.resolution_s = 1
BEGIN
    INSERT INTO book_top_bars (market, symbol, resolution_s, bucket_s, mid2_open, mid2_high, mid2_low,
                               mid2_close, bid_price, bid_qty, ask_price, ask_qty, spread_min, spread_max,
                               spread_sum, samples, last_ns)
    VALUES (NEW.market, NEW.symbol, 60, NEW.bucket_s - NEW.bucket_s % 60, NEW.mid2_open, NEW.mid2_high,
            NEW.mid2_low, NEW.mid2_close, NEW.bid_price, NEW.bid_qty, NEW.ask_price, NEW.ask_qty,
            NEW.spread_min, NEW.spread_max, NEW.spread_sum, 1, NEW.last_ns),
           (NEW.market, NEW.symbol, 3600, NEW.bucket_s - NEW.bucket_s % 3600, NEW.mid2_open, NEW.mid2_high,
            NEW.mid2_low, NEW.mid2_close, NEW.bid_price, NEW.bid_qty, NEW.ask_price, NEW.ask_qty,
            NEW.spread_min, NEW.spread_max, NEW.spread_sum, 1, NEW.last_ns)
    ON CONFLICT (market, symbol, resolution_s, bucket_s) DO UPDATE SET
        mid2_open = CASE WHEN excluded.last_ns < last_ns THEN excluded.mid2_open ELSE mid2_open END,
        mid2_high = max(mid2_high, excluded.mid2_high), mid2_low = min(mid2_low, excluded.mid2_low),
        mid2_close = CASE WHEN excluded.last_ns >= last_ns THEN excluded.mid2_close ELSE mid2_close END,
        bid_price = CASE WHEN excluded.last_ns >= last_ns THEN excluded.bid_price ELSE bid_price END,
        bid_qty = CASE WHEN excluded.last_ns >= last_ns THEN excluded.bid_qty ELSE bid_qty END,
        ask_price = CASE WHEN excluded.last_ns >= last_ns THEN excluded.ask_price ELSE ask_price END,
        ask_qty = CASE WHEN excluded.last_ns >= last_ns THEN excluded.ask_qty ELSE ask_qty END,
        spread_min = min(spread_min, excluded.spread_min), spread_max = max(spread_max, excluded.spread_max),
        spread_sum = spread_sum + excluded.spread_sum,
        samples = samples + 1, last_ns = max(last_ns, excluded.last_ns);
END;
"""

# v2: the risk engine's full state (`RiskEngine.export_state()`: breakers, the drawdown peak since the last
# reset or cool-down, the UTC day's opening equity, Binance's order-count windows), so a restart resumes
# exactly where the previous run stood instead of re-deriving a peak from the all-time equity bars.
_V2 = """
CREATE TABLE risk_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    ts_ns         INTEGER NOT NULL,          -- engine time of the state
    run_id        INTEGER,
    state_json    TEXT NOT NULL              -- RiskEngine.export_state(), canonical JSON
) STRICT;
"""

# v3: stop orders and order lists (Shabbat hold mode's protective exits): the trigger price of a
# STOP_MARKET order, reduce-only, and the one-cancels-the-other list an order belongs to (0 = none).
_V3 = """
ALTER TABLE orders ADD COLUMN stop_price INTEGER;
ALTER TABLE orders ADD COLUMN reduce_only INTEGER NOT NULL DEFAULT 0;  -- 0 | 1
ALTER TABLE orders ADD COLUMN oco INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1 + _V1_TRIGGERS),
    Migration(2, "risk engine state", _V2),
    Migration(3, "stop orders, reduce-only, one-cancels-the-other lists", _V3),
)
LATEST_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_openable(conn: sqlite3.Connection) -> int:
    """Refuse a file this code must not touch; return its schema version (0 = empty, new file).

    Raises `SchemaError` for a newer schema version, another application's database, or a file that is
    not a SQLite database (sqlite3 reports "file is not a database" on the first read).
    """
    try:
        version = schema_version(conn)
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise SchemaError(f"not a readable SQLite database ({exc})") from exc
    if version > LATEST_VERSION:
        raise SchemaError(
            f"database schema version {version} is newer than this code's {LATEST_VERSION}: "
            "upgrade the worker; the file was not modified"
        )
    if app_id not in (0, APPLICATION_ID):
        raise SchemaError(f"database belongs to another application (application_id={app_id:#x})")
    if version == 0 and tables:
        raise SchemaError("database has tables but no QuantumFlow schema version: refusing to touch it")
    return version


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to `LATEST_VERSION`, one migration per transaction. Returns the final version.

    `conn` must be a plain sqlite3 connection in autocommit mode (`isolation_level=None`).
    """
    version = check_openable(conn)
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            if schema_version(conn) >= migration.version:
                conn.execute("ROLLBACK")
                continue
            for statement in _statements(migration.sql):
                conn.execute(statement)
            if migration.version == 1:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("money_scale", str(MONEY_SCALE)), ("clock", "ns since epoch, engine receive time")],
                )
            conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = migration.version
    return version


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; `complete_statement` keeps trigger bodies whole."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise SchemaError(f"incomplete statement in migration: {buffer.strip()[:80]}")
    return statements
