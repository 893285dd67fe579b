"""A lean keep-alive HTTP/1.1 client for the non-streamed passthrough path.

Forwarding a small JSON body is the proxy's hottest path: a general client (httpx) spends most of
the proxy's per-request CPU in connection-pool bookkeeping and layered stream wrappers. This one
writes the request in one syscall and reads the answer from asyncio streams (Content-Length,
chunked, or read-to-close bodies). It sends no Accept-Encoding, so bodies arrive uncompressed.
Streaming passthrough keeps using httpx.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Http1Pool", "UpstreamTimeout", "UpstreamUnreachable"]

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class UpstreamUnreachable(Exception):
    """The upstream refused the connection or dropped it without an answer."""


class UpstreamTimeout(Exception):
    """The upstream did not answer within the timeout."""


@dataclass(frozen=True)
class _Origin:
    host: str
    port: int
    tls: bool
    prefix: str
    host_header: str


class Http1Pool:
    """Keep-alive connections per origin, at most ``max_connections`` in all."""

    def __init__(self, timeout_s: float, max_connections: int = 256) -> None:
        self.timeout_s = timeout_s
        self._idle: dict[_Origin, collections.deque[_Conn]] = collections.defaultdict(collections.deque)
        self._slots = asyncio.Semaphore(max_connections)
        self._origins: dict[str, _Origin] = {}
        self._ssl: ssl.SSLContext | None = None

    def _origin(self, base_url: str) -> _Origin:
        o = self._origins.get(base_url)
        if o is None:
            u = urlsplit(base_url)
            tls = u.scheme == "https"
            port = u.port or (443 if tls else 80)
            default = port == (443 if tls else 80)
            o = _Origin(
                u.hostname or "127.0.0.1",
                port,
                tls,
                u.path.rstrip("/"),
                u.hostname if default else f"{u.hostname}:{port}",
            )  # type: ignore[arg-type]
            self._origins[base_url] = o
        return o

    async def post(
        self, base_url: str, path: str, body: bytes, headers: dict[str, str], timeout_s: float | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``body`` to ``base_url + path``; returns (status, lower-cased headers, body)."""
        return await self.request("POST", base_url, path, body, headers, timeout_s)

    async def request(
        self,
        method: str,
        base_url: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
        timeout_s: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send ``method`` to ``base_url + path`` (``timeout_s`` bounds the whole exchange, default the
        pool's); returns (status, lower-cased headers, body)."""
        o = self._origin(base_url)
        head = [
            f"{method} {o.prefix}{path} HTTP/1.1\r\nHost: {o.host_header}\r\nContent-Length: {len(body)}\r\n"
        ]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        request = "".join(head).encode("latin-1") + b"\r\n" + body
        limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        async with self._slots:
            try:
                return await asyncio.wait_for(self._exchange(o, request), limit)
            except asyncio.TimeoutError:
                raise UpstreamTimeout(f"no answer within {limit:g} s") from None

    async def _exchange(self, o: _Origin, request: bytes) -> tuple[int, dict[str, str], bytes]:
        idle = self._idle[o]
        while idle:
            reader, writer = idle.pop()
            if writer.is_closing() or reader.at_eof():
                writer.close()
                continue
            try:
                return await self._roundtrip(o, reader, writer, request, reused=True)
            except _Stale:
                continue  # the server closed this keep-alive connection; try the next one
        try:
            if o.tls:
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                reader, writer = await asyncio.open_connection(o.host, o.port, ssl=self._ssl, limit=1 << 20)
            else:
                reader, writer = await asyncio.open_connection(o.host, o.port, limit=1 << 20)
        except OSError as e:
            raise UpstreamUnreachable(f"cannot connect to {o.host}:{o.port} ({type(e).__name__})") from None
        return await self._roundtrip(o, reader, writer, request, reused=False)

    async def _roundtrip(
        self,
        o: _Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        *,
        reused: bool,
    ) -> tuple[int, dict[str, str], bytes]:
        got_any = False
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            got_any = True
            lines = head[:-4].decode("latin-1").split("\r\n")
            version, status_text = lines[0].split(" ", 2)[:2]
            status = int(status_text)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass
                        break
                    parts.append((await reader.readexactly(size + 2))[:-2])
                data = b"".join(parts)
            elif "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            else:
                data, keep = await reader.read(), False
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError) as e:
            writer.close()
            if reused and not got_any:
                raise _Stale from None
            raise UpstreamUnreachable(f"the upstream connection broke ({type(e).__name__})") from None
        except BaseException:
            writer.close()  # cancelled or timed out mid-exchange: the connection state is unknown
            raise
        if keep:
            self._idle[o].append((reader, writer))
        else:
            writer.close()
        return status, headers, data

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                _, writer = idle.pop()
                writer.close()


class _Stale(Exception):
    pass
