"""The base of the upstream simulators: a real HTTP server (aiohttp) in its own thread that records
every request and can be told to misbehave (status, headers, body, delay) for the next requests."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import LoopThread, free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Override:
    pattern: re.Pattern[str]
    status: int
    body: Any
    headers: dict[str, str]
    times: int
    delay: float = 0.0


@dataclass
class Simulator:
    """Subclasses add routes in ``routes(app)``; ``url`` is the base URL to configure."""

    name: str = "upstream"
    requests: list[Recorded] = field(default_factory=list)
    _overrides: list[Override] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0
    # Requests being answered right now, and the most seen at once, per Authorization/X-Figma-Token value.
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)

    def start(self) -> Simulator:
        self._loop = LoopThread()
        self.port = free_port()
        self._loop.run(self._start())
        return self

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 << 20)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        self._loop.run(self._runner.cleanup())
        self._loop.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # Control ------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._overrides.clear()
            self.in_flight.clear()
            self.max_in_flight.clear()
            self.delay = 0.0

    def fail(self, path_regex: str, status: int, body: Any = None, headers: dict[str, str] | None = None,
             times: int = 1, delay: float = 0.0) -> None:
        """Answer the next ``times`` requests whose path matches with this status/body/headers."""
        with self._lock:
            self._overrides.append(Override(re.compile(path_regex), status, body, headers or {}, times, delay))

    def recorded(self, path_regex: str = ".*") -> list[Recorded]:
        rx = re.compile(path_regex)
        with self._lock:
            return [r for r in self.requests if rx.search(r.path)]

    # Internals ----------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        who = request.headers.get("X-Figma-Token") or request.headers.get("Authorization") or ""
        with self._lock:
            self.in_flight[who] = self.in_flight.get(who, 0) + 1
            self.max_in_flight[who] = max(self.max_in_flight.get(who, 0), self.in_flight[who])
        try:
            return await self._answer(request, handler)
        finally:
            with self._lock:
                self.in_flight[who] -= 1

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Recorded(request.method, request.path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
            override = next((o for o in self._overrides if o.pattern.search(request.path)), None)
            if override is not None:
                override.times -= 1
                if override.times <= 0:
                    self._overrides.remove(override)
            delay = self.delay
        if override is not None:
            if override.delay:
                await asyncio.sleep(override.delay)
            text = override.body if isinstance(override.body, str) else json.dumps(override.body)
            return web.Response(status=override.status, text=text, headers=override.headers,
                                content_type="application/json" if not isinstance(override.body, str) else "text/plain")
        if delay:
            await asyncio.sleep(delay)
        return await handler(request)
