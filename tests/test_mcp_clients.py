"""Clients nobody here wrote: the official MCP Python SDK and the MCP Inspector CLI against an instance.

Both are installed once under ``.cache/`` (tests/mcp_clients/install.py) and run as subprocesses
against a running Figma service whose upstream is the simulator. Without node/npm (or without
network for the first install) they are skipped with the reason, except under CI, where they fail.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from services.figma import SERVICE as FIGMA
from tests.mcp_clients import install
from tests.simulators.figma import user_for
from tests.support import ROOT, base_env

CACHE = ROOT / ".cache"
SDK_SCRIPT = ROOT / "tests" / "mcp_clients" / "sdk_client.py"
TOOL_NAMES = [tool.name for tool in FIGMA.tools]


def _unavailable(what: str, e: Exception) -> None:
    if install.in_ci():
        pytest.fail(f"{what} must run in CI: {e}")
    pytest.skip(f"{what} is unavailable here: {e}")


@pytest.fixture(scope="session")
def sdk_python():
    try:
        return install.sdk_python(CACHE)
    except install.Unavailable as e:
        _unavailable("the official MCP Python SDK", e)


@pytest.fixture(scope="session")
def inspector():
    try:
        return install.inspector_cli(CACHE)
    except install.Unavailable as e:
        _unavailable("the MCP Inspector CLI", e)


def run_sdk(python, url: str, mode: str) -> dict:
    out = subprocess.run([str(python), "-I", str(SDK_SCRIPT), url, mode], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode,version", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_python_sdk_lists_calls_and_sees_errors(sdk_python, admin, figma_service, figma, mode, version):
    iid = admin.create_instance(credentials={"api_key": "figd_sdk_token"})["instance_id"]
    seen = run_sdk(sdk_python, f"{figma_service.url}/{iid}/mcp", mode)
    assert "error" not in seen, seen
    assert seen["sdk_version"].startswith("2.")
    assert seen["protocol_version"] == version
    assert seen["server_info"]["name"] == "figma"
    assert seen["tools"] == TOOL_NAMES and seen["next_cursor"] is None
    # get_me went through the platform to the upstream, with this instance's token
    assert seen["get_me"]["is_error"] is False
    assert seen["get_me"]["structured"] == user_for("figd_sdk_token")
    assert json.loads(seen["get_me"]["text"][0]) == user_for("figd_sdk_token")
    assert [r.header("X-Figma-Token") for r in figma.recorded("/v1/me")] == ["figd_sdk_token"]
    # arguments failing the inputSchema: an isError result naming the field, the upstream untouched
    assert seen["invalid"]["is_error"] is True
    assert seen["invalid"]["structured"]["field"] == "file_key" and "file_key" in seen["invalid"]["text"][0]
    assert figma.recorded("/v1/files") == []
    # an unknown tool: a JSON-RPC protocol error
    assert seen["protocol_error"]["code"] == -32602 and "no_such_tool" in seen["protocol_error"]["message"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_python_sdk_shows_why_an_instance_is_refused(sdk_python, admin, figma_service, mode):
    iid = admin.create_instance()["instance_id"]
    assert admin("PATCH", f"/api/instances/{iid}", {"status": "inactive"}).status == 200
    seen = run_sdk(sdk_python, f"{figma_service.url}/{iid}/mcp", mode)
    assert seen["error"]["code"] == -32000 and "inactive" in seen["error"]["message"]


def run_inspector(launcher, url: str, era: str, *args: str) -> dict:
    """One Inspector CLI invocation (``--cli``); its JSON output, or the failure with its output."""
    home = CACHE / "inspector" / "home"  # its catalog and storage stay out of the real home folder
    env = {**base_env(), "HOME": str(home), "MCP_CATALOG_PATH": str(home / "catalog.json"), "NO_COLOR": "1"}
    out = subprocess.run([str(launcher), "--cli", url, "--transport", "http", "--protocol-era", era, *args],
                         capture_output=True, text=True, timeout=60, env=env)
    if out.returncode != 0:
        return {"exit": out.returncode, "stdout": out.stdout[-2000:], "stderr": out.stderr[-2000:]}
    return json.loads(out.stdout)


@pytest.mark.parametrize("era", ["legacy", "auto"])
def test_inspector_cli_lists_tools_and_calls_one(inspector, admin, figma_service, figma, era):
    launcher, version = inspector
    assert version.startswith("2.")
    iid = admin.create_instance(credentials={"api_key": "figd_inspector"})["instance_id"]
    url = f"{figma_service.url}/{iid}/mcp"
    listed = run_inspector(launcher, url, era, "--method", "tools/list")
    assert [tool["name"] for tool in listed.get("tools", [])] == TOOL_NAMES, listed
    called = run_inspector(launcher, url, era, "--method", "tools/call", "--tool-name", "get_me")
    assert called.get("isError") is False, called
    assert called["structuredContent"] == user_for("figd_inspector")
    assert [r.header("X-Figma-Token") for r in figma.recorded("/v1/me")] == ["figd_inspector"]
    # auto probes server/discover and stays on 2026-07-28, whose results name the server in _meta
    modern_meta = called.get("_meta", {}).get("io.modelcontextprotocol/serverInfo")
    assert (modern_meta or {}).get("name") == ("figma" if era == "auto" else None)


def test_inspector_cli_reports_an_is_error_result(inspector, admin, figma_service, figma):
    launcher, _ = inspector
    iid = admin.create_instance()["instance_id"]
    failed = run_inspector(launcher, f"{figma_service.url}/{iid}/mcp", "legacy", "--method", "tools/call",
                           "--tool-name", "get_file", "--tool-arg", "file_key=not/a/key")
    assert failed["exit"] != 0 and "isError" in failed["stderr"]
    result = json.loads(failed["stdout"])
    assert result["isError"] is True and result["structuredContent"]["field"] == "file_key"
    assert figma.recorded() == []
