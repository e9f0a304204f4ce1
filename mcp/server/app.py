"""The application factory and entry point every service process uses."""

from __future__ import annotations

import asyncio
import logging
import sys

import tornado.web

from mcp.config import ConfigError, load_settings
from mcp.server.base import MetricsHandler, NotFoundHandler, request_logger
from mcp.server.endpoints import HealthHandler, InstanceHealthHandler, ToolCallHandler, ToolsListHandler
from mcp.server.mcp_handler import McpHandler
from mcp.server.runtime import ServiceRuntime
from mcp.server.serve import EXIT_CONFIG, EXIT_PORT_IN_USE, PortInUse, configure_logging, serve
from mcp.service import Service

log = logging.getLogger(__name__)

# A path segment; parse_instance_id decides whether it is a UUID (400 if not, rather than 404).
INSTANCE = r"(?P<instance>[^/]+)"


def make_app(runtime: ServiceRuntime) -> tornado.web.Application:
    """Routes: /health, /{instance}/health, /{instance}/mcp/tools, /{instance}/mcp/call, the service's own."""
    kw = {"runtime": runtime}
    # Routes are tried in order and never overlap: the tool-call endpoints, hit on every call, first.
    routes: list[tuple[str, type, dict]] = [
        (rf"/{INSTANCE}/mcp", McpHandler, kw),
        (rf"/{INSTANCE}/mcp/call", ToolCallHandler, kw),
        (rf"/{INSTANCE}/mcp/tools", ToolsListHandler, kw),
        (rf"/{INSTANCE}/health", InstanceHealthHandler, kw),
        (r"/health", HealthHandler, kw),
        (r"/metrics", MetricsHandler, {"metrics": runtime.metrics, "inflight": runtime.inflight}),
    ]
    for route in runtime.service.routes:
        pattern, handler = route[0], route[1]
        extra = route[2] if len(route) > 2 else {}  # type: ignore[misc]
        routes.append((rf"/{INSTANCE}{pattern}", handler, {**kw, **extra}))
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"inflight": runtime.inflight},
        log_function=request_logger(runtime.metrics),
        compress_response=False,
        max_body_bytes=runtime.settings.max_body_bytes,
        connection_stats=runtime.connections,
    )


async def _main(service: Service) -> int:
    try:
        settings = load_settings()
        port = int(settings.get(service.port_env) or service.config.port)
        runtime = ServiceRuntime.create(service, settings, port)
    except (ConfigError, ValueError) as e:
        log.error("%s cannot start: %s", service.name, e)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    try:
        await serve(make_app(runtime), host=settings.bind_host, port=runtime.port, inflight=runtime.inflight,
                    on_start=runtime.start, on_stop=runtime.stop,
                    shutdown_timeout_s=settings.shutdown_timeout_s, body_timeout_s=settings.body_timeout_s,
                    idle_timeout_s=settings.idle_timeout_s,
                    max_connections=settings.max_connections, stats=runtime.connections)
    except PortInUse as e:
        log.error("%s cannot start: %s", service.name, e)
        return EXIT_PORT_IN_USE
    return 0


def run(service: Service) -> None:
    """``python -m services.<name>``: serve until SIGTERM/SIGINT, exit 0 after a clean shutdown."""
    configure_logging()
    sys.exit(asyncio.run(_main(service)))
