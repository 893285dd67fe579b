"""Properties of the proxy's untrusted-input helpers: body decoding, upstream error sanitising, stream scanning."""

from __future__ import annotations

import json
import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from thinktwice.serve.body import MAX_JSON_DEPTH, decode_body
from thinktwice.serve.errors import ProxyError, sanitize_upstream
from thinktwice.serve.passthrough import _Seen

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=30,
)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_decode_body_is_an_object_or_a_400(raw: bytes) -> None:
    try:
        body = decode_body(raw)
    except ProxyError as e:
        assert e.status == 400 and e.code == "invalid_json"
    else:
        assert isinstance(body, dict)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # valid Unicode all the way down


@settings(deadline=None, max_examples=100)
@given(_JSON, st.integers(min_value=0, max_value=3 * MAX_JSON_DEPTH))
def test_decode_body_accepts_exactly_the_shallow_objects(value: object, extra: int) -> None:
    raw = json.dumps({"v": value}).encode()
    wrapped = b'{"w": ' + b"[" * extra + raw + b"]" * extra + b"}"
    depth = extra + 2 + _depth(value)
    try:
        decode_body(wrapped)
        assert depth <= MAX_JSON_DEPTH
    except ProxyError:
        assert depth > MAX_JSON_DEPTH


def _depth(v: object) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


@settings(deadline=None, max_examples=300)
@given(st.text(max_size=2000))
def test_sanitized_upstream_text_is_short_and_printable(text: str) -> None:
    out = sanitize_upstream(text)
    assert len(out) <= 300
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out)
    assert "Traceback (most recent call last)" not in out


@settings(deadline=None, max_examples=100)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=8, max_size=40),
    st.text(max_size=40),
)
def test_keys_never_survive_sanitising(secret: str, around: str) -> None:
    assume(secret not in around)
    for leak in (f"sk-{secret}", f"Bearer {secret}", f"api_key={secret}", f"password: {secret}"):
        assert secret not in sanitize_upstream(f"{around} {leak} {around}")


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300))
def test_stream_scanning_never_raises(event: bytes) -> None:
    seen = _Seen()
    seen.take(event)
    seen.take(b"data: " + event)
    assert seen.tokens >= 0
