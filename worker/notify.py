"""Telegram notifications: message builders, and a paced sender that can never hurt the worker.

Design:
- Builders (`started`, `stopped`, `fill_text`, `fills_digest`, `breaker_tripped`, `breaker_reset`,
  `resync_storm`, `stale_feed`, `feed_recovered`, `shabbat_pause`, `shabbat_resume`, `error`,
  `daily_summary`) are pure functions returning plain text (no parse_mode, so nothing needs escaping),
  cut to Telegram's 4096-character limit.
- `Notifier.offer*()` is for the synchronous hot path: a bounded deque append, never blocks, never
  raises; a full queue drops the new note and counts it (`stats.queue_dropped`).
- `Notifier.run()` is the one sender task. Pacing: at most one request per `min_interval_s` per chat
  (Telegram: about 1 message/s per chat). Fills offered while a chat's digest is still queued join
  it (running totals per symbol and side, constant memory), so a burst of any size costs one queue
  slot and one message, not a backlog.
- Failures: 429 waits the `retry_after` Telegram names, then retries (up to `max_rate_limited` times,
  and never longer than `max_retry_after_s`); timeouts, network errors and 5xx retry with doubling
  backoff up to `max_attempts`, then the note is dropped and counted (`stats.failed`); 400/403 (bad or
  blocked chat) are counted as `rejected`; 401/404 (bad token) disable the notifier, counted and logged
  once. Nothing propagates into the worker.
- The token is a secret: it is registered with `worker.logs.add_secret`, which redacts it from every
  log record (including httpx's request-URL lines) and every error text we build.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from worker import logs
from worker.errors import ConfigError

if TYPE_CHECKING:  # httpx (+ the rich/click/pygments its CLI pulls in) costs ~10 MB RSS: loaded on first send
    import httpx

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_CAPTION = 1024
TOKEN_SHAPE = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    """Where and how fast to send. No token or no chat id: the notifier is off (and says so once)."""

    token: str | None
    chat_id: str | int | None
    base_url: str = "https://api.telegram.org"
    timeout_s: float = 10.0
    min_interval_s: float = 1.0  # per chat
    max_queue: int = 200
    max_attempts: int = 4  # per note, for timeouts / network errors / 5xx
    backoff_s: float = 1.0  # first retry delay; doubles per attempt, capped at max_backoff_s
    max_backoff_s: float = 30.0
    max_rate_limited: int = 5  # 429s per note before it is dropped
    max_retry_after_s: float = 120.0  # a longer flood wait drops the note instead of stalling the rest

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("telegram.base_url", "an http:// or https:// URL")
        for name in ("timeout_s", "backoff_s", "max_backoff_s", "max_retry_after_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"telegram.{name}", "a positive number of seconds")
        if self.min_interval_s < 0:
            raise ConfigError("telegram.min_interval_s", "zero or more seconds")
        for name in ("max_queue", "max_attempts", "max_rate_limited"):
            if getattr(self, name) < 1:
                raise ConfigError(f"telegram.{name}", "at least 1")

    def __repr__(self) -> str:  # the dataclass repr would print the token
        return f"TelegramConfig(base_url={self.base_url!r}, chat_id={self.chat_id!r}, token=<redacted>)"


# --- message builders --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillNote:
    """A fill in human units (Decimal), as the notifier shows it."""

    symbol: str
    side: str  # "BUY" / "SELL"
    qty: Decimal
    price: Decimal
    fee: Decimal | None = None
    fee_asset: str = ""
    liquidity: str = ""
    quote: str = "USDT"


def fill_note(fill: Any, instrument: Any) -> FillNote:
    """Convert a `worker.orders.Fill` (ticks, lots, money units) with its `Instrument`."""
    from worker.instruments import money_decimal

    side = getattr(fill.side, "name", str(fill.side))
    return FillNote(
        symbol=fill.symbol,
        side=side,
        qty=instrument.qty_decimal(fill.qty),
        price=instrument.price_decimal(fill.price),
        fee=money_decimal(fill.fee),
        fee_asset=fill.fee_asset,
        liquidity=str(getattr(fill.liquidity, "value", fill.liquidity)),
        quote=getattr(instrument, "quote_asset", "USDT"),
    )


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def started(version: str, symbols: Iterable[str], mode: str = "paper", host: str = "") -> str:
    where = f" on {host}" if host else ""
    return _cut(f"▶️ QuantumFlow {version} started{where} ({mode}): {', '.join(symbols)}")


def stopped(reason: str, uptime_s: float | None = None) -> str:
    up = f" after {_duration(uptime_s)}" if uptime_s is not None else ""
    return _cut(f"⏹ QuantumFlow stopped{up}: {reason}")


def fill_text(fill: FillNote) -> str:
    fee = f", fee {fill.fee} {fill.fee_asset}" if fill.fee is not None else ""
    liq = f" ({fill.liquidity})" if fill.liquidity else ""
    return _cut(f"💱 {fill.side} {fill.qty} {fill.symbol} @ {fill.price}{liq}{fee}")


@dataclass(slots=True)
class _Group:
    count: int = 0
    qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    exponent: int = -2  # decimals to show the average price with
    fees: dict[str, Decimal] = field(default_factory=dict)


@dataclass(slots=True)
class FillDigest:
    """Running totals of fills per (symbol, side): a burst of any size costs constant memory."""

    total: int = 0
    first: FillNote | None = None
    groups: dict[tuple[str, str], _Group] = field(default_factory=dict)

    def add(self, fill: FillNote) -> None:
        self.total += 1
        if self.first is None:
            self.first = fill
        group = self.groups.setdefault((fill.symbol, fill.side), _Group())
        group.count += 1
        group.qty += fill.qty
        group.notional += fill.qty * fill.price
        group.exponent = min(group.exponent, int(fill.price.as_tuple().exponent))
        if fill.fee is not None:
            group.fees[fill.fee_asset] = group.fees.get(fill.fee_asset, Decimal(0)) + fill.fee

    def text(self) -> str:
        if self.total == 1 and self.first is not None:
            return fill_text(self.first)
        lines = [f"💱 {self.total} fills"]
        for (symbol, side), g in sorted(self.groups.items()):
            avg = (g.notional / g.qty).quantize(Decimal(1).scaleb(g.exponent)) if g.qty else Decimal(0)
            fee = "".join(f", fee {v} {k}" for k, v in sorted(g.fees.items()))
            lines.append(f"{symbol} {side}: {g.count} fills, {g.qty} @ avg {avg}{fee}")
        return _cut("\n".join(lines))


def fills_digest(fills: Sequence[FillNote]) -> str:
    """Many fills in one message: per symbol and side, count, quantity, average price, fees."""
    digest = FillDigest()
    for f in fills:
        digest.add(f)
    return digest.text()


def breaker_tripped(name: str, reason: str, value: Any = None, limit: Any = None) -> str:
    detail = f" ({value} vs limit {limit})" if value is not None and limit is not None else ""
    return _cut(f"🛑 Circuit breaker {name} TRIPPED: {reason}{detail}. Trading halted.")


def breaker_reset(name: str, by: str = "operator") -> str:
    return _cut(f"✅ Circuit breaker {name} reset by {by}. Trading resumes.")


def resync_storm(symbol: str, resyncs: int, window_s: float) -> str:
    return _cut(f"⚠️ Resync storm on {symbol}: {resyncs} book resyncs in {_duration(window_s)}")


def stale_feed(symbol: str, age_s: float | None, detail: str = "") -> str:
    """A stream went silent (the source's watchdog closed it, or the source reported STALE)."""
    silent = "no message yet" if age_s is None else f"no message for {age_s:.1f} s"
    return _cut(f"⚠️ Feed stale on {symbol}: {silent}" + (f" ({detail})" if detail else ""))


def feed_recovered(symbol: str, down_s: float) -> str:
    return _cut(f"✅ Feed on {symbol} back after {_duration(down_s)}")


def shabbat_pause(until: str, reason: str = "Shabbat") -> str:
    return _cut(f"🕯 {reason}: trading paused until {until}")


def shabbat_resume(reason: str = "Shabbat") -> str:
    return _cut(f"🌅 {reason} over: trading resumed")


def error(where: str, message: str) -> str:
    return _cut(f"❗ Error in {where}: {logs.redact(message)}")


def daily_summary(day: str, figures: Mapping[str, Any]) -> str:
    """`figures` in display order, e.g. {"P&L": "12.3 USDT", "fills": 41, "max drawdown": "0.4%"}."""
    lines = [f"📊 Daily summary {day}"] + [f"{k}: {v}" for k, v in figures.items()]
    return _cut("\n".join(lines))


class ErrorNotes:
    """Worker errors as notes: `(where, exc, count)` -> one keyed note per place and exception type per
    `cooldown_s`; repeats inside the cooldown are counted by the notifier (`stats.suppressed`), so an
    error that recurs on every event alerts once, not thousands of times. Never raises."""

    def __init__(self, notifier: Notifier, cooldown_s: float = 300.0) -> None:
        self.notifier = notifier
        self.cooldown_s = cooldown_s

    def __call__(self, where: str, exc: BaseException, count: int) -> None:
        try:
            kind = type(exc).__name__
            text = error(
                where,
                f"{kind}: {exc} (#{count}; repeats within {_duration(self.cooldown_s)} are only counted)",
            )
            self.notifier.offer(text, key=f"error:{where}:{kind}", cooldown_s=self.cooldown_s)
        except Exception:  # an alert must never add a failure to the one it reports
            log.exception("error note failed")


class StormDetector:
    """Counts events (book resyncs, reconnects) per key in a sliding window; reports a storm once.

    `observe(key, now_s)` returns the count when it first reaches `threshold` inside `window_s`, then
    stays quiet for that key until the window has emptied below the threshold again. Time comes from
    the caller (event receive time), so it is deterministic in replay.
    """

    def __init__(self, threshold: int = 5, window_s: float = 300.0) -> None:
        if threshold < 2:
            raise ConfigError("alerts.resync_storm_threshold", "at least 2")
        if not window_s > 0:
            raise ConfigError("alerts.resync_storm_window_s", "a positive number of seconds")
        self.threshold = threshold
        self.window_s = window_s
        self._events: dict[str, deque[float]] = {}
        self._storming: set[str] = set()

    def observe(self, key: str, now_s: float) -> int | None:
        events = self._events.setdefault(key, deque())
        events.append(now_s)
        while events and events[0] <= now_s - self.window_s:
            events.popleft()
        if len(events) < self.threshold:
            self._storming.discard(key)
            return None
        if key in self._storming:
            return None
        self._storming.add(key)
        return len(events)


# --- sender ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class NotifierStats:
    offered: int = 0
    sent: int = 0  # messages Telegram accepted (a digest counts once)
    digests: int = 0  # of which fill digests
    queue_dropped: int = 0  # offers refused: queue full or closing
    disabled_dropped: int = 0  # offers and queued notes dropped because the notifier is off
    failed: int = 0  # dropped after the retries ran out (timeouts, 5xx, network, 429 beyond limits)
    rejected: int = 0  # refused by Telegram for good (400 bad chat, 403 blocked, other 4xx)
    unauthorized: int = 0  # 401/404: bad token; the notifier turns itself off
    rate_limited: int = 0  # 429 answers obeyed
    retries: int = 0  # retried attempts after a timeout / 5xx / network error
    errors: int = 0  # unexpected exceptions inside the sender (logged, survived)
    suppressed: int = 0  # keyed repeats inside their cooldown


@dataclass(slots=True)
class _Note:
    kind: str  # "text" | "fill" (placeholder for the chat's pending FillDigest) | "photo"
    text: str = ""
    chat_id: str = ""
    photo: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Outcome(Exception):
    """Internal: how one attempt ended when it did not succeed."""

    def __init__(self, kind: str, status: int = 0, description: str = "", retry_after: float = 0) -> None:
        super().__init__(kind)
        self.kind = kind  # "transient" | "rate_limited" | "rejected" | "unauthorized"
        self.status = status
        self.description = description
        self.retry_after = retry_after


class Notifier:
    """Lifecycle: construct, `await start()`, `offer*()` freely, `await close()` (flushes, bounded)."""

    def __init__(self, config: TelegramConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.stats = NotifierStats()
        logs.add_secret(config.token)
        self._queue: deque[_Note] = deque()
        self._wakeup = asyncio.Event()
        self._next_allowed: dict[str, float] = {}
        self._last_by_key: dict[str, float] = {}
        self._fills: dict[str, FillDigest] = {}  # chat -> fills waiting in that chat's queued digest
        self._closing = False
        self._run_task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._transport = transport
        self.disabled: str | None = None
        if not config.token or config.chat_id in (None, ""):
            self.disabled = "no token or chat id configured"
            log.info("telegram notifications off", extra={"reason": self.disabled})
        elif not TOKEN_SHAPE.match(config.token):
            # Still try: Telegram is the judge; a 401 will switch us off, counted.
            log.warning("telegram token does not look like a bot token (digits:secret)")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- hot path -------------------------------------------------------------------------------------
    def offer(
        self, text: str, chat_id: str | int | None = None, key: str | None = None, cooldown_s: float = 300.0
    ) -> bool:
        """Queue a text. With `key` (e.g. "stale:BTCUSDT"), repeats within `cooldown_s` are suppressed
        and counted, so a condition that persists alerts once, not on every tick."""
        if key is not None:
            now = time.monotonic()
            last = self._last_by_key.get(key)
            if last is not None and now - last < cooldown_s:
                self.stats.suppressed += 1
                return False
            self._last_by_key[key] = now
        return self._offer(_Note("text", text=_cut(text), chat_id=self._chat(chat_id)))

    def offer_fill(self, fill: FillNote, chat_id: str | int | None = None) -> bool:
        """Add a fill to the chat's pending digest; it takes one queue slot however many fills join."""
        chat = self._chat(chat_id)
        digest = self._fills.get(chat)
        if digest is not None and not self.disabled and not self._closing:
            self.stats.offered += 1
            digest.add(fill)  # a digest note for this chat is already queued: join it
            return True
        if not self._offer(_Note("fill", chat_id=chat)):
            return False
        self._fills[chat] = FillDigest()
        self._fills[chat].add(fill)
        return True

    def offer_photo(self, png: bytes, caption: str = "", chat_id: str | int | None = None) -> bool:
        return self._offer(
            _Note("photo", text=_cut(caption, MAX_CAPTION), photo=png, chat_id=self._chat(chat_id))
        )

    def _chat(self, chat_id: str | int | None) -> str:
        return str(self.config.chat_id if chat_id is None else chat_id)

    def _offer(self, note: _Note) -> bool:
        self.stats.offered += 1
        if self.disabled:
            self.stats.disabled_dropped += 1
            return False
        if self._closing or len(self._queue) >= self.config.max_queue:
            self.stats.queue_dropped += 1
            return False
        self._queue.append(note)
        self._wakeup.set()
        return True

    # -- sender ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Spawn the sender task (`run()`) on the running loop."""
        if self._run_task is None:
            self._run_task = asyncio.get_running_loop().create_task(self.run(), name="telegram-sender")

    async def run(self) -> None:
        """Send queued notes until `close()`; survives every failure. `start()` runs it as a task."""
        import httpx  # lazy: replays and tests that never send keep ~10 MB of imports out of RSS

        self._run_task = asyncio.current_task()
        self._client = httpx.AsyncClient(
            base_url=self.config.base_url, timeout=self.config.timeout_s, transport=self._transport
        )
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                try:
                    await self._wait_slot(self._queue[0].chat_id)
                    note = self._take()
                    await self._deliver(note)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug here must not kill the worker's notifications
                    self.stats.errors += 1
                    log.error("telegram sender error", extra={"error": logs.redact(repr(exc))})
        finally:
            await self._client.aclose()

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Refuse new notes, give the queue `flush_timeout` seconds to drain, then stop the sender."""
        self._closing = True
        self._wakeup.set()
        task = self._run_task
        if task is not None and not task.done():
            done, _ = await asyncio.wait([task], timeout=flush_timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._queue:
            self.stats.failed += len(self._queue)
            log.warning("telegram notes dropped at shutdown", extra={"count": len(self._queue)})
            self._queue.clear()
            self._fills.clear()

    def _take(self) -> _Note:
        """Pop the next note; a fill note becomes the text of every fill that joined its digest."""
        note = self._queue.popleft()
        if note.kind != "fill":
            return note
        digest = self._fills.pop(note.chat_id, None) or FillDigest()
        if digest.total > 1:
            self.stats.digests += 1
        return _Note("text", text=digest.text(), chat_id=note.chat_id)

    async def _wait_slot(self, chat_id: str) -> None:
        loop = asyncio.get_running_loop()
        delay = self._next_allowed.get(chat_id, 0.0) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _hold(self, chat_id: str, seconds: float) -> None:
        now = asyncio.get_running_loop().time()
        self._next_allowed[chat_id] = max(self._next_allowed.get(chat_id, 0.0), now + seconds)

    async def _deliver(self, note: _Note) -> None:
        cfg = self.config
        attempts = 0
        limited = 0
        while True:
            try:
                await self._attempt(note)
                self.stats.sent += 1
                return
            except _Outcome as outcome:
                fields = {"chat": note.chat_id, "status": outcome.status, "description": outcome.description}
                if outcome.kind == "rate_limited":
                    self.stats.rate_limited += 1
                    limited += 1
                    if limited > cfg.max_rate_limited or outcome.retry_after > cfg.max_retry_after_s:
                        self.stats.failed += 1
                        log.error(
                            "telegram rate limit: note dropped",
                            extra={**fields, "retry_after": outcome.retry_after},
                        )
                        return
                    log.warning("telegram rate limited", extra={**fields, "retry_after": outcome.retry_after})
                    self._hold(note.chat_id, outcome.retry_after)
                    await self._wait_slot(note.chat_id)
                    continue
                if outcome.kind == "unauthorized":
                    self.stats.unauthorized += 1
                    self.disabled = "unauthorized: check the bot token"
                    dropped = len(self._queue)
                    self._queue.clear()
                    self._fills.clear()
                    self.stats.disabled_dropped += dropped
                    log.error(
                        "telegram refused the bot token; notifications off",
                        extra={**fields, "dropped": dropped},
                    )
                    return
                if outcome.kind == "rejected":
                    self.stats.rejected += 1
                    log.error("telegram rejected a message", extra=fields)
                    return
                attempts += 1
                if attempts >= cfg.max_attempts:
                    self.stats.failed += 1
                    log.error("telegram send failed; note dropped", extra={**fields, "attempts": attempts})
                    return
                self.stats.retries += 1
                delay = min(cfg.backoff_s * 2 ** (attempts - 1), cfg.max_backoff_s)
                log.warning(
                    "telegram send failed; retrying", extra={**fields, "attempt": attempts, "delay_s": delay}
                )
                self._hold(note.chat_id, delay)
                await self._wait_slot(note.chat_id)

    async def _attempt(self, note: _Note) -> None:
        """One HTTP request; returns on success, raises `_Outcome` otherwise. Paces the chat either way."""
        import httpx  # already loaded by run(): a sys.modules lookup

        assert self._client is not None
        path = f"/bot{self.config.token}/" + ("sendPhoto" if note.kind == "photo" else "sendMessage")
        self._hold(note.chat_id, self.config.min_interval_s)
        try:
            if note.kind == "photo":
                data = {"chat_id": note.chat_id, "caption": note.text}
                files = {"photo": ("chart.png", note.photo or b"", "image/png")}
                response = await self._client.post(path, data=data, files=files)
            else:
                response = await self._client.post(path, json={"chat_id": note.chat_id, "text": note.text})
        except httpx.TimeoutException as exc:
            raise _Outcome("transient", description=f"timeout ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise _Outcome("transient", description=logs.redact(f"{type(exc).__name__}: {exc}")) from None
        finally:
            self._hold(note.chat_id, self.config.min_interval_s)  # pace from the END of the request too
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200 and body.get("ok") is True:
            return
        description = logs.redact(str(body.get("description") or response.reason_phrase or ""))[:300]
        if status == 429:
            params = body.get("parameters") or {}
            retry_after = (
                _number(params.get("retry_after")) or _number(response.headers.get("retry-after")) or 1.0
            )
            raise _Outcome("rate_limited", status, description, retry_after)
        if status in (401, 404):
            raise _Outcome("unauthorized", status, description)
        if status >= 500 or status == 200:  # 200 without ok: a broken proxy, worth a retry
            raise _Outcome("transient", status, description)
        raise _Outcome("rejected", status, description)


def _number(value: Any) -> float:
    try:
        return max(float(value), 0.0)
    except (TypeError, ValueError):
        return 0.0


class AlertSink:
    """The worker's sink signature `(event, outputs) -> None`, turning engine outputs into notes.

    - `Fill` -> `offer_fill` (digested), converted with the symbol's `Instrument`.
    - `SyncChange` back to syncing -> counted per book in `storms`; a storm alerts (keyed cooldown).
    - `FeedStatus` event STALE, or DISCONNECTED because the source's watchdog found a stream silent
      (reason `... silent`) -> `stale_feed` with the age of the symbol's last message; any other
      DISCONNECTED -> a disconnect note; one keyed alert per symbol and cooldown; CONNECTED after one of
      those -> a recovery note. The last message time per symbol is tracked here (one dict store per
      event) because the feed status itself carries only the time it was noticed.
    Breaker trips/resets, Shabbat pause/resume, start/stop and the daily summary are offered by the
    worker where those happen, with the builders above.
    """

    def __init__(
        self,
        notifier: Notifier,
        instruments: Mapping[str, Any],
        storms: StormDetector | None = None,
        cooldown_s: float = 300.0,
    ) -> None:
        self.notifier = notifier
        self.instruments = instruments  # symbol -> Instrument (fills carry no market)
        self.storms = storms or StormDetector()
        self.cooldown_s = cooldown_s
        self._down_since: dict[str, int] = {}
        self._last_ns: dict[tuple[Any, str], int] = {}

    def __call__(self, event: Any, outputs: list[Any]) -> None:
        if type(event).__name__ == "FeedStatus":
            self._feed_status(event)
        else:
            symbol = getattr(event, "symbol", None)
            if symbol is not None:
                self._last_ns[(event.market, symbol)] = event.recv_ns
        for out in outputs:
            name = type(out).__name__
            if name == "Fill":
                instrument = self.instruments.get(out.symbol)
                if instrument is not None:
                    self.notifier.offer_fill(fill_note(out, instrument))
            elif name == "SyncChange" and str(out.state) == "syncing":
                key = f"{out.market}:{out.symbol}"
                count = self.storms.observe(key, out.recv_ns / 1e9)
                if count is not None:
                    text = resync_storm(key, count, self.storms.window_s)
                    self.notifier.offer(text, key=f"storm:{key}", cooldown_s=self.cooldown_s)

    def _feed_status(self, status: Any) -> None:
        key = f"{status.market}:{status.symbol}"
        state = str(status.state)
        if state in ("stale", "disconnected"):
            self._down_since.setdefault(key, status.recv_ns)
            if state == "stale" or is_stale_reason(status.reason):
                last = self._last_ns.get((status.market, status.symbol))
                age = None if last is None else max(status.recv_ns - last, 0) / 1e9
                text = stale_feed(key, age, status.reason)
            else:
                text = _cut(f"⚠️ Feed {state} on {key}: {status.reason}")
            self.notifier.offer(text, key=f"feed:{key}", cooldown_s=self.cooldown_s)
        elif state == "connected" and key in self._down_since:
            down_s = (status.recv_ns - self._down_since.pop(key)) / 1e9
            self.notifier.offer(feed_recovered(key, down_s))


def is_stale_reason(reason: str) -> bool:
    """The source's watchdog closes a silent stream with a reason naming it (`reconnect: S silent`)."""
    text = reason.lower()
    return "silent" in text or "stale" in text
