"""The main API (port 5000): the service catalog, users, instances and their usage."""

from mcp.ports import API_PORT  # noqa: F401 - the API's default port, re-exported for its modules

API_NAME = "api"
API_VERSION = "0.1.0"
