"""Install the outside MCP clients once, under the git-ignored ``.cache/``, and reuse them after.

- ``.cache/mcp-sdk-venv``: a virtual environment with the official MCP Python SDK (PyPI ``mcp`` 2.x).
  It is never importable from the project: the project's own ``mcp`` package is the platform.
- ``.cache/inspector``: the MCP Inspector (npm ``@modelcontextprotocol/inspector``), for its CLI.

Each is marked complete by a stamp file written last, so an interrupted install is redone rather
than half-used. ``Unavailable`` says why a client cannot be had (no npm, no network, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SDK_SPEC = "mcp>=2,<3"
INSPECTOR_SPEC = "@modelcontextprotocol/inspector@^2"
INSTALL_TIMEOUT_S = 600


class Unavailable(Exception):
    """This client cannot be installed or run here; the message says why."""


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"{' '.join(cmd[:3])} ...: {e}") from None
    if out.returncode != 0:
        raise Unavailable(f"{' '.join(cmd[:3])} ... exited {out.returncode}: {(out.stderr or out.stdout)[-1500:]}")


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One installer at a time, across test runs sharing this checkout."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".mcp-clients.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _stamped(stamp: Path, spec: str) -> bool:
    return stamp.exists() and stamp.read_text() == spec


def sdk_python(cache: Path) -> Path:
    """The python of a venv holding the official MCP SDK 2.x, created on first use."""
    venv = cache / "mcp-sdk-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    with _locked(cache):
        if _stamped(stamp, SDK_SPEC) and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SDK_SPEC])
        stamp.write_text(SDK_SPEC)
    return python


def inspector_cli(cache: Path) -> tuple[Path, str]:
    """The Inspector's ``mcp-inspector`` launcher and its version, installed with npm on first use."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise Unavailable("node and npm are not installed; the MCP Inspector CLI needs them")
    folder = cache / "inspector"
    launcher = folder / "node_modules" / ".bin" / "mcp-inspector"
    stamp = folder / ".installed"
    with _locked(cache):
        if not (_stamped(stamp, INSPECTOR_SPEC) and launcher.exists()):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "package.json").write_text(json.dumps({"name": "inspector-cache", "private": True}))
            # Inspector 2.x declares Node >= 22.19; on an older Node an unpinned install silently
            # resolves to 0.15 (mid-2025), so the major is pinned and the engine check relaxed.
            _run(["npm", "install", "--no-audit", "--no-fund", "--engine-strict=false", INSPECTOR_SPEC],
                 cwd=folder)
            stamp.write_text(INSPECTOR_SPEC)
    package = folder / "node_modules" / "@modelcontextprotocol" / "inspector" / "package.json"
    return launcher, json.loads(package.read_text())["version"]


def in_ci() -> bool:
    return bool(os.environ.get("CI"))
