"""Procfile.dev: an edit restarts only the service it belongs to; an edit in mcp/ restarts every service.

The project is copied to a temporary folder so the test can edit files without touching the checkout;
``python -m`` finds the copy's packages first because honcho runs there.
"""

from __future__ import annotations

import re
import shutil
import sys
import time

import pytest

from mcp.formation.facts import port_free, port_owner
from mcp.ops.processes import project_processes
from tests.fixtures.formation import Formation
from tests.support import ROOT, free_port, healthy, wait_for

RELOAD_DEADLINE = 10.0


def names(procfile):
    return re.findall(r"^([A-Za-z0-9_-]+):", procfile.read_text(), re.MULTILINE)


def test_procfile_dev_runs_the_procfile_processes_under_watchfiles():
    dev = (ROOT / "Procfile.dev").read_text()
    assert names(ROOT / "Procfile.dev") == names(ROOT / "Procfile")
    for line in filter(None, (x for x in dev.splitlines() if not x.startswith("#"))):
        assert "-m mcp.ops.supervisor" in line and "-- watchfiles --filter python" in line, line
        module = re.search(r"'python -m (services\.\w+)'", line).group(1)
        # Only the service's own package and the shared toolkit: never logs/, .venv/ or .data/.
        assert line.endswith(f" {module.replace('.', '/')} mcp"), line


@pytest.fixture
def dev_formation(env, tmp_path):
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("mcp", "services", "db"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore)
    for name in ("Procfile.dev", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)
    ports = {var: free_port() for var in ("API_PORT", "FIGMA_PORT", "GITHUB_PORT", "SLACK_PORT")}
    run_dir = tmp_path / "run"
    proc_env = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_")}
    proc_env.update({k: str(v) for k, v in ports.items()})
    proc_env.update(PATH=f"{sys.executable.rsplit('/', 1)[0]}:{env.get('PATH', '/usr/bin:/bin')}",
                    MCP_RUN_DIR=str(run_dir), MCP_LOG_DIR=str(tmp_path / "logs"))
    f = Formation(copy / "Procfile.dev", proc_env, run_dir, cwd=copy, names=("main-api", "mcp-figma"))
    f.copy, f.ports, f.marker_root = copy, ports, tmp_path
    yield f
    f.cleanup(tmp_path)


def serving_pid(port):
    """The process answering on the port: the service itself, below watchfiles."""
    return port_owner(port) if healthy(f"http://127.0.0.1:{port}/health") else None


def test_an_edit_restarts_only_its_service_and_an_mcp_edit_restarts_all(dev_formation):
    f = dev_formation
    api_port, figma_port = f.ports["API_PORT"], f.ports["FIGMA_PORT"]
    watchers = {name: f.healthy(name, timeout=30)["child_pid"] for name in ("main-api", "mcp-figma")}
    api = wait_for(lambda: serving_pid(api_port), 10, what="the API's pid")
    figma = wait_for(lambda: serving_pid(figma_port), 10, what="the Figma service's pid")
    assert figma not in watchers.values()  # watchfiles' child, not watchfiles itself

    with open(f.copy / "services" / "figma" / "tools.py", "a") as tools:
        tools.write("\n# edited by test_dev_reload\n")
    new_figma = wait_for(lambda: (pid := serving_pid(figma_port)) not in (None, figma) and pid, RELOAD_DEADLINE,
                         interval=0.1, what="the Figma service to restart after its tools.py changed")
    time.sleep(1.0)  # give a wrong restart of the API the time to show
    assert serving_pid(api_port) == api
    states = f.states()
    # watchfiles restarted the service; the supervisor saw nothing to restart.
    assert {n: states[n]["child_pid"] for n in watchers} == watchers
    assert states["mcp-figma"]["restarts"] == 0

    with open(f.copy / "mcp" / "server" / "base.py", "a") as base:
        base.write("\n# edited by test_dev_reload\n")
    wait_for(lambda: serving_pid(api_port) not in (None, api), RELOAD_DEADLINE, interval=0.1,
             what="the API to restart after mcp/server/base.py changed")
    wait_for(lambda: serving_pid(figma_port) not in (None, new_figma), RELOAD_DEADLINE, interval=0.1,
             what="the Figma service to restart after mcp/server/base.py changed")

    # A stop reaches the services below watchfiles too.
    f.terminate(10)
    wait_for(lambda: port_free(api_port) and port_free(figma_port), 10, what="the ports to be free")
    assert project_processes(f.marker_root) == []
