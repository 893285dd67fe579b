"""Passthrough: forward a request body untouched to an upstream and relay its answer (or its stream).

Tools, tool_calls, response_format, logprobs and every other field reach the upstream as the
client sent them; only the proxy's own routing (a ``passthrough/`` model prefix, the
``thinktwice`` field) is removed. One shared ``httpx.AsyncClient`` (on ``app.state``) keeps
connections alive; upstream base URLs are used round-robin. Upstream failures map to the
proxy's statuses: 429 stays 429, other 4xx are relayed as sent, 5xx and broken connections
become 502, timeouts 504.
"""

from __future__ import annotations

import itertools
import json
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence

import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from thinktwice.serve.errors import ProxyError
from thinktwice.serve.http1 import Http1Pool, UpstreamTimeout, UpstreamUnreachable
from thinktwice.serve.metrics import Metrics

__all__ = ["Upstream", "forward"]

logger = logging.getLogger(__name__)

_JSON = "application/json"


class Upstream:
    """Shared HTTP clients and the round-robin over upstream base URLs.

    Connections are split over ``shards`` small httpx pools used in turn: httpcore scans every
    pooled connection on each request, so one pool of hundreds of keep-alive connections costs
    far more CPU per request than several small ones.
    """

    def __init__(
        self,
        base_urls: Sequence[str],
        api_key: str | None,
        timeout_s: float,
        max_connections: int = 256,
        shards: int = 8,
    ) -> None:
        self.base_urls = tuple(u.rstrip("/") for u in base_urls)
        self.api_key = api_key
        self._rr = itertools.cycle(range(len(self.base_urls))) if self.base_urls else None
        shards = max(1, min(shards, max_connections))
        per = -(-max_connections // shards)
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        # one TLS context for every shard (loading the CA bundle costs tens of ms each time)
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context() if any(u.startswith("https:") for u in self.base_urls) else False
        )
        self.clients = [
            httpx.AsyncClient(
                timeout=timeout,
                verify=verify,
                limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
            )
            for _ in range(shards)
        ]
        self._shard = itertools.cycle(self.clients)
        self.pool = Http1Pool(timeout_s, max_connections)

    @property
    def client(self) -> httpx.AsyncClient:
        """The next pool to use."""
        return next(self._shard)

    def url(self, path: str) -> str:
        return self.base() + path

    def base(self) -> str:
        assert self._rr is not None, "no upstream configured"
        return self.base_urls[next(self._rr)]

    def headers(self, client_auth: str | None) -> dict[str, str]:
        h = {"content-type": _JSON, "accept": "application/json, text/event-stream"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        elif client_auth:
            h["authorization"] = client_auth
        return h

    async def aclose(self) -> None:
        await self.pool.aclose()
        for c in self.clients:
            await c.aclose()


def _upstream_error(
    status: int, content: bytes, headers: Mapping[str, str], used_own_key: bool
) -> ProxyError:
    try:
        err = json.loads(content).get("error") or {}
        msg = str(err.get("message") or "") if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        err, msg = {}, ""
    msg = msg or content[:200].decode("utf-8", "replace") or f"status {status}"
    if status == 429:
        retry = headers.get("retry-after")
        return ProxyError(
            429,
            f"The upstream is rate limiting requests: {msg}",
            code="rate_limit_exceeded",
            headers={"Retry-After": retry} if retry else None,
        )
    if status in (401, 403) and used_own_key:
        return ProxyError(502, "The upstream rejected the proxy's API key.", code="upstream_auth")
    if 400 <= status < 500:
        code = err.get("code") if isinstance(err, dict) else None
        param = err.get("param") if isinstance(err, dict) else None
        return ProxyError(
            status if status in (400, 401, 403, 404, 413, 422) else 400,
            msg,
            code=code if isinstance(code, str) else None,
            param=param if isinstance(param, str) else None,
        )
    if status == 504:
        return ProxyError(504, f"The upstream timed out: {msg}", code="upstream_timeout")
    return ProxyError(502, f"The upstream failed with status {status}: {msg}", code="upstream_error")


def _count_usage(metrics: Metrics, content: bytes) -> None:
    if b'"usage"' not in content:
        metrics.upstream_raw(1, 0, 0)
        return
    try:
        usage = json.loads(content).get("usage") or {}
        metrics.upstream_raw(
            1, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )
    except (ValueError, AttributeError, TypeError):
        metrics.upstream_raw(1, 0, 0)


async def forward(
    upstream: Upstream,
    metrics: Metrics,
    path: str,
    content: bytes,
    *,
    stream: bool,
    client_auth: str | None = None,
) -> Response:
    """POST ``content`` to ``path`` on the next upstream and relay the answer.

    Raises ProxyError for upstream failures that happen before the first byte is relayed; a
    failure mid-stream ends the stream with an SSE ``error`` event.
    """
    headers = upstream.headers(client_auth)
    own_key = bool(upstream.api_key)
    if not stream:
        try:
            status, resp_headers, data = await upstream.pool.post(upstream.base(), path, content, headers)
        except UpstreamTimeout as e:
            raise _failed(
                metrics,
                ProxyError(504, f"The upstream did not answer in time ({e}).", code="upstream_timeout"),
            ) from None
        except UpstreamUnreachable as e:
            raise _failed(
                metrics, ProxyError(502, f"The upstream could not be reached ({e}).", code="upstream_error")
            ) from None
        if status != 200:
            raise _failed(metrics, _upstream_error(status, data, resp_headers, own_key))
        _count_usage(metrics, data)
        return Response(data, status_code=200, media_type=resp_headers.get("content-type", _JSON))
    client = upstream.client
    req = client.build_request("POST", upstream.url(path), content=content, headers=headers)
    try:
        resp = await client.send(req, stream=True)
    except httpx.TimeoutException as e:
        raise _failed(
            metrics,
            ProxyError(
                504, f"The upstream did not answer in time ({type(e).__name__}).", code="upstream_timeout"
            ),
        ) from None
    except httpx.TransportError as e:
        raise _failed(
            metrics,
            ProxyError(
                502, f"The upstream could not be reached ({type(e).__name__}).", code="upstream_error"
            ),
        ) from None
    if resp.status_code != 200:
        try:
            body = await resp.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await resp.aclose()
        raise _failed(metrics, _upstream_error(resp.status_code, body, resp.headers, own_key))
    metrics.upstream_raw(1, 0, 0)
    return StreamingResponse(
        _relay(resp, metrics),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
        background=BackgroundTask(resp.aclose),
    )


def _failed(metrics: Metrics, err: ProxyError) -> ProxyError:
    metrics.upstream_errors[err.status] += 1
    return err


async def _relay(resp: httpx.Response, metrics: Metrics) -> AsyncIterator[bytes]:
    """Relay upstream SSE bytes as they arrive; read token counts from a usage chunk on the way."""
    tail = b""
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
            tail = _scan_usage(tail + chunk, metrics)
    except httpx.HTTPError as e:
        logger.warning("upstream stream broke: %s", e)
        err = {
            "error": {
                "message": f"The upstream stream broke ({type(e).__name__}).",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_error",
            }
        }
        yield b"data: " + json.dumps(err).encode() + b"\n\n"
    finally:
        await resp.aclose()


def _scan_usage(buf: bytes, metrics: Metrics) -> bytes:
    """Count the tokens of complete ``data:`` events carrying usage; return an incomplete remainder."""
    *events, rest = buf.split(b"\n\n")
    for ev in events:
        if b'"usage"' not in ev:
            continue
        for line in ev.split(b"\n"):
            if line.startswith(b"data: {"):
                try:
                    usage = json.loads(line[6:]).get("usage")
                except ValueError:
                    continue
                if isinstance(usage, dict):
                    metrics.upstream_raw(
                        0, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                    )
    return rest[-65536:]
