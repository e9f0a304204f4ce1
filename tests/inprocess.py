"""A service application in-process on the test's own IOLoop, for pytest-tornado.

A test module that says ``pytest_plugins = ["tests.inprocess"]`` gets ``app`` (the Figma service; what
pytest-tornado's ``http_server`` serves), its ``runtime``, ``fetch`` for requests to it and ``eventually``
to wait without blocking the loop that serves them. Parametrize
``overrides`` (``indirect=True``) to start the service with other settings. Tests are marked
``@pytest.mark.gen_test``: the server, its database pool and its upstream session live on the test's
loop and are closed with it (pyproject sets a generous --async-test-timeout for slow machines).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from mcp.config import load_settings
from mcp.server.app import make_app
from mcp.server.runtime import ServiceRuntime
from services.figma import SERVICE as FIGMA
from tests.support import Response

Fetch = Callable[..., Awaitable[Response]]


@pytest.fixture
def overrides(request: pytest.FixtureRequest) -> dict[str, str]:
    """Variables this test's service runs with, on top of ``env``."""
    return getattr(request, "param", {})


@pytest.fixture
def runtime(env: dict[str, str], overrides: dict[str, str], io_loop: Any, http_port: int) -> Iterator[ServiceRuntime]:
    runtime = ServiceRuntime.create(FIGMA, load_settings({**env, **overrides}), http_port)
    yield runtime
    io_loop.run_sync(runtime.stop)


@pytest.fixture
def app(runtime: ServiceRuntime) -> Any:
    return make_app(runtime)


@pytest.fixture
def fetch(app: Any, http_client: Any, http_port: int) -> Fetch:
    """``await fetch(method, path, body=None, raw=None, headers=None)``: a Response; error statuses are returned."""

    async def _fetch(method: str, path: str, body: Any = None, raw: bytes | None = None,
                     headers: dict[str, str] | None = None, **options: Any) -> Response:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = dict(headers or {})
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        elif method in ("POST", "PUT", "PATCH") and "body_producer" not in options:
            data = b""
        resp = await http_client.fetch(f"http://127.0.0.1:{http_port}{path}", method=method, body=data,
                                       headers=headers, raise_error=False, allow_nonstandard_methods=True,
                                       request_timeout=30, **options)
        return Response(resp.code, {k.lower(): v for k, v in resp.headers.get_all()}, resp.body or b"")

    return _fetch


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(probe, timeout, what)``: the first truthy value of ``await probe()``, polled.

    The in-process server shares the test's loop, so waiting must yield to it (never time.sleep).
    """

    async def _eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 15.0, what: str = "") -> Any:
        end = time.monotonic() + timeout
        while not (value := await probe()):
            if time.monotonic() > end:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
            await asyncio.sleep(0.05)
        return value

    return _eventually
