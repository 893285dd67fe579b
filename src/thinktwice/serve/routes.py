"""The endpoints: chat and text completions (strategy or passthrough), models, tokenizer forwarding,
health and metrics.

A completion request is read in two steps: the routing fields first (``model``, ``thinktwice``),
then, for a strategy, the full schema; passthrough reads only what it needs to enforce the caps,
so any body the upstream accepts is forwarded. Requests a strategy cannot serve honestly (echo,
``max_tokens`` 0, tools, ``best_of``, token ids it cannot decode, images for a text-only backend)
are a 400 naming the field before any sampling, or go to passthrough when the route's
``fallback`` says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from thinktwice.errors import ThinktwiceError
from thinktwice.serve.body import decode_body
from thinktwice.serve.budget import Work, check_work, clamp_max_tokens, decision_work
from thinktwice.serve.config import PASSTHROUGH
from thinktwice.serve.decide import (
    Route,
    build_strategy,
    choice_extension,
    factory_of,
    finish_reason,
    make_query,
    resolve,
    strategy_temperature,
    usage_block,
    valid_strategies,
    wants_logprobs,
)
from thinktwice.serve.errors import ProxyError
from thinktwice.serve.logprobs import chat_logprobs, chosen_tokens, completion_logprobs
from thinktwice.serve.passthrough import forward, forward_tokenizer
from thinktwice.serve.schemas import (
    ChatRequest,
    CompletionRequest,
    new_id,
    now,
    parse_passthrough,
    parse_request,
    parse_thinktwice,
)
from thinktwice.serve.run import RequestRun, billers, remaining_s
from thinktwice.serve.servable import forwards_fields, ignored_fields, refusal
from thinktwice.strategies.base import Strategy
from thinktwice.types import Decision, Prompt, SamplingParams

__all__ = ["build_router"]

log = logging.getLogger(__name__)



async def chat_completions(request: Request) -> Response:
    return await _complete(request, "chat")


async def completions(request: Request) -> Response:
    return await _complete(request, "completion")


async def _model_ids(st: Any) -> tuple[list[str], bool]:
    """Every model id the proxy answers to, and whether the upstream listed its own."""
    base = st.config.model or st.backends.default.model
    upstream: list[str] = []
    listed = False
    lister = getattr(st.backends.default, "list_models", None)
    if lister is not None:
        try:
            upstream = await lister()
            listed = True
        except ThinktwiceError as e:
            log.warning("/v1/models: %s", e)
    ids = list(dict.fromkeys([base, *upstream, *(f"{s}/{base}" for s in valid_strategies())]))
    return ids, listed


def _model_object(i: str) -> dict[str, Any]:
    return {"id": i, "object": "model", "created": 0, "owned_by": "thinktwice"}


async def models(request: Request) -> Response:
    """The served model, one ``strategy/model`` id per strategy, and the upstream's own models (passthrough
    to the default strategy) when the upstream lists them; an upstream that cannot list them is skipped."""
    ids, _ = await _model_ids(request.app.state)
    return JSONResponse({"object": "list", "data": [_model_object(i) for i in ids]})


async def model(request: Request) -> Response:
    """``GET /v1/models/{id}``: any listed id, a ``STRATEGY/MODEL`` of a listed model, or (when the
    upstream cannot list its models) any name; else 404."""
    st = request.app.state
    wanted = request.path_params["model_id"]
    ids, listed = await _model_ids(st)
    prefix, sep, rest = wanted.partition("/")
    known = (
        wanted in ids
        or (sep and prefix in valid_strategies() and rest in ids)
        or (not listed and st.upstream is not None)
    )
    if not known:
        raise ProxyError(404, f"The model {wanted!r} does not exist.", param="model", code="model_not_found")
    return JSONResponse(_model_object(wanted))


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


def _tokenizer_route(path: str, method: str) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        st = request.app.state
        if st.upstream is None:
            raise ProxyError(
                404, f"{path} is forwarded to an HTTP upstream; this server has none.", code="not_found"
            )
        raw = b""
        if method == "POST":
            body = decode_body(await request.body())
            if isinstance(body.get("model"), str):  # a strategy prefix names no upstream model
                body["model"] = resolve(body["model"], None, st.config).model or body["model"]
            raw = json.dumps(body).encode()
        return await forward_tokenizer(st.upstream, method, path, raw, _client_auth(request))

    return handler


def build_router() -> APIRouter:
    """A fresh router with the proxy's endpoints (one per app: no shared module state)."""
    router = APIRouter()
    router.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    router.add_api_route("/v1/completions", completions, methods=["POST"])
    router.add_api_route("/v1/models", models, methods=["GET"])
    router.add_api_route("/v1/models/{model_id:path}", model, methods=["GET"])
    for path, method in (("/tokenize", "POST"), ("/detokenize", "POST"), ("/tokenizer_info", "GET")):
        handler = _tokenizer_route(path, method)
        router.add_api_route(path, handler, methods=[method])
        router.add_api_route("/v1" + path, handler, methods=[method])
    router.add_api_route("/health", health, methods=["GET"])
    router.add_api_route("/metrics", metrics, methods=["GET"])
    return router


def _client_auth(request: Request) -> str | None:
    return None if request.app.state.config.api_keys else request.headers.get("authorization")


async def _complete(request: Request, kind: Literal["chat", "completion"]) -> Response:
    st = request.app.state
    remaining_s(request)  # starts the request's clock
    raw = await request.body()
    body = decode_body(raw)
    field = parse_thinktwice(body.get("thinktwice"))
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise ProxyError(422, "model: Input should be a valid string", param="model")
    route = resolve(name, field, st.config)
    chat = kind == "chat"
    if route.passthrough and st.upstream is not None:
        return await _passthrough(request, body, raw, route, chat)
    req = parse_request(kind, body)
    refused = await refusal(req, route.strategy, st.backends.default, st.upstream)
    if refused is not None:
        if route.fallback == PASSTHROUGH and st.upstream is not None:
            return await _passthrough(request, body, raw, route, chat)
        raise refused
    return await _decide(request, req, route, chat)


async def _passthrough(
    request: Request, body: dict[str, Any], raw: bytes, route: Route, chat: bool
) -> Response:
    st, cfg = request.app.state, request.app.state.config
    view = parse_passthrough(body)
    if view.n > cfg.max_n:
        raise ProxyError(400, f"n={view.n} is above this server's cap of {cfg.max_n}.", param="n")
    limit, warning = clamp_max_tokens(view.limit, view.limit_field, cfg)
    per = (view.best_of or 1) if not chat else 1
    prompts = 1 if chat else view.prompt_count()
    work = Work(per, per * (limit or cfg.max_tokens))
    check_work(prompts * view.n, work, cfg, prompts=prompts, choices=view.n)
    strip = view.stream and not view.include_usage
    if route.model != body.get("model") or "thinktwice" in body or warning or strip:
        body = {k: v for k, v in body.items() if k != "thinktwice"}
        if route.model:
            body["model"] = route.model
        if warning:
            body[view.limit_field] = limit
            st.metrics.clamped += 1
        if strip:  # ask for usage so /metrics is exact; the usage chunk is dropped on the way back
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        raw = json.dumps(body).encode()
    _, bill_raw = billers(request)

    def on_error(err: ProxyError) -> None:
        st.metrics.upstream_errors[err.status] += 1

    return await forward(
        st.upstream,
        bill_raw,
        "/chat/completions" if chat else "/completions",
        raw,
        stream=view.stream,
        client_auth=_client_auth(request),
        timeout_s=remaining_s(request),
        strip_usage=strip,
        headers={"warning": warning} if warning else None,
        on_error=on_error,
    )


def _strategy(st: Any, route: Route, temperature: float | None) -> Strategy:
    cfg = st.config
    if (
        st.default_strategy is not None
        and not temperature
        and route.strategy == cfg.strategy
        and dict(route.options) == dict(cfg.strategy_options)
    ):
        return st.default_strategy  # type: ignore[no-any-return]
    return build_strategy(route, temperature)


def _params(
    req: ChatRequest | CompletionRequest, route: Route, max_tokens: int, forwards: bool
) -> SamplingParams:
    """The query's decoding settings: the request's own, every forwarded field included."""
    k = req.wants_logprobs
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=max(req.top_k or 0, 0),
        min_p=req.min_p or 0.0,
        stop=tuple(req.stop or ()),
        seed=req.seed,
        logprobs=wants_logprobs(route.strategy) or k is not None,
        top_logprobs=k or 0,
        extra=req.forwarded() if forwards else {},
    )


def _warnings(clamped: str | None, ignored: list[str], backend: str) -> dict[str, str]:
    parts = [clamped] if clamped else []
    if ignored:
        parts.append(f'299 thinktwice "backend {backend} ignores {", ".join(ignored)}"')
    return {"warning": ", ".join(parts)} if parts else {}


async def _decide(
    request: Request, req: ChatRequest | CompletionRequest, route: Route, chat: bool
) -> Response:
    st = request.app.state
    cfg = st.config
    if req.n > cfg.max_n:
        raise ProxyError(400, f"n={req.n} is above this server's cap of {cfg.max_n}.", param="n")
    strategy = _strategy(st, route, req.temperature)
    limit, clamped = clamp_max_tokens(req.limit, req.limit_field, cfg)
    default = st.backends.default
    params = _params(req, route, limit or cfg.max_tokens, forwards_fields(default))
    rid = new_id("chat" if chat else "completion")
    if isinstance(req, ChatRequest):
        queries = [make_query(rid, req.prompt(), req.question(), st.answers, params)]
    else:  # token ids were decoded by servable.refusal
        texts = [str(p) for p in req.prompts()]
        queries = [make_query(rid, Prompt(raw=p), p, st.answers, params) for p in texts]
    per = decision_work(
        factory_of(route.strategy), route.options, params.max_tokens, route.budget_tokens, cfg.max_samples
    )
    check_work(len(queries) * req.n, per, cfg, prompts=len(queries), choices=req.n)
    if clamped:
        st.metrics.clamped += 1
    headers = _warnings(clamped, ignored_fields(req, default), default.name)
    run = RequestRun(
        request=request,
        strategy=strategy,
        queries=queries,
        route=route,
        n=req.n,
        seed=req.seed,
        name=getattr(strategy, "name", route.strategy),
        temperature=strategy_temperature(strategy, params),
    )
    if req.stream:
        body = run.stream(
            chat=chat,
            rid=rid,
            model=req.model or route.model or default.model,
            include_usage=req.include_usage,
            logprobs=req.wants_logprobs,
        )
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"cache-control": "no-cache", **headers}
        )
    decisions = await run.complete()
    if decisions is None:
        return Response(status_code=499)  # the client left; nobody reads this
    choices = []
    for i, d in enumerate(decisions):
        c: dict[str, Any] = {
            "index": i,
            "logprobs": _logprobs(d, req.wants_logprobs, chat),
            "finish_reason": finish_reason(d),
            "thinktwice": choice_extension(d, run.temperature),
        }
        if chat:
            c["message"] = {"role": "assistant", "content": d.response}
        else:
            c["text"] = d.response
        choices.append(c)
    payload = {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": now(),
        "model": req.model or route.model or default.model,
        "choices": choices,
        "usage": usage_block(decisions, run.name, run.temperature),
    }
    return JSONResponse(payload, headers=headers)


def _logprobs(d: Decision, k: int | None, chat: bool) -> dict[str, Any] | None:
    if k is None:
        return None
    tokens = chosen_tokens(d)
    if tokens is None:
        return None
    return chat_logprobs(tokens, k) if chat else completion_logprobs(tokens, k)


