"""The endpoints: chat and text completions (strategy or passthrough), models, health, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from thinktwice.errors import ThinktwiceError
from thinktwice.serve.config import PASSTHROUGH
from thinktwice.serve.decide import (
    Route,
    build_strategy,
    choice_extension,
    finish_reason,
    make_query,
    resolve,
    run_decisions,
    usage_block,
    valid_strategies,
    wants_logprobs,
)
from thinktwice.serve.errors import ProxyError, from_backend_error
from thinktwice.serve.passthrough import forward
from thinktwice.serve.schemas import ChatRequest, CompletionRequest, new_id, now, parse_request
from thinktwice.serve.streaming import first_ready, stream_decisions
from thinktwice.strategies.base import Strategy
from thinktwice.types import Decision, Prompt, SamplingParams

__all__ = ["build_router"]

log = logging.getLogger(__name__)


async def chat_completions(request: Request) -> Response:
    return await _complete(request, "chat")


async def completions(request: Request) -> Response:
    return await _complete(request, "completion")


async def models(request: Request) -> Response:
    """The served model, one ``strategy/model`` id per strategy, and the upstream's own models (passthrough
    to the default strategy) when the upstream lists them; an upstream that cannot list them is skipped."""
    st = request.app.state
    base = st.config.model or st.backends.default.model
    upstream: list[str] = []
    lister = getattr(st.backends.default, "list_models", None)
    if lister is not None:
        try:
            upstream = await lister()
        except ThinktwiceError as e:
            log.warning("/v1/models: %s", e)
    ids = list(dict.fromkeys([base, *upstream, *(f"{s}/{base}" for s in valid_strategies())]))
    return JSONResponse(
        {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": 0, "owned_by": "thinktwice"} for i in ids],
        }
    )


async def health(request: Request) -> Response:
    st = request.app.state
    return JSONResponse(
        {
            "status": "ok",
            "strategy": st.config.strategy,
            "upstreams": len(st.config.upstreams),
            "model": st.config.model or st.backends.default.model,
        }
    )


async def metrics(request: Request) -> Response:
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")


def build_router() -> APIRouter:
    """A fresh router with the proxy's endpoints (one per app: no shared module state)."""
    router = APIRouter()
    router.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route("/v1/completions", completions, methods=["POST"])
    router.add_api_route("/v1/models", models, methods=["GET"])
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/metrics", metrics, methods=["GET"])
    return router


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise ProxyError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "The request body must be a JSON object.", code="invalid_json")
    return body


def _check_limits(req: ChatRequest | CompletionRequest, st: Any) -> None:
    cfg = st.config
    if req.n > cfg.max_n:
        raise ProxyError(400, f"n={req.n} is above this server's cap of {cfg.max_n}.", param="n")
    limit = req.limit
    if limit is not None and limit > cfg.max_tokens:
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise ProxyError(400, f"{param}={limit} is above this server's cap of {cfg.max_tokens}.", param=param)


async def _complete(request: Request, kind: Literal["chat", "completion"]) -> Response:
    st = request.app.state
    raw = await request.body()
    body = _decode(raw)
    req = parse_request(kind, body)
    route = resolve(req.model, req.thinktwice, st.config)
    _check_limits(req, st)
    chat = kind == "chat"
    if route.passthrough and st.upstream is not None:
        if route.model != body.get("model") or "thinktwice" in body:
            body = {k: v for k, v in body.items() if k != "thinktwice"}
            if route.model:
                body["model"] = route.model
            raw = json.dumps(body).encode()
        auth = None if st.config.api_keys else request.headers.get("authorization")
        return await forward(
            st.upstream,
            st.metrics,
            "/chat/completions" if chat else "/completions",
            raw,
            stream=req.stream,
            client_auth=auth,
        )
    if isinstance(req, ChatRequest) and req.tools:
        raise ProxyError(
            400,
            f"tools are forwarded only by the '{PASSTHROUGH}' strategy (model "
            f"'{PASSTHROUGH}/MODEL'); strategy {route.strategy!r} cannot call tools.",
            param="tools",
        )
    return await _decide(request, req, route, chat)


def _strategy(st: Any, route: Route, temperature: float | None) -> Strategy:
    cfg = st.config
    if (
        st.default_strategy is not None
        and temperature is None
        and route.strategy == cfg.strategy
        and dict(route.options) == dict(cfg.strategy_options)
    ):
        return st.default_strategy  # type: ignore[no-any-return]
    return build_strategy(route, temperature)


async def _decide(
    request: Request, req: ChatRequest | CompletionRequest, route: Route, chat: bool
) -> Response:
    st = request.app.state
    cfg = st.config
    strategy = _strategy(st, route, req.temperature)
    backend = st.backends.get(route.model)
    params = SamplingParams(
        max_tokens=req.limit or cfg.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=tuple(req.stop or ()),
        logprobs=wants_logprobs(route.strategy),
    )
    rid = new_id("chat" if chat else "completion")
    if isinstance(req, ChatRequest):
        queries = [make_query(rid, req.prompt(), req.question(), st.answers, params)]
    else:
        queries = [make_query(rid, Prompt(raw=p), p, st.answers, params) for p in req.prompts()]
    tasks = await run_decisions(
        strategy,
        queries,
        backend,
        req.n,
        route.budget_tokens,
        req.seed,
        cfg.request_timeout_s,
        cfg.max_samples,
    )
    model = req.model or route.model or backend.model
    name = getattr(strategy, "name", route.strategy)
    created = now()
    if req.stream:
        await first_ready(tasks, cfg.request_timeout_s)
        gen = stream_decisions(
            tasks,
            chat=chat,
            rid=rid,
            created=created,
            model=model,
            strategy=name,
            include_usage=req.include_usage,
            on_done=lambda ds: _account(st, name, ds),
        )
        return StreamingResponse(gen, media_type="text/event-stream", headers={"cache-control": "no-cache"})
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            if isinstance(r, asyncio.CancelledError):
                raise r
            err = from_backend_error(r)
            st.metrics.upstream_errors[err.status] += 1
            raise err
    decisions: list[Decision] = list(results)  # type: ignore[arg-type]
    _account(st, name, decisions)
    choices = []
    for i, d in enumerate(decisions):
        c: dict[str, Any] = {
            "index": i,
            "logprobs": None,
            "finish_reason": finish_reason(d),
            "thinktwice": choice_extension(d),
        }
        if chat:
            c["message"] = {"role": "assistant", "content": d.response}
        else:
            c["text"] = d.response
        choices.append(c)
    return JSONResponse(
        {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage_block(decisions, name),
        }
    )


def _account(st: Any, strategy: str, decisions: list[Decision]) -> None:
    st.metrics.decisions[strategy] += len(decisions)
    for d in decisions:
        st.metrics.upstream(d.usage)
