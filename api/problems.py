"""Problem details (RFC 9457): every error the API returns is `application/problem+json`.

- `Problem` is an exception a handler raises; the app turns it into a response with `type`, `title`,
  `status`, `detail`, and for bad input the offending `parameter`.
- Nothing here depends on the request path: the app's exception handlers add `instance`.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_MEDIA_TYPE = "application/problem+json"

TYPES = {
    400: ("/problems/invalid-parameter", "Invalid request parameter"),
    404: ("/problems/not-found", "Not found"),
    405: ("/problems/method-not-allowed", "Method not allowed"),
    503: ("/problems/unavailable", "Service unavailable"),
    500: ("/problems/internal", "Internal error"),
}


class Problem(Exception):
    """An error with an HTTP status and a human-readable detail (and the parameter at fault)."""

    def __init__(self, status: int, detail: str, parameter: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.parameter = parameter
        self.extra = extra


def bad_param(parameter: str, detail: str) -> Problem:
    return Problem(400, f"{parameter}: {detail}", parameter=parameter)


def problem_response(problem: Problem, instance: str = "", headers: dict[str, str] | None = None) -> Response:
    type_, title = TYPES.get(problem.status, ("about:blank", "Error"))
    body: dict[str, Any] = {"type": type_, "title": title, "status": problem.status, "detail": problem.detail}
    if instance:
        body["instance"] = instance
    if problem.parameter is not None:
        body["parameter"] = problem.parameter
    body.update(problem.extra)
    return Response(orjson.dumps(body), problem.status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
