"""What every handler needs, hung on `app.state.ctx`: settings, database, cursor codec, JSON response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from api.cursors import CursorCodec

if TYPE_CHECKING:
    from api.cache import ResponseCache
from api.db import Database
from api.params import Query
from api.settings import Settings


@dataclass(frozen=True, slots=True)
class Context:
    settings: Settings
    db: Database
    cursors: CursorCodec
    cache: ResponseCache


def ctx(request: Request) -> Context:
    return request.app.state.ctx


def query(request: Request, allowed: tuple[str, ...]) -> Query:
    return Query(request.scope.get("query_string", b""), request.query_params.multi_items(), allowed)


class JSON(Response):
    """orjson: 5-10x faster than the stdlib encoder on list pages; non-str keys allowed."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
