"""A minimal Figma ``/v1/me`` upstream for load: raw asyncio HTTP/1.1 keep-alive, no framework.

``python -m bench.upstream_sim --port N``. It answers what tests.simulators.figma answers for
``GET /v1/me`` (the user derived from the X-Figma-Token or Bearer token; 403 without a token) but
costs a fraction of a full aiohttp application, so that it is never the bottleneck. ``GET /health``
answers 200, ``GET /stats`` the number of /v1/me answers so far. The bench measures its ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from tests.simulators.figma import user_for

_HEAD_END = b"\r\n\r\n"
_MAX_CACHED_TOKENS = 200_000


def _response(status: int, reason: str, payload: object, keep_alive: bool) -> bytes:
    body = json.dumps(payload).encode()
    close = "" if keep_alive else "Connection: close\r\n"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n{close}\r\n")
    return head.encode() + body


class Upstream:
    """What the connections share: the answers already built, and the request count."""

    def __init__(self) -> None:
        self.answered = 0
        self._me: dict[str, bytes] = {}

    def answer(self, method: str, path: str, token: str | None, keep_alive: bool) -> bytes:
        if path == "/v1/me" and method == "GET":
            if not token:
                return _response(403, "Forbidden", {"status": 403, "err": "No token provided"}, keep_alive)
            self.answered += 1
            if keep_alive:
                cached = self._me.get(token)
                if cached is None:
                    if len(self._me) >= _MAX_CACHED_TOKENS:
                        self._me.clear()
                    cached = self._me[token] = _response(200, "OK", user_for(token), True)
                return cached
            return _response(200, "OK", user_for(token), False)
        if path == "/health":
            return _response(200, "OK", {"status": "healthy"}, keep_alive)
        if path == "/stats":
            return _response(200, "OK", {"answered": self.answered}, keep_alive)
        return _response(404, "Not Found", {"status": 404, "err": "Not found"}, keep_alive)


class Connection(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _version = lines[0].split(" ", 2)
            except ValueError:
                self._close()
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            token = headers.get("x-figma-token")
            if token is None and headers.get("authorization", "").startswith("Bearer "):
                token = headers["authorization"][7:]
            keep_alive = headers.get("connection", "").lower() != "close"
            assert self.transport is not None
            self.transport.write(self.upstream.answer(method, target.split("?", 1)[0], token, keep_alive))
            if not keep_alive:
                self._close()
                return

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(port: int) -> None:
    upstream = Upstream()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(upstream), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
