"""The MCP protocol without a web framework: JSON, JSON-RPC, the eras and methods, tools, schemas."""
