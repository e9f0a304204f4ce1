"""The main API's application factory and entry point."""

from __future__ import annotations

import asyncio
import logging
import sys

import tornado.web

from mcp.config import ConfigError, load_settings
from mcp.server.base import MetricsHandler, NotFoundHandler, request_logger
from mcp.server.metrics import Metrics
from mcp.server.serve import EXIT_CONFIG, EXIT_PORT_IN_USE, PortInUse, configure_logging, serve
from mcp.tenancy.database import Database
from services.api import API_NAME, API_PORT
from services.api.handlers import (
    ApiHealthHandler,
    ApiRuntime,
    InstanceResourceHandler,
    InstancesHandler,
    RotateIdHandler,
    ServicesHandler,
    UsageHandler,
    UserInstancesHandler,
)
from services.api.status import ServicesStatusHandler

log = logging.getLogger(__name__)

ID = r"(?P<instance>[^/]+)"


def make_app(runtime: ApiRuntime) -> tornado.web.Application:
    kw = {"runtime": runtime}
    return tornado.web.Application(
        [
            (r"/health", ApiHealthHandler, kw),
            (r"/metrics", MetricsHandler, {"metrics": runtime.metrics, "inflight": runtime.inflight}),
            (r"/api/services", ServicesHandler, kw),
            (r"/api/services/status", ServicesStatusHandler, kw),
            (r"/api/instances", InstancesHandler, kw),
            (rf"/api/instances/{ID}", InstanceResourceHandler, kw),
            (rf"/api/instances/{ID}/usage", UsageHandler, kw),
            (rf"/api/instances/{ID}/rotate-id", RotateIdHandler, kw),
            (r"/api/users/(?P<email>[^/]+)/instances", UserInstancesHandler, kw),
        ],
        default_handler_class=NotFoundHandler,
        default_handler_args={"inflight": runtime.inflight},
        log_function=request_logger(runtime.metrics),
        max_body_bytes=runtime.settings.max_body_bytes,
        connection_stats=runtime.connections,
    )


def create_runtime(settings_env: dict[str, str] | None = None) -> ApiRuntime:
    settings = load_settings(settings_env)
    if not settings.admin_token:
        raise ConfigError("ADMIN_TOKEN is not set; scripts/start-all-services writes one into .env")
    port = int(settings.get("API_PORT") or API_PORT)
    db = Database(settings.database_url, settings.embedded_url_file, timeout_s=settings.db_timeout_s,
                  max_size=settings.db_pool_max, application_name="mcp-api")
    runtime = ApiRuntime(settings=settings, db=db, cipher=settings.cipher(), port=port,
                         metrics=Metrics(API_NAME, settings.get("PROMETHEUS_MULTIPROC_DIR") or None))
    runtime.connections.register(runtime.metrics)
    return runtime


async def _main() -> int:
    try:
        runtime = create_runtime()
    except (ConfigError, ValueError) as e:
        log.error("api cannot start: %s", e)
        return EXIT_CONFIG
    configure_logging(runtime.settings.log_level)

    try:
        await serve(make_app(runtime), host=runtime.settings.bind_host, port=runtime.port,
                    inflight=runtime.inflight, on_start=runtime.start, on_stop=runtime.stop,
                    shutdown_timeout_s=runtime.settings.shutdown_timeout_s,
                    body_timeout_s=runtime.settings.body_timeout_s,
                    idle_timeout_s=runtime.settings.idle_timeout_s,
                    max_connections=runtime.settings.max_connections, stats=runtime.connections)
    except PortInUse as e:
        log.error("api cannot start: %s", e)
        return EXIT_PORT_IN_USE
    return 0


def run() -> None:
    configure_logging()
    sys.exit(asyncio.run(_main()))
