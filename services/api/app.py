"""The main API's application factory and entry point."""

from __future__ import annotations

import tornado.web

from mcp.config import ConfigError, load_settings
from mcp.ports import api_port
from mcp.server.app import make_application, run_process
from mcp.server.metrics import Metrics
from mcp.tenancy.database import Database
from services.api import API_NAME
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
from services.api.oauth import CallbackHandler, ConnectHandler
from services.api.status import ServicesStatusHandler
from services.api.token_keeper import KeeperSettings

ID = r"(?P<instance>[^/]+)"


def make_app(runtime: ApiRuntime) -> tornado.web.Application:
    kw = {"runtime": runtime}
    return make_application(runtime, [
        (r"/health", ApiHealthHandler, kw),
        (r"/api/services", ServicesHandler, kw),
        (r"/api/services/status", ServicesStatusHandler, kw),
        (r"/api/instances", InstancesHandler, kw),
        (rf"/api/instances/{ID}", InstanceResourceHandler, kw),
        (rf"/api/instances/{ID}/usage", UsageHandler, kw),
        (rf"/api/instances/{ID}/rotate-id", RotateIdHandler, kw),
        (r"/api/users/(?P<email>[^/]+)/instances", UserInstancesHandler, kw),
        (r"/api/connect", ConnectHandler, kw),
        # Public: the provider sends the user's browser here; the state in the query is the capability.
        (r"/oauth/(?P<service>[a-z][a-z0-9_-]{0,39})/callback", CallbackHandler, kw),
    ])


def create_runtime(settings_env: dict[str, str] | None = None) -> ApiRuntime:
    settings = load_settings(settings_env)
    if not settings.admin_token:
        raise ConfigError("ADMIN_TOKEN is not set; scripts/start-all-services writes one into .env")
    port = api_port(settings.environ or {})
    db = Database(settings.database_url, settings.embedded_url_file, timeout_s=settings.db_timeout_s,
                  max_size=settings.db_pool_max, application_name="mcp-api")
    runtime = ApiRuntime(settings=settings, db=db, cipher=settings.cipher(), port=port,
                         metrics=Metrics(API_NAME, settings.get("PROMETHEUS_MULTIPROC_DIR") or None),
                         keeper_settings=KeeperSettings.from_settings(settings))
    runtime.connections.register(runtime.metrics)
    return runtime


def run() -> None:
    """``python -m services.api``."""
    run_process(API_NAME, create_runtime, make_app)
