"""The recording format of `shared/data/binance/`: read it streaming, write it for `record`.

Format (kept byte-compatible with the reference data):
- `*.ws.jsonl.gz`: gzip JSON lines `{"recv_ns":<int>,"msg":<frame>}`; `<frame>` is the WebSocket text
  frame inserted byte for byte (never re-serialised), so replay feeds the parser exactly what live did.
  Lines are in receive order; `recv_ns` never decreases.
- `*.exchangeinfo.json` (written by `record` since it exists): exchangeInfo's entries of the recorded
  symbols, so a replay knows their tick/step/notional filters (no REST in a replay); recordings without
  it replay with `DEFAULT_INSTRUMENTS`.
- `*.snapshots.jsonl`: plain JSON lines `{"recv_ns","symbol","request","msg"}`, `msg` the REST body as
  received. Our writer adds `"market"`; readers of older files infer it (a `fapi` request URL, or the
  `E`/`T` fields only USD-M snapshots carry).

Invariants:
- Nothing is loaded whole: frames stream from gzip line by line (constant memory for any file size).
- Reading never raises on a bad line: a line whose envelope cannot be read is yielded as-is with the
  previous `recv_ns`, so the parser rejects it and the caller counts it like any bad live frame. A file
  cut short by a crash (truncated gzip) ends the iteration and sets `truncated`.
- A frame with a raw newline (JSON allows it as whitespace) is written with spaces instead, which keeps
  one frame per line without changing its meaning.
"""

from __future__ import annotations

import gzip
import heapq
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from worker.errors import ConfigError
from worker.events import Market
from worker.instruments import Instrument

_PREFIX = b'{"recv_ns":'
_MSG = b',"msg":'


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    recv_ns: int
    frame: bytes  # the WebSocket text frame, exactly as received


@dataclass(frozen=True, slots=True)
class RecordedSnapshot:
    recv_ns: int
    symbol: str
    market: Market
    body: Any  # the decoded REST body (a dict for a well-formed line)
    request: str | None = None


def _split(line: bytes) -> tuple[int, bytes] | None:
    """Fast path: slice recv_ns and the raw frame out of one line without decoding the frame."""
    if not line.startswith(_PREFIX):
        return None
    cut = line.find(_MSG, 11, 40)
    if cut < 0:
        return None
    end = len(line) - 1
    while end > cut and line[end] in b"\r\n \t":
        end -= 1
    if line[end] != 0x7D:  # "}" closing the envelope
        return None
    try:
        return int(line[11:cut]), line[cut + 7 : end]
    except ValueError:
        return None


class FrameReader:
    """Iterate the frames of a `.ws.jsonl.gz` (or plain `.jsonl`) recording, streaming."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines = 0
        self.bad_lines = 0
        self.truncated = False
        self._raw: IO[bytes] | None = None

    @property
    def position(self) -> int:
        """Bytes of the file (compressed) consumed so far: for progress bars."""
        raw = self._raw
        try:
            return raw.tell() if raw is not None and not raw.closed else 0
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[RecordedFrame]:
        last_ns = 0
        with open(self.path, "rb") as raw:
            self._raw = raw
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if self.path.suffix == ".gz" else raw
            lines = iter(fh)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    return
                except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
                    self.truncated = True
                    return
                self.lines += 1
                if not line.strip():
                    continue
                split = _split(line)
                if split is None:
                    split = self._slow(line, last_ns)
                last_ns = split[0]
                yield RecordedFrame(split[0], split[1])

    def _slow(self, line: bytes, last_ns: int) -> tuple[int, bytes]:
        try:
            obj = orjson.loads(line)
            recv_ns = obj["recv_ns"]
            if type(recv_ns) is not int:
                raise TypeError("recv_ns")
            msg = obj["msg"]
            return recv_ns, msg.encode() if isinstance(msg, str) else orjson.dumps(msg)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.bad_lines += 1
            return last_ns, line.strip()


def infer_snapshot_market(line: dict[str, Any]) -> Market:
    market = line.get("market")
    if market:
        return Market(market)
    request = line.get("request") or ""
    if "fapi" in request:
        return Market.USDM
    if "/api/v3/" in request:
        return Market.SPOT
    body = line.get("msg")
    return Market.USDM if isinstance(body, dict) and "T" in body and "E" in body else Market.SPOT


def read_snapshots(path: str | Path) -> Iterator[RecordedSnapshot]:
    """Snapshots of a `.snapshots.jsonl` file, streaming; unreadable lines are skipped."""
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                line = orjson.loads(raw)
                yield RecordedSnapshot(
                    int(line["recv_ns"]),
                    str(line["symbol"]).upper(),
                    infer_snapshot_market(line),
                    line["msg"],
                    line.get("request"),
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue


def merged(
    frames: str | Path | FrameReader, snapshots: str | Path | None = None
) -> Iterator[RecordedFrame | RecordedSnapshot]:
    """Frames and snapshots in true arrival order (by `recv_ns`; frames first on a tie)."""
    reader = frames if isinstance(frames, FrameReader) else FrameReader(frames)
    if snapshots is None:
        yield from reader
        return
    yield from heapq.merge(reader, read_snapshots(snapshots), key=_recv_ns)


def _recv_ns(item: RecordedFrame | RecordedSnapshot) -> int:
    return item.recv_ns


def _sibling(frames_path: str | Path, suffix: str) -> Path | None:
    """`X.ws.jsonl.gz` -> `X<suffix>` (None when the name is not a recording's)."""
    path = Path(frames_path)
    name = path.name
    for ending in (".ws.jsonl.gz", ".ws.jsonl", ".jsonl.gz", ".jsonl"):
        if name.endswith(ending):
            return path.with_name(name[: -len(ending)] + suffix)
    return None


def default_snapshots_path(frames_path: str | Path) -> Path | None:
    """`X.ws.jsonl.gz` -> `X.snapshots.jsonl` when it exists beside it."""
    candidate = _sibling(frames_path, ".snapshots.jsonl")
    return candidate if candidate is not None and candidate.exists() else None


def exchange_info_path(frames_path: str | Path) -> Path:
    """Where `record` keeps the exchangeInfo filters it used: `X.exchangeinfo.json` beside `X.ws.jsonl.gz`."""
    candidate = _sibling(frames_path, ".exchangeinfo.json")
    return candidate if candidate is not None else Path(f"{frames_path}.exchangeinfo.json")


def default_exchange_info_path(frames_path: str | Path) -> Path | None:
    """The exchangeInfo file beside a recording, when there is one (older recordings have none)."""
    candidate = exchange_info_path(frames_path)
    return candidate if candidate.exists() else None


def write_exchange_info(
    path: str | Path, market: Market, body: dict[str, Any], symbols: Iterable[str], request: str | None = None
) -> int:
    """Keep exchangeInfo's entries of `symbols` (filters exactly as Binance sent them) for the replay.

    Only the recorded symbols' entries: USD-M's exchangeInfo lists every contract (~1 MB). Returns how
    many entries were written.
    """
    wanted = {s.upper() for s in symbols}
    entries = [e for e in body.get("symbols", []) if str(e.get("symbol", "")).upper() in wanted]
    data = {"market": Market(market).value, "request": request, "symbols": entries}
    Path(path).write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return len(entries)


def read_exchange_info(path: str | Path) -> dict[tuple[Market, str], Instrument]:
    """Instruments from a `.exchangeinfo.json` (ours, or a raw exchangeInfo body). Raises `ConfigError`.

    The market is the file's `"market"`; a raw body has none, so USD-M is recognised by the
    `contractType` its entries carry.
    """
    from worker.binance.parse import parse_exchange_info  # the parser owns Binance's filter JSON

    try:
        body = orjson.loads(Path(path).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"exchange info {path}", f"valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"exchange info {path}", f"a readable file ({exc.strerror})") from None
    if type(body) is not dict:
        raise ConfigError(f"exchange info {path}", "a JSON object with a symbols list")
    market = body.get("market")
    if market is None:
        usdm = any("contractType" in e for e in body.get("symbols", []) if isinstance(e, dict))
        market = Market.USDM.value if usdm else Market.SPOT.value
    try:
        return parse_exchange_info(body, Market(market))
    except (ValueError, AttributeError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"exchange info {path}", f"exchangeInfo symbols ({exc})") from None


def _frame_bytes(frame: str | bytes) -> bytes:
    data = frame.encode() if isinstance(frame, str) else bytes(frame)
    data = data.strip()
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return data or b'""'


class FrameWriter:
    """Append frames to a gzip JSON-lines file. `flush()` makes what was written readable after a crash."""

    def __init__(self, path: str | Path, compresslevel: int = 6) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = gzip.open(  # noqa: SIM115 - closed by close()/__exit__
            self.path, "ab", compresslevel=compresslevel
        )
        self.frames = 0

    def write(self, recv_ns: int, frame: str | bytes) -> None:
        self._fh.write(b'{"recv_ns":%d,"msg":%s}\n' % (recv_ns, _frame_bytes(frame)))
        self.frames += 1

    def flush(self) -> None:
        self._fh.flush()  # gzip's Z_SYNC_FLUSH: everything so far decodes even if we die now

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SnapshotWriter:
    """Append REST snapshots, one JSON line each, flushed at once (they are rare and precious)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - closed by close()/__exit__
        self.snapshots = 0

    def write(
        self, recv_ns: int, symbol: str, market: Market, body: str | bytes, request: str | None = None
    ) -> None:
        head = orjson.dumps(
            {"recv_ns": recv_ns, "symbol": symbol.upper(), "market": Market(market).value, "request": request}
        )
        self._fh.write(head[:-1] + b',"msg":' + _frame_bytes(body) + b"}\n")
        self._fh.flush()
        self.snapshots += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
