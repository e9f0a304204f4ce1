"""GitHub: repositories, files, issues and pull requests over the GitHub REST API."""

from mcp.service import Service, ServiceConfig
from services.github.api import GitHubClient
from services.github.endpoints import ROUTES
from services.github.oauth import OAUTH
from services.github.tools import TOOLS

SERVICE_CONFIG = ServiceConfig(
    name="github",
    display_name="GitHub",
    description="Search repositories, read files, list and create issues and pull requests, comment.",
    port=49281,
    auth_type="api_key",
    also_accepts=("oauth",),
    version="1.0.0",
    icon="github",
)

SERVICE = Service(
    config=SERVICE_CONFIG,
    tools=TOOLS,
    client_factory=GitHubClient,
    upstream_url_env="GITHUB_API_URL",
    upstream_default_url="https://api.github.com",
    routes=ROUTES,
    oauth=OAUTH,
)
