"""FakeOpenAIServer: a real, fast OpenAI-compatible HTTP server on 127.0.0.1 for tests and benchmarks.

It runs a small asyncio HTTP/1.1 server (keep-alive, no framework) in a background thread with its
own event loop, so sync tests, async tests and benchmarks can all point a client at ``srv.url``.
Answers are deterministic; latency and faults (429/500/503, hangs, truncated bodies, dropped
connections) can be injected.

Tokenisation is by whitespace-ish words: a token is a run of non-space characters with its leading
whitespace (``"The answer"`` -> ``["The", " answer"]``), so token counts are deterministic. A chat
prompt costs one token per message (the role) plus the word tokens of every message's text parts
and one token per other content part; a completions prompt costs its word tokens. Completion
prompts may be a string, a list of strings, or token ids (a list of ints, or a list of such lists):
each prompt of a list gets ``n`` choices. Like vLLM, the server answers ``GET /tokenizer_info``,
``POST /tokenize`` and ``POST /detokenize`` at its root (token ids are numbered in order of first
use), unless ``tokenizer=False``.

>>> import httpx
>>> with FakeOpenAIServer(answers={"42": 1.0}) as srv:
...     r = httpx.post(srv.url + "/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
>>> r.json()["choices"][0]["message"]["content"].endswith("The answer is 42.")
True
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thinktwice.errors import ConfigError

__all__ = ["FAULT_KINDS", "FakeOpenAIServer", "FakeStats", "fake_tokenize"]

logger = logging.getLogger(__name__)

FAULT_KINDS = ("400", "429", "500", "503", "timeout", "truncate", "disconnect")
_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_FILLER = ("first", "we", "add", "the", "numbers", "then", "check", "carry", "so", "next", "multiply",
           "both", "sides", "which", "gives", "a", "total", "of", "units", "and", "subtract", "once", "more")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}

Handler = Callable[..., "str | list[str]"]


def fake_tokenize(text: str) -> list[str]:
    """The server's tokenizer: word tokens keeping their leading whitespace (they join back to ``text``)."""
    return _TOKEN_RE.findall(text)


@dataclass
class FakeStats:
    """Counters kept by the server (read them from the test thread; ``reset_stats`` clears them)."""

    requests: int = 0
    completed: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    choices: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())


class FakeOpenAIServer:
    """An OpenAI-compatible server for tests: ``with FakeOpenAIServer() as srv: srv.url``.

    Args:
        handler: ``handler(body)`` or ``handler(body, index)`` returning the completion text of
            choice ``index`` (a list return gives one text per choice). Default: a seeded
            "Let me think. ... The answer is X." with X drawn from ``answers`` (weights).
        seed: seeds the default texts of requests without a ``seed`` and the fault draws.
            A request's own ``seed`` makes its texts independent of arrival order.
        max_n: return at most this many choices whatever ``n`` asks (tests the client's fallback).
        latency_s / per_token_latency_s: sleep per request, plus per generated token (the longest
            choice; streaming sleeps between tokens).
        fault_rate / faults: probability that a request fails, and the kinds drawn from
            (:data:`FAULT_KINDS`). ``fault_script`` forces the faults of the first requests
            in order (``None`` entries mean "no fault"). "400" refuses the request, "timeout"
            hangs for ``hang_s`` (None: until stop), "truncate" sends half of a 200 body and
            closes, "disconnect" closes without answering. 429 and 503 carry
            ``Retry-After: retry_after_s``.
        api_key: if set, require ``Authorization: Bearer <api_key>`` (401 otherwise).
        include_usage: put ``usage`` in responses. ``cached_tokens`` is reported as
            ``prompt_tokens_details.cached_tokens`` (capped at the prompt length).
        max_context: answer 400 ``context_length_exceeded`` when prompt + max_tokens exceed it.
        record: keep ``(path, request, response)`` of every non-streamed answer in ``log`` and
            ``(path, request)`` of every completion request (streamed too) in ``received``.
        fault_message: the ``error.message`` of injected 400/429/500/503 answers (e.g. a traceback with
            a secret, to test that a proxy does not relay it).
        tokenizer: serve the tokenizer endpoints.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        answers: Mapping[str, float] | None = None,
        reasoning_words: tuple[int, int] = (4, 12),
        seed: int = 0,
        model: str = "fake-model",
        max_n: int | None = None,
        latency_s: float = 0.0,
        per_token_latency_s: float = 0.0,
        fault_rate: float = 0.0,
        faults: Sequence[str] = ("429", "500", "503", "timeout", "truncate", "disconnect"),
        fault_script: Sequence[str | None] = (),
        retry_after_s: float | None = 0.05,
        hang_s: float | None = None,
        api_key: str | None = None,
        include_usage: bool = True,
        cached_tokens: int = 0,
        max_context: int | None = None,
        record: bool = False,
        fault_message: str | None = None,
        tokenizer: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        bad = [f for f in list(faults) + [f for f in fault_script if f] if f not in FAULT_KINDS]
        if bad:
            raise ConfigError(f"unknown fault kinds {bad}; valid: {', '.join(FAULT_KINDS)}")
        if not 0 <= fault_rate <= 1:
            raise ConfigError(f"fault_rate must be in [0, 1], got {fault_rate}")
        if fault_rate > 0 and not faults:
            raise ConfigError("fault_rate > 0 needs at least one fault kind")
        self.answers = dict(answers or {"42": 0.6, "41": 0.4})
        self.handler = handler
        self._handler_arity = _arity(handler) if handler is not None else 0
        self.reasoning_words = reasoning_words
        self.seed, self.model, self.max_n = seed, model, max_n
        self.latency_s, self.per_token_latency_s = latency_s, per_token_latency_s
        self.fault_rate, self.faults = fault_rate, tuple(faults)
        self._fault_script = list(fault_script)
        self.retry_after_s, self.hang_s = retry_after_s, hang_s
        self.api_key, self.include_usage = api_key, include_usage
        self.cached_tokens, self.max_context, self.record = cached_tokens, max_context, record
        self.fault_message, self.tokenizer = fault_message, tokenizer
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._vocab: dict[str, int] = {}
        self._ids: list[str] = []
        self.host, self.port = host, port
        self.stats = FakeStats()
        self.log: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._fault_rng = random.Random(f"faults/{seed}")
        self._req_no = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._stopping: asyncio.Event | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL clients use, ending in ``/v1``."""
        if not self.port:
            raise ConfigError("FakeOpenAIServer is not started")
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]
        return self

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve_conn, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._close(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._server = None

    async def _close(self) -> None:
        assert self._server is not None and self._stopping is not None
        self._stopping.set()
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=5)
        await self._server.wait_closed()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        self.stats = FakeStats()
        self.log.clear()
        self.received.clear()

    # -- tokenizer --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (new word tokens get the next id)."""
        out = []
        for tok in fake_tokenize(text):
            i = self._vocab.get(tok)
            if i is None:
                i = self._vocab[tok] = len(self._ids)
                self._ids.append(tok)
            out.append(i)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._ids[i] if 0 <= i < len(self._ids) else f"<{i}>" for i in ids)

    async def _tokenizer(self, method: str, path: str, raw: bytes, writer: asyncio.StreamWriter) -> None:
        if method == "GET" and path == "/tokenizer_info":
            await self._send(writer, 200, {"eos_token": "</s>", "bos_token": None, "pad_token": None,
                                           "model_max_length": self.max_context or 8192,
                                           "tokenizer_class": "FakeWordTokenizer"})
            return
        try:
            body = json.loads(raw)
            if path == "/tokenize":
                text = body["prompt"] if "prompt" in body else "".join(
                    str(m.get("content") or "") for m in body["messages"])
                ids = self.encode(text)
                await self._send(writer, 200, {"tokens": ids, "count": len(ids),
                                               "max_model_len": self.max_context or 8192})
            else:
                await self._send(writer, 200, {"prompt": self.decode([int(i) for i in body["tokens"]])})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            await self._send(writer, 400, _error(f"Invalid tokenizer request: {e!r}", "invalid_request_error", None))

    # -- HTTP -----------------------------------------------------------------------------------
    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        if line:
                            k, _, v = line.partition(":")
                            headers[k.strip().lower()] = v.strip()
                    length = int(headers.get("content-length") or 0)
                    body = await reader.readexactly(length) if length else b""
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
                    return
                keep = await self._dispatch(method, target.split("?", 1)[0], headers, body, writer)
                if not keep or headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(task)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: Any,
                    headers: Mapping[str, str] | None = None, truncate: bool = False) -> None:
        data = json.dumps(payload).encode()
        if truncate:
            data = data[: len(data) // 2]
            # the connection is closed right after: say so, or a client may reuse it and lose the
            # next request to a race with the close
            headers = {**(headers or {}), "Connection": "close"}
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n{extra}\r\n")
        writer.write(head.encode() + data)
        await writer.drain()

    async def _dispatch(self, method: str, path: str, headers: Mapping[str, str], raw: bytes,
                        writer: asyncio.StreamWriter) -> bool:
        st = self.stats
        st.requests += 1
        st.by_path[path] = st.by_path.get(path, 0) + 1
        if method == "GET" and path in ("/health", "/v1/health"):
            await self._send(writer, 200, {"status": "ok"})
            return True
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await self._send(writer, 401, _error("Incorrect API key provided.", "invalid_request_error",
                                                 "invalid_api_key"))
            return True
        if self.tokenizer and (method, path) in _TOKENIZER_ROUTES:
            await self._tokenizer(method, path, raw, writer)
            return True
        if method == "GET" and path == "/v1/models":
            await self._send(writer, 200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "thinktwice"}]})
            return True
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            await self._send(writer, 404, _error(f"No route {method} {path}.", "invalid_request_error", None))
            return True
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except ValueError as e:
            await self._send(writer, 400, _error(f"Invalid JSON body: {e}", "invalid_request_error", None))
            return True
        if self.record:
            self.received.append((path, body))
        fault = self._draw_fault()
        if fault is not None:
            st.faults[fault] = st.faults.get(fault, 0) + 1
            return await self._fault(fault, writer)
        chat = path.endswith("/chat/completions")
        try:
            return await self._complete(body, chat, writer)
        except _BadRequest as e:
            await self._send(writer, 400, _error(str(e), "invalid_request_error", e.code))
            return True

    def _draw_fault(self) -> str | None:
        if self._fault_script:
            return self._fault_script.pop(0)
        if self.fault_rate > 0 and self._fault_rng.random() < self.fault_rate:
            return self._fault_rng.choice(self.faults)
        return None

    async def _fault(self, kind: str, writer: asyncio.StreamWriter) -> bool:
        retry = {"Retry-After": f"{self.retry_after_s:g}"} if self.retry_after_s is not None else {}
        if kind == "400":
            await self._send(writer, 400, _error(self.fault_message or "Bad request.", "invalid_request_error",
                                                 None))
            return True
        if kind == "429":
            await self._send(writer, 429, _error(self.fault_message or "Rate limit reached.", "rate_limit_error",
                                                 "rate_limit_exceeded"), retry)
            return True
        if kind in ("500", "503"):
            await self._send(writer, int(kind), _error(self.fault_message or "The server had an error.",
                                                       "server_error", None), retry if kind == "503" else None)
            return True
        if kind == "timeout":
            assert self._stopping is not None
            try:
                await asyncio.wait_for(self._stopping.wait(), self.hang_s)
            except asyncio.TimeoutError:
                pass
            return False
        if kind == "truncate":
            await self._send(writer, 200, {"id": "trunc", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "x" * 64}, "finish_reason": "stop"}]},
                truncate=True)
        return False  # truncate and disconnect close the connection

    # -- generation -----------------------------------------------------------------------------
    def _texts(self, body: dict[str, Any], n: int, req_no: int) -> list[str]:
        if self.handler is not None:
            if self._handler_arity >= 2:
                return [str(self.handler(body, i)) for i in range(n)]
            out = self.handler(body)
            if isinstance(out, str):
                return [out] * n
            out = list(out)
            return [str(out[i % len(out)]) for i in range(n)]
        keys, weights = list(self.answers), list(self.answers.values())
        lo, hi = self.reasoning_words
        texts = []
        for i in range(n):
            rng = random.Random(self._rng_key(body, i, req_no))
            words = " ".join(rng.choice(_FILLER) for _ in range(rng.randint(lo, hi)))
            texts.append(f"Let me think. {words.capitalize()}. The answer is {rng.choices(keys, weights)[0]}.")
        return texts

    def _prompts(self, body: Mapping[str, Any]) -> list[str]:
        """The completion prompts of ``body`` as text (token ids decoded)."""
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return [self.decode(prompt)]
        if isinstance(prompt, list) and prompt:
            out = []
            for p in prompt:
                if isinstance(p, str):
                    out.append(p)
                elif isinstance(p, list) and all(isinstance(t, int) for t in p):
                    out.append(self.decode(p))
                else:
                    raise _BadRequest("each prompt must be a string or a list of token ids")
            return out
        raise _BadRequest("'prompt' must be a string, a list of strings or token ids")

    def _rng_key(self, body: Mapping[str, Any], i: int, req_no: int) -> str:
        seed = body.get("seed")
        return f"s{seed}/{i}" if isinstance(seed, int) else f"r{self.seed}/{req_no}/{i}"

    async def _complete(self, body: dict[str, Any], chat: bool, writer: asyncio.StreamWriter) -> bool:
        self._req_no += 1
        req_no = self._req_no
        n = int(body.get("n") or 1)
        if n < 1:
            raise _BadRequest("n must be >= 1")
        n_out = min(n, self.max_n) if self.max_n else n
        texts = None if chat else self._prompts(body)
        prompts = 1 if texts is None else len(texts)
        prompt_tokens = _prompt_tokens(body) if texts is None else sum(len(fake_tokenize(p)) for p in texts)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = 16 if (max_tokens is None and not chat) else max_tokens
        if self.max_context is not None and prompt_tokens + (max_tokens or 0) > self.max_context:
            raise _BadRequest(
                f"This model's maximum context length is {self.max_context} tokens. However, you requested "
                f"{prompt_tokens + (max_tokens or 0)} tokens. Please reduce the length of the messages.",
                "context_length_exceeded")
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        if chat:
            k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else -1
        else:
            k = int(body["logprobs"]) if body.get("logprobs") is not None else -1
        choices = []
        for i, text in enumerate(self._texts(body, n_out * prompts, req_no)):
            finish = "stop"
            for s in stops:
                cut = text.find(s)
                if s and cut >= 0:
                    text = text[:cut]
            toks = fake_tokenize(text)
            if max_tokens is not None and len(toks) > max_tokens:
                toks, finish = toks[:max_tokens], "length"
            lps = _logprobs(toks, random.Random(self._rng_key(body, i, req_no) + "/lp"), k) if k >= 0 else None
            choices.append((toks, finish, lps))
        longest = max((len(c[0]) for c in choices), default=0)
        completion_tokens = sum(len(c[0]) for c in choices)
        st = self.stats
        st.prompt_tokens += prompt_tokens
        st.completion_tokens += completion_tokens
        st.choices += len(choices)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens,
                 "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt_tokens)}}
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{req_no}"
        if body.get("stream"):
            want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            st.completed += 1
            await self._stream(writer, rid, chat, choices, usage if (want_usage and self.include_usage) else None)
            return True
        delay = self.latency_s + self.per_token_latency_s * longest
        if delay > 0:
            await asyncio.sleep(delay)
        out: dict[str, Any] = {
            "id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": self.model, "choices": [_choice(i, c, chat) for i, c in enumerate(choices)],
        }
        if self.include_usage:
            out["usage"] = usage
        st.completed += 1  # counted before sending, so a client never sees an answer the stats miss
        if self.record:
            self.log.append(("/v1/chat/completions" if chat else "/v1/completions", body, out))
        await self._send(writer, 200, out)
        return True

    async def _stream(self, writer: asyncio.StreamWriter, rid: str, chat: bool,
                      choices: list[tuple[list[str], str, list[Any] | None]], usage: dict[str, Any] | None) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": rid, "object": obj, "created": int(time.time()), "model": self.model}

        async def event(payload: Any) -> None:
            data = b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n"
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        if chat:
            await event({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                              "logprobs": None, "finish_reason": None} for i in range(len(choices))]})
        for pos in range(max((len(c[0]) for c in choices), default=0)):
            if self.per_token_latency_s > 0:
                await asyncio.sleep(self.per_token_latency_s)
            for i, (toks, _, lps) in enumerate(choices):
                if pos < len(toks):
                    lp = None if lps is None else lps[pos]
                    if chat:
                        ch = {"index": i, "delta": {"content": toks[pos]},
                              "logprobs": None if lp is None else {"content": [lp]}, "finish_reason": None}
                    else:
                        ch = {"index": i, "text": toks[pos], "finish_reason": None,
                              "logprobs": None if lp is None else _completion_logprobs([toks[pos]], [lp])}
                    await event({**base, "choices": [ch]})
        for i, (_, finish, _) in enumerate(choices):
            ch = {"index": i, "delta": {}, "logprobs": None, "finish_reason": finish} if chat else \
                {"index": i, "text": "", "logprobs": None, "finish_reason": finish}
            await event({**base, "choices": [ch]})
        if usage is not None:
            await event({**base, "choices": [], "usage": usage})
        await event(b"[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


class _BadRequest(Exception):
    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _error(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _BadRequest("'messages' must be a non-empty list")
    return sum(1 + _content_tokens(m.get("content")) for m in msgs if isinstance(m, dict))


def _content_tokens(content: Any) -> int:
    if isinstance(content, list):  # content parts: text parts by their words, any other part one token
        return sum(len(fake_tokenize(str(p.get("text") or ""))) if p.get("type") == "text" else 1
                   for p in content if isinstance(p, dict))
    return len(fake_tokenize(str(content or "")))


_TOKENIZER_ROUTES = {("GET", "/tokenizer_info"), ("POST", "/tokenize"), ("POST", "/detokenize")}


def _logprobs(toks: list[str], rng: random.Random, k: int) -> list[dict[str, Any]]:
    """Chat-format logprob entries: the chosen token has probability in [0.3, 0.99], the other k-1
    alternatives share the rest geometrically; ``top_logprobs`` is sorted, most likely first."""
    out = []
    for tok in toks:
        p = 0.3 + 0.69 * rng.random()
        top = [(tok, math.log(p))] + [(f" alt{m}", math.log((1 - p) * 0.5 ** (m + 1))) for m in range(max(k - 1, 0))]
        top.sort(key=lambda t: -t[1])
        out.append({"token": tok, "logprob": math.log(p), "bytes": list(tok.encode()),
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:k]]})
    return out


def _completion_logprobs(toks: list[str], lps: list[dict[str, Any]]) -> dict[str, Any]:
    offsets, pos = [], 0
    for t in toks:
        offsets.append(pos)
        pos += len(t)
    return {"tokens": toks, "token_logprobs": [e["logprob"] for e in lps],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in lps],
            "text_offset": offsets}


def _choice(i: int, c: tuple[list[str], str, list[Any] | None], chat: bool) -> dict[str, Any]:
    toks, finish, lps = c
    text = "".join(toks)
    if chat:
        return {"index": i, "message": {"role": "assistant", "content": text},
                "logprobs": None if lps is None else {"content": lps}, "finish_reason": finish}
    return {"index": i, "text": text, "logprobs": None if lps is None else _completion_logprobs(toks, lps),
            "finish_reason": finish}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m thinktwice.testing.fake_openai --port 8000``: serve until interrupted."""
    ap = argparse.ArgumentParser(description="A fake OpenAI-compatible server for tests.")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--per-token-latency", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    srv = FakeOpenAIServer(port=a.port, latency_s=a.latency, per_token_latency_s=a.per_token_latency,
                           fault_rate=a.fault_rate, seed=a.seed, faults=("429", "500", "503"))
    with srv:
        logger.warning("fake OpenAI server at %s", srv.url)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
