"""Fixtures for the proxy tests: a fake OpenAI upstream and proxies served over real sockets."""

from __future__ import annotations

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
