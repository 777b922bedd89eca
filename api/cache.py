"""A small response cache for GETs whose answer is a pure function of the database file.

Design and invariants:
- Key: path + raw query string. Each entry remembers the file signature (inode, size, mtime of the
  database and its WAL; see `Database.signature`) it was computed under; a lookup under any other
  signature is a miss. So a cached answer is never older than the file: the moment the worker (or
  Litestream's follower) writes, every entry is stale. `ttl_s` bounds an entry's life regardless.
- Only 200 responses are stored; endpoints that read the wall clock (health, calendar, metrics) are
  never cached. Bounded (LRU, `max_entries`), used from the event loop only (no locking).
- Why: dashboards poll the same few charts; while nothing changes they get the same bytes without a
  query. `ttl_s=0` disables it (the load script measures both ways).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from api.context import ctx


class ResponseCache:
    def __init__(self, ttl_s: float = 2.0, max_entries: int = 512) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[tuple, float, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, signature: tuple) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != signature or entry[1] < time.monotonic():
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[2]

    def put(self, key: tuple, signature: tuple, body: bytes) -> None:
        self._entries[key] = (signature, time.monotonic() + self.ttl_s, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


Handler = Callable[[Request], Awaitable[Response]]


def cached(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        c = ctx(request)
        cache = c.cache
        if cache.ttl_s <= 0 or request.method != "GET":
            return await handler(request)
        key = (request.url.path, request.scope.get("query_string", b""))
        signature = c.db.signature()
        body = cache.get(key, signature)
        if body is not None:
            return Response(body, media_type="application/json", headers={"X-Cache": "hit"})
        response = await handler(request)
        # Store only if the file did not move while we read it (else we cannot tell which state we saw).
        if response.status_code == 200 and c.db.signature() == signature:
            cache.put(key, signature, bytes(response.body))
        return response

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    endpoint.__doc__ = handler.__doc__
    return endpoint
