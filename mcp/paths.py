"""Where the project lives: the checkout's root, the default for MCP_PROJECT_ROOT."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
