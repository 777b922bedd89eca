"""Opaque keyset cursors: `next` tokens that are signed, bound to their query, and cheap to check.

- A cursor carries the sort key of the last row served (e.g. `(ts_ns, fill_id)`); the next page is
  `WHERE (ts_ns, fill_id) < (?, ?)` over an index, so page N costs the same as page 1 and rows inserted
  meanwhile (newer keys) never shift, duplicate or skip the rows of later pages.
- The token is base64url(JSON payload + 16-byte HMAC-SHA256). The payload names the endpoint and a
  digest of its filters: a cursor replayed against another endpoint or other filters is refused (400),
  as is any token that is not ours (bad base64, bad MAC, wrong shape) - never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

import orjson

from api.problems import bad_param

VERSION = 1
MAC_BYTES = 16
MAX_TOKEN_CHARS = 400
_I64 = (-(2**63), 2**63 - 1)


def _digest(filters: Mapping[str, object]) -> str:
    canonical = orjson.dumps(dict(filters), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:16]


class CursorCodec:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, endpoint: str, filters: Mapping[str, object], key: tuple[int, ...]) -> str:
        payload = orjson.dumps([VERSION, endpoint, _digest(filters), list(key)])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, token: str, endpoint: str, filters: Mapping[str, object], arity: int) -> tuple[int, ...]:
        """The keyset position in `token`, or a 400 naming `cursor`."""
        if len(token) > MAX_TOKEN_CHARS:
            raise bad_param("cursor", "is too long to be a cursor this API issued")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise bad_param("cursor", "is not a cursor this API issued (not base64url)") from None
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise bad_param("cursor", "is not a cursor this API issued (signature mismatch)")
        try:
            version, name, digest, key = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            raise bad_param("cursor", "is malformed") from None
        if version != VERSION or name != endpoint:
            raise bad_param("cursor", f"was issued by another endpoint, not {endpoint}")
        if digest != _digest(filters):
            raise bad_param("cursor", "was issued for different filters; repeat the same filters to page on")
        if (
            not isinstance(key, list)
            or len(key) != arity
            or not all(type(v) is int and _I64[0] <= v <= _I64[1] for v in key)
        ):
            raise bad_param("cursor", "is malformed")
        return tuple(key)
