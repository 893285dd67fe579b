"""Reading a request body: JSON that is an object, nests at most MAX_JSON_DEPTH levels and holds
only valid Unicode; anything else is a 400 (never a 500 and a dropped connection)."""

from __future__ import annotations

import json
import re
from typing import Any

from thinktwice.serve.errors import ProxyError

__all__ = ["MAX_JSON_DEPTH", "decode_body"]

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a request body may have."""
# a lone UTF-16 surrogate, escaped or raw (json.loads decodes raw bytes with surrogatepass)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def decode_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a body; 400 for invalid JSON, nesting past MAX_JSON_DEPTH, lone surrogates."""
    try:
        body = json.loads(raw)
    except RecursionError:
        body, too_deep = None, True
    except ValueError:
        raise ProxyError(400, "The request body is not valid JSON.", code="invalid_json") from None
    else:  # fewer brackets than the limit cannot nest past it: skip the walk
        too_deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth(body) > MAX_JSON_DEPTH
    if too_deep:
        raise ProxyError(
            400, f"The request body nests deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json"
        )
    if not isinstance(body, dict):
        raise ProxyError(400, "The request body must be a JSON object.", code="invalid_json")
    if _SURROGATE.search(raw):  # valid pairs pass; a lone surrogate cannot be encoded
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProxyError(
                400,
                "The request body holds a lone UTF-16 surrogate (not valid Unicode text).",
                code="invalid_json",
            ) from None
    return body


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (without recursion; stops once past the limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            if d > MAX_JSON_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return deepest
