"""The deployable processes: the main API and one package per hosted MCP service."""
