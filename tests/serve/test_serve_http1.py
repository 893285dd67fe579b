"""The lean HTTP/1.1 client of the passthrough path: body framings, keep-alive reuse, stale sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from thinktwice.serve.http1 import Http1Pool, UpstreamTimeout, UpstreamUnreachable

Respond = Callable[[int], bytes | None]


async def _server(respond: Respond) -> tuple[asyncio.AbstractServer, str, list[int]]:
    """A raw server; ``respond(request_number)`` gives the bytes to send (None: close instead).
    Returns the server, its base URL and a list that counts accepted connections."""
    conns: list[int] = []
    count = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        conns.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                await reader.readexactly(length)
                count += 1
                data = respond(count)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
                if b"Connection: close" in data or b"Content-Length" not in data and b"chunked" not in data:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    return srv, f"http://127.0.0.1:{port}/v1", conns


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Respond], Awaitable[tuple[str, list[int]]]]]:
    servers: list[asyncio.AbstractServer] = []

    async def start(respond: Respond) -> tuple[str, list[int]]:
        srv, url, conns = await _server(respond)
        servers.append(srv)
        return url, conns

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


def _ok(body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


async def test_content_length_and_keep_alive(serve) -> None:  # type: ignore[no-untyped-def]
    url, conns = await serve(lambda i: _ok(b'{"i": %d}' % i))
    pool = Http1Pool(5.0)
    for i in (1, 2, 3):
        status, headers, body = await pool.post(
            url, "/chat/completions", b"{}", {"Content-Type": "application/json"}
        )
        assert (status, body) == (200, b'{"i": %d}' % i)
        assert headers["content-type"] == "application/json"
    assert len(conns) == 1  # one connection, reused
    await pool.aclose()


async def test_chunked_and_close_delimited(serve) -> None:  # type: ignore[no-untyped-def]
    chunked = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nRetry-After: 1\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    url, _ = await serve(lambda i: chunked if i == 1 else b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    pool = Http1Pool(5.0)
    status, headers, body = await pool.post(url, "/x", b"{}", {})
    assert (status, body, headers["retry-after"]) == (429, b"hello world", "1")
    status, _, body = await pool.post(url, "/x", b"{}", {})
    assert (status, body) == (200, b"until close")
    await pool.aclose()


async def test_stale_keep_alive_connection_is_replaced(serve) -> None:  # type: ignore[no-untyped-def]
    # the server answers once per connection, then closes it without saying so
    url, conns = await serve(lambda i: _ok(b"ok") if i % 2 == 1 else None)
    pool = Http1Pool(5.0)
    for _ in range(3):
        status, _, body = await pool.post(url, "/x", b"{}", {})
        assert (status, body) == (200, b"ok")
        await asyncio.sleep(0.01)
    assert len(conns) >= 2
    await pool.aclose()


async def test_refused_and_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    url, _ = await serve(lambda i: None)
    pool = Http1Pool(5.0)
    with pytest.raises(UpstreamUnreachable):
        await pool.post(url, "/x", b"{}", {})  # closed before answering a fresh connection
    srv = await asyncio.start_server(lambda r, w: asyncio.sleep(10), "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    slow = Http1Pool(0.2)
    with pytest.raises(UpstreamTimeout):
        await slow.post(f"http://127.0.0.1:{port}", "/x", b"{}", {})
    srv.close()
    await pool.aclose()
    await slow.aclose()
