"""Unix-domain-socket market data feed: length-prefixed MessagePack to any number of local clients.

Design:
- The hot path calls `Publisher.offer(item)`: a deque append and an event set, O(1), never blocks,
  never raises. When the publisher's own queue is full (its task is starved) the item is dropped and
  counted in `stats.queue_dropped`.
- `Publisher.start()` binds and spawns the background task, which drains the queue in batches,
  encodes each item ONCE and writes the same bytes to every client with the transport's non-blocking
  `write()` (never `drain()`).
- Each client has a bounded buffer: the bytes its transport still holds. A write that would take it past
  `client_buffer_bytes` drops that client (connection aborted, `stats.clients_dropped_slow` + 1); a
  client that never reads therefore costs at most one buffer and cannot slow the worker or the others.
- A client that disconnects (even in the middle of a message) is noticed by its reader task, removed
  and counted in `stats.clients_disconnected`; writes never go to a closing transport.
- `start()` validates the path: a missing directory, a path that exists and is not a socket, a socket
  another live process is serving, or a path too long for AF_UNIX -> `ConfigError` at start. A socket
  file left by a crashed run (nobody accepts on it) is replaced.

Wire format (version 1): every message is `uint32 big-endian length` + a MessagePack map. Every map has
`"type"` (str) and `"ts_ns"` (int, engine receive time in ns since the epoch, when the item has one).
Prices are integer ticks and quantities integer lots of the symbol's instrument (see `hello`).
- `hello`      first message on each connection: `version` (1), `ts_ns` (wall clock), plus whatever the
               worker passes as `hello` (e.g. `instruments: {symbol: {tick_size, step_size}}`); then
               the latest `book_top` of every symbol, then the live stream.
- `book_top`   `symbol, market, ts_ns, update_id, bid_px, bid_qty, ask_px, ask_qty, mid2` (bid+ask in
               ticks, exact), `mid` (float ticks), `spread` (ticks), `imbalance` (float in [-1, 1] over
               the top levels, or nil), `microprice` (float ticks or nil), `exchange_ns` (or nil).
               Sent when the top (prices, quantities or imbalance) changed. `offer_book_top` takes this
               module's `BookTop` or the engine's `worker.engine.BookTop` (converted when encoded).
- `features`   `symbol, ts_ns, warm` (bool: every window covered) and `values: {name: float}`, from
               the trader's `worker.features.FeatureVector` of that book event: `mid, spread_ticks,
               spread_bps, imbalance, microprice, depth, ofi_event, mlofi_event, vol_bps, bid, ask,
               bid_qty, ask_qty`, and per window `ofi_<w>ms, mlofi_<w>ms, trade_flow_<w>ms, volume_<w>ms,
               momentum_bps_<w>ms`; a feature not defined yet (no return, window not covered) is absent.
- `signal`     `symbol, ts_ns, name` ("ofi"), `value` (float: the normalized OFI score), `side` (+1/-1),
               `kind` (entry/exit), `reason` (ofi_long, stop_loss, ...), `confidence` (float in [0, 1]),
               `size_lots`, `mid` (float ticks) — from `worker.strategy.Signal`.
- `fill`       the fields of `worker.orders.Fill` (`fill_id, order_id, symbol, side` (+1/-1), `price`,
               `qty`, `fee` (1e-8 units of `fee_asset`), `liquidity, ts_ns, model, latency_ns, ...`).
- `status`     `ts_ns, component, state, reason`, and per component:
               `feed` (`worker.events.FeedStatus`: `state` connected/disconnected/stale, `symbol, market`),
               `book` (the engine's `SyncChange`: `state` syncing/live, `symbol, market`),
               `trading` (risk's `TradingStateChanged`: `state` ACTIVE/REDUCING/HALTED/PAUSED, `previous,
               source` (risk/calendar/operator/cooldown/restart/storage), `detail`),
               `breaker` (risk's `BreakerChanged`: `breaker` name, `state` tripped/cleared, `detail`),
               `calendar` (the trader's `PauseChange`: `state` paused/resumed, `reason` the holy days,
               `until_ns` or nil). Items carrying `recv_ns` but no `ts_ns` get `ts_ns = recv_ns`.
Any mapping with a `"type"` key is sent as is; dataclasses are sent as their fields; enums as values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import logging
import os
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

from worker.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = 1
HEADER = struct.Struct(">I")
MAX_UNIX_PATH = 107  # sun_path is 108 bytes on Linux, including the NUL

# Class name of a dataclass item -> message type, so callers can offer domain objects as they are.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclasses.fields() is slow; encoding is per item
_TYPE_BY_CLASS = {
    "BookTop": "book_top",
    "Fill": "fill",
    "FeedStatus": "status",
    "SyncChange": "status",
    "FeatureVector": "features",
    "Signal": "signal",
    "TradingStateChanged": "status",
    "TradingStateChange": "status",
    "BreakerChanged": "status",
    "BreakerChange": "status",
    "PauseChange": "status",
}
# Status-like domain objects say which component changed state.
_COMPONENT_BY_CLASS = {"FeedStatus": "feed", "SyncChange": "book"}


@dataclasses.dataclass(frozen=True, slots=True)
class BookTop:
    """The top of one symbol's book as published; built by `book_top()` from an `OrderBook`."""

    symbol: str
    market: str
    ts_ns: int
    update_id: int
    bid_px: int | None
    bid_qty: int
    ask_px: int | None
    ask_qty: int
    mid2: int | None
    mid: float | None
    spread: int | None
    imbalance: float | None
    microprice: float | None = None
    exchange_ns: int | None = None


def engine_top_message(top: Any) -> dict[str, Any]:
    """The `book_top` message for a `worker.engine.BookTop` (fields `bid`, `ask`, `recv_ns`, ...)."""
    mid2 = top.bid + top.ask
    return {
        "type": "book_top",
        "symbol": top.symbol,
        "market": str(top.market),
        "ts_ns": top.recv_ns,
        "update_id": top.update_id,
        "bid_px": top.bid,
        "bid_qty": top.bid_qty,
        "ask_px": top.ask,
        "ask_qty": top.ask_qty,
        "mid2": mid2,
        "mid": mid2 / 2,
        "spread": top.ask - top.bid,
        "imbalance": top.imbalance,
        "microprice": top.microprice,
        "exchange_ns": top.exchange_ns,
    }


# Domain objects whose fields are not the documented message: built in the publisher's task (never on
# the hot path), by class name so this module imports nothing from the trading core.
_FEATURE_SKIP = frozenset({"symbol", "ts_ns", "windows_ms", "warm"})


def features_message(vector: Any) -> dict[str, Any]:
    """The `features` message of a `FeatureVector` (anything with `as_dict()`): `{name: float}` values."""
    data = vector.as_dict()
    windows = list(data.get("windows_ms") or ())
    values: dict[str, float] = {}
    for name, value in data.items():
        if name in _FEATURE_SKIP or value is None or isinstance(value, bool):
            continue
        if isinstance(value, (list, tuple)):
            for window, x in zip(windows, value, strict=False):
                if x is not None:
                    values[f"{name}_{window}ms"] = float(x)
        elif isinstance(value, (int, float)):
            values[name] = float(value)
    return {
        "type": "features",
        "symbol": data["symbol"],
        "ts_ns": data["ts_ns"],
        "warm": bool(data.get("warm", False)),
        "values": values,
    }


def signal_message(signal: Any) -> dict[str, Any]:
    """The `signal` message of a `worker.strategy.Signal` (its feature vector goes out as `features`)."""
    mid = getattr(signal, "mid", None)
    return {
        "type": "signal",
        "symbol": signal.symbol,
        "ts_ns": signal.ts_ns,
        "name": "ofi",
        "value": float(signal.score),
        "side": int(signal.side),
        "kind": str(getattr(signal.kind, "value", signal.kind)),
        "reason": str(signal.reason),
        "confidence": float(signal.confidence),
        "size_lots": int(signal.size_lots),
        "mid": None if mid is None else float(mid),
    }


def trading_state_message(change: Any) -> dict[str, Any]:
    return {
        "type": "status",
        "component": "trading",
        "ts_ns": change.ts_ns,
        "state": str(change.state),
        "previous": None if change.previous is None else str(change.previous),
        "reason": change.reason,
        "source": change.source,
        "detail": dict(getattr(change, "detail", None) or {}),
    }


def breaker_message(change: Any) -> dict[str, Any]:
    return {
        "type": "status",
        "component": "breaker",
        "ts_ns": change.ts_ns,
        "breaker": change.breaker,
        "state": "tripped" if change.tripped else "cleared",
        "reason": change.reason,
        "detail": dict(getattr(change, "detail", None) or {}),
    }


def pause_message(change: Any) -> dict[str, Any]:
    return {
        "type": "status",
        "component": "calendar",
        "ts_ns": change.ts_ns,
        "state": "paused" if change.paused else "resumed",
        "reason": change.reason,
        "until_ns": change.until_ns,
    }


_BUILDERS = {
    "FeatureVector": features_message,
    "Signal": signal_message,
    "TradingStateChanged": trading_state_message,
    "TradingStateChange": trading_state_message,
    "BreakerChanged": breaker_message,
    "BreakerChange": breaker_message,
    "PauseChange": pause_message,
}


def book_top(book: Any, symbol: str, market: str, ts_ns: int, depth: int = 5) -> BookTop:
    """Read a `worker.book.OrderBook` (duck-typed) into a `BookTop`; `imbalance` over `depth` levels."""
    bid = book.best_bid()
    ask = book.best_ask()
    mid2 = book.mid2()
    return BookTop(
        symbol=symbol,
        market=str(market),
        ts_ns=ts_ns,
        update_id=book.last_update_id,
        bid_px=bid[0] if bid else None,
        bid_qty=bid[1] if bid else 0,
        ask_px=ask[0] if ask else None,
        ask_qty=ask[1] if ask else 0,
        mid2=mid2,
        mid=mid2 / 2 if mid2 is not None else None,
        spread=book.spread(),
        imbalance=book.imbalance(depth),
        microprice=book.microprice(),
    )


@dataclasses.dataclass(slots=True)
class PublisherStats:
    published: int = 0  # messages encoded and fanned out
    bytes_out: int = 0  # bytes handed to client transports (all clients)
    queue_dropped: int = 0  # offers refused because the publisher's queue was full
    encode_errors: int = 0  # items MessagePack could not encode (logged, skipped)
    book_tops_unchanged: int = 0  # offer_book_top calls skipped because the top did not change
    unheard: int = 0  # offers skipped because no client was connected (not a loss)
    clients_connected: int = 0  # now
    clients_total: int = 0  # ever accepted
    clients_refused: int = 0  # over max_clients
    clients_dropped_slow: int = 0  # buffer overflow
    clients_disconnected: int = 0  # closed by the client


def encode(item: Any, kind: str | None = None) -> bytes:
    """One framed message: 4-byte big-endian length + MessagePack map (see the module docstring)."""
    payload = msgpack.packb(_as_message(item, kind), default=_default, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def decode_stream(buffer: bytearray) -> list[dict]:
    """Pop every complete message from `buffer` (a client's receive buffer); partial tails stay."""
    out = []
    offset = 0
    while len(buffer) - offset >= HEADER.size:
        (length,) = HEADER.unpack_from(buffer, offset)
        end = offset + HEADER.size + length
        if end > len(buffer):
            break
        out.append(msgpack.unpackb(bytes(buffer[offset + HEADER.size : end]), raw=False))
        offset = end
    del buffer[:offset]
    return out


def _as_message(item: Any, kind: str | None) -> dict:
    if (kind in (None, "book_top")) and type(item).__name__ == "BookTop" and hasattr(item, "bid"):
        return engine_top_message(item)  # the engine's NamedTuple BookTop
    builder = _BUILDERS.get(type(item).__name__)
    if builder is not None and (kind is None or kind == _TYPE_BY_CLASS[type(item).__name__]):
        return builder(item)
    if isinstance(item, Mapping):
        message = dict(item)
    elif hasattr(item, "_asdict"):  # NamedTuple outputs
        message = item._asdict()
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        names = _FIELD_NAMES.get(type(item))
        if names is None:
            names = _FIELD_NAMES[type(item)] = tuple(f.name for f in dataclasses.fields(item))
        message = {name: getattr(item, name) for name in names}
    else:
        raise TypeError(f"cannot publish {type(item).__name__}: pass a mapping or a dataclass")
    cls = type(item).__name__
    if kind is not None:
        message["type"] = kind
    elif "type" not in message:
        message["type"] = _TYPE_BY_CLASS.get(cls, cls.lower())
    if cls in _COMPONENT_BY_CLASS:
        message.setdefault("component", _COMPONENT_BY_CLASS[cls])
    if "ts_ns" not in message and "recv_ns" in message:
        message["ts_ns"] = message.pop("recv_ns")
    return message


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays in feature values
        return value.tolist()
    raise TypeError(f"cannot encode {type(value).__name__}")


class _Client:
    __slots__ = ("cid", "peer", "task", "transport", "writer")

    def __init__(self, cid: int, writer: asyncio.StreamWriter) -> None:
        self.cid = cid
        self.writer = writer
        self.transport = writer.transport
        self.task: asyncio.Task | None = None


class Publisher:
    """The feed server. Lifecycle: `await start()` (binds, spawns its task), `offer()`, `await close()`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        client_buffer_bytes: int = 1 << 20,
        max_queue: int = 100_000,
        max_clients: int = 32,
        hello: Mapping[str, Any] | None = None,
    ) -> None:
        if client_buffer_bytes < 1024:
            raise ConfigError("publish.client_buffer_bytes", "at least 1024")
        if max_queue < 1:
            raise ConfigError("publish.max_queue", "at least 1")
        if max_clients < 1:
            raise ConfigError("publish.max_clients", "at least 1")
        self.path = Path(path)
        self.client_buffer_bytes = client_buffer_bytes
        self.max_queue = max_queue
        self.max_clients = max_clients
        self.hello = dict(hello or {})
        self.stats = PublisherStats()
        self._queue: deque[tuple[Any, str | None]] = deque()
        self._wakeup = asyncio.Event()
        self._clients: dict[int, _Client] = {}
        self._next_cid = 0
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._closing = False
        self._run_task: asyncio.Task | None = None
        self._changed = asyncio.Condition()
        self._last_top: dict[tuple[str, str], tuple] = {}
        self._latest_top: dict[tuple[str, str], Any] = {}  # as last sent (or due) to clients
        self._handlers: set[asyncio.Task] = set()

    # -- hot path -------------------------------------------------------------------------------------
    def offer(self, item: Any, kind: str | None = None) -> bool:
        """Queue one item for every client; False (and counted) when the queue is full or closed.

        With no client connected (the usual case) nothing is queued or encoded: the hot path pays
        one check. New clients get the latest book tops right after `hello` instead.
        """
        if self._closing or len(self._queue) >= self.max_queue:
            self.stats.queue_dropped += 1
            return False
        if not self._clients:
            self.stats.unheard += 1
            return True
        self._queue.append((item, kind))
        if not self._wakeup.is_set():
            self._wakeup.set()
        return True

    def offer_book_top(self, top: Any) -> bool:
        """Offer `top` (ours or the engine's BookTop) unless its prices, sizes and imbalance equal the
        last one offered for its symbol: clients get every change, not every diff."""
        key = (str(top.market), top.symbol)
        if isinstance(top, BookTop):
            value = (top.bid_px, top.bid_qty, top.ask_px, top.ask_qty, top.imbalance)
        else:
            value = (top.bid, top.bid_qty, top.ask, top.ask_qty, top.imbalance)
        if self._last_top.get(key) == value:
            self.stats.book_tops_unchanged += 1
            return False
        self._last_top[key] = value
        if not self._clients and not self._queue:
            # Nothing older is in flight, so this is what a client connecting now should see first.
            self._latest_top[key] = top
        return self.offer(top, "book_top")

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind the socket; raises `ConfigError` for an unusable path (see the module docstring)."""
        self._prepare_path()
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        except OSError as exc:
            raise ConfigError("publish.socket_path", f"a bindable socket path ({exc.strerror})") from exc
        self._inode = os.stat(self.path).st_ino
        self._run_task = asyncio.get_running_loop().create_task(self._run(), name="feed-publisher")
        log.info("feed socket listening", extra={"socket": str(self.path)})

    def _prepare_path(self) -> None:
        path = self.path
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ConfigError("publish.socket_path", f"at most {MAX_UNIX_PATH} bytes long (got {path})")
        if not path.parent.is_dir():
            raise ConfigError(
                "publish.socket_path", f"a path in an existing directory ({path.parent} missing)"
            )
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(
                "publish.socket_path", f"a socket path, not an existing non-socket file ({path})"
            )
        if _socket_alive(path):
            raise ConfigError("publish.socket_path", f"a socket no other running process serves ({path})")
        log.warning("replacing stale feed socket", extra={"socket": str(path)})
        path.unlink()

    async def _run(self) -> None:
        """Drain the queue to the clients until `close()`; never raises on a bad item or client."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                self._flush_batch()
                # Yield between batches: the hot path and the clients' readers must not starve.
                await asyncio.sleep(0)
            if self._closing:
                return

    def _flush(self) -> None:
        while self._queue:
            self._flush_batch()

    def _flush_batch(self) -> None:
        queue = self._queue
        if queue:
            # Encode a batch into one buffer: one write per client per batch, not per message.
            chunks = []
            for _ in range(min(len(queue), 256)):
                item, kind = queue.popleft()
                if kind == "book_top" and not isinstance(item, Mapping):
                    self._latest_top[(str(item.market), item.symbol)] = item
                try:
                    chunks.append(encode(item, kind))
                except Exception as exc:  # a bad item is logged and skipped, never fatal
                    self.stats.encode_errors += 1
                    log.error(
                        "unencodable feed item", extra={"item_type": type(item).__name__, "error": str(exc)}
                    )
            if not chunks:
                return
            data = b"".join(chunks)
            self.stats.published += len(chunks)
            for client in list(self._clients.values()):
                self._send(client, data)

    def _send(self, client: _Client, data: bytes) -> None:
        transport = client.transport
        if transport.is_closing():
            self._forget(client)
            return
        if transport.get_write_buffer_size() + len(data) > self.client_buffer_bytes:
            self.stats.clients_dropped_slow += 1
            log.warning(
                "dropping slow feed client",
                extra={"client": client.cid, "buffered": transport.get_write_buffer_size()},
            )
            self._forget(client)
            transport.abort()
            return
        transport.write(data)
        self.stats.bytes_out += len(data)

    def _forget(self, client: _Client) -> None:
        if self._clients.pop(client.cid, None) is not None:
            self.stats.clients_connected = len(self._clients)
            self._notify_changed()

    def _notify_changed(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        # Fire-and-forget: callers are synchronous; the condition only serves waiters like tests.
        task = asyncio.get_running_loop().create_task(notify())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def wait_for_clients(self, count: int, timeout: float = 5.0) -> None:
        """Wait until exactly `count` clients are connected (tests, and a `--wait-client` start)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self._clients) == count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or len(self._clients) >= self.max_clients:
            self.stats.clients_refused += 1
            writer.transport.abort()
            return
        self._next_cid += 1
        client = _Client(self._next_cid, writer)
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        self._clients[client.cid] = client
        self.stats.clients_total += 1
        self.stats.clients_connected = len(self._clients)
        hello = {"type": "hello", "version": VERSION, "ts_ns": time.time_ns(), **self.hello}
        # Then the latest top of every symbol as already sent to the others (so no reordering with
        # what is still queued): a new client sees the market at once, not at the next change.
        frames = [encode(hello)] + [encode(top, "book_top") for top in self._latest_top.values()]
        self._send(client, b"".join(frames))
        self._notify_changed()
        try:
            # Clients have nothing to say; read (and discard) only to learn when they go away.
            while await reader.read(4096):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            if client.cid in self._clients:
                self.stats.clients_disconnected += 1
                self._forget(client)
            writer.transport.abort()

    async def close(self) -> None:
        """Stop accepting, flush what is queued to clients that keep up, disconnect all, remove the socket."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if self._run_task is not None and not self._run_task.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._run_task), 5.0)
        else:
            self._flush()
        if self._server is not None:
            self._server.close()
        for client in list(self._clients.values()):
            self._forget(client)
            # Closing (not aborting) lets a reading client receive the tail; a stuck one is aborted.
            if client.transport.get_write_buffer_size():
                client.transport.abort()
            else:
                client.writer.close()
        # Wait for the per-client reader tasks to see their connections end, so none is left pending.
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2.0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()


def _socket_alive(path: Path) -> bool:
    """True if some process accepts connections on the socket at `path` (so it is not stale)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise ConfigError("publish.socket_path", f"a usable socket path ({exc.strerror})") from exc
    else:
        return True
    finally:
        probe.close()


# Engine outputs and events the feed carries, by class name -> message type. Anything else is not
# market data for clients (orders, equity samples...) and is left out unless added here.
FEED_TYPES: dict[str, str] = {
    "BookTop": "book_top",
    "SyncChange": "status",
    "FeedStatus": "status",
    "Fill": "fill",
    "FeatureVector": "features",
    "Signal": "signal",
    "TradingStateChanged": "status",
    "BreakerChanged": "status",
    "PauseChange": "status",
}


class FeedSink:
    """The worker's sink signature `(event, outputs) -> None`, offering what clients want to `publisher`.

    Synchronous and cheap: one dict lookup per output; book tops go through `offer_book_top` (change
    filter); a `FeedStatus` event (the source's connection state) is published itself.
    """

    def __init__(self, publisher: Publisher, types: Mapping[str, str] | None = None) -> None:
        self.publisher = publisher
        self.types = dict(FEED_TYPES if types is None else types)

    def __call__(self, event: Any, outputs: list[Any]) -> None:
        if type(event).__name__ == "FeedStatus":
            self.publisher.offer(event, "status")
        for out in outputs:
            kind = self.types.get(type(out).__name__)
            if kind == "book_top":
                self.publisher.offer_book_top(out)
            elif kind is not None:
                self.publisher.offer(out, kind)
