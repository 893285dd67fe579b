"""Passthrough: forward a request body untouched to an upstream and relay its answer (or its stream).

Tools, tool_calls, response_format, logprobs, token-id prompts and every other field reach the
upstream as the client sent them; only the proxy's own routing (a ``passthrough/`` model prefix,
the ``thinktwice`` field) is removed and ``max_tokens`` clamped to the server's cap. A stream that
did not ask for usage is asked for it upstream (and the usage chunk dropped on the way back), so
``/metrics`` counts its tokens exactly; a stream cut short bills the tokens relayed until then.
The request deadline bounds a whole stream, however slowly it drips. Tokenizer endpoints
(``/tokenize``, ``/detokenize``, ``/tokenizer_info``) are forwarded to the upstream's root, where
vLLM serves them. One shared HTTP client keeps connections alive; upstream base URLs are used
round-robin. Upstream failures map to the proxy's statuses: 429 stays 429, other 4xx are relayed
(their message sanitised), 5xx and broken connections become 502, timeouts 504.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import httpx
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from thinktwice.serve.errors import ProxyError, sanitize_upstream, upstream_ident
from thinktwice.serve.http1 import Http1Pool, UpstreamTimeout, UpstreamUnreachable

__all__ = ["Bill", "Upstream", "detokenize", "forward", "forward_tokenizer"]

logger = logging.getLogger(__name__)

_JSON = "application/json"
_EVENT_END = re.compile(rb"(\r?\n\r?\n)")

Bill = Callable[[int, int, int], None]
"""Bills upstream work: ``bill(calls, prompt_tokens, completion_tokens)``."""


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

    @staticmethod
    def root(base: str) -> str:
        """The server root of a base URL (``http://h:p/v1`` -> ``http://h:p``)."""
        return base[: -len("/v1")] if base.endswith("/v1") else base

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
    except (ValueError, AttributeError, RecursionError):
        err, msg = {}, ""
    msg = sanitize_upstream(msg or content[:2000].decode("utf-8", "replace")) or f"status {status}"
    if status == 429:
        retry = headers.get("retry-after")
        return ProxyError(
            429,
            f"The upstream is rate limiting requests: {msg}",
            code="rate_limit_exceeded",
            headers={"Retry-After": retry} if retry and len(retry) < 32 else None,
        )
    if status in (401, 403) and used_own_key:
        return ProxyError(502, "The upstream rejected the proxy's API key.", code="upstream_auth")
    if 400 <= status < 500:
        fields = err if isinstance(err, dict) else {}
        return ProxyError(
            status if status in (400, 401, 403, 404, 413, 422) else 400,
            msg,
            code=upstream_ident(fields.get("code")),
            param=upstream_ident(fields.get("param")),
        )
    if status == 504:
        return ProxyError(504, f"The upstream timed out: {msg}", code="upstream_timeout")
    return ProxyError(502, f"The upstream failed with status {status}: {msg}", code="upstream_error")


def _count_usage(bill: Bill, content: bytes) -> None:
    if b'"usage"' not in content:
        bill(1, 0, 0)
        return
    try:
        usage = json.loads(content).get("usage") or {}
        bill(1, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    except (ValueError, AttributeError, TypeError, RecursionError):
        bill(1, 0, 0)


def _timeout(seconds: float) -> ProxyError:
    return ProxyError(504, f"The upstream did not finish within {seconds:g} s.", code="upstream_timeout")


async def forward(
    upstream: Upstream,
    bill: Bill,
    path: str,
    content: bytes,
    *,
    stream: bool,
    client_auth: str | None = None,
    timeout_s: float | None = None,
    strip_usage: bool = False,
    headers: Mapping[str, str] | None = None,
    on_error: Callable[[ProxyError], None] | None = None,
) -> Response:
    """POST ``content`` to ``path`` on the next upstream and relay the answer.

    ``timeout_s`` bounds the whole exchange, a stream included (the request's deadline);
    ``strip_usage`` drops the usage-only chunk of a stream (the proxy asked for it, not the client);
    ``headers`` are added to the response. Raises ProxyError for upstream failures that happen
    before the first byte is relayed (``on_error`` sees each); a failure mid-stream ends the stream
    with an SSE ``error`` event.
    """

    def failed(err: ProxyError) -> ProxyError:
        if on_error is not None:
            on_error(err)
        return err

    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    req_headers = upstream.headers(client_auth)
    own_key = bool(upstream.api_key)
    if not stream:
        try:
            status, resp_headers, data = await upstream.pool.post(
                upstream.base(), path, content, req_headers, timeout_s
            )
        except UpstreamTimeout as e:
            raise failed(
                ProxyError(504, f"The upstream did not answer in time ({e}).", code="upstream_timeout")
            ) from None
        except UpstreamUnreachable as e:
            raise failed(
                ProxyError(502, f"The upstream could not be reached ({e}).", code="upstream_error")
            ) from None
        if status != 200:
            raise failed(_upstream_error(status, data, resp_headers, own_key))
        _count_usage(bill, data)
        return Response(
            data, status_code=200, media_type=resp_headers.get("content-type", _JSON), headers=headers
        )
    client = upstream.client
    req = client.build_request("POST", upstream.url(path), content=content, headers=req_headers)
    try:
        resp = await asyncio.wait_for(client.send(req, stream=True), timeout_s)
    except (httpx.TimeoutException, asyncio.TimeoutError) as e:
        raise failed(
            ProxyError(
                504, f"The upstream did not answer in time ({type(e).__name__}).", code="upstream_timeout"
            )
        ) from None
    except httpx.TransportError as e:
        raise failed(
            ProxyError(
                502, f"The upstream could not be reached ({type(e).__name__}).", code="upstream_error"
            )
        ) from None
    if resp.status_code != 200:
        try:
            body = await resp.aread()
        except httpx.HTTPError:
            body = b""
        finally:
            await resp.aclose()
        raise failed(_upstream_error(resp.status_code, body, resp.headers, own_key))
    bill(1, 0, 0)
    return StreamingResponse(
        _relay(resp, bill, deadline, timeout_s, strip_usage),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", **(headers or {})},
        background=BackgroundTask(resp.aclose),
    )


async def _relay(
    resp: httpx.Response, bill: Bill, deadline: float | None, timeout_s: float | None, strip_usage: bool
) -> AsyncIterator[bytes]:
    """Relay upstream SSE events as they complete; bill their tokens (the usage chunk's counts, or
    the content chunks relayed when the stream ends without one)."""
    loop = asyncio.get_running_loop()
    seen = _Seen()
    buf = b""
    chunks = resp.aiter_raw().__aiter__()
    try:
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), left)
            except StopAsyncIteration:
                break
            parts = _EVENT_END.split(buf + chunk)
            buf = parts.pop()
            out = []
            for ev, end in zip(parts[::2], parts[1::2]):
                if not seen.take(ev) or not strip_usage:
                    out.append(ev + end)
            if out:
                yield b"".join(out)
        if buf:
            seen.take(buf)
            yield buf
    except asyncio.TimeoutError:
        logger.warning("upstream stream passed the request deadline of %s s", timeout_s)
        yield _sse_error(_timeout(timeout_s or 0))
    except httpx.HTTPError as e:
        logger.warning("upstream stream broke: %s", e)
        yield _sse_error(
            ProxyError(502, f"The upstream stream broke ({type(e).__name__}).", code="upstream_error")
        )
    finally:
        seen.settle(bill)
        await resp.aclose()


def _sse_error(err: ProxyError) -> bytes:
    return b"data: " + json.dumps(err.body()).encode() + b"\n\n"


class _Seen:
    """What a relayed stream has carried: its usage, or else how many content tokens."""

    def __init__(self) -> None:
        self.usage: tuple[int, int] | None = None
        self.tokens = 0

    def take(self, event: bytes) -> bool:
        """Note one SSE event; True when it is a usage-only chunk (no choices)."""
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data.startswith(b"{"):
                continue
            try:
                payload = json.loads(data)
            except (ValueError, RecursionError):
                continue
            if not isinstance(payload, dict):
                continue
            usage = payload.get("usage")
            if isinstance(usage, dict):
                try:
                    self.usage = (
                        int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0),
                    )
                except (TypeError, ValueError):
                    pass
            choices = payload.get("choices")
            if isinstance(choices, list):
                self.tokens += sum(_chunk_tokens(c) for c in choices if isinstance(c, dict))
                if not choices and isinstance(usage, dict):
                    return True
        return False

    def settle(self, bill: Bill) -> None:
        if self.usage is not None:
            bill(0, *self.usage)
        elif self.tokens:
            bill(0, 0, self.tokens)


def _chunk_tokens(choice: Mapping[str, object]) -> int:
    """Tokens one streamed choice chunk carries: its logprobs entries, else 1 if it has text."""
    lp = choice.get("logprobs")
    if isinstance(lp, dict):
        entries = lp.get("content") if "content" in lp else lp.get("tokens")
        if isinstance(entries, list):
            return len(entries)
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return 1 if isinstance(text, str) and text else 0


async def forward_tokenizer(
    upstream: Upstream, method: str, path: str, content: bytes, client_auth: str | None = None
) -> Response:
    """Forward a tokenizer request to the upstream's root (vLLM's place for them), else under its
    base URL; 404 when the upstream has neither."""
    base = upstream.base()
    headers = upstream.headers(client_auth)
    own_key = bool(upstream.api_key)
    for where in dict.fromkeys([Upstream.root(base), base]):
        try:
            status, resp_headers, data = await upstream.pool.request(method, where, path, content, headers)
        except UpstreamTimeout as e:
            msg = f"The upstream did not answer in time ({e})."
            raise ProxyError(504, msg, code="upstream_timeout") from None
        except UpstreamUnreachable as e:
            msg = f"The upstream could not be reached ({e})."
            raise ProxyError(502, msg, code="upstream_error") from None
        if status == 404:
            continue
        if status != 200:
            raise _upstream_error(status, data, resp_headers, own_key)
        return Response(data, status_code=200, media_type=resp_headers.get("content-type", _JSON))
    raise ProxyError(
        404, f"The upstream does not serve {path} (it is forwarded only when it does).", code="not_found"
    )


async def detokenize(upstream: Upstream, prompts: Sequence[Sequence[int]]) -> list[str] | None:
    """The text of token-id prompts, from the upstream's ``/detokenize``; None when it has none."""

    async def one(ids: Sequence[int]) -> str | None:
        content = json.dumps({"tokens": list(ids)}).encode()
        try:
            resp = await forward_tokenizer(upstream, "POST", "/detokenize", content)
        except ProxyError as e:
            if e.status == 404:
                return None
            raise
        try:
            text = json.loads(bytes(resp.body)).get("prompt")
        except (ValueError, AttributeError):
            return None
        return text if isinstance(text, str) else None

    texts = await asyncio.gather(*(one(p) for p in prompts))
    return None if any(t is None for t in texts) else [t for t in texts if t is not None]
