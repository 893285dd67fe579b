"""OpenAIBackend: any OpenAI-compatible HTTP server (OpenAI, vLLM, SGLang, llama.cpp server) as a Backend.

A semaphore for ``max_concurrency``, an adaptive in-flight limit per endpoint that backs off when the
server queues (:mod:`thinktwice.lm.concurrency`), retries with jittered exponential backoff that
never resend a generation the server may still be running (:mod:`thinktwice.lm.retry`), several
base URLs with health cool-downs (:mod:`thinktwice.lm.endpoints`) and a checked reading of every
response (:mod:`thinktwice.lm.openai_response`). What each TokenStat field means for this backend
is in docs/backends.md: chosen-token logprobs and top-k alternatives are exact; entropy and
self-certainty are left empty unless ``approx_stats=True`` (then flagged ``approx``).

>>> from thinktwice.testing import FakeOpenAIServer
>>> import asyncio
>>> from thinktwice.types import Prompt, SamplingParams
>>> async def main(url):
...     async with OpenAIBackend(url) as lm:
...         return await lm.sample(Prompt.user("6*7?"), SamplingParams(seed=0), n=2)
>>> with FakeOpenAIServer(answers={"42": 1.0}) as srv:
...     [s.text[-3:] for s in asyncio.run(main(srv.url))]
['42.', '42.']
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from thinktwice.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailable,
    ConfigError,
    ContextLengthExceeded,
    RateLimited,
    UpstreamProtocolError,
)
from thinktwice.lm.base import TokenMonitor, estimate_tokens
from thinktwice.lm.concurrency import AimdConfig
from thinktwice.lm.endpoints import Endpoint, EndpointPool
from thinktwice.lm.openai_response import Choice, ReportedUsage, decode_json, parse_choices, parse_usage
from thinktwice.lm.retry import RetryPolicy, parse_retry_after
from thinktwice.types import Capabilities, Prompt, Sample, SamplingParams, Usage

__all__ = ["OpenAIBackend"]

logger = logging.getLogger(__name__)

_CONTEXT_RE = re.compile(r"context.?length|maximum context|too many tokens|prompt is too long|"
                         r"exceeds? the (?:model'?s? )?(?:max|context)", re.IGNORECASE)
_MAX_TOP = 20  # the OpenAI API's limit on top_logprobs
# httpcore's pool scans all of its connections on every request and response, so its cost per
# request grows with the pool size; several small clients (least-loaded first) keep it flat.
# Measured in bench/http_client.py: at concurrency 64, 8 clients of 8 connections spent about half
# the CPU per request of one client with 64.
_CONNECTIONS_PER_CLIENT = 8


class OpenAIBackend:
    """Samples from OpenAI-compatible ``/v1/chat/completions`` or ``/v1/completions``.

    Args:
        base_urls: one URL or several (requests go to the healthy one with the fewest in flight;
            ``Sample.endpoint`` says which served). A URL without a path gets ``/v1`` appended.
        endpoint: "chat" or "completions". Raw prompts (``Prompt.raw``) always use completions.
        max_concurrency: requests in flight per backend; ``endpoint_max_concurrency`` per URL
            (default: ``max_concurrency``).
        adaptive_concurrency: let each URL's in-flight limit follow the server (start at 1, grow
            while latency stays flat, halve when requests queue or on 429 / 503 / a read timeout;
            see :mod:`thinktwice.lm.concurrency`); False keeps the configured limits. ``aimd``
            tunes it.
        timeout_s: how long one request may take to answer once sent (a whole generation; the
            official SDK's default, 10 minutes). ``connect_timeout_s``: to open a connection.
        timeout_retries: how often a request that timed out is sent again. Default 0: the server
            may still be generating (or queueing) it, so a resend doubles its work.
        max_retries / backoff_*: see :class:`RetryPolicy`. ``protocol_retries``: resends after a
            malformed 200 answer, within ``max_retries``; then :class:`UpstreamProtocolError`.
        seed: seeds the retry jitter (server sampling seeds come from ``SamplingParams.seed``).
        top_logprobs: alternatives asked for when ``params.logprobs`` and ``params.top_logprobs == 0``.
        supports_n: send ``n`` in one request. A URL returning fewer choices is detected once and
            remembered (``stats["endpoints"][url]["n_cap"]``); the rest goes in further requests.
        extra_body: merged into every request body (e.g. vLLM's ``repetition_penalty``).
        approx_stats: fill entropy / self-certainty from the renormalised top-k (``approx=True``).
        path: what ``create("openai:URL")`` passes; used as the base URL.
        health_path: before an endpoint that was out of rotation rejoins, GET ``URL + health_path``
            (any answer below 500 restores it); None lets the first real request be the probe.
        endpoint_rps / endpoint_burst: a token-bucket rate limit per base URL (requests per second,
            bucket size; default burst max(1, rps)); requests wait for their slot.
        transport: an ``httpx.AsyncBaseTransport`` for every request (tests: ``httpx.MockTransport``).
    """

    name = "openai"

    def __init__(
        self,
        base_urls: Sequence[str] | str | None = None,
        *,
        api_key: str | None = None,
        model: str = "default",
        endpoint: str = "chat",
        max_concurrency: int = 16,
        endpoint_max_concurrency: int | None = None,
        adaptive_concurrency: bool = True,
        aimd: AimdConfig | Mapping[str, Any] | None = None,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        timeout_retries: int = 0,
        max_retries: int = 5,
        protocol_retries: int = 2,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        retry_after_max_s: float = 60.0,
        seed: int = 0,
        top_logprobs: int = 5,
        supports_n: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        approx_stats: bool = False,
        failure_threshold: int = 3,
        cooldown_s: float = 1.0,
        cooldown_max_s: float = 30.0,
        path: str | None = None,
        health_path: str | None = "/models",
        endpoint_rps: float | None = None,
        endpoint_burst: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls or ())
        if path:
            urls.append(path)
        if not urls:
            raise ConfigError("openai backend needs a base URL, e.g. base_urls='http://127.0.0.1:8000/v1'")
        if endpoint not in ("chat", "completions"):
            raise ConfigError(f"endpoint must be 'chat' or 'completions', got {endpoint!r}")
        if max_concurrency < 1 or timeout_s <= 0 or connect_timeout_s <= 0 or not 0 <= top_logprobs <= _MAX_TOP:
            raise ConfigError("need max_concurrency >= 1, timeout_s > 0, connect_timeout_s > 0 and "
                              f"0 <= top_logprobs <= {_MAX_TOP}")
        if timeout_retries < 0 or protocol_retries < 0:
            raise ConfigError(f"timeout_retries and protocol_retries must be >= 0, got {timeout_retries}, "
                              f"{protocol_retries}")
        if isinstance(aimd, Mapping):  # ``-b 'aimd={"initial": 4}'`` on the command line
            try:
                aimd = AimdConfig(**aimd)
            except TypeError as e:
                raise ConfigError(f"aimd: {e}; the fields are those of thinktwice.lm.concurrency.AimdConfig") from None
        self.base_urls = [_normalise_url(u) for u in urls]
        self.api_key, self.model, self.endpoint = api_key, model, endpoint
        self.max_concurrency, self.timeout_s, self.connect_timeout_s = max_concurrency, timeout_s, connect_timeout_s
        self.timeout_retries, self.protocol_retries = timeout_retries, protocol_retries
        self.retry = RetryPolicy(max_retries, backoff_base_s, backoff_max_s, retry_after_max_s)
        self.top_logprobs, self.supports_n, self.approx_stats = top_logprobs, supports_n, approx_stats
        self.extra_body = dict(extra_body or {})
        self._caps = Capabilities(logprobs=True, top_logprobs=_MAX_TOP, full_vocab=False,
                                  native_n=supports_n, continuation=True, monitor=False)
        self._pool = EndpointPool(self.base_urls, failure_threshold=failure_threshold, cooldown_s=cooldown_s,
                                  cooldown_max_s=cooldown_max_s,
                                  max_concurrency=endpoint_max_concurrency or max_concurrency,
                                  rps=endpoint_rps, burst=endpoint_burst, adaptive=adaptive_concurrency, aimd=aimd)
        if health_path is not None and not health_path.startswith("/"):
            raise ConfigError(f"health_path must start with '/', got {health_path!r}")
        self.health_path = health_path
        self._transport = transport
        self._rng = random.Random(seed)
        self._clients: list[httpx.AsyncClient] = []
        self._ssl: ssl.SSLContext | None = None
        self._client_load: list[int] = []
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counts = {"requests": 0, "calls": 0, "samples": 0, "failures": 0, "n_fallbacks": 0}
        self._retries: dict[str, int] = {}
        self._backoff_s = 0.0

    @property
    def capabilities(self) -> Capabilities:
        """What the backend offers; ``native_n`` turns False once every URL is known to ignore ``n``."""
        eps = self._pool.endpoints
        if self._caps.native_n and all(ep.n_cap == 1 for ep in eps):
            return dataclasses.replace(self._caps, native_n=False)
        return self._caps

    # -- lifecycle ------------------------------------------------------------------------------
    def _ensure(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or not self._clients or self._sem is None:
            # asyncio primitives and pooled connections belong to one loop: a new loop gets new ones.
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            k = -(-self.max_concurrency // _CONNECTIONS_PER_CLIENT)
            # Least-loaded choice under the semaphore keeps each client at <= ceil(max_concurrency / k).
            limit = -(-self.max_concurrency // k) + 1
            # One SSL context for every client: loading the CA bundle costs ~50 ms per context.
            if self._ssl is None and self._transport is None:
                self._ssl = httpx.create_ssl_context()
            connect = min(self.timeout_s, self.connect_timeout_s)
            self._clients = [httpx.AsyncClient(
                headers=headers, verify=self._ssl or True, transport=self._transport,
                # read covers a whole generation; pool: never (the semaphore bounds the connections)
                timeout=httpx.Timeout(self.timeout_s, connect=connect, pool=None),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            ) for _ in range(k)]
            self._client_load = [0] * k
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._pool.reset_waiters()
            self._loop = loop
        return self._sem

    async def aclose(self) -> None:
        clients, loop = self._clients, self._loop
        self._clients, self._loop, self._sem = [], None, None
        # Pooled connections of another (finished) loop cannot be closed from this one: drop them.
        if clients and loop is asyncio.get_running_loop():
            for client in clients:
                await client.aclose()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for run records: HTTP requests, successful calls, samples, failures (errors
        raised), retries by cause, total backoff seconds, n fallbacks and per-endpoint state."""
        return {**self._counts, "retries": dict(self._retries), "backoff_seconds": self._backoff_s,
                "endpoints": self._pool.to_dict()}

    def count_tokens(self, prompt: Prompt) -> int:
        """An estimate (the server's tokenizer is not available here)."""
        return estimate_tokens(prompt.text())

    # -- sampling -------------------------------------------------------------------------------
    async def sample(
        self, prompt: Prompt, params: SamplingParams, n: int = 1, *, monitor: TokenMonitor | None = None
    ) -> list[Sample]:
        """``n`` samples; ``monitor`` is ignored (``capabilities.monitor`` is False)."""
        if n < 1:
            return []
        chat = self.endpoint == "chat" and prompt.raw is None
        path, body = self._body(prompt, params, chat)
        pending = self._plan(0, n)
        results: dict[int, list[Sample]] = {}
        while pending:
            got = await _gather([self._call(path, body, prompt, params, chat, off, k) for off, k in pending])
            more = []
            for (off, k), samples in zip(pending, got):
                results[off] = samples
                if len(samples) < k:  # an endpoint's n limit (known or just found): ask for the rest
                    more.extend(self._plan(off + len(samples), k - len(samples)))
            pending = more
        out = [s for off in sorted(results) for s in results[off]]
        self._counts["samples"] += len(out)
        return out

    def _plan(self, start: int, count: int) -> list[tuple[int, int]]:
        """(offset, n) requests for ``count`` samples from ``start``, sized by what the URLs take."""
        caps = [ep.n_cap for ep in self._pool.endpoints]
        if not self.supports_n:
            chunk = 1
        elif any(c is None for c in caps):
            chunk = count  # some URL may take them all; one that cannot sends fewer back
        else:
            chunk = max(c for c in caps if c is not None)
        return [(start + j, min(chunk, count - j)) for j in range(0, count, chunk)]

    def _learn_n(self, ep: Endpoint, asked: int, got: int) -> None:
        """``ep`` returned ``got < asked`` choices: remember its limit (warned once per URL)."""
        self._counts["n_fallbacks"] += 1
        if ep.n_cap is None:
            logger.warning("%s returned %d of %d requested choices (n not honoured); requesting the rest "
                           "in separate requests", ep.url, got, asked)
        ep.n_cap = min(ep.n_cap or got, got)

    def _body(self, prompt: Prompt, params: SamplingParams, chat: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens,
                                "temperature": params.temperature, "top_p": params.top_p}
        if chat:
            if not prompt.messages:
                raise ConfigError("the prompt has no messages and no raw text")
            msgs = [{"role": m.role, "content": list(m.parts) if m.parts else m.content}
                    for m in prompt.messages]
            if prompt.assistant_prefix:  # vLLM/SGLang convention for continuing an assistant turn
                msgs.append({"role": "assistant", "content": prompt.assistant_prefix})
                body["continue_final_message"], body["add_generation_prompt"] = True, False
            body["messages"] = msgs
        elif prompt.raw is not None:
            body["prompt"] = prompt.raw + prompt.assistant_prefix
        else:
            body["prompt"] = prompt.text() if prompt.assistant_prefix else prompt.text() + "\nassistant: "
        if params.stop:
            body["stop"] = list(params.stop)
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.min_p > 0:
            body["min_p"] = params.min_p
        if params.logprobs:
            k = min(params.top_logprobs or self.top_logprobs, _MAX_TOP)
            if chat:
                body["logprobs"], body["top_logprobs"] = True, k
            else:
                body["logprobs"] = k
        body.update(self.extra_body)
        for k, v in params.extra.items():  # request fields (response_format, penalties, user ...)
            body.setdefault(k, v)
        return ("/chat/completions" if chat else "/completions"), body

    async def _call(self, path: str, body: dict[str, Any], prompt: Prompt, params: SamplingParams,
                    chat: bool, offset: int, n: int) -> list[Sample]:
        """One HTTP call asking for up to ``n`` choices; returns what the server gave (maybe fewer)."""

        def build(ep: Endpoint) -> tuple[dict[str, Any], int]:
            k = min(n, ep.n_cap or n)  # this URL's known n limit
            req = dict(body)
            if k > 1:
                req["n"] = k
            if params.seed is not None:
                req["seed"] = params.seed + offset
            return req, k

        def parse(data: dict[str, Any], ep: Endpoint, seconds: float, sent: int) -> list[Sample]:
            choices = parse_choices(data, chat=chat, n=sent, logprobs=params.logprobs, approx=self.approx_stats)
            reported = parse_usage(data.get("usage"))
            prompt_tokens, cached, completion, estimated = self._usage(reported, prompt, choices)
            model = data.get("model")
            model = model if isinstance(model, str) and model else self.model
            if len(choices) < sent:
                self._learn_n(ep, sent, len(choices))
            self._counts["calls"] += 1
            out = []
            for i, ch in enumerate(choices):
                first = i == 0
                usage = Usage(calls=int(first), prompt_tokens=prompt_tokens if first else 0,
                              cached_prompt_tokens=cached if first else 0, completion_tokens=completion[i],
                              seconds=seconds if first else 0.0, estimated=estimated)
                seed = None if params.seed is None else params.seed + offset + i
                out.append(Sample(text=ch.text, tokens=ch.tokens, finish_reason=ch.finish_reason, usage=usage,
                                  model=model, seed=seed, endpoint=ep.url))
            return out

        return await self._post(path, build, parse)

    def _usage(self, u: ReportedUsage | None, prompt: Prompt, choices: list[Choice]) -> tuple[int, int, list[int], bool]:
        """(prompt tokens, cached prompt tokens, completion tokens per choice, estimated)."""
        lens = [len(c.tokens) if c.tokens is not None else None for c in choices]
        if u is None:
            per = [k if k is not None else estimate_tokens(c.text) for k, c in zip(lens, choices)]
            return self.count_tokens(prompt), 0, per, True
        exact = [k for k in lens if k is not None]
        if len(choices) == 1:
            per = [u.completion_tokens]
        elif len(exact) == len(lens) and sum(exact) == u.completion_tokens:
            per = exact
        else:  # the server reports one total: share it out by text length (sum stays exact)
            per = _apportion(u.completion_tokens, [estimate_tokens(c.text) for c in choices])
        if u.prompt_tokens is None:
            return self.count_tokens(prompt), 0, per, True
        return u.prompt_tokens, u.cached_prompt_tokens, per, False

    # -- HTTP with retries ----------------------------------------------------------------------
    async def _post(
        self,
        path: str,
        build: Callable[[Endpoint], tuple[dict[str, Any], int]],
        parse: Callable[[dict[str, Any], Endpoint, float, int], list[Sample]],
    ) -> list[Sample]:
        """Send ``build(endpoint)`` (a body and the choices it asks for) until an answer parses.

        Retried: connection failures, 5xx, 408, 429 (after ``Retry-After``), malformed bodies (up to
        ``protocol_retries``). A read timeout is resent only ``timeout_retries`` times: the server may
        still be working on it. 429, 503 and read timeouts also lower the endpoint's in-flight limit.
        """
        sem = self._ensure()
        clients, load = self._clients, self._client_load
        pol = self.retry
        attempt = timeouts = malformed = 0
        while True:
            retry_after: float | None = None
            status: int | None = None
            retryable = True
            give_up_as: type[BackendError] = BackendUnavailable
            async with sem:
                ep, ticket = await self._pool.acquire()
                try:
                    if self.health_path is not None and self._pool.needs_probe(ep) and not await self._probe(ep):
                        cause, detail = "connect", f"{ep.url} failed its health check ({self.health_path})"
                        if self._pool.all_refused():
                            raise self._unreachable()
                    else:
                        wait = self._pool.reserve(ep)
                        if wait > 0:
                            await asyncio.sleep(wait)
                        req, sent = build(ep)
                        ci = 0 if len(load) == 1 else min(range(len(load)), key=load.__getitem__)
                        load[ci] += 1
                        ep.requests += 1
                        self._counts["requests"] += 1
                        t0 = time.perf_counter()
                        try:
                            resp = await clients[ci].post(ep.url + path, json=req)
                        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                            self._pool.record_connect_failure(ep)
                            cause, detail = "connect", f"cannot connect to {ep.url} ({type(e).__name__})"
                            if self._pool.all_refused():
                                raise self._unreachable() from e
                        except httpx.ReadTimeout:
                            self._pool.record_other_failure(ep)
                            self._pool.on_overload(ep, ticket, "no answer in time")
                            timeouts += 1
                            retryable = timeouts <= self.timeout_retries
                            cause, detail = "timeout", f"{ep.url} did not answer within {self.timeout_s:g} s (ReadTimeout)"
                            if not retryable:
                                detail += ("; not resent, as the server may still be generating it "
                                           "(raise timeout_s for a slow or busy server)")
                        except httpx.TimeoutException as e:  # writing the request: nothing was generated
                            self._pool.record_other_failure(ep)
                            cause, detail = "timeout", f"{ep.url} did not take the request in time ({type(e).__name__})"
                        except httpx.TransportError as e:
                            self._pool.record_other_failure(ep)
                            cause, detail = "connection", f"connection to {ep.url} failed: {type(e).__name__}: {e}"
                        else:
                            seconds = time.perf_counter() - t0
                            self._pool.record_ok(ep)
                            status = resp.status_code
                            if status == 200:
                                try:
                                    samples = parse(decode_json(resp.content), ep, seconds, sent)
                                except UpstreamProtocolError as e:
                                    malformed += 1
                                    retryable, give_up_as = malformed <= self.protocol_retries, UpstreamProtocolError
                                    cause, detail = "invalid-body", f"{ep.url}{path} sent a {e}"
                                else:
                                    per_sequence = sum(x.usage.completion_tokens for x in samples) // max(1, len(samples))
                                    self._pool.on_success(ep, ticket, seconds, per_sequence)
                                    return samples
                            else:
                                cause, detail = str(status), f"{ep.url}{path} answered {status}: {_error_message(resp)}"
                                retry_after = parse_retry_after(resp.headers.get("retry-after"))
                                if status in (429, 503):
                                    self._pool.on_overload(ep, ticket, f"HTTP {status}")
                                if not (status == 429 or status >= 500 or status == 408):
                                    self._counts["failures"] += 1
                                    raise self._client_error(status, detail)
                        finally:
                            load[ci] -= 1
                finally:
                    self._pool.release(ep, ticket)
            if not retryable or attempt >= pol.max_retries or (
                    retry_after is not None and retry_after > pol.retry_after_max_s):
                self._counts["failures"] += 1
                kind = RateLimited if status == 429 else give_up_as
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise kind(f"{detail} (gave up after {tries})", backend=self.name, model=self.model,
                           status=status, retry_after=retry_after)
            if cause == "connect" and len(self.base_urls) > 1 and self._pool.wait_s() == 0:
                delay = 0.0  # fail over to another endpoint at once
            else:
                delay = pol.delay(attempt, self._rng, retry_after)
            self._retries[cause] = self._retries.get(cause, 0) + 1
            self._backoff_s += delay
            logger.debug("retry %d after %s; waiting %.3f s", attempt + 1, detail, delay)
            await asyncio.sleep(delay)
            attempt += 1

    def _unreachable(self) -> BackendUnavailable:
        self._counts["failures"] += 1
        return BackendUnavailable(f"Cannot connect to {', '.join(self.base_urls)}: is the server running?",
                                  backend=self.name, model=self.model)

    async def list_models(self, timeout_s: float = 5.0) -> list[str]:
        """The model ids the upstream serves (``GET /models`` on each endpoint in turn, first answer wins)."""
        self._ensure()
        errors = []
        for url in self.base_urls:
            try:
                resp = await self._clients[0].get(url + "/models", timeout=min(self.timeout_s, timeout_s))
                if resp.status_code == 200:
                    data = decode_json(resp.content).get("data")
                    if isinstance(data, list):
                        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
                    errors.append(f"{url}: no model list")
                else:
                    errors.append(f"{url}: HTTP {resp.status_code}")
            except (httpx.HTTPError, UpstreamProtocolError) as e:
                errors.append(f"{url}: {type(e).__name__}")
        raise BackendError(f"could not list the upstream's models ({'; '.join(errors)})", backend="openai")

    async def _probe(self, ep: Endpoint) -> bool:
        """A health request to an endpoint coming back from a cool-down; True if it may rejoin."""
        try:
            resp = await self._clients[0].get(ep.url + (self.health_path or ""), timeout=min(self.timeout_s, 5.0))
            ok = resp.status_code < 500
        except httpx.TransportError:
            ok = False
        self._pool.record_probe(ep, ok)
        if ok:
            logger.info("endpoint %s passed its health check; back in rotation", ep.url)
        return ok

    def _client_error(self, status: int, detail: str) -> BackendError:
        if status in (401, 403):
            return AuthenticationError(f"The API key was rejected: {detail}", backend=self.name,
                                       model=self.model, status=status)
        if status in (400, 413, 422) and _CONTEXT_RE.search(detail):
            return ContextLengthExceeded(detail, backend=self.name, model=self.model, status=status)
        return BackendError(detail, backend=self.name, model=self.model, status=status)


def _normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base URL {url!r} must look like http://host:port/v1")
    return url + "/v1" if not parts.path else url


def _error_message(resp: httpx.Response) -> str:
    """The message of an error answer: ``error.message`` (or a string ``error``), else the body's start."""
    try:
        err = decode_json(resp.content).get("error")
    except UpstreamProtocolError:
        err = None
    msg = err.get("message") if isinstance(err, dict) else err
    if isinstance(msg, str | int | float) and str(msg):
        return str(msg)[:300]
    return resp.text[:300].replace("\n", " ") or resp.reason_phrase


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainder; the parts sum to ``total``)."""
    w = [max(x, 1) for x in weights]
    s = sum(w)
    raw = [total * x / s for x in w]
    parts = [int(r) for r in raw]
    order = sorted(range(len(w)), key=lambda i: raw[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


async def _gather(coros: list[Awaitable[list[Sample]]]) -> list[list[Sample]]:
    """Await all; on the first error cancel the rest and re-raise it."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
