"""scripts/start-all-services and scripts/stop-services as an operator runs them, in a copy of the checkout.

The copy (scripts, Procfile, pyproject.toml and a .venv made of links to the real one) keeps .run, logs
and .env in the test's folder, and its processes are marked with its own MCP_PROJECT_ROOT, so the
scripts' process scans never reach the real checkout's processes. Ports are free ones and the database
is the test's own (DATABASE_URL), so nothing here touches the embedded PostgreSQL in .data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mcp.formation.facts import port_free
from mcp.ops.processes import honcho_pids, project_processes
from tests.support import ROOT, free_port, http, wait_for

NAMES = ("main-api", "mcp-figma", "mcp-github", "mcp-slack")
SCRIPT_TIMEOUT = 180
LOG_MAX_BYTES = 1000


def make_copy(root: Path) -> None:
    """A checkout whose scripts find a ready .venv (links to the real one) and never run pip."""
    root.mkdir()
    shutil.copytree(ROOT / "scripts", root / "scripts")
    for name in ("Procfile", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    real, venv = ROOT / ".venv", root / ".venv"
    (venv / "bin").mkdir(parents=True)
    # python finds pyvenv.cfg next to its (unresolved) bin/ folder, so this is a venv of its own
    # whose site-packages is the real one; the editable install maps mcp, services and db to ROOT.
    for entry in ("pyvenv.cfg", "lib", "lib64", "include"):
        if (real / entry).exists():
            (venv / entry).symlink_to(real / entry)
    for tool in (real / "bin").iterdir():
        (venv / "bin" / tool.name).symlink_to(tool)
    (venv / ".installed").write_text(hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest() + "\n")


class Checkout:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.ports = {name: int(env[var]) for name, var in zip(NAMES, ("API_PORT", "FIGMA_PORT", "GITHUB_PORT",
                                                                        "SLACK_PORT"), strict=True)}

    def launch(self, script: str, *args: str, tag: str = "") -> subprocess.Popen[bytes]:
        out = open(self.root.parent / f"{script}{tag}.out", "wb")  # noqa: SIM115 - the child owns it
        with out:
            return subprocess.Popen([str(self.root / "scripts" / script), *args], cwd=self.root, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self, script: str, tag: str = "") -> str:
        path = self.root.parent / f"{script}{tag}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def run(self, script: str, *args: str) -> tuple[int, str]:
        proc = self.launch(script, *args)
        return proc.wait(SCRIPT_TIMEOUT), self.output(script)

    def processes(self) -> dict[int, bytes]:
        """Every process of this copy (marked with its MCP_PROJECT_ROOT) and its command line."""
        found = {}
        for pid in project_processes(self.root):
            with contextlib.suppress(OSError):
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        return found

    def supervisors(self) -> list[str]:
        """The --name of every running supervisor of this copy."""
        names = []
        for cmdline in self.processes().values():
            argv = cmdline.split(b"\0")
            if b"mcp.ops.supervisor" in argv:
                names.append(argv[argv.index(b"--name") + 1].decode())
        return sorted(names)

    def status(self) -> tuple[int, dict[str, dict]]:
        done = subprocess.run([str(self.root / "scripts" / "status"), "--json", "--cpu-sample", "0"], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=60)
        return done.returncode, {row["name"]: row for row in json.loads(done.stdout)["processes"]}

    def kill_everything(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def checkout(env, tmp_path):
    root = tmp_path / "checkout"
    make_copy(root)
    ports = {var: str(free_port()) for var in ("API_PORT", "FIGMA_PORT", "GITHUB_PORT", "SLACK_PORT")}
    base = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_") and k not in ("MCP_RUN_DIR", "MCP_LOG_DIR")}
    # Small logs, so that honcho's start-up output alone rotates logs/honcho.log.
    logs = {"SUPERVISOR_LOG_MAX_BYTES": str(LOG_MAX_BYTES), "SUPERVISOR_LOG_BACKUPS": "2"}
    c = Checkout(root, {**base, **ports, **logs, "MCP_PROJECT_ROOT": str(root), "START_TIMEOUT": "90"})
    yield c
    if c.processes():
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.run("stop-services", "--keep-db")
        c.kill_everything()


def assert_one_healthy_formation(c: Checkout) -> None:
    assert len(honcho_pids(c.root)) == 1, c.processes()
    assert c.supervisors() == sorted(NAMES), c.processes()
    code, rows = c.status()
    assert code == 0 and set(rows) == set(NAMES), rows
    assert all(r["status"] == "running" and r["health"] == "healthy" for r in rows.values()), rows


def assert_stop_leaves_nothing(c: Checkout) -> None:
    code, out = c.run("stop-services", "--keep-db")
    assert code == 0, out
    assert "no project process is left" in out
    assert c.processes() == {}
    assert all(port_free(port) for port in c.ports.values())


def test_two_concurrent_starts_make_one_formation_and_the_second_says_why(checkout):
    first = checkout.launch("start-all-services", tag="1")
    second = checkout.launch("start-all-services", tag="2")
    codes = [first.wait(SCRIPT_TIMEOUT), second.wait(SCRIPT_TIMEOUT)]
    outputs = [checkout.output("start-all-services", "1"), checkout.output("start-all-services", "2")]
    assert sorted(codes) == [0, 1], (codes, outputs)
    winner, loser = (outputs[0], outputs[1]) if codes[0] == 0 else (outputs[1], outputs[0])
    assert "all services are healthy" in winner
    assert "another scripts/start-all-services is already running" in loser, loser

    assert_one_healthy_formation(checkout)
    [honcho] = honcho_pids(checkout.root)
    assert (checkout.root / ".run" / "honcho.pid").read_text().strip() == str(honcho)
    # honcho's console goes through the rotating pipe, which is part of the formation until honcho exits
    pipes = [cmd for cmd in checkout.processes().values() if b"mcp.ops.rotating_pipe" in cmd]
    assert len(pipes) == 1
    logs = checkout.root / "logs"
    wait_for(lambda: (logs / "honcho.log.1").exists(), 10, what="logs/honcho.log to be rotated")
    assert (logs / "honcho.log").stat().st_size <= LOG_MAX_BYTES
    assert (logs / "honcho.log.1").stat().st_size <= LOG_MAX_BYTES
    assert not (logs / "honcho.log.3").exists()
    everything = "".join((logs / name).read_text() for name in ("honcho.log.2", "honcho.log.1", "honcho.log")
                         if (logs / name).exists())
    assert "mcp-figma.1" in everything  # honcho's own prefix survives the pipe

    assert_stop_leaves_nothing(checkout)


def test_removing_the_run_folder_hides_nothing_from_status_or_stop(checkout):
    code, out = checkout.run("start-all-services")
    assert code == 0, out
    assert_one_healthy_formation(checkout)

    shutil.rmtree(checkout.root / ".run")
    removed = time.monotonic()

    def all_back() -> dict | None:
        code, rows = checkout.status()
        return rows if code == 0 and set(rows) == set(NAMES) else None

    wait_for(all_back, 15, interval=0.5, what="scripts/status to list every process again")
    assert time.monotonic() - removed < 15
    api = f"http://127.0.0.1:{checkout.ports['main-api']}"
    resp = http("GET", f"{api}/api/services/status", headers={"Authorization": f"Bearer {checkout.env['ADMIN_TOKEN']}"})
    assert resp.status == 200, resp.body
    assert {row["name"] for row in resp.json["processes"]} == set(NAMES)
    assert resp.json["ok"] is True

    shutil.rmtree(checkout.root / ".run")  # stop must not depend on .run/honcho.pid either
    assert_stop_leaves_nothing(checkout)
