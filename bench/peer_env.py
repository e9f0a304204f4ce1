"""The peers' own environments, built once into ``.cache/`` (git-ignored) and reused by later runs.

The project never imports a peer's framework: the MCP SDK's import name is ``mcp`` too, and FastMCP
brings the SDK along. Each Python peer runs from its own virtual environment, created with the
bench's interpreter and filled by that environment's pip; the TypeScript peer's packages go into a
folder of their own with ``npm install``. Installs are logged next to the environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mcp.paths import PROJECT_ROOT

CACHE = PROJECT_ROOT / ".cache"
HERE = Path(__file__).resolve().parent
_INSTALL_TIMEOUT_S = 900


def _install(steps: list[list[str]], log: Path, what: str, cwd: Path | None = None) -> str | None:
    """Run each step with its output in ``log``; None when all succeeded, else why not."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"bench: installing {what} (log: {log})", file=sys.stderr, flush=True)
    with open(log, "wb") as out:
        for step in steps:
            try:
                code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                      timeout=_INSTALL_TIMEOUT_S).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"installing {what} failed ({e}); see {log}"
            if code != 0:
                return f"installing {what} failed; see {log}"
    return None


@dataclass(frozen=True)
class PythonPeer:
    """A peer server script run by its own virtual environment with ``requirements`` installed."""

    title: str  # as the report names it
    distribution: str  # whose version the row reports
    venv: Path
    requirements: tuple[str, ...]
    script: Path

    @property
    def framework(self) -> str:
        return self.distribution

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def version(self) -> str | None:
        """The installed framework's version, or None when the environment is missing or broken."""
        if not self.python.exists():
            return None
        probe = f"import importlib.metadata as m; print(m.version({self.distribution!r}))"
        try:
            out = subprocess.run([str(self.python), "-c", probe], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None

    def ensure(self, install: bool) -> tuple[str | None, str]:
        """(version, note): create the environment first when asked and it is missing."""
        version = self.version()
        if version is not None or not install:
            return version, "" if version else f"{self.title} is not installed in {self.venv} (a full run installs it)"
        log = self.venv.parent / f"{self.venv.name}-install.log"
        failed = _install([[sys.executable, "-m", "venv", "--clear", str(self.venv)],
                           [str(self.python), "-m", "pip", "install", "--disable-pip-version-check",
                            *self.requirements]], log, f"{self.title} into {self.venv}")
        if failed:
            return None, failed
        version = self.version()
        return version, "" if version else f"{self.distribution} is not importable in {self.venv}; see {log}"

    def command(self, port: int, upstream: str) -> list[str]:
        return [str(self.python), str(self.script), "--port", str(port), "--upstream", upstream]


@dataclass(frozen=True)
class NodePeer:
    """A peer server script run by Node, its packages (``package.json`` beside it) installed into ``home``."""

    title: str
    package: str  # whose version the row reports
    home: Path
    source: Path  # the folder holding package.json and the server script
    script: str

    @property
    def framework(self) -> str:
        return self.package

    def version(self) -> str | None:
        manifest = self.home / "node_modules" / self.package / "package.json"
        try:
            return str(json.loads(manifest.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return None

    def ensure(self, install: bool) -> tuple[str | None, str]:
        """(version, note); the note says why not when Node or npm is missing or the install failed."""
        missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
        if missing:
            return None, f"{' and '.join(missing)} not found (install Node.js 18 or later)"
        manifest = (self.source / "package.json").read_text()
        current = (self.home / "package.json").read_text() if (self.home / "package.json").exists() else None
        version = self.version() if current == manifest else None
        if version is not None or not install:
            return version, "" if version else f"{self.title} is not installed in {self.home} (a full run installs it)"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "package.json").write_text(manifest)
        log = self.home.parent / f"{self.home.name}-install.log"
        failed = _install([["npm", "install", "--no-audit", "--no-fund", "--omit=dev"]], log,
                          f"{self.title} into {self.home}", cwd=self.home)
        if failed:
            return None, failed
        version = self.version()
        return version, "" if version else f"{self.package} is missing from {self.home}; see {log}"

    def command(self, port: int, upstream: str) -> list[str]:
        # Node resolves the script's imports from the script's own folder upwards, so it runs from ``home``.
        return ["node", str(self.home / self.script), "--port", str(port), "--upstream", upstream]

    def prepare(self) -> None:
        shutil.copyfile(self.source / self.script, self.home / self.script)


SDK = PythonPeer("the MCP Python SDK", "mcp", CACHE / "bench-sdk-venv", ("mcp>=2,<3", "aiohttp>=3.9,<4"),
                 HERE / "sdk_peer_server.py")
FASTMCP = PythonPeer("FastMCP", "fastmcp", CACHE / "bench-fastmcp-venv", ("fastmcp>=4,<5", "aiohttp>=3.9,<4"),
                     HERE / "fastmcp_peer_server.py")
TYPESCRIPT = NodePeer("the MCP TypeScript SDK", "@modelcontextprotocol/sdk", CACHE / "bench-ts-peer",
                      HERE / "ts_peer", "server.mjs")
