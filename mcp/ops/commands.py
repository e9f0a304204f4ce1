"""Helpers the shell scripts call: the .env file, the Procfile's processes, waiting for health.

``python -m mcp.ops ensure-env``      write .env with a new ADMIN_TOKEN and CREDENTIALS_KEY if absent
``python -m mcp.ops env-exports``     .env as shell exports, skipping variables the caller already set
``python -m mcp.ops processes``       each Procfile process with its port and health URL
``python -m mcp.ops wait-healthy``    wait until every process answers /health; name the ones that don't
``python -m mcp.ops check-ports``     fail, naming them, if any Procfile port is already taken
``python -m mcp.ops honcho-pids``     the honcho processes running this checkout's Procfile, one per line
``python -m mcp.ops stop-honcho``     SIGTERM them, wait, SIGKILL what is left (works without .run)
``python -m mcp.ops reap``            stop any process of this project that outlived a stop; verify ports
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import secrets
import shlex
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from mcp.paths import PROJECT_ROOT
from mcp.tenancy.credentials import generate_key

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_MODULE = re.compile(r"-m\s+(services\.[A-Za-z0-9_]+)")


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


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    port: int

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


def port_of(module: str, environ: dict[str, str]) -> int:
    """The port a Procfile module listens on, honouring the same override variables it does."""
    if module == "services.api":
        from services.api import API_PORT

        return int(environ.get("API_PORT") or API_PORT)
    service = importlib.import_module(module).SERVICE
    return int(environ.get(service.port_env) or service.config.port)


def procfile_processes(procfile: Path, environ: dict[str, str] | None = None) -> list[Process]:
    env = dict(os.environ if environ is None else environ)
    out = []
    for line in procfile.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        name, command = line.split(":", 1)
        m = _MODULE.search(command)
        if m:
            out.append(Process(name.strip(), m.group(1), port_of(m.group(1), env)))
    return out


def probe(url: str, timeout: float = 1.0) -> str | None:
    """None if healthy, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
            return None if body.get("status") == "healthy" else f"status {body.get('status')!r}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return f"not answering ({reason})"


def wait_healthy(processes: list[Process], deadline_s: float) -> dict[str, str]:
    """Poll every process until all are healthy or the deadline passes; the failures by name."""
    end = time.monotonic() + deadline_s
    pending = {p.name: "not checked" for p in processes}
    while pending and time.monotonic() < end:
        for p in processes:
            if p.name in pending:
                reason = probe(p.health_url)
                if reason is None:
                    del pending[p.name]
                else:
                    pending[p.name] = reason
        if pending:
            time.sleep(0.2)
    return pending


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


_OUR_COMMANDS = re.compile(rb"(-m\x00(services\.|mcp\.supervise|mcp\.rotating_pipe)|honcho|watchfiles)")
# honcho's own process: its executable (or the script python runs) is named honcho.
_HONCHO = re.compile(rb"(^|\x00)([^\x00]*/)?honcho\x00")


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def project_processes(root: Path) -> list[int]:
    """Processes started for this checkout (marked by MCP_PROJECT_ROOT) running our commands."""
    marker = f"MCP_PROJECT_ROOT={root}".encode()
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\x00") and _OUR_COMMANDS.search(cmdline):
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def honcho_pids(root: Path, pid_file: Path | None = None) -> list[int]:
    """This checkout's honcho processes, found among the running processes (marked by MCP_PROJECT_ROOT).

    ``pid_file`` (.run/honcho.pid) adds its pid if that process is a honcho: the file alone is not
    trusted (its pid may have been reused) and not needed (``rm -rf .run`` must not hide a formation).
    """
    found = {pid for pid in project_processes(root) if _HONCHO.search(_cmdline(pid))}
    # honcho runs each Procfile process from a forked helper with its command line; only the top one counts.
    found = {pid for pid in found if _parent(pid) not in found}
    if pid_file is not None:
        try:
            recorded = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            recorded = 0
        if recorded > 0 and _alive(recorded) and _HONCHO.search(_cmdline(recorded)):
            found.add(recorded)
    return sorted(found)


def stop_honcho(pids: list[int], grace_s: float = 8.0) -> list[int]:
    """SIGTERM each honcho, give it ``grace_s`` to stop its processes, then SIGKILL it; the pids killed."""
    for pid in pids:
        for sig in (signal.SIGTERM, signal.SIGCONT):  # a stopped (SIGSTOP) honcho acts only once continued
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if _alive(pid)]
    for pid in killed:
        print(f"honcho ({pid}) did not stop; killing it", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def reap(root: Path, processes: list[Process], grace_s: float = 3.0) -> list[str]:
    """TERM (then KILL) leftover project processes; the problems that remain afterwards."""
    leftovers = project_processes(root)
    for pid in leftovers:
        print(f"stopping leftover process {pid}", file=sys.stderr)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(_alive(p) for p in leftovers):
        time.sleep(0.1)
    for pid in leftovers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1 if leftovers else 0)
    problems = [f"process {pid} survived SIGKILL" for pid in leftovers if _alive(pid)]
    problems += [f"port {p.port} ({p.name}) is still in use" for p in processes if not port_free(p.port)]
    return problems


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp.ops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure-env")
    sub.add_parser("env-exports")
    p = sub.add_parser("processes")
    p.add_argument("--procfile", default="Procfile")
    p.add_argument("--json", action="store_true")
    w = sub.add_parser("wait-healthy")
    w.add_argument("--procfile", default="Procfile")
    w.add_argument("--timeout", type=float, default=30.0)
    for name in ("check-ports", "reap"):
        sub.add_parser(name).add_argument("--procfile", default="Procfile")
    for name in ("honcho-pids", "stop-honcho"):
        h = sub.add_parser(name)
        h.add_argument("--pid-file", type=Path, help="also this pid, if it is a honcho (.run/honcho.pid)")
        # honcho TERMs every process group and KILLs them 5 s later; give it that and a margin.
        h.add_argument("--timeout", type=float, default=8.0)
    args = parser.parse_args(argv)
    root = Path(os.environ.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)
    if args.cmd == "ensure-env":
        if ensure_env(root / ".env"):
            print("wrote .env with a new ADMIN_TOKEN and CREDENTIALS_KEY")
        return 0
    if args.cmd == "env-exports":
        for key, value in read_env_file(root / ".env").items():
            if key not in os.environ:
                print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.cmd in ("honcho-pids", "stop-honcho"):
        pids = honcho_pids(root, args.pid_file)
        if args.cmd == "honcho-pids":
            print("\n".join(map(str, pids)))
        else:
            stop_honcho(pids, args.timeout)
        return 0
    processes = procfile_processes(root / args.procfile)
    if args.cmd == "processes":
        if args.json:
            print(json.dumps([asdict(p) | {"health_url": p.health_url} for p in processes]))
        else:
            for proc in processes:
                print(f"{proc.name} {proc.port} {proc.health_url}")
        return 0
    if args.cmd == "check-ports":
        taken = [p for p in processes if not port_free(p.port)]
        for proc in taken:
            print(f"port {proc.port} ({proc.name}) is already in use", file=sys.stderr)
        return 1 if taken else 0
    if args.cmd == "reap":
        problems = reap(root, processes)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    failures = wait_healthy(processes, args.timeout)
    for name, reason in failures.items():
        print(f"{name}: not healthy after {args.timeout:.0f}s: {reason}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
