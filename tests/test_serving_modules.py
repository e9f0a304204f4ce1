"""A serving process never loads the operators' tools: checked in a real, started service and API process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import ROOT, free_port, healthy, wait_for

WRAPPER = ROOT / "tests" / "fixtures" / "dump_modules.py"


@pytest.mark.parametrize(("module", "port_var"), [("services.figma", "FIGMA_PORT"), ("services.api", "API_PORT")])
def test_a_started_serving_process_has_no_mcp_ops_module_loaded(env, tmp_path, module, port_var):
    port = free_port()
    out = tmp_path / "modules.txt"
    log = tmp_path / "process.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, str(WRAPPER), str(out), module], cwd=ROOT,
                                env={**env, port_var: str(port)}, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/health") or proc.poll() is not None, 30,
                 what=f"{module} to answer /health")
        assert proc.poll() is None, log.read_text()
        os.kill(proc.pid, signal.SIGUSR1)
        wait_for(out.exists, 10, what="the module list")
        loaded = out.read_text().split()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert module in loaded and "mcp.server.serve" in loaded  # the real entry point ran
    assert [name for name in loaded if name == "mcp.ops" or name.startswith("mcp.ops.")] == []
