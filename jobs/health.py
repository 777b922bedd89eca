"""`python -m jobs.health --api URL --worker URL`: the scheduled health check (GitHub Actions cron).

Design:
- Each target's `/health` is fetched with a timeout and a few retries (a cold API machine may need a
  moment to start); healthy means HTTP 200. One line per check on stdout.
- Alerts go to Telegram only when a target's state changes (healthy -> unhealthy, or back), remembered in
  a small JSON state file, so a long outage is one alert, not one every 15 minutes.
- An alert Telegram did not accept leaves the remembered state of the changed targets as it was, so the
  next run tries again instead of forgetting the outage; without Telegram configured the state still
  advances (the log line is then the only report).
- Exit status: 0 when every target is healthy, 1 otherwise. Unreachable or malformed URLs and an
  unwritable state file are reported, never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    url: str
    healthy: bool
    detail: str

    def line(self) -> str:
        verdict = "healthy" if self.healthy else "UNHEALTHY"
        return f"{self.name} {self.url}: {verdict} ({self.detail})"


def health_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/health") else base + "/health"


def _summarize(body: bytes) -> str:
    """A short reason from the JSON body, without dumping it all into the log."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:120].decode(errors="replace")
    if isinstance(data, dict):
        reasons = data.get("reasons") or data.get("reason") or data.get("problems")
        if reasons:
            return "; ".join(reasons) if isinstance(reasons, list) else str(reasons)
        return str(data.get("status", ""))
    return ""


def check(
    client: httpx.Client, name: str, base: str, retries: int, backoff_s: float, sleep=time.sleep
) -> CheckResult:
    url = health_url(base)
    detail = ""
    for attempt in range(retries + 1):
        started = time.perf_counter()
        try:
            response = client.get(url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            detail = f"unreachable: {type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            elapsed_ms = (time.perf_counter() - started) * 1000
            if response.status_code == 200:
                return CheckResult(name, url, True, f"200 in {elapsed_ms:.0f} ms")
            reason = _summarize(response.content)
            detail = f"HTTP {response.status_code}" + (f": {reason}" if reason else "")
            if response.status_code < 500:
                break  # a 4xx will not change by asking again
        if attempt < retries:
            sleep(backoff_s * (2**attempt))
    return CheckResult(name, url, False, detail)


def load_state(path: Path | None) -> dict[str, bool]:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: bool(v) for k, v in data.items()} if isinstance(data, dict) else {}


def changes(previous: dict[str, bool], results: list[CheckResult]) -> list[CheckResult]:
    """Results whose state differs from the last run; a first unhealthy sighting counts as a change."""
    return [r for r in results if previous.get(r.name, True) != r.healthy]


def alert_text(changed: list[CheckResult]) -> str:
    lines = []
    for result in changed:
        if result.healthy:
            lines.append(f"✅ {result.name} recovered: {result.detail}")
        else:
            lines.append(f"🚨 {result.name} is unhealthy: {result.detail}")
    return "QuantumFlow health\n" + "\n".join(lines)


def send_alert(text: str) -> tuple[bool | None, str]:
    """Send to Telegram (see `jobs.telegram`). Returns (delivered, what happened); delivered is None
    when Telegram is not configured at all."""
    from jobs import telegram

    if not telegram.configured():
        return None, "alert not sent: TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID not set"
    outcome = telegram.send([text], flush_s=30.0)
    return outcome.startswith("telegram: sent 1 "), outcome


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", required=True, help="base URL of the API (its /health is checked)")
    parser.add_argument("--worker", required=True, help="base URL of the worker's health endpoint")
    parser.add_argument("--state", type=Path, default=None, help="JSON file remembering the last states")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=2, help="retries after a failed request")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.health", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.retries < 0 or args.backoff < 0:
        parser.error("--timeout must be > 0, --retries and --backoff >= 0")
    with httpx.Client(timeout=args.timeout, follow_redirects=True) as client:
        results = [
            check(client, "api", args.api, args.retries, args.backoff),
            check(client, "worker", args.worker, args.retries, args.backoff),
        ]
    for result in results:
        print(result.line(), flush=True)
    previous = load_state(args.state)
    changed = changes(previous, results)
    state = {r.name: r.healthy for r in results}
    if changed:
        delivered, outcome = send_alert(alert_text(changed))
        print(outcome, flush=True)
        if delivered is False:
            for result in changed:  # try again next run rather than forget the change
                state[result.name] = previous.get(result.name, True)
    if args.state is not None:
        try:
            args.state.write_text(json.dumps(state, sort_keys=True))
        except OSError as exc:
            print(f"state file {args.state} not written: {exc.strerror}", file=sys.stderr, flush=True)
    return 0 if all(r.healthy for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
