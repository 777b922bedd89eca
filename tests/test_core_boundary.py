"""The functional core imports nothing that does I/O: read each core module's imports with `ast`.

Why a test: the boundary in DESIGN.md only holds if nobody has to remember it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[1] / "worker"
CORE_MODULES = [
    "events",
    "instruments",
    "errors",
    "book",
    "features",
    "strategy",
    "orders",
    "portfolio",
    "risk",
    "broker",
    "fillmodels",
    "calendar",
    "engine",
    "trader",
]
FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "sqlite3",
    "aiosqlite",
    "httpx",
    "websockets",
    "urllib",
    "http",
    "subprocess",
    "threading",
    "multiprocessing",
    "logging",
    "uvicorn",
    "starlette",
    "msgpack",
}
# Calls that read the wall clock: the engine's time comes from events.
FORBIDDEN_ATTRIBUTES = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("time", "perf_counter_ns"),
    ("time", "sleep"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def core_files() -> list[Path]:
    files = []
    for name in CORE_MODULES:
        module = WORKER / f"{name}.py"
        package = WORKER / name
        if module.exists():
            files.append(module)
        elif package.is_dir():
            files.extend(sorted(package.rglob("*.py")))
    return files


def imported_roots(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.stem)
def test_core_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for name, line in imported_roots(tree):
        root = name.split(".")[0]
        if root in FORBIDDEN_MODULES:
            problems.append(f"line {line}: imports {name}")
        if name.startswith("worker.binance") or name.startswith("worker.store"):
            problems.append(f"line {line}: imports {name} (the shell)")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN_ATTRIBUTES
        ):
            problems.append(f"line {node.lineno}: reads the wall clock ({node.value.id}.{node.attr})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
            problems.append(f"line {node.lineno}: opens a file")
    assert not problems, f"{path.name} crosses the core boundary:\n" + "\n".join(problems)


def test_the_core_is_checked() -> None:
    """Guard against the check passing because it found nothing to read."""
    names = {p.stem for p in core_files()}
    assert {"events", "instruments", "orders"} <= names


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = "import asyncio\nimport time\nx = time.time()\n"
    tree = ast.parse(bad)
    assert [n for n, _ in imported_roots(tree)] == ["asyncio", "time"]
    attrs = [
        (n.value.id, n.attr)
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    ]
    assert ("time", "time") in attrs
