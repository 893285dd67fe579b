"""``GET /v1/models``: the served model, its strategy ids, and the upstream's own models."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from thinktwice.errors import BackendError
from thinktwice.lm.openai import OpenAIBackend
from thinktwice.serve import ServerThread
from thinktwice.testing import FakeOpenAIServer


def _ids(proxy: ServerThread) -> list[str]:
    r = httpx.get(proxy.url + "/models")
    assert r.status_code == 200
    return [m["id"] for m in r.json()["data"]]


def test_models_lists_the_upstream_models_beside_the_served_alias(make_proxy: Callable[..., ServerThread]) -> None:
    with FakeOpenAIServer(model="up-model") as up:
        ids = _ids(make_proxy(upstreams=(up.url,), model="alias", strategy="self-consistency"))
    assert ids[0] == "alias" and "up-model" in ids
    assert "self-consistency/alias" in ids and "passthrough/alias" in ids
    assert len(ids) == len(set(ids))


def test_an_upstream_that_cannot_list_models_is_skipped(make_proxy: Callable[..., ServerThread]) -> None:
    with FakeOpenAIServer(model="up-model", api_key="secret") as up:  # the proxy sends no key: 401
        ids = _ids(make_proxy(upstreams=(up.url,), model="alias", strategy="self-consistency"))
    assert "up-model" not in ids and ids[0] == "alias" and "self-consistency/alias" in ids


async def test_list_models_tries_each_endpoint_and_names_every_failure() -> None:
    with FakeOpenAIServer(model="m2") as up:
        b = OpenAIBackend(base_urls=["http://127.0.0.1:9/v1", up.url], model="x")
        try:
            assert await b.list_models(timeout_s=2) == ["m2"]
        finally:
            await b.aclose()
    b = OpenAIBackend(base_urls="http://127.0.0.1:9/v1", model="x")
    try:
        with pytest.raises(BackendError, match=r"127\.0\.0\.1:9/v1: ConnectError"):
            await b.list_models(timeout_s=2)
    finally:
        await b.aclose()
