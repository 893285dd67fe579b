"""create_app(config): the OpenAI-compatible proxy that runs a strategy per request.

Everything an app needs lives on ``app.state`` and is built by its lifespan (no module-level
singletons): the backend(s), the default strategy, the shared passthrough HTTP client, the
answer format, the metrics and the per-key rate limits. A pure-ASGI guard in front of the routes
checks API keys (constant-time), rate limits, the body size limit and the body deadline, and times
every request for /metrics; the HTTP protocol adds a deadline for request heads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from thinktwice.lm.base import Backend
from thinktwice.serve.answer_format import GenericAnswerFormat
from thinktwice.serve.config import PASSTHROUGH, ServeConfig
from thinktwice.serve.decide import Backends
from thinktwice.serve.errors import ProxyError, install_handlers
from thinktwice.serve.limits import RATE_KEY, KeyLimits, retry_after_header
from thinktwice.serve.metrics import Metrics
from thinktwice.serve.passthrough import Upstream
from thinktwice.serve.routes import build_router

__all__ = ["ServerThread", "create_app", "http_protocol", "uvicorn_options"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

OPEN_PATHS = frozenset({"/health", "/metrics"})
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics",
                       "/tokenize", "/detokenize", "/tokenizer_info",
                       "/v1/tokenize", "/v1/detokenize", "/v1/tokenizer_info"})


def endpoint_label(path: str) -> str:
    """The /metrics label of a request path: the route, with a model id as a template (ids are unbounded)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


def _build_backend(config: ServeConfig, model: str | None) -> Backend:
    from thinktwice import lm

    if config.upstreams:
        return lm.create(
            "openai",
            base_urls=list(config.upstreams),
            api_key=config.upstream_api_key,
            model=model or "default",
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
        )
    return lm.create(lm.DEFAULT_BACKEND)


def build_backend(config: ServeConfig) -> Backend:
    """The default backend for ``config``: the ``openai`` backend over its upstreams, else the
    embedded default model."""
    return _build_backend(config, config.model)


def create_app(
    config: ServeConfig | None = None, *, backend: Backend | None = None, own_backend: bool = False
) -> FastAPI:
    """The proxy app. ``backend`` (e.g. a ScriptedBackend) replaces the one built from ``config``
    (closed at shutdown only when ``own_backend``); passthrough still forwards to
    ``config.upstreams`` when there are any."""
    cfg = config or ServeConfig()
    metrics = Metrics()
    limits = KeyLimits(cfg.requests_per_minute, cfg.tokens_per_minute)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from thinktwice.strategies import create_strategy

        default = (
            None if cfg.strategy == PASSTHROUGH else create_strategy(cfg.strategy, **cfg.strategy_options)
        )
        owned = backend is None or own_backend
        base = backend if backend is not None else _build_backend(cfg, cfg.model)
        factory = (lambda m: _build_backend(cfg, m)) if (owned and cfg.upstreams) else None
        backends = Backends(base, factory)
        upstream = (
            Upstream(cfg.upstreams, cfg.upstream_api_key, cfg.timeout_s, cfg.max_concurrency)
            if cfg.upstreams
            else None
        )
        app.state.config = cfg
        app.state.metrics = metrics
        app.state.limits = limits
        app.state.backends = backends
        app.state.default_strategy = default
        app.state.upstream = upstream
        app.state.answers = GenericAnswerFormat()
        try:
            yield
        finally:
            if upstream is not None:
                await upstream.aclose()
            if owned:
                await backends.aclose()

    app = FastAPI(
        title="thinktwice proxy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.config = cfg  # before the lifespan too: ServerThread reads the front-door timeouts from it
    app.state.limits = limits
    install_handlers(app)
    app.include_router(build_router())
    app.add_middleware(Guard, config=cfg, metrics=metrics, limits=limits)
    return app


class Guard:
    """Pure-ASGI middleware: API keys, per-key rate limits, body size limit and deadline, request metrics.

    Each admitted request records whose limits it counts against in ``scope["state"]`` (see
    :data:`thinktwice.serve.limits.RATE_KEY`), so the routes can bill its generated tokens with
    ``request.app.state.limits.charge(request.scope, tokens)``.
    """

    def __init__(
        self, app: ASGIApp, *, config: ServeConfig, metrics: Metrics, limits: KeyLimits | None = None
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in config.api_keys]
        self.max_body = config.max_body_bytes
        self.body_timeout_s = config.body_timeout_s
        self.metrics = metrics
        self.limits = limits if limits is not None else KeyLimits()

    def _key_index(self, scope: Scope) -> int | None:
        """The index of the configured key the request presents, or None."""
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                given = v[7:].strip() if v[:7].lower() == b"bearer " else b""
                break
        found = None
        for i, key in enumerate(self.keys):  # compare with every key, in constant time each
            if hmac.compare_digest(given, key) and found is None:
                found = i
        return found

    def _rate_limited(self, key: str) -> ProxyError | None:
        wait = self.limits.admit(key)
        if wait is None:
            return None
        after = retry_after_header(wait)
        return ProxyError(
            429,
            f"This key's rate limit is reached ({self._limit_text()}); retry in {after} s.",
            code="rate_limit_exceeded",
            headers={"retry-after": after},
        )

    def _limit_text(self) -> str:
        parts = []
        if self.limits.requests_per_minute is not None:
            parts.append(f"{self.limits.requests_per_minute} requests")
        if self.limits.tokens_per_minute is not None:
            parts.append(f"{self.limits.tokens_per_minute} generated tokens")
        return " and ".join(parts) + " per minute"

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = endpoint_label(path)
        t0 = time.perf_counter()
        status = 500
        self.metrics.in_flight += 1

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path not in OPEN_PATHS:
                index = self._key_index(scope) if self.keys else None
                if self.keys and index is None:
                    status = 401
                    await _send_error(
                        send,
                        ProxyError(
                            401,
                            "Missing or invalid API key (send 'Authorization: Bearer KEY').",
                            code="invalid_api_key",
                        ),
                    )
                    return
                if self.limits.enabled:
                    client = scope.get("client")
                    key = f"key:{index}" if index is not None else f"client:{client[0] if client else '-'}"
                    scope.setdefault("state", {})[RATE_KEY] = key
                    refused = self._rate_limited(key)
                    if refused is not None:
                        status = 429
                        await _send_error(send, refused)
                        return
            length = _content_length(scope)
            if length is not None and length > self.max_body:
                status = 413
                await _send_error(send, _too_large(self.max_body))
                return
            body = _with_deadline(_limited(receive, self.max_body), t0 + self.body_timeout_s, self.body_timeout_s)
            await self.app(scope, body, send_wrapper)
        finally:
            self.metrics.in_flight -= 1
            self.metrics.observe(endpoint, status, time.perf_counter() - t0)


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"The request body is larger than this server's limit of {limit} bytes.",
        code="request_too_large",
    )


def _content_length(scope: Scope) -> int | None:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                return int(v)
            except ValueError:
                return None
    return None


def _limited(receive: Callable[[], Awaitable[Message]], limit: int) -> Callable[[], Awaitable[Message]]:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return wrapped


def _with_deadline(
    receive: Callable[[], Awaitable[Message]], deadline: float, seconds: float
) -> Callable[[], Awaitable[Message]]:
    """``receive`` that raises 408 when the body is not complete by ``deadline`` (perf_counter time);
    once it is, later receives (a stream waiting for the disconnect) are not timed."""
    complete = False

    async def wrapped() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        left = deadline - time.perf_counter()
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            raise ProxyError(
                408,
                f"The request body did not arrive within this server's limit of {seconds:g} s.",
                code="request_timeout",
                headers={"connection": "close"},
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return wrapped


async def _send_error(send: Callable[[Message], Awaitable[None]], err: ProxyError) -> None:
    data = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    if err.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools when installed, else h11) with a deadline on request heads.

    uvicorn times out only idle kept-alive connections; a client trickling its headers a byte at a
    time held a connection open indefinitely. Here a connection that has not sent a complete head
    within ``header_timeout_s`` of connecting, or of the first byte of its next request, is closed.
    """
    import importlib.util

    base: type[Any]
    if importlib.util.find_spec("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class HeadDeadlineProtocol(base):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if not self.transport.is_closing() and self._waiting_for_head():
                self._arm_head()  # a head begun and not finished: the clock runs from its first byte
            else:
                self._disarm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head()
            super().connection_lost(exc)

        def _waiting_for_head(self) -> bool:
            return self.cycle is None or bool(self.cycle.response_complete)

        def _arm_head(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_expired)

        def _disarm_head(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self) -> None:
            self._head_timer = None
            if self._waiting_for_head() and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadlineProtocol


def uvicorn_options(config: ServeConfig | None = None) -> dict[str, Any]:
    """uvloop when installed (an optional speedup), and the front-door timeouts of ``config``: the
    head deadline protocol (:func:`http_protocol`) and uvicorn's keep-alive timeout."""
    import importlib.util

    cfg = config or ServeConfig()
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": http_protocol(cfg.header_timeout_s),
        "timeout_keep_alive": cfg.keep_alive_timeout_s,
    }


class ServerThread:
    """Run an ASGI app with uvicorn in a background thread on 127.0.0.1 (tests and benchmarks).

    >>> # with ServerThread(create_app(cfg)) as srv: openai.OpenAI(base_url=srv.url, api_key="x")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        import uvicorn

        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        cfg = getattr(getattr(app, "state", None), "config", None)
        front = uvicorn_options(cfg if isinstance(cfg, ServeConfig) else None)
        opts = {**front, "log_level": "warning", "access_log": False, "lifespan": "on", **options}
        self.server = uvicorn.Server(uvicorn.Config(app, **opts))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ServerThread:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, name="thinktwice-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the proxy did not start (see the log)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.should_exit = True
            self._thread.join(timeout=30)
            self._thread = None
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
