"""The proxy's front door under hostile clients and bad flags: rate limits, slow clients, keys off argv."""

from __future__ import annotations

import math
import os
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from thinktwice.lm.scripted import Reply, ScriptedBackend
from thinktwice.serve import ServeConfig, ServerThread, create_app
from thinktwice.serve.app import Guard, uvicorn_options
from thinktwice.serve.limits import RATE_KEY, KeyLimits
from thinktwice.serve.metrics import Metrics
from thinktwice.testing.cli import run_cli

MSG = [{"role": "user", "content": "What is 6*7?"}]
UPSTREAM = "http://127.0.0.1:9/v1"  # never called: these tests stop before serving or use a scripted backend


def scripted() -> ScriptedBackend:
    return ScriptedBackend(["The answer is 42."], cycle=True)


# -- flags ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--port", "99999"], "--port must be between 1 and 65535, got 99999"),
        (["--port", "-1"], "--port must be between 1 and 65535"),
        (["--strategy", "self-consistency", "-o", "n=abc"], "option 'n' must be int, got 'abc'"),
        (["--strategy", "self-consistency", "-o", "temperature=hot"], "option 'temperature' must be float"),
        (["--requests-per-minute", "0"], "requests_per_minute must be a positive integer"),
        (["--body-timeout", "0"], "body_timeout_s must be a finite number of seconds > 0"),
        (["--header-timeout", "inf"], "header_timeout_s must be a finite number"),
        (["--keys", "a", "--keys-file", "k.txt"], "give --keys or --keys-file, not both"),
        (["--max-tokens-policy", "truncate"], "max_tokens_policy must be 'clamp' or 'refuse'"),
        (["--fallback", "greedy"], "fallback must be None or 'passthrough'"),
        (["--max-request-samples", "0"], "max_request_samples must be a positive integer"),
    ],
)
def test_bad_serve_flags_are_one_line_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("must not serve"))
    code, _, err = run_cli(["serve", "-u", UPSTREAM, *args], capsys)
    assert code == 2, err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace uvicorn.run: record the app and options `thinktwice serve` would serve with."""
    seen: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        seen["app"], seen["options"] = app, options

    monkeypatch.setattr("uvicorn.run", fake_run)
    monkeypatch.delenv("THINKTWICE_API_KEYS", raising=False)
    return seen


def _serve(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code, _, err = run_cli(["serve", "-u", UPSTREAM, *args], capsys)
    return code, err


def test_keys_come_from_a_file_without_an_argv_warning(
    served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# clients\nsk-one\n\nsk-two\n")
    keys.chmod(0o600)
    code, err = _serve(capsys, "--keys-file", str(keys))
    assert code == 0, err
    assert served["app"].state.config.api_keys == ("sk-one", "sk-two")
    assert "warning" not in err


def test_keys_come_from_the_environment(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THINKTWICE_API_KEYS", "sk-a, sk-b")
    code, err = _serve(capsys)
    assert code == 0 and served["app"].state.config.api_keys == ("sk-a", "sk-b")
    assert "warning" not in err


def test_keys_on_argv_still_work_with_a_warning(served: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _serve(capsys, "--keys", "sk-argv")
    assert code == 0 and served["app"].state.config.api_keys == ("sk-argv",)
    assert "--keys puts the client keys on the command line" in err and "--keys-file" in err


def test_a_group_readable_keys_file_is_warned(
    served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("sk-one\n")
    keys.chmod(0o644)
    code, err = _serve(capsys, "--keys-file", str(keys))
    assert code == 0 and "readable by other users" in err


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n", b"\xff\xfe"])
def test_a_keys_file_that_is_missing_empty_or_not_text_is_refused(
    content: str | bytes | None, served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.txt"
    if isinstance(content, bytes):
        keys.write_bytes(content)
    elif content is not None:
        keys.write_text(content)
    code, err = _serve(capsys, "--keys-file", str(keys))
    assert code == 2 and "--keys-file" in err and len(err.strip().splitlines()) == 1
    assert "app" not in served  # never served without the authentication it was asked for


def test_serve_passes_the_front_door_timeouts_to_uvicorn(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _serve(capsys, "--keep-alive-timeout", "2.5", "--header-timeout", "3", "--body-timeout", "4",
                       "--requests-per-minute", "60", "--tokens-per-minute", "1000")
    assert code == 0, err
    opts, cfg = served["options"], served["app"].state.config
    assert opts["timeout_keep_alive"] == 2.5 and opts["http"].__name__ == "HeadDeadlineProtocol"
    assert (cfg.header_timeout_s, cfg.body_timeout_s) == (3.0, 4.0)
    assert (cfg.requests_per_minute, cfg.tokens_per_minute) == (60, 1000)


def test_serve_passes_the_work_budget_and_stream_settings(
    served: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _serve(capsys, "--max-request-samples", "96", "--max-request-tokens", "5000", "--max-tokens-policy",
                       "refuse", "--fallback", "passthrough", "--stream-keepalive", "2")
    assert code == 0, err
    cfg = served["app"].state.config
    assert (cfg.max_request_samples, cfg.max_request_tokens, cfg.max_tokens_policy) == (96, 5000, "refuse")
    assert (cfg.fallback, cfg.stream_keepalive_s, cfg.timeout_s) == ("passthrough", 2.0, 600.0)


def test_metrics_label_model_ids_and_tokenizer_routes_without_unbounded_labels() -> None:
    from thinktwice.serve.app import endpoint_label

    assert endpoint_label("/v1/models/self-consistency/some-model") == "/v1/models/{id}"
    assert [endpoint_label(p) for p in ("/tokenize", "/v1/detokenize", "/tokenizer_info")] == [
        "/tokenize", "/v1/detokenize", "/tokenizer_info"]
    assert endpoint_label("/v1/junk-" + "x" * 50) == "other"


# -- rate limits ---------------------------------------------------------------------------------


def test_key_limits_refill_and_go_into_debt() -> None:
    now = [0.0]
    lim = KeyLimits(requests_per_minute=60, tokens_per_minute=600, clock=lambda: now[0])
    assert lim.admit("a") is None
    lim.charge("a", 1200)  # 600 over: refused until 601 tokens came back at 10 per second
    wait = lim.admit("a")
    assert wait == pytest.approx(60.1)
    now[0] = 60.0
    assert lim.admit("a") is not None and lim.admit("b") is None  # other keys are untouched
    now[0] = 60.2
    assert lim.admit("a") is None
    off = KeyLimits()
    off.charge({"state": {RATE_KEY: "a"}}, 10**9)  # off: charging is a no-op
    assert not off.enabled and off.admit("a") is None


def _post(srv: ServerThread, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(srv.url + "/chat/completions", json={"messages": MSG}, headers=headers, timeout=30)


def test_requests_per_minute_per_key_is_429_with_retry_after(make_proxy: Callable[..., ServerThread]) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy", api_keys=("k1", "k2"), requests_per_minute=2), backend=scripted())
    assert [_post(srv, "k1").status_code for _ in range(2)] == [200, 200]
    refused = _post(srv, "k1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # one request back every 30 s
    assert _post(srv, "k2").status_code == 200  # each key has its own bucket
    assert _post(srv, "wrong").status_code == 401  # an unknown key is not counted, just refused
    assert httpx.get(srv.url.removesuffix("/v1") + "/health").status_code == 200  # open paths are not limited
    assert 'status="429"' in httpx.get(srv.url.removesuffix("/v1") + "/metrics").text


def test_without_keys_each_client_address_has_its_limit(make_proxy: Callable[..., ServerThread]) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy", requests_per_minute=1), backend=scripted())
    assert _post(srv).status_code == 200
    assert _post(srv).status_code == 429


def test_generated_tokens_charged_through_app_state_limits_refuse_the_key(
    make_proxy: Callable[..., ServerThread],
) -> None:
    app = create_app(ServeConfig(strategy="greedy", api_keys=("k1", "k2"), tokens_per_minute=100),
                     backend=scripted())
    srv = ServerThread(app).start()
    try:
        assert _post(srv, "k1").status_code == 200
        app.state.limits.charge("key:0", 1000)  # what the routes do with a request's generated tokens
        refused = _post(srv, "k1")
        assert refused.status_code == 429 and "generated tokens" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) > 500  # 901 tokens to win back at 100 a minute
        assert _post(srv, "k2").status_code == 200
    finally:
        srv.stop()


async def test_the_charge_hook_bills_the_key_of_the_request_scope() -> None:
    cfg = ServeConfig(api_keys=("k1",), tokens_per_minute=150)
    limits = KeyLimits(cfg.requests_per_minute, cfg.tokens_per_minute)

    async def routes(scope: Any, receive: Any, send: Any) -> None:  # stands in for the routes layer
        limits.charge(scope, 100)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(routes, config=cfg, metrics=Metrics(), limits=limits)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as c:
        auth = {"authorization": "Bearer k1"}
        assert [(await c.post("/v1/completions", headers=auth)).status_code for _ in range(2)] == [200, 200]
        r = await c.post("/v1/completions", headers=auth)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) == math.ceil(51 * 60 / 150)  # 50 tokens in debt, 1 more to pass


# -- slow clients --------------------------------------------------------------------------------


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Send ``trickle`` one byte per 0.1 s until the server closes the connection; what it said."""
    deadline = time.monotonic() + seconds
    got = b""
    i = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return True, got
            if not data:
                return True, got
            got += data
            continue
        if trickle:
            try:
                sock.send(trickle[i % len(trickle): i % len(trickle) + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True, got
            i += 1
    return False, got


def _connect(srv: ServerThread) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=5)


def test_a_client_trickling_its_headers_is_cut_off(make_proxy: Callable[..., ServerThread]) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy", header_timeout_s=0.5), backend=scripted())
    with _connect(srv) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        closed, _ = _closed_within(s, 15, trickle=b"x-slow: abcdefghij\r\n")
    assert closed  # before the deadline it stayed open as long as the client kept trickling
    with _connect(srv) as s:  # a connection that never sends a byte is closed too
        closed, _ = _closed_within(s, 15)
    assert closed
    assert _post(srv).status_code == 200  # and an ordinary client is served


def test_a_client_trickling_its_body_gets_408(make_proxy: Callable[..., ServerThread]) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy", body_timeout_s=0.5), backend=scripted())
    with _connect(srv) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 400\r\n\r\n{")
        closed, said = _closed_within(s, 15, trickle=b" ")
    assert closed and said.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in said


def test_the_body_deadline_does_not_cut_slow_answers_or_streams(make_proxy: Callable[..., ServerThread]) -> None:
    backend = ScriptedBackend([Reply("The answer is 42.", delay=0.8)], cycle=True)
    srv = make_proxy(ServeConfig(strategy="greedy", body_timeout_s=0.2), backend=backend)
    assert _post(srv).status_code == 200
    r = httpx.post(srv.url + "/chat/completions", json={"messages": MSG, "stream": True}, timeout=30)
    assert r.status_code == 200 and "42" in r.text and r.text.rstrip().endswith("[DONE]")


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    make_proxy: Callable[..., ServerThread],
) -> None:
    srv = make_proxy(ServeConfig(strategy="greedy", keep_alive_timeout_s=0.3, header_timeout_s=30), backend=scripted())
    with _connect(srv) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        closed, said = _closed_within(s, 15)
    assert closed and said.startswith(b"HTTP/1.1 200")
    assert uvicorn_options(ServeConfig(keep_alive_timeout_s=7))["timeout_keep_alive"] == 7


def test_environment_is_not_read_by_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THINKTWICE_API_KEYS", "sk-env")
    assert create_app(ServeConfig()).state.config.api_keys == ()  # only the CLI reads the environment
    assert os.environ["THINKTWICE_API_KEYS"] == "sk-env"
