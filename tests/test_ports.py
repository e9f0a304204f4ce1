"""One port resolution (mcp.ports): ``<NAME>_PORT`` when set, else the default; the Procfile line db.migrate
suggests spells the same rule, so with an override the supervisor health-checks the port the service uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from db.migrate import MigrationError, check_procfile, discover_services
from mcp.ports import api_port, expand_port, procfile_port, resolve_port, service_port
from tests.fixtures.formation import Formation
from tests.support import ROOT, free_port, wait_for


def test_an_override_wins_when_set_and_not_empty():
    assert service_port("figma", 49280, {}) == 49280
    assert service_port("figma", 49280, {"FIGMA_PORT": ""}) == 49280
    assert service_port("figma", 49280, {"FIGMA_PORT": "50001"}) == 50001
    assert api_port({}) == 5000 and api_port({"API_PORT": "5055"}) == 5055
    with pytest.raises(ValueError, match="FIGMA_PORT"):
        resolve_port("FIGMA_PORT", 49280, {"FIGMA_PORT": "http"})
    with pytest.raises(ValueError, match="FIGMA_PORT"):
        resolve_port("FIGMA_PORT", 49280, {"FIGMA_PORT": "70000"})


def test_the_procfile_spelling_expands_like_the_resolution():
    word = procfile_port("FIGMA_PORT", 49280)
    assert word == "${FIGMA_PORT:-49280}"
    for environ in ({}, {"FIGMA_PORT": ""}, {"FIGMA_PORT": "50001"}):
        assert expand_port(word, environ) == service_port("figma", 49280, environ)
    assert expand_port("49280", {"FIGMA_PORT": "1"}) == 49280
    assert expand_port("$FIGMA_PORT", {"FIGMA_PORT": "50001"}) == 50001
    assert expand_port("--name", {}) is None


def figma():
    [svc] = [s for s in discover_services(ROOT) if s.config.name == "figma"]
    return svc


def suggested_line(tmp_path: Path) -> str:
    """What db.migrate tells an operator to add for a service missing from the Procfile."""
    procfile = tmp_path / "Procfile.empty"
    procfile.write_text("# nothing yet\n")
    with pytest.raises(MigrationError) as err:
        check_procfile([figma()], procfile)
    return re.search(r"add: (.*)$", str(err.value)).group(1)


def test_migrate_refuses_a_line_whose_supervisor_would_check_another_port(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text("mcp-figma: exec python -m mcp.ops.supervisor --name mcp-figma --port 49280 "
                        "-- python -m services.figma\n")
    check_procfile([figma()], procfile, {})  # no override: the same port
    with pytest.raises(MigrationError) as err:
        check_procfile([figma()], procfile, {"FIGMA_PORT": "50001"})
    message = str(err.value)
    assert "'mcp-figma'" in message and "50001" in message and "${FIGMA_PORT:-49280}" in message
    procfile.write_text(suggested_line(tmp_path) + "\n")
    check_procfile([figma()], procfile, {"FIGMA_PORT": "50001"})


def test_with_an_override_the_suggested_line_health_checks_the_port_the_service_uses(env, tmp_path):
    line = suggested_line(tmp_path)
    assert "${FIGMA_PORT:-49280}" in line
    port = free_port()
    procfile = tmp_path / "Procfile"
    procfile.write_text(line + "\n")
    run_dir = tmp_path / "run"
    proc_env = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_")}
    proc_env.update(FIGMA_PORT=str(port), MCP_RUN_DIR=str(run_dir), MCP_LOG_DIR=str(tmp_path / "logs"),
                    PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
                    SUPERVISOR_HEALTH_INTERVAL="1", SUPERVISOR_FAST_HEALTH_INTERVAL="0.25")
    f = Formation(procfile, proc_env, run_dir)
    try:
        state = f.healthy("mcp-figma", timeout=30)
        assert state["port"] == port and state["health_url"] == f"http://127.0.0.1:{port}/health"
        # The scripts' view of the same Procfile: the same port, and healthy.
        listed = subprocess.run([sys.executable, "-m", "mcp.ops", "processes", "--procfile", str(procfile)],
                                cwd=ROOT, env=proc_env, capture_output=True, text=True, timeout=60)
        assert listed.stdout.split() == ["mcp-figma", str(port), f"http://127.0.0.1:{port}/health"], listed
        waited = subprocess.run([sys.executable, "-m", "mcp.ops", "wait-healthy", "--procfile", str(procfile),
                                 "--timeout", "20"], cwd=ROOT, env=proc_env, capture_output=True, text=True,
                                timeout=60)
        assert waited.returncode == 0, waited.stderr
        wait_for(lambda: f.states()["mcp-figma"]["health"] == "healthy", 10, what="still healthy")
    finally:
        f.cleanup(tmp_path)
