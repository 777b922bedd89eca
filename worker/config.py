"""The worker's configuration: a TOML file, environment variables and CLI flags, validated before the start.

Design and invariants:
- Precedence, highest first: CLI flags (`--symbols`, `--set section.key=value`, ...) > environment
  (`QF_DB`, `QF_SYMBOLS`, `TELEGRAM_BOT_TOKEN`, ... see `ENV`) > the TOML file (`--config PATH` or
  `$QF_CONFIG`) > the defaults in `SCHEMA`. Every key of every section is documented with its default in
  `docs/config.example.toml`; a test keeps the two in step.
- Nothing unknown passes: an unknown section or key, in any layer, is a `ConfigError` naming it (a typo
  in a risk limit must not silently leave the limit at its default). A value of the wrong type or range
  is a `ConfigError` naming `section.key` and where the value came from (file, env variable or flag).
- Each section is validated by its component's own class: `Endpoints`, `WriterConfig` (ranges here),
  `TelegramConfig`, `HealthLimits`, `CalendarConfig`, `RiskConfig` (compiled against the instruments),
  `BrokerConfig.from_mapping`; `features` and `strategy` use `FeatureConfig` / `StrategyConfig` when those
  modules define them (`from_mapping`), else stay plain validated mappings handed to the engine.
- Exact numbers stay exact: TOML floats are parsed as `Decimal` (`0.1` is 0.1, not 0.1000000000000000055),
  so money limits never pass through binary floats; float-typed settings convert at the end.
- `WorkerConfig.canonical_json()` is the effective configuration (defaults filled in) as canonical JSON
  (sorted keys, no whitespace) with secrets left out; `digest()` is its sha256. Both go into the `runs`
  table, so two runs with the same digest ran with the same settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import importlib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson

from worker.binance.endpoints import USDM_DEPTH_SPEEDS, Endpoints
from worker.book import DEFAULT_DEPTH, DEFAULT_MAX_BUFFER
from worker.broker import BrokerConfig
from worker.calendar import CalendarConfig, Location
from worker.errors import ConfigError
from worker.events import Market
from worker.health import HealthLimits
from worker.instruments import DEFAULT_INSTRUMENTS, Instrument
from worker.notify import TelegramConfig
from worker.risk import RiskConfig, SymbolLimits
from worker.store.db import DEFAULT_DB_PATH
from worker.store.writer import WriterConfig

SECRETS = frozenset({("telegram", "token")})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its kind (how text from env/CLI is parsed and what is accepted) and default."""

    kind: str  # int | float | bool | str | decimal | strlist | intlist | floatlist ; "?" suffix: may be unset
    default: Any
    choices: tuple[str, ...] = ()


_W = WriterConfig()
_T = TelegramConfig(None, None)
_H = HealthLimits()
_C = CalendarConfig()
_R = RiskConfig()
_E = Endpoints()

# Sections whose keys this module knows. `risk.symbols`, `broker`, `features` and `strategy` are
# validated by their own classes (see `_risk`, `_broker`, `_component`).
SCHEMA: dict[str, dict[str, Key]] = {
    "worker": {
        "market": Key("str", "spot", tuple(m.value for m in Market)),
        "symbols": Key("strlist", ("BTCUSDT",)),
        "db": Key("str", DEFAULT_DB_PATH),
        "log_level": Key("str", "INFO", LOG_LEVELS),
        "book_ticker": Key("bool", False),
        "tick_interval_s": Key("float", 1.0),
        "stats_interval_s": Key("float", 60.0),
        "top_log_interval_s": Key("float", 10.0),
        "storage_lag_check_s": Key("float", 0.25),
    },
    "engine": {
        "depth": Key("int", DEFAULT_DEPTH),
        "max_buffer": Key("int", DEFAULT_MAX_BUFFER),
    },
    "binance": {
        "spot_ws": Key("str", _E.spot_ws),
        "spot_rest": Key("str", _E.spot_rest),
        "usdm_ws": Key("str", _E.usdm_ws),
        "usdm_rest": Key("str", _E.usdm_rest),
        "usdm_depth_speed": Key("str", _E.usdm_depth_speed, USDM_DEPTH_SPEEDS),
    },
    "store": {
        "max_lag_s": Key("float", _W.max_lag_s),
        "critical_soft_limit": Key("int", _W.critical_soft_limit),
        "sample_capacity": Key("int", _W.sample_capacity),
        "max_batch": Key("int", _W.max_batch),
        "heartbeat_interval_s": Key("float", _W.heartbeat_interval_s),
        "retention_s": Key("int", _W.retention_s),
        "retention_every_s": Key("int", _W.retention_every_s),
        "wal_checkpoint_bytes": Key("int", _W.wal_checkpoint_bytes),
        "retry_backoff_s": Key("floatlist", _W.retry_backoff_s),
        "quick_check": Key("bool", _W.quick_check),
        "signal_retention_s": Key("int?", _W.signal_retention_s),
        "approved_decision_retention_s": Key("int?", _W.approved_decision_retention_s),
    },
    "publish": {
        "socket_path": Key("str?", None),
        "client_buffer_bytes": Key("int", 1 << 20),
        "max_queue": Key("int", 100_000),
        "max_clients": Key("int", 32),
    },
    "telegram": {
        "token": Key("str?", None),
        "chat_id": Key("str?", None),
        "base_url": Key("str", _T.base_url),
        "timeout_s": Key("float", _T.timeout_s),
        "min_interval_s": Key("float", _T.min_interval_s),
        "max_queue": Key("int", _T.max_queue),
        "max_attempts": Key("int", _T.max_attempts),
        "backoff_s": Key("float", _T.backoff_s),
        "max_backoff_s": Key("float", _T.max_backoff_s),
        "max_rate_limited": Key("int", _T.max_rate_limited),
        "max_retry_after_s": Key("float", _T.max_retry_after_s),
    },
    "health": {
        "enabled": Key("bool", True),
        "host": Key("str", "0.0.0.0"),
        "port": Key("int", 8081),
        "max_msg_age_s": Key("float", _H.max_msg_age_s),
        "max_writer_lag_s": Key("float", _H.max_writer_lag_s),
        "max_loop_lag_s": Key("float", _H.max_loop_lag_s),
        "loop_lag_interval_s": Key("float", 0.1),
        "loop_lag_window_s": Key("float", 10.0),
        "heartbeat_interval_s": Key("float", 1.0),
    },
    "calendar": {
        "enabled": Key("bool", True),
        "latitude": Key("float", _C.location.latitude),
        "longitude": Key("float", _C.location.longitude),
        "tz": Key("str", _C.location.tz),
        "candle_minutes": Key("int", _C.candle_minutes),
        "havdalah_minutes": Key("int?", _C.havdalah_minutes),
        "israel": Key("bool", _C.israel),
    },
    "risk": {
        # default per-symbol limits (base asset / quote asset amounts); [risk.symbols.SYMBOL] overrides
        "max_position": Key("decimal?", None),
        "max_notional": Key("decimal?", None),
        "max_order_qty": Key("decimal?", None),
        "max_order_notional": Key("decimal?", None),
        "max_total_notional": Key("decimal?", _R.max_total_notional),
        "max_leverage": Key("decimal", _R.max_leverage),
        "spot_buy_buffer_bps": Key("int", _R.spot_buy_buffer_bps),
        "max_price_deviation_bps": Key("int?", _R.max_price_deviation_bps),
        "orders_per_second": Key("decimal", _R.orders_per_second),
        "orders_burst": Key("int", _R.orders_burst),
        "binance_orders_10s": Key("int", _R.binance_orders_10s),
        "binance_orders_day": Key("int", _R.binance_orders_day),
        "drawdown_reduce_bps": Key("int?", _R.drawdown_reduce_bps),
        "drawdown_halt_bps": Key("int?", _R.drawdown_halt_bps),
        "daily_loss_limit": Key("decimal?", _R.daily_loss_limit),
        "cooldown_s": Key("int?", _R.cooldown_s),
        "flatten_on_halt": Key("bool", _R.flatten_on_halt),
    },
}
SYMBOL_LIMIT_KEYS = ("max_position", "max_notional", "max_order_qty", "max_order_notional")
# Sections validated by a component class that takes a mapping (no key list here).
OPEN_SECTIONS = ("broker", "features", "strategy", "trading")
SECTIONS = (*SCHEMA, *OPEN_SECTIONS)

# Environment variables (Fly sets these; tests point the Binance URLs at the loopback stand-in).
ENV: dict[str, tuple[str, str]] = {
    "QF_DB": ("worker", "db"),
    "QF_SYMBOLS": ("worker", "symbols"),
    "QF_MARKET": ("worker", "market"),
    "QF_LOG_LEVEL": ("worker", "log_level"),
    "QF_HEALTH_PORT": ("health", "port"),
    "QF_PUBLISH_SOCKET": ("publish", "socket_path"),
    "TELEGRAM_BOT_TOKEN": ("telegram", "token"),
    "TELEGRAM_CHAT_ID": ("telegram", "chat_id"),
    "TELEGRAM_API_BASE": ("telegram", "base_url"),
    "QF_BINANCE_SPOT_WS": ("binance", "spot_ws"),
    "QF_BINANCE_SPOT_REST": ("binance", "spot_rest"),
    "QF_BINANCE_USDM_WS": ("binance", "usdm_ws"),
    "QF_BINANCE_USDM_REST": ("binance", "usdm_rest"),
    "QF_BINANCE_USDM_DEPTH_SPEED": ("binance", "usdm_depth_speed"),
}
CONFIG_ENV = "QF_CONFIG"

# CLI flag dest -> (section, key). Flags default to None so an absent flag overrides nothing.
FLAGS: dict[str, tuple[str, str]] = {
    "symbols": ("worker", "symbols"),
    "market": ("worker", "market"),
    "db": ("worker", "db"),
    "log_level": ("worker", "log_level"),
    "health_port": ("health", "port"),
    "publish_socket": ("publish", "socket_path"),
    "spot_ws": ("binance", "spot_ws"),
    "spot_rest": ("binance", "spot_rest"),
    "usdm_ws": ("binance", "usdm_ws"),
    "usdm_rest": ("binance", "usdm_rest"),
    "usdm_depth_speed": ("binance", "usdm_depth_speed"),
    "top_log_interval": ("worker", "top_log_interval_s"),
    "stats_interval": ("worker", "stats_interval_s"),
}


@dataclass(frozen=True, slots=True)
class PublishConfig:
    socket_path: str | None
    client_buffer_bytes: int
    max_queue: int
    max_clients: int


@dataclass(frozen=True, slots=True)
class HealthConfig:
    enabled: bool
    host: str
    port: int
    limits: HealthLimits
    loop_lag_interval_s: float
    loop_lag_window_s: float
    heartbeat_interval_s: float


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The validated configuration of one worker run (live or replay)."""

    market: Market
    symbols: tuple[str, ...]
    db: str
    log_level: str
    book_ticker: bool
    tick_interval_s: float
    stats_interval_s: float
    top_log_interval_s: float
    storage_lag_check_s: float
    depth: int
    max_buffer: int
    endpoints: Endpoints
    store: WriterConfig
    publish: PublishConfig
    telegram: TelegramConfig
    health: HealthConfig
    calendar: CalendarConfig | None  # None: the Shabbat pause is disabled
    risk: RiskConfig
    broker: BrokerConfig
    features: Any  # FeatureConfig when worker.features defines it, else a validated mapping
    strategy: Any  # StrategyConfig when worker.strategy defines it, else a validated mapping
    trading: Any  # worker.trader.TradingConfig: how signals become orders, the starting cash
    effective: Mapping[str, Mapping[str, Any]] = field(repr=False, default_factory=dict)
    origins: Mapping[str, str] = field(repr=False, default_factory=dict)  # "section.key" -> where from

    @property
    def telegram_enabled(self) -> bool:
        return bool(self.telegram.token) and self.telegram.chat_id not in (None, "")

    def canonical_json(self) -> str:
        """The effective configuration, secrets left out, as canonical JSON (the `runs` row)."""
        return orjson.dumps(
            _jsonable(self.effective), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        ).decode()

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def instruments_for(self, known: Mapping[tuple[Market, str], Instrument]) -> dict[str, Instrument]:
        return {s: known[(self.market, s)] for s in self.symbols if (self.market, s) in known}

    def check_risk(self, instruments: Mapping[tuple[Market, str], Instrument] | list[Instrument]) -> None:
        """Compile the risk limits against the traded instruments (exchangeInfo's); ConfigError if not."""
        items = list(instruments.values()) if isinstance(instruments, Mapping) else list(instruments)
        try:
            self.risk.compile(items)
        except ConfigError as exc:
            raise _prefixed(exc, "risk") from None

    def check_risk_at_prices(
        self,
        instruments: Mapping[tuple[Market, str], Instrument] | list[Instrument],
        prices: Mapping[str, Decimal],
    ) -> None:
        """Refuse limits that make every order impossible at the venue's current prices (a max order or
        position size whose notional is below the symbol's min notional); ConfigError naming the key."""
        from worker.risk import check_limits_at_prices

        items = list(instruments.values()) if isinstance(instruments, Mapping) else list(instruments)
        try:
            check_limits_at_prices(self.risk, {i.symbol: i for i in items}, prices)
        except ConfigError as exc:
            raise _prefixed(exc, "risk") from None


# ---- loading -----------------------------------------------------------------------------------------
def load(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
    sets: list[str] | None = None,
) -> WorkerConfig:
    """Merge the layers (file < env < cli < sets) and validate. `env` defaults to `os.environ`."""
    env = os.environ if env is None else env
    layers: list[dict[str, dict[str, tuple[Any, str]]]] = []
    path = path if path is not None else env.get(CONFIG_ENV) or None
    if path is not None:
        origin = f"file {path}"
        layers.append(
            {sec: {k: (v, origin) for k, v in values.items()} for sec, values in read_file(path).items()}
        )
    layers.append(_env_layer(env))
    cli_layer: dict[str, dict[str, tuple[Any, str]]] = {}
    for dest, value in (cli or {}).items():
        if value is None or dest not in FLAGS:
            continue
        section, key = FLAGS[dest]
        cli_layer.setdefault(section, {})[key] = (value, f"flag --{dest.replace('_', '-')}")
    for item in sets or []:
        section, key, value = _parse_set(item)
        _check_section(section, f"--set {item}")
        nested: Any = value  # risk.symbols.BTCUSDT.max_position=1 -> nested tables under "symbols"
        for part in reversed(key.split(".")[1:]):
            nested = {part: nested}
        cli_layer.setdefault(section, {})
        top = key.split(".")[0]
        old = cli_layer[section].get(top)
        merged_value = _deep_merge(old[0], nested) if old and isinstance(nested, Mapping) else nested
        cli_layer[section][top] = (merged_value, f"--set {item.split('=', 1)[0]}")
    layers.append(cli_layer)
    merged: dict[str, dict[str, tuple[Any, str]]] = {}
    for layer in layers:
        for section, values in layer.items():
            _check_section(section, next(iter(values.values()))[1] if values else "?")
            target = merged.setdefault(section, {})
            for key, (value, origin) in values.items():
                old = target.get(key)
                if old is not None and isinstance(old[0], Mapping) and isinstance(value, Mapping):
                    value = _deep_merge(old[0], value)
                target[key] = (value, origin)
    return build(merged)


def _deep_merge(base: Any, over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in over.items():
        old = out.get(key)
        both = isinstance(old, Mapping) and isinstance(value, Mapping)
        out[key] = _deep_merge(old, value) if both else value
    return out


def read_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"a readable TOML file ({p}: {exc.strerror})") from None
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"valid TOML ({p}: {exc})") from None
    for section, values in data.items():
        _check_section(section, f"file {p}")
        if not isinstance(values, dict):
            raise ConfigError(section, f"a [{section}] table (file {p})")
    return data


def _check_section(section: str, origin: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(section, f"one of the sections {', '.join(SECTIONS)} (unknown section in {origin})")


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (section, key) in ENV.items():
        value = env.get(name)
        if value is not None and value != "":
            out.setdefault(section, {})[key] = (value, f"env {name}")
    return out


def _parse_set(item: str) -> tuple[str, str, Any]:
    """`section.key=value`; the value is read as a TOML value when it is one (3, true, "x", [1, 2])."""
    name, sep, text = item.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError("--set", f"section.key=value, got {item!r}")
    try:
        value = tomllib.loads(f"v = {text}", parse_float=Decimal)["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return section, key, value


# ---- validation --------------------------------------------------------------------------------------
def build(merged: Mapping[str, Mapping[str, tuple[Any, str]]]) -> WorkerConfig:
    """Validate the merged `{section: {key: (value, origin)}}` into a `WorkerConfig`."""
    values: dict[str, dict[str, Any]] = {}
    origins: dict[str, str] = {}
    for section, spec in SCHEMA.items():
        given = dict(merged.get(section, {}))
        extra = given.pop("symbols") if section == "risk" and "symbols" in given else None
        out = {}
        for key, value_origin in given.items():
            if key not in spec:
                raise ConfigError(
                    f"{section}.{key}",
                    f"a known key of [{section}]: {', '.join(spec)} (unknown key from {value_origin[1]})",
                )
        for key, k in spec.items():
            if key in given:
                value, origin = given[key]
                out[key] = coerce(f"{section}.{key}", value, k, origin)
                origins[f"{section}.{key}"] = origin
            else:
                out[key] = k.default
        if extra is not None:
            out["symbols"] = extra
            origins["risk.symbols"] = extra[1]
        values[section] = out
    w = values["worker"]
    symbols = tuple(sorted({s.strip().upper() for s in w["symbols"] if s.strip()}))
    if not symbols:
        raise ConfigError("worker.symbols", "at least one symbol, e.g. btcusdt")
    for name in ("tick_interval_s", "stats_interval_s", "top_log_interval_s", "storage_lag_check_s"):
        _positive(f"worker.{name}", w[name])
    e = values["engine"]
    _at_least("engine.depth", e["depth"], 1)
    _at_least("engine.max_buffer", e["max_buffer"], 1)
    endpoints = _section("binance", lambda: Endpoints(**values["binance"]))
    store = _writer(values["store"])
    p = values["publish"]
    for key in ("client_buffer_bytes", "max_queue", "max_clients"):
        _at_least(f"publish.{key}", p[key], 1024 if key == "client_buffer_bytes" else 1)
    publish = PublishConfig(**p)
    telegram = _section("telegram", lambda: TelegramConfig(**values["telegram"]))
    health = _health(values["health"])
    calendar = _calendar(values["calendar"])
    risk = _risk(values["risk"], symbols, Market(w["market"]))
    broker_given = _open(merged, "broker")
    broker = _section("broker", lambda: BrokerConfig.from_mapping(broker_given))
    features = _component("features", "worker.features", "FeatureConfig", _floats(_open(merged, "features")))
    strategy = _component("strategy", "worker.strategy", "StrategyConfig", _floats(_open(merged, "strategy")))
    trading = _component("trading", "worker.trader", "TradingConfig", _open(merged, "trading"))
    for section in OPEN_SECTIONS:
        for key, (_, origin) in merged.get(section, {}).items():
            origins[f"{section}.{key}"] = origin
    effective: dict[str, Any] = {s: dict(v) for s, v in values.items()}
    effective["worker"]["symbols"] = list(symbols)
    effective["telegram"] = {k: v for k, v in values["telegram"].items() if ("telegram", k) not in SECRETS}
    effective["telegram"]["token_set"] = bool(values["telegram"]["token"])
    effective["broker"] = broker
    effective["features"] = features
    effective["strategy"] = strategy
    effective["trading"] = trading
    return WorkerConfig(
        market=Market(w["market"]),
        symbols=symbols,
        db=w["db"],
        log_level=w["log_level"],
        book_ticker=w["book_ticker"],
        tick_interval_s=w["tick_interval_s"],
        stats_interval_s=w["stats_interval_s"],
        top_log_interval_s=w["top_log_interval_s"],
        storage_lag_check_s=w["storage_lag_check_s"],
        depth=e["depth"],
        max_buffer=e["max_buffer"],
        endpoints=endpoints,
        store=store,
        publish=publish,
        telegram=telegram,
        health=health,
        calendar=calendar,
        risk=risk,
        broker=broker,
        features=features,
        strategy=strategy,
        trading=trading,
        effective=effective,
        origins=origins,
    )


def coerce(param: str, value: Any, key: Key, origin: str = "") -> Any:
    """`value` (TOML value, or text from env / CLI) as `key.kind`; ConfigError naming `param` if not."""
    kind = key.kind
    where = f" (from {origin})" if origin else ""
    if kind.endswith("?"):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        kind = kind[:-1]
    try:
        out = _COERCE[kind](value)
    except (ValueError, TypeError, InvalidOperation):
        raise ConfigError(param, f"{_ALLOWED[kind]}, got {value!r}{where}") from None
    if key.choices:
        if kind == "str" and param.endswith("log_level"):
            out = out.upper()
        if out not in key.choices:
            raise ConfigError(param, f"one of {', '.join(key.choices)}, got {value!r}{where}")
    return out


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str):
        return int(value.strip().replace("_", ""))
    raise TypeError


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int | float | Decimal | str):
        out = float(value)
        if not math.isfinite(out):
            raise ValueError
        return out
    raise TypeError


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # e.g. a numeric chat id
        return str(value)
    raise TypeError


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float):  # only from Python callers: TOML floats arrive as Decimal already
        value = repr(value)
    out = Decimal(str(value).strip()) if isinstance(value, str) else Decimal(value)
    if not out.is_finite():
        raise ValueError
    return out


def _list(item: Any) -> Any:
    def parse(value: Any) -> tuple:
        if isinstance(value, str):
            parts = [p for p in value.replace(" ", ",").split(",") if p]
        elif isinstance(value, list | tuple):
            parts = list(value)
        else:
            raise TypeError
        return tuple(item(p) for p in parts)

    return parse


_COERCE = {
    "int": _int,
    "float": _float,
    "bool": _bool,
    "str": _str,
    "decimal": _decimal,
    "strlist": _list(_str),
    "intlist": _list(_int),
    "floatlist": _list(_float),
}
_ALLOWED = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "decimal": "a decimal number",
    "strlist": "a list of strings (or comma-separated text)",
    "intlist": "a list of integers",
    "floatlist": "a list of numbers",
}


def _positive(param: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(param, f"a positive number, got {value!r}")


def _at_least(param: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(param, f"an integer >= {low}, got {value!r}")


def _prefixed(exc: ConfigError, section: str) -> ConfigError:
    if exc.parameter.startswith(f"{section}."):
        return exc
    return ConfigError(f"{section}.{exc.parameter}", exc.allowed)


def _section(section: str, make: Any) -> Any:
    """Run a component's own validation; its ConfigError is re-raised with the section prefix."""
    try:
        return make()
    except ConfigError as exc:
        raise _prefixed(exc, section) from None


def _writer(v: dict[str, Any]) -> WriterConfig:
    for key in ("max_lag_s", "heartbeat_interval_s"):
        _positive(f"store.{key}", v[key])
    for key in ("critical_soft_limit", "sample_capacity", "max_batch", "retention_s", "retention_every_s"):
        _at_least(f"store.{key}", v[key], 1)
    _at_least("store.wal_checkpoint_bytes", v["wal_checkpoint_bytes"], 1 << 16)
    for key in ("signal_retention_s", "approved_decision_retention_s"):
        value = v[key]
        if value is not None and value != 0 and value < 3600:
            raise ConfigError(f"store.{key}", f"0 (keep everything) or seconds >= 3600, got {value}")
    backoff = tuple(v["retry_backoff_s"])
    if len(backoff) != 2 or not 0 < backoff[0] <= backoff[1]:
        allowed = f"[first, max] seconds with 0 < first <= max, got {backoff}"
        raise ConfigError("store.retry_backoff_s", allowed)
    return WriterConfig(**{**v, "retry_backoff_s": backoff})


def _health(v: dict[str, Any]) -> HealthConfig:
    if not 0 <= v["port"] <= 65535:
        raise ConfigError("health.port", f"an integer port from 0 to 65535, got {v['port']}")
    for key in ("loop_lag_interval_s", "loop_lag_window_s", "heartbeat_interval_s"):
        _positive(f"health.{key}", v[key])
    if v["loop_lag_window_s"] < v["loop_lag_interval_s"]:
        raise ConfigError("health.loop_lag_window_s", ">= health.loop_lag_interval_s")
    limits = _section(
        "health", lambda: HealthLimits(v["max_msg_age_s"], v["max_writer_lag_s"], v["max_loop_lag_s"])
    )
    return HealthConfig(
        v["enabled"],
        v["host"],
        v["port"],
        limits,
        v["loop_lag_interval_s"],
        v["loop_lag_window_s"],
        v["heartbeat_interval_s"],
    )


def calendar_settings(cfg: WorkerConfig) -> CalendarConfig:
    """The configured location and customs, also when the pause is disabled (`calendar.enabled = false`),
    for tools that print the windows (`python -m worker calendar`)."""
    if cfg.calendar is not None:
        return cfg.calendar
    settings = _calendar({**cfg.effective["calendar"], "enabled": True})
    assert settings is not None
    return settings


def _calendar(v: dict[str, Any]) -> CalendarConfig | None:
    def make() -> CalendarConfig:
        location = Location(v["latitude"], v["longitude"], v["tz"])
        return CalendarConfig(location, v["candle_minutes"], v["havdalah_minutes"], v["israel"])

    config = _section("calendar", make)  # validated even when disabled: a broken value is still a typo
    return config if v["enabled"] else None


def _risk(v: dict[str, Any], symbols: tuple[str, ...], market: Market) -> RiskConfig:
    spec = SCHEMA["risk"]
    per_symbol: dict[str, SymbolLimits] = {}
    raw_symbols = v.pop("symbols", None)
    if raw_symbols is not None:
        table, origin = raw_symbols if isinstance(raw_symbols, tuple) else (raw_symbols, "")
        if not isinstance(table, Mapping):
            raise ConfigError("risk.symbols", "a table of [risk.symbols.SYMBOL] tables")
        for sym, limits in table.items():
            name = str(sym).upper()
            if name not in symbols:
                raise ConfigError(f"risk.symbols.{sym}", f"a traded symbol ({', '.join(symbols)})")
            if not isinstance(limits, Mapping):
                raise ConfigError(f"risk.symbols.{sym}", f"a table with {', '.join(SYMBOL_LIMIT_KEYS)}")
            unknown = set(limits) - set(SYMBOL_LIMIT_KEYS)
            if unknown:
                raise ConfigError(
                    f"risk.symbols.{sym}.{sorted(unknown)[0]}",
                    f"one of {', '.join(SYMBOL_LIMIT_KEYS)} (unknown key)",
                )
            per_symbol[name] = SymbolLimits(
                **{k: coerce(f"risk.symbols.{sym}.{k}", val, spec[k], origin) for k, val in limits.items()}
            )
        v["symbols"] = {s: dataclasses.asdict(lim) for s, lim in per_symbol.items()}
    default = SymbolLimits(**{k: v[k] for k in SYMBOL_LIMIT_KEYS})
    rest = {k: val for k, val in v.items() if k not in SYMBOL_LIMIT_KEYS and k != "symbols"}
    config = RiskConfig(default_limits=default, symbols=per_symbol, **rest)
    # Early check against the known instrument filters OF THE CONFIGURED MARKET (a spot limit below a
    # USD-M lot is fine); the worker compiles again with exchangeInfo's.
    known = [DEFAULT_INSTRUMENTS[(market, s)] for s in symbols if (market, s) in DEFAULT_INSTRUMENTS]
    if known and len({i.symbol for i in known}) == len(symbols):
        try:
            config.compile(known)
        except ConfigError as exc:
            raise _prefixed(exc, "risk") from None
    return config


def _open(merged: Mapping[str, Mapping[str, tuple[Any, str]]], section: str) -> dict[str, Any]:
    return {key: value for key, (value, _) in merged.get(section, {}).items()}


def _component(section: str, module: str, cls_name: str, values: dict[str, Any]) -> Any:
    """The component's config class (`from_dict` / `from_mapping` / keyword args, then `validate()`)."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        mod = None
    cls = getattr(mod, cls_name, None) if mod is not None else None
    if cls is None:
        # The component is not in the tree: keep the section as a plain mapping of TOML values.
        for key, value in values.items():
            _plain_value(f"{section}.{key}", value)
        return dict(values)
    for name in ("from_dict", "from_mapping"):
        factory = getattr(cls, name, None)
        if factory is not None:
            return _section(section, lambda f=factory: f(values))
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    known = set(fields) if fields else set(values)
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = f"a known key of [{section}]: {', '.join(sorted(known))}"
        raise ConfigError(f"{section}.{unknown[0]}", allowed)
    values = dict(values)
    for name, value in values.items():  # money stays exact: a Decimal field takes 10000 or "10000.50"
        f = fields.get(name)
        if f is not None and isinstance(f.default, Decimal):
            values[name] = coerce(f"{section}.{name}", value, Key("decimal", f.default))
    made = _section(section, lambda: cls(**values))
    validate = getattr(made, "validate", None)
    if callable(validate):
        made = _section(section, validate) or made
    return made


def _floats(values: dict[str, Any]) -> dict[str, Any]:
    """TOML floats arrive as Decimal; features and strategy are statistics and take binary floats."""

    def conv(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value)
        if isinstance(value, list):
            return [conv(v) for v in value]
        return value

    return {k: conv(v) for k, v in values.items()}


def _plain_value(param: str, value: Any) -> None:
    if isinstance(value, str | int | float | bool | Decimal):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _plain_value(param, item)
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            _plain_value(f"{param}.{k}", item)
        return
    raise ConfigError(param, f"a TOML scalar, list or table, got {type(value).__name__}")


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k.value if isinstance(k, enum.Enum) else k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# ---- CLI ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, *, live: bool = True) -> None:
    """Flags shared by `run` (and, with `live=False`, the subset `replay` takes). Defaults None: the
    env, the file and the built-in defaults decide unless a flag is given."""
    parser.add_argument("--config", default=None, metavar="PATH", help="TOML file (default: $QF_CONFIG)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="sets",
        metavar="SECTION.KEY=VALUE",
        help="override any key (repeatable), e.g. --set risk.max_leverage=2",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING... (default: INFO)")
    if not live:
        return
    parser.add_argument("--symbols", nargs="+", default=None, help="symbols, e.g. btcusdt ethusdt")
    parser.add_argument("--market", choices=[m.value for m in Market], default=None)
    parser.add_argument("--db", default=None, help=f"SQLite file (default: $QF_DB or {DEFAULT_DB_PATH})")
    parser.add_argument("--health-port", type=int, default=None, help="/health port (0: any free port)")
    parser.add_argument("--publish-socket", default=None, metavar="PATH", help="Unix socket for the feed")
    parser.add_argument("--usdm-depth-speed", choices=USDM_DEPTH_SPEEDS, default=None)
    parser.add_argument("--spot-ws", default=None)
    parser.add_argument("--spot-rest", default=None)
    parser.add_argument("--usdm-ws", default=None)
    parser.add_argument("--usdm-rest", default=None)
    parser.add_argument("--top-log-interval", type=float, default=None, help="seconds between top lines")
    parser.add_argument("--stats-interval", type=float, default=None, help="seconds between stats lines")


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> WorkerConfig:
    cli = {dest: getattr(args, dest, None) for dest in FLAGS}
    if isinstance(cli.get("symbols"), list):
        cli["symbols"] = ",".join(cli["symbols"])
    return load(getattr(args, "config", None), env, cli, getattr(args, "sets", None))
