"""The application factory and the entry point of every serving process: the services and the main API.

``make_application`` builds the Tornado application any process serves (JSON 404s, the access log and
request metrics, the body limit); ``run_process`` reads the settings, builds the runtime and serves it
until SIGTERM, with one set of exit codes for all (78 for bad configuration, 98 for a port in use).
``make_app`` and ``run`` are those two for a hosted service.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tornado.web

from mcp.config import ConfigError, Settings, load_settings
from mcp.ports import service_port
from mcp.server.base import InFlight, MetricsHandler, NotFoundHandler, request_logger
from mcp.server.connections import ConnectionStats
from mcp.server.endpoints import HealthHandler, InstanceHealthHandler, ToolCallHandler, ToolsListHandler
from mcp.server.mcp_handler import McpHandler
from mcp.server.metrics import Metrics
from mcp.server.runtime import ServiceRuntime
from mcp.server.serve import EXIT_CONFIG, EXIT_PORT_IN_USE, PortInUse, configure_logging, serve
from mcp.service import Service

log = logging.getLogger(__name__)

# A path segment; parse_instance_id decides whether it is a UUID (400 if not, rather than 404).
INSTANCE = r"(?P<instance>[^/]+)"

Route = tuple[str, type, dict[str, Any]]


class ProcessRuntime(Protocol):
    """What serving needs from a process's runtime (a service's ServiceRuntime or the API's)."""

    settings: Settings
    port: int
    metrics: Metrics
    inflight: InFlight
    connections: ConnectionStats

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def make_application(runtime: ProcessRuntime, routes: Sequence[Route]) -> tornado.web.Application:
    """The application of one process: ``routes``, then /metrics, and a JSON 404 for anything else."""
    metrics = (r"/metrics", MetricsHandler, {"metrics": runtime.metrics, "inflight": runtime.inflight})
    return tornado.web.Application(
        [*routes, metrics],
        default_handler_class=NotFoundHandler,
        default_handler_args={"inflight": runtime.inflight},
        log_function=request_logger(runtime.metrics),
        compress_response=False,
        max_body_bytes=runtime.settings.max_body_bytes,
        connection_stats=runtime.connections,
    )


def make_app(runtime: ServiceRuntime) -> tornado.web.Application:
    """Routes: /health, /{instance}/health, /{instance}/mcp/tools, /{instance}/mcp/call, the service's own."""
    kw = {"runtime": runtime}
    # Routes are tried in order and never overlap: the tool-call endpoints, hit on every call, first.
    routes: list[Route] = [
        (rf"/{INSTANCE}/mcp", McpHandler, kw),
        (rf"/{INSTANCE}/mcp/call", ToolCallHandler, kw),
        (rf"/{INSTANCE}/mcp/tools", ToolsListHandler, kw),
        (rf"/{INSTANCE}/health", InstanceHealthHandler, kw),
        (r"/health", HealthHandler, kw),
    ]
    for route in runtime.service.routes:
        pattern, handler = route[0], route[1]
        extra = route[2] if len(route) > 2 else {}  # type: ignore[misc]
        routes.append((rf"/{INSTANCE}{pattern}", handler, {**kw, **extra}))
    return make_application(runtime, routes)


async def serve_process(name: str, create: Callable[[], ProcessRuntime],
                        app_for: Callable[[Any], tornado.web.Application]) -> int:
    """Build the runtime, serve its application until SIGTERM/SIGINT; the process's exit code."""
    try:
        runtime = create()
    except (ConfigError, ValueError) as e:
        log.error("%s cannot start: %s", name, e)
        return EXIT_CONFIG
    settings = runtime.settings
    configure_logging(settings.log_level)
    try:
        await serve(app_for(runtime), host=settings.bind_host, port=runtime.port, inflight=runtime.inflight,
                    on_start=runtime.start, on_stop=runtime.stop,
                    shutdown_timeout_s=settings.shutdown_timeout_s, body_timeout_s=settings.body_timeout_s,
                    idle_timeout_s=settings.idle_timeout_s,
                    max_connections=settings.max_connections, stats=runtime.connections,
                    workers=settings.workers)
    except PortInUse as e:
        log.error("%s cannot start: %s", name, e)
        return EXIT_PORT_IN_USE
    return 0


def run_process(name: str, create: Callable[[], ProcessRuntime],
                app_for: Callable[[Any], tornado.web.Application]) -> None:
    """``python -m services.<name>``: serve until SIGTERM/SIGINT, exit 0 after a clean shutdown."""
    configure_logging()
    sys.exit(asyncio.run(serve_process(name, create, app_for)))


def run(service: Service) -> None:
    """A hosted service's entry point, on ``<NAME>_PORT`` or its SERVICE_CONFIG port."""

    def create() -> ServiceRuntime:
        settings = load_settings()
        return ServiceRuntime.create(service, settings,
                                     service_port(service.name, service.config.port, settings.environ or {}))

    run_process(service.name, create, make_app)
