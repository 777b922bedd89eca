"""One-shot Telegram delivery for the scheduled jobs, through the worker's own `Notifier`.

Design:
- A job is a short process: it starts a `worker.notify.Notifier`, queues its notes, and closes it with
  a bounded flush, so the pacing, 429 `retry_after` handling, retries and token redaction are the
  worker's, not a second copy.
- Configuration comes from the environment: `TELEGRAM_BOT_TOKEN`, `TELEGRAM_CHAT_ID`, optional
  `TELEGRAM_API_BASE` (tests point it at the loopback stand-in). Missing values: nothing is sent and
  the returned text says so.
- Never raises for delivery problems: it returns one line saying what happened, for the job's log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence

from worker.errors import ConfigError
from worker.notify import Notifier, TelegramConfig


def configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("TELEGRAM_BOT_TOKEN") and env.get("TELEGRAM_CHAT_ID"))


def config_from_env(env: Mapping[str, str] | None = None) -> TelegramConfig | None:
    env = os.environ if env is None else env
    token, chat = env.get("TELEGRAM_BOT_TOKEN", ""), env.get("TELEGRAM_CHAT_ID", "")
    if not token or not chat:
        return None
    return TelegramConfig(
        token=token,
        chat_id=chat,
        base_url=env.get("TELEGRAM_API_BASE", "") or "https://api.telegram.org",
        timeout_s=10.0,
        max_attempts=3,
        backoff_s=1.0,
        max_retry_after_s=30.0,
    )


async def _send(
    config: TelegramConfig, texts: Sequence[str], photos: Sequence[tuple[bytes, str]], flush_s: float
):
    notifier = Notifier(config)
    await notifier.start()
    for text in texts:
        notifier.offer(text)
    for png, caption in photos:
        notifier.offer_photo(png, caption)
    await notifier.close(flush_timeout=flush_s)
    return notifier


def send(
    texts: Sequence[str] = (),
    photos: Sequence[tuple[bytes, str]] = (),
    env: Mapping[str, str] | None = None,
    flush_s: float = 60.0,
) -> str:
    """Deliver `texts` then `photos` ((png, caption)); returns a one-line outcome."""
    try:
        config = config_from_env(env)
    except ConfigError as exc:
        return f"telegram: not sent: bad configuration ({exc})"
    if config is None:
        return "telegram: not sent: TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID not set"
    notifier = asyncio.run(_send(config, texts, photos, flush_s))
    st = notifier.stats
    wanted = len(texts) + len(photos)
    if st.sent == wanted:
        return f"telegram: sent {st.sent} message(s)"
    why = notifier.disabled or (
        f"failed {st.failed}, rejected {st.rejected}, unauthorized {st.unauthorized}, errors {st.errors}"
    )
    return f"telegram: sent {st.sent} of {wanted} message(s) ({why})"
