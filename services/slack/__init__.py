"""Slack: channels, messages, threads, reactions, users and search over the Slack Web API."""

from mcp.service import Service, ServiceConfig
from services.slack.api import ERROR_CODES, SlackClient
from services.slack.endpoints import ROUTES
from services.slack.oauth import OAUTH
from services.slack.tools import TOOLS

SERVICE_CONFIG = ServiceConfig(
    name="slack",
    display_name="Slack",
    description="Read Slack channels, history, threads, users and profiles; post messages, replies and "
                "reactions; search messages (user tokens).",
    port=49282,
    auth_type="oauth",
    version="1.0.0",
    icon="slack",
)

SERVICE = Service(
    config=SERVICE_CONFIG,
    tools=TOOLS,
    client_factory=SlackClient,
    upstream_url_env="SLACK_API_URL",
    upstream_default_url="https://slack.com/api",
    routes=ROUTES,
    oauth=OAUTH,
    upstream_error_codes=ERROR_CODES,
)
