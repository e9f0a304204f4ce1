"""Figma: files, nodes, renders, comments and projects over the Figma REST API."""

from mcp.service import Service, ServiceConfig
from services.figma.api import FigmaClient
from services.figma.endpoints import ROUTES
from services.figma.oauth import OAUTH
from services.figma.tools import TOOLS

SERVICE_CONFIG = ServiceConfig(
    name="figma",
    display_name="Figma",
    description="Read Figma files, nodes, renders, versions and comments; post comments.",
    port=49280,
    auth_type="api_key",
    also_accepts=("oauth",),
    version="1.0.0",
    icon="figma",
)

SERVICE = Service(
    config=SERVICE_CONFIG,
    tools=TOOLS,
    client_factory=FigmaClient,
    upstream_url_env="FIGMA_API_URL",
    upstream_default_url="https://api.figma.com",
    routes=ROUTES,
    oauth=OAUTH,
)
