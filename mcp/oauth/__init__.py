"""Connecting upstream accounts with OAuth 2.0, and keeping their tokens fresh (see mcp/oauth/refresh.py)."""
