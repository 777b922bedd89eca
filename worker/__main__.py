"""`python -m worker COMMAND`: one entry point, one module per command.

Each command module defines `add_arguments(parser)` and `main(args) -> int`; they are imported lazily so
`python -m worker calendar` does not pay for websockets, and the worker image needs only what it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("worker.app", "run live against Binance (the default)"),
    "record": ("worker.binance.record", "record raw frames and snapshots to gzip JSON lines"),
    "replay": ("worker.replay", "replay a recording through the engine, deterministically"),
    "tail": ("worker.tail", "print the Unix-socket market data feed as JSON lines"),
    "check": ("worker.store.check", "verify a database file offline and print a JSON report"),
    "calendar": ("worker.calendar_cli", "print the Shabbat and Yom Tov pause windows"),
    "risk": ("worker.store.risk_cli", "operator actions on the risk engine (risk reset)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if name == wanted:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_main=module.main)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
