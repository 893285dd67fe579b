"""OpenAI-style JSON errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Status policy: malformed JSON, bad values, caps exceeded and unknown strategies are 400; a body
whose fields have the wrong shape (pydantic validation) is 422; missing or wrong key 401; unknown
route 404 (405 for a wrong method); body too large 413; upstream rate limit 429; upstream failure
502; upstream or request timeout 504. Anything unexpected is logged with its traceback on the
server and answered 500 with a generic message: a client never sees a stack trace.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from thinktwice.errors import (
    AuthenticationError,
    BackendError,
    ConfigError,
    ContextLengthExceeded,
    RateLimited,
)

__all__ = [
    "ProxyError",
    "error_body",
    "error_response",
    "from_backend_error",
    "install_handlers",
    "sanitize_upstream",
    "upstream_ident",
]

logger = logging.getLogger(__name__)

UPSTREAM_MESSAGE_CHARS = 300
"""The most characters of an upstream's error message relayed to a client."""

# What an upstream's error text may carry that a client must not see: tracebacks (cut there),
# credentials and internal addresses (replaced).
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|\bFile \"[^\"]+\", line \d+", re.IGNORECASE)
_SECRETS = [
    (
        re.compile(
            r"\b((?:api[_-]?key|access[_-]?token|token|secret|password|passwd|authorization|auth)"
            r"[\"']?\s*[=:]\s*)(?:Bearer\s+)?[\"']?[^\s,;\"'&}]+",
            re.IGNORECASE,
        ),
        r"\1[redacted]",
    ),
    (re.compile(r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_\-]{6,}"), "[redacted]"),
    (re.compile(r"\bBearer\s+[^\s,;\"']+", re.IGNORECASE), "Bearer [redacted]"),
    (re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]+"), "[redacted]"),  # JWTs
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[redacted]"),
    (re.compile(r"\b[A-Fa-f0-9]{32,}\b"), "[redacted]"),
    (re.compile(r"\b[A-Za-z0-9+/_\-]{40,}={0,2}"), "[redacted]"),
    (re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+", re.IGNORECASE), "[upstream]"),
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "[upstream]"),
    (re.compile(r"(?:/[\w.\-]+){2,}/?"), "[path]"),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_IDENT = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def sanitize_upstream(text: str, limit: int = UPSTREAM_MESSAGE_CHARS) -> str:
    """An upstream's error text made safe to relay: cut at any traceback, credentials, URLs, hosts
    and file paths replaced, control characters dropped, at most ``limit`` characters."""
    m = _TRACEBACK.search(text)
    if m:
        text = text[: m.start()].rstrip() or "(details withheld)"
    text = text[: limit * 4]  # bound the regex work before cleaning
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def upstream_ident(value: object) -> str | None:
    """An upstream's ``code`` / ``param`` value when it is a short identifier, else None."""
    return value if isinstance(value, str) and _IDENT.match(value) else None

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    504: "timeout_error",
}


class ProxyError(Exception):
    """An error the proxy answers with ``status`` and an OpenAI-style body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: ProxyError) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def from_backend_error(e: BaseException) -> ProxyError:
    """Map an upstream failure (BackendError tree, timeouts, bad settings) to a ProxyError."""
    import asyncio

    if isinstance(e, ProxyError):
        return e
    if isinstance(e, asyncio.TimeoutError):
        return ProxyError(504, "The upstream did not answer in time.", code="upstream_timeout")
    if isinstance(e, RateLimited):
        headers = {"Retry-After": f"{e.retry_after:g}"} if e.retry_after else None
        return ProxyError(
            429,
            f"The upstream is rate limiting requests: {sanitize_upstream(str(e))}",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if isinstance(e, ContextLengthExceeded):
        return ProxyError(400, sanitize_upstream(str(e)), param="messages", code="context_length_exceeded")
    if isinstance(e, AuthenticationError):
        return ProxyError(502, "The upstream rejected the proxy's API key.", code="upstream_auth")
    if isinstance(e, BackendError):
        text = sanitize_upstream(str(e))
        if "timed out" in text.lower() or "timeout" in text.lower():
            return ProxyError(504, f"The upstream timed out: {text}", code="upstream_timeout")
        if e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403, 408, 429):
            return ProxyError(400, f"The upstream refused the request: {text}", code="upstream_bad_request")
        return ProxyError(502, f"The upstream failed: {text}", code="upstream_error")
    if isinstance(e, ConfigError):
        return ProxyError(400, str(e))
    raise e


def install_handlers(app: Any) -> None:
    """Register the exception handlers that turn every failure into an OpenAI-style JSON error."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    async def proxy_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            msg = f"No route {request.method} {request.url.path}."
        elif exc.status_code == 405:
            msg = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            msg = str(exc.detail)
        return error_response(ProxyError(exc.status_code, msg, headers=dict(exc.headers or {})))

    async def validation_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, RequestValidationError)
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return error_response(
            ProxyError(
                422, f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid')}", param=".".join(loc) or None
            )
        )

    async def unexpected(request: Request, exc: Exception) -> Any:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            ProxyError(500, "The proxy hit an internal error; it has been logged.", code="internal_error")
        )

    app.add_exception_handler(ProxyError, proxy_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
