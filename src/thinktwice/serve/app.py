"""create_app(config): the OpenAI-compatible proxy that runs a strategy per request.

Everything an app needs lives on ``app.state`` and is built by its lifespan (no module-level
singletons): the backend(s), the default strategy, the shared passthrough HTTP client, the
answer format and the metrics. A pure-ASGI guard in front of the routes checks API keys
(constant-time), enforces the body size limit and times every request for /metrics.
"""

from __future__ import annotations

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
from thinktwice.serve.metrics import Metrics
from thinktwice.serve.passthrough import Upstream
from thinktwice.serve.routes import build_router

__all__ = ["ServerThread", "create_app", "uvicorn_options"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

OPEN_PATHS = frozenset({"/health", "/metrics"})
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics"})


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
    install_handlers(app)
    app.include_router(build_router())
    app.add_middleware(Guard, config=cfg, metrics=metrics)
    return app


class Guard:
    """Pure-ASGI middleware: API keys, body size limit, request metrics."""

    def __init__(self, app: ASGIApp, *, config: ServeConfig, metrics: Metrics) -> None:
        self.app = app
        self.keys = [k.encode() for k in config.api_keys]
        self.max_body = config.max_body_bytes
        self.metrics = metrics

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                given = v[7:].strip() if v[:7].lower() == b"bearer " else b""
                break
        ok = False
        for key in self.keys:  # compare with every key, in constant time each
            ok |= hmac.compare_digest(given, key)
        return ok

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
        endpoint = path if path in ENDPOINTS else "other"
        t0 = time.perf_counter()
        status = 500
        self.metrics.in_flight += 1

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.keys and path not in OPEN_PATHS and not self._authorized(scope):
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
            length = _content_length(scope)
            if length is not None and length > self.max_body:
                status = 413
                await _send_error(send, _too_large(self.max_body))
                return
            await self.app(scope, _limited(receive, self.max_body), send_wrapper)
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


async def _send_error(send: Callable[[Message], Awaitable[None]], err: ProxyError) -> None:
    data = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if err.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def uvicorn_options() -> dict[str, str]:
    """uvloop / httptools when installed (optional speedups), else the pure-Python defaults."""
    import importlib.util

    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
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
        opts = {**uvicorn_options(), "log_level": "warning", "access_log": False, "lifespan": "on", **options}
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
