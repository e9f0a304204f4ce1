"""Fixtures: a real PostgreSQL (embedded pgserver unless TEST_DATABASE_URL is set), a freshly
migrated database per test, the upstream simulators, and services as real servers on free ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from db.migrate import migrate
from mcp.config import load_settings
from mcp.server.app import make_app
from mcp.server.runtime import ServiceRuntime
from mcp.server.serve import serve
from mcp.service import Service
from mcp.tenancy.credentials import generate_key
from services.api.app import create_runtime
from services.api.app import make_app as make_api_app
from services.figma import SERVICE as FIGMA
from services.github import SERVICE as GITHUB
from services.slack import SERVICE as SLACK
from tests.simulators.figma import FigmaSimulator
from tests.simulators.github import GitHubSimulator
from tests.simulators.slack import SlackSimulator
from tests.support import ROOT, LoopThread, ServiceProcess, base_env, free_port, healthy, http, wait_for

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The server's maintenance URL; embedded PostgreSQL in a temporary folder by default."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    import pgserver

    # Not under pytest's tmp dir: that is private to root (0700) and, run as root, pgserver's
    # PostgreSQL runs as its own unprivileged user, which must be able to reach the data folder.
    data = Path(tempfile.mkdtemp(prefix="mcp-test-pg-"))
    data.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[tuple[str, Any, str]]:
    """A PostgreSQL of this test's own, so it can be stopped and started without disturbing others."""
    import pgserver
    from pgserver._commands import pg_ctl

    data = Path(tempfile.mkdtemp(prefix="mcp-outage-pg-"))
    data.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(data, cleanup_mode="stop")
    user = "pgserver" if server.system_user else None

    def ctl(*args: str) -> None:
        pg_ctl(["-w", *args], pgdata=data, user=user, timeout=30)

    yield server.get_uri(), ctl, str(data)
    try:
        server.cleanup()
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_url: str) -> str:
    """A database migrated once, copied for each test (CREATE DATABASE ... TEMPLATE is fast)."""
    name = f"mcp_template_{os.getpid()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(make_conninfo(pg_url, dbname=name))
    return name


@pytest.fixture
def database_url(pg_url: str, template_db: str) -> Iterator[str]:
    name = f"mcp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield make_conninfo(pg_url, dbname=name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(pg_url: str) -> Iterator[str]:
    """A database with no tables at all (for migration tests)."""
    name = f"mcp_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_url, dbname=name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def credentials_key() -> str:
    return generate_key()


@pytest.fixture(scope="session")
def figma_sim() -> Iterator[FigmaSimulator]:
    sim = FigmaSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def figma(figma_sim: FigmaSimulator) -> FigmaSimulator:
    """The Figma simulator, with its recordings and overrides cleared for this test."""
    figma_sim.reset()
    figma_sim.comments.clear()
    return figma_sim


@pytest.fixture(scope="session")
def github_sim() -> Iterator[GitHubSimulator]:
    sim = GitHubSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def github(github_sim: GitHubSimulator) -> GitHubSimulator:
    github_sim.reset()
    return github_sim


@pytest.fixture(scope="session")
def slack_sim() -> Iterator[SlackSimulator]:
    sim = SlackSimulator().start()
    yield sim
    sim.stop()


@pytest.fixture
def slack(slack_sim: SlackSimulator) -> SlackSimulator:
    slack_sim.reset()
    return slack_sim


@pytest.fixture
def env(database_url: str, credentials_key: str, figma_sim: FigmaSimulator, tmp_path: Path) -> dict[str, str]:
    """The environment a process of this test runs with."""
    return base_env(
        DATABASE_URL=database_url,
        CREDENTIALS_KEY=credentials_key,
        ADMIN_TOKEN=ADMIN_TOKEN,
        FIGMA_API_URL=figma_sim.url,
        MCP_PROJECT_ROOT=str(tmp_path),  # keeps tests away from the checkout's .data and .env
        INSTANCE_CACHE_TTL="5",
        USAGE_FLUSH_INTERVAL="0.2",
        LOG_LEVEL="INFO",
    )


class ThreadServer:
    """A real Tornado server on a free port, in its own thread and event loop."""

    def __init__(self, app: Any, port: int, inflight: Any, on_start: Any = None, on_stop: Any = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._loop = LoopThread()
        self._stop = self._loop.run(self._make_event())
        self._task = asyncio.run_coroutine_threadsafe(
            serve(app, host="127.0.0.1", port=port, inflight=inflight, on_start=on_start, on_stop=on_stop,
                  stop_event=self._stop, handle_signals=False), self._loop.loop)
        wait_for(lambda: self._task.done() or healthy(self.url + "/health"), 10, what="server health")
        if self._task.done():
            self._task.result()

    @staticmethod
    async def _make_event() -> asyncio.Event:
        return asyncio.Event()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop (to reach its runtime)."""
        return self._loop.run(coro)

    def stop(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._stop.set)
        self._task.result(10)
        self._loop.stop()


def start_service(service: Service, env: dict[str, str]) -> tuple[ThreadServer, ServiceRuntime]:
    runtime = ServiceRuntime.create(service, load_settings(env), free_port())
    server = ThreadServer(make_app(runtime), runtime.port, runtime.inflight, runtime.start, runtime.stop)
    return server, runtime


@pytest.fixture
def figma_service(env: dict[str, str]) -> Iterator[ThreadServer]:
    server, runtime = start_service(FIGMA, env)
    server.runtime = runtime  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def github_service(env: dict[str, str], github_sim: GitHubSimulator) -> Iterator[ThreadServer]:
    server, _ = start_service(GITHUB, {**env, "GITHUB_API_URL": github_sim.url})
    yield server
    server.stop()


@pytest.fixture
def slack_service(env: dict[str, str], slack_sim: SlackSimulator) -> Iterator[ThreadServer]:
    server, _ = start_service(SLACK, {**env, "SLACK_API_URL": slack_sim.api_url})
    yield server
    server.stop()


def start_api(env: dict[str, str]) -> ThreadServer:
    """The main API on a free port with this environment; ``server.runtime`` is its ApiRuntime."""
    runtime = create_runtime(env)
    runtime.port = free_port()
    server = ThreadServer(make_api_app(runtime), runtime.port, runtime.inflight, runtime.start, runtime.stop)
    server.runtime = runtime  # type: ignore[attr-defined]
    return server


@pytest.fixture
def api(env: dict[str, str]) -> Iterator[ThreadServer]:
    """The main API on a free port, sharing the test's database."""
    server = start_api(env)
    yield server
    server.stop()


class ApiClient:
    """Calls the main API with the admin token."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http(method, self.url + path, body, headers=headers, **kw)

    def create_instance(self, service: str = "figma", user: str = "ada@example.com",
                        credentials: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        body = {"service": service, "user": user, "credentials": credentials or {"api_key": "figd_test"}, **extra}
        resp = self("POST", "/api/instances", body)
        assert resp.status == 201, resp.body
        return resp.json


@pytest.fixture
def admin(api: ThreadServer) -> ApiClient:
    return ApiClient(api.url)


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start ``python -m <module>`` as a real process; every one is stopped after the test."""
    started: list[ServiceProcess] = []

    def _spawn(module: str, port_var: str | None = None, extra: dict[str, str] | None = None,
               wait: bool = True, limit_fds: int | None = None) -> ServiceProcess:
        port = free_port()
        proc_env = {**env, **(extra or {})}
        if port_var:
            proc_env[port_var] = str(port)
        proc = ServiceProcess(module, proc_env, port, tmp_path / f"{module}-{len(started)}.log", limit_fds)
        started.append(proc)
        if wait:
            proc.wait_healthy()
        return proc

    yield _spawn
    for proc in started:
        proc.stop()


__all__ = ["ROOT", "ADMIN_TOKEN", "ApiClient", "ThreadServer", "start_service"]
