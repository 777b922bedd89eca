"""`python -m worker tail --socket PATH`: print the Unix-socket feed as JSON lines.

Design:
- A plain blocking client: connect, read length-prefixed MessagePack frames (`worker.publish` wire
  format), print one JSON object per line, flush per batch so `| jq` sees messages as they arrive.
- `--type` filters by message type; `--count N` exits after N printed messages (scripts and tests).
- Exit codes: 0 when the feed ends or `--count` is reached (or stdout is closed, e.g. `| head`),
  1 when the socket cannot be reached, 2 on a corrupt frame.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(args.socket)
    except OSError as exc:
        print(f"tail: cannot connect to {args.socket}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    wanted = set(args.types or ())
    printed = 0
    buffer = bytearray()
    out = sys.stdout
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
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
                printed += 1
                if args.count and printed >= args.count:
                    break
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
            if args.count and printed >= args.count:
                return 0
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at devnull so exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
