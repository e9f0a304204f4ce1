"""Outside MCP clients (the official Python SDK, the MCP Inspector CLI) and how the tests get them."""
