"""`python -m worker tail --socket PATH`: print the Unix-socket feed as JSON lines.

Design:
- A plain blocking client: connect, read length-prefixed MessagePack frames (`worker.publish` wire
  format), print one JSON object per line, flush per batch so `| jq` sees messages as they arrive.
- `--type` filters by message type; `--count N` exits after N printed messages (scripts and tests).
- `--follow` reconnects (every second) when the worker restarts or is not up yet.
- Exit codes: 0 when the feed ends or `--count` is reached (or stdout is closed, e.g. `| head`),
  1 when the socket cannot be reached (without `--follow`), 2 on a corrupt frame.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any

import orjson

from worker.publish import decode_stream


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        default=os.environ.get("QF_PUBLISH_SOCKET"),
        help="feed socket path (default: $QF_PUBLISH_SOCKET)",
    )
    parser.add_argument("--type", action="append", dest="types", help="only this message type (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    parser.add_argument(
        "--follow", action="store_true", help="keep going across worker restarts (reconnect every second)"
    )


def _dumps(message: Any) -> str:
    try:
        return orjson.dumps(message, default=_fallback).decode()
    except TypeError:  # integers beyond 64 bits: the stdlib handles them
        return json.dumps(message, default=_fallback, separators=(",", ":"))


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


def main(args: argparse.Namespace) -> int:
    if not args.socket:
        print("tail: --socket PATH is required (or set QF_PUBLISH_SOCKET)", file=sys.stderr)
        return 1
    state = {"printed": 0}
    while True:
        code = _session(args, state)
        if code in (3, 4):  # --count reached, or stdout closed / interrupted
            return 0
        if code == 2 or not args.follow:  # a corrupt frame will not heal by reconnecting
            return code
        try:
            time.sleep(1.0)  # worker restarting: try again, politely
        except KeyboardInterrupt:
            return 0


def _session(args: argparse.Namespace, state: dict[str, int]) -> int:
    """One connection. 0: feed ended; 1: cannot connect; 2: corrupt frame; 3: --count reached;
    4: stdout closed or interrupted."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args.socket)
    except OSError as exc:
        if not state.get("warned"):
            print(f"tail: cannot connect to {args.socket}: {exc.strerror or exc}", file=sys.stderr)
            state["warned"] = 1
        sock.close()
        return 1
    state["warned"] = 0
    wanted = set(args.types or ())
    buffer = bytearray()
    out = sys.stdout
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                if args.follow:
                    print("tail: feed ended; reconnecting", file=sys.stderr)
                return 0
            buffer += chunk
            try:
                messages = decode_stream(buffer)
            except Exception as exc:
                print(f"tail: corrupt frame: {exc}", file=sys.stderr)
                return 2
            lines = []
            for message in messages:
                if wanted and message.get("type") not in wanted:
                    continue
                lines.append(_dumps(message))
                state["printed"] += 1
                if args.count and state["printed"] >= args.count:
                    break
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
            if args.count and state["printed"] >= args.count:
                return 3
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at devnull so exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 4
    except KeyboardInterrupt:
        return 4
    finally:
        sock.close()
