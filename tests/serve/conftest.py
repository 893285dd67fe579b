"""Fixtures for the proxy tests: a fake OpenAI upstream and proxies served over real sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from thinktwice.serve import ServeConfig, ServerThread, create_app
from thinktwice.testing import FakeOpenAIServer


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(answers={"42": 0.7, "41": 0.3}, record=True) as srv:
        yield srv


@pytest.fixture
def make_proxy() -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def make(config: ServeConfig | None = None, *, backend: Any = None, **fields: Any) -> ServerThread:
        srv = ServerThread(create_app(config or ServeConfig(**fields), backend=backend)).start()
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def proxy(make_proxy: Callable[..., ServerThread], upstream: FakeOpenAIServer) -> ServerThread:
    """A proxy in front of the fake upstream; default strategy self-consistency with n=5."""
    upstream.reset_stats()
    return make_proxy(
        upstreams=(upstream.url,),
        model="fake-model",
        strategy="self-consistency",
        strategy_options={"n": 5},
        max_n=4,
        max_tokens=512,
        max_concurrency=16,
    )


@pytest.fixture
def client(proxy: ServerThread) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=proxy.url, api_key="unused", max_retries=0)
    yield c
    c.close()


class GatedBackend:
    """A backend that answers its first ``free`` calls at once and holds the others until ``gate`` is
    set; it counts the calls that finished and those cancelled (the test thread reads the counters)."""

    name = "gated"
    model = "gated"

    def __init__(self, text: str = "The answer is 7.", free: int = 0) -> None:
        from thinktwice.types import Capabilities

        self.capabilities = Capabilities(logprobs=True, top_logprobs=5, native_n=False)
        self.text, self.free = text, free
        self.gate = threading.Event()
        self.calls = self.done = self.cancelled = 0

    def count_tokens(self, prompt: Any) -> int:
        return 3

    async def sample(self, prompt: Any, params: Any, n: int = 1, *, monitor: Any = None) -> list[Any]:
        from thinktwice.lm.scripted import tokenize
        from thinktwice.types import Sample, TokenStat, Usage

        self.calls += 1
        if self.calls > self.free:
            try:
                while not self.gate.is_set():
                    await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        self.done += 1
        toks = tuple(TokenStat(t, -0.1, ((t, -0.1),)) for t in tokenize(self.text))
        first = Usage(calls=1, prompt_tokens=3, completion_tokens=len(toks))
        rest = Usage(completion_tokens=len(toks))
        return [Sample(self.text, toks, usage=first if i == 0 else rest) for i in range(n)]

    async def aclose(self) -> None:
        return None


@pytest.fixture
def gated() -> type[GatedBackend]:
    """The GatedBackend class (tests build their own instances)."""
    return GatedBackend
