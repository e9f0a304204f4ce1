"""The SDK peer's own virtual environment, ``.cache/bench-sdk-venv`` (git-ignored).

The project never imports the official MCP SDK (its import name is ``mcp`` too); the peer server
runs from this separate environment with ``mcp>=2,<3`` and aiohttp installed by its own pip.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcp.config import PROJECT_ROOT

VENV = PROJECT_ROOT / ".cache" / "bench-sdk-venv"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ("mcp>=2,<3", "aiohttp>=3.9,<4")
SERVER_SCRIPT = Path(__file__).resolve().parent / "sdk_peer_server.py"


def sdk_version() -> str | None:
    """The installed SDK's version, or None when the environment is missing or broken."""
    if not PYTHON.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('mcp'))"
    try:
        out = subprocess.run([str(PYTHON), "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def ensure(install: bool) -> tuple[str | None, str]:
    """(SDK version, note): install into the venv first when asked and it is missing."""
    version = sdk_version()
    if version is not None or not install:
        return version, "" if version else f"no SDK environment at {VENV} (a full run creates it)"
    log = VENV.parent / "bench-sdk-install.log"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    print(f"bench: creating {VENV} with {' '.join(REQUIREMENTS)} (log: {log})", file=sys.stderr)
    with open(log, "wb") as out:
        steps = [[sys.executable, "-m", "venv", str(VENV)],
                 [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS]]
        for step in steps:
            if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode != 0:
                return None, f"installing the SDK failed; see {log}"
    version = sdk_version()
    return version, "" if version else f"the SDK is not importable in {VENV}; see {log}"
