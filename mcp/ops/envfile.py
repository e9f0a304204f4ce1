"""The project's ``.env``: read it as the scripts do, and write it with fresh secrets on the first run."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from mcp.tenancy.credentials import generate_key

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (optionally quoted); comments and blank lines ignored."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = _LINE.match(raw)
        if not m:
            continue
        key, value = m.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def ensure_env(path: Path) -> bool:
    """Create .env with fresh secrets; never touch an existing one. True if written."""
    if path.exists():
        return False
    path.write_text(
        "# Written by scripts/start-all-services on first run; see .env.example for every variable.\n"
        "# Keep this file private: it holds the admin token and the credentials encryption key.\n"
        f"ADMIN_TOKEN={secrets.token_urlsafe(32)}\n"
        f"CREDENTIALS_KEY={generate_key()}\n"
    )
    path.chmod(0o600)
    return True
