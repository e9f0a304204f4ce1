"""The README's "Adding a service" guide, followed literally in a temporary tree: the new service is
discovered and validated by the migrations and served by the toolkit with no change to mcp/.

The guide's files are read from README.md itself (each shown as **`path`** and a code block), so the
guide and this test cannot drift apart."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import mcp
import services
import tests.simulators
from db.migrate import discover_services, migrate
from mcp.protocol.tools import Tool
from mcp.service import Service, ServiceConfig
from tests.conftest import start_service
from tests.simulators.base import Simulator
from tests.support import ROOT, call_tool, failed, http, ok

INIT = '''
from mcp.service import Service, ServiceConfig
from mcp.protocol.tools import Tool
from .api import Client
from .endpoints import ROUTES
from .tools import TOOLS

SERVICE_CONFIG = ServiceConfig(name="widgets", display_name="Widgets", port=49555, auth_type="api_key")
SERVICE = Service(config=SERVICE_CONFIG, tools=TOOLS, client_factory=Client,
                  upstream_url_env="WIDGETS_API_URL", upstream_default_url="https://widgets.invalid",
                  routes=ROUTES)
'''
API = '''
class Client:
    def __init__(self, http, credentials):
        self.http = http
        self.key = credentials["api_key"]

    async def whoami(self):
        return {"key_suffix": self.key[-4:]}
'''
TOOLS = '''
from mcp.protocol.tools import Tool

async def whoami(client, args):
    return await client.whoami()

async def shout(client, args):
    return {"text": args["text"].upper()}

TOOLS = [
    Tool("whoami", "Which key this instance uses (last 4 characters).", {"type": "object", "properties": {}},
         whoami),
    Tool("shout", "Upper-cases text.", {"type": "object", "properties": {"text": {"type": "string"}},
                                        "required": ["text"], "additionalProperties": False}, shout),
]
'''
ENDPOINTS = '''
from mcp.server.endpoints import InstanceHandler

class Ping(InstanceHandler):
    async def get(self, instance):
        self.write_json({"pong": True, "instance_status": self.instance.status})

ROUTES = [(r"/api/ping", Ping)]
'''
SQL = """
INSERT INTO mcp_table (name, display_name, description, port, auth_type)
VALUES ('widgets', 'Widgets', 'A test service', 49555, 'api_key')
ON CONFLICT (name) DO UPDATE SET port = EXCLUDED.port, auth_type = EXCLUDED.auth_type;
"""


def test_a_new_service_folder_is_discovered_validated_and_served(tmp_path, database_url, env, admin):
    pkg = tmp_path / "services" / "widgets"
    pkg.mkdir(parents=True)
    for name, text in {"__init__.py": INIT, "api.py": API, "tools.py": TOOLS, "endpoints.py": ENDPOINTS,
                       "__main__.py": "from mcp.server.app import run\nfrom . import SERVICE\nrun(SERVICE)\n"}.items():
        (pkg / name).write_text(textwrap.dedent(text))
    (pkg / "service.sql").write_text(SQL)
    (tmp_path / "Procfile").write_text(
        "mcp-widgets: exec python -m mcp.ops.supervisor --name mcp-widgets --port ${WIDGETS_PORT:-49555} "
        "-- python -m services.widgets\n")

    [found] = discover_services(tmp_path)
    assert found.config.name == "widgets" and found.config.port == 49555
    report = migrate(database_url, root=tmp_path)
    assert report.registered == ["widgets"]

    inst = admin.create_instance(service="widgets", credentials={"api_key": "wk_secret_1234"})
    assert "/mcp/call" in inst["urls"]["call"]
    import sys

    service = sys.modules[found.module_name].SERVICE
    server, _ = start_service(service, env)
    try:
        base = f"{server.url}/{inst['instance_id']}"
        tools = http("GET", base + "/mcp/tools").json["tools"]
        assert [t["name"] for t in tools] == ["whoami", "shout"]
        assert http("POST", base + "/mcp/call", {"name": "whoami"}).json["structuredContent"] == {"key_suffix": "1234"}
        shout = http("POST", base + "/mcp/call", {"name": "shout", "arguments": {"text": "hi"}}).json
        assert shout["structuredContent"] == {"text": "HI"}
        bad = http("POST", base + "/mcp/call", {"name": "shout", "arguments": {"text": 3}}).json
        assert bad["isError"] is True and bad["structuredContent"]["field"] == "text"
        assert http("GET", base + "/api/ping").json == {"pong": True, "instance_status": "active"}
        assert http("GET", server.url + "/health").json["service"] == "widgets"
    finally:
        server.stop()


# --- The README's guide, followed literally ---------------------------------------------------------------------

GUIDE_SOURCE = ROOT / "README.md"
# **`path`** on its own line, then a fenced block: the file's content (appended for the shared files).
_FILE_BLOCK = re.compile(r"^\*\*`(?P<path>[^`]+)`\*\*\n```[a-z]*\n(?P<body>.*?)^```$", re.M | re.S)
APPENDED = ("Procfile", "Procfile.dev", ".env.example")


def guide_section(text: str) -> str:
    start = text.index("## Adding a service")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def guide_files() -> list[tuple[str, str]]:
    section = guide_section(GUIDE_SOURCE.read_text())
    files = [(m["path"], m["body"]) for m in _FILE_BLOCK.finditer(section)]
    assert files, f"{GUIDE_SOURCE.name}'s 'Adding a service' shows no files (**`path`** then a code block)"
    return files


def procfile_names(path: Path) -> list[str]:
    return [ln.split(":", 1)[0] for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def like_figma(line: str, name: str, port: int) -> str:
    """The figma line of the same file with figma's name and port replaced: what a new line must look like."""
    return (line.replace("figma", name).replace("FIGMA", name.upper()).replace("49280", str(port)))


@pytest.fixture
def guide_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the checkout's Procfiles and .env.example with every file of the guide written or appended.

    ``services.<name>`` and ``tests.simulators.<name>`` import from the copy, as they would in the checkout.
    """
    for name in APPENDED:
        shutil.copy(ROOT / name, tmp_path / name)
    for rel, body in guide_files():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in APPENDED:
            with target.open("a") as f:
                f.write(body)
        else:
            target.write_text(body)
    monkeypatch.setattr(services, "__path__", [*services.__path__, str(tmp_path / "services")])
    for package, folder in ((tests, tmp_path / "tests"), (tests.simulators, tmp_path / "tests" / "simulators")):
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("services.", "tests.", "_discovered_services_")):
            del sys.modules[name]


def test_the_guide_names_every_file_a_service_needs():
    paths = [rel for rel, _ in guide_files()]
    [package] = {Path(p).parts[1] for p in paths if p.startswith("services/")}
    for rel in (f"services/{package}/__init__.py", f"services/{package}/api.py", f"services/{package}/tools.py",
                f"services/{package}/endpoints.py", f"services/{package}/__main__.py",
                f"services/{package}/service.sql", "Procfile", "Procfile.dev", ".env.example",
                f"tests/simulators/{package}.py", f"tests/test_{package}_service.py"):
        assert rel in paths, f"the guide does not show {rel}"
    section = guide_section(GUIDE_SOURCE.read_text())
    # Every field an author sets, named in the guide.
    for field in (*(f.name for f in dataclasses.fields(ServiceConfig)), *(f.name for f in dataclasses.fields(Service)),
                  *(f.name for f in dataclasses.fields(Tool))):
        assert f"`{field}`" in section, f"the guide does not explain the field {field}"
    for name in mcp.__all__:
        assert f"`{name}`" in section, f"the guide does not mention mcp.{name}"


def test_a_service_built_from_the_guide_is_migrated_and_serves_calls(guide_tree, database_url, env, admin):
    root = guide_tree
    [found] = discover_services(root)
    name, port = found.config.name, found.config.port
    upper = name.upper().replace("-", "_")

    # The Procfile lines look like the others (same supervisor, port override) and both files name the same processes.
    for procfile in ("Procfile", "Procfile.dev"):
        lines = (root / procfile).read_text().splitlines()
        figma = next(ln for ln in lines if ln.startswith("mcp-figma:"))
        assert lines[-1] == like_figma(figma, name, port), f"the guide's {procfile} line"
    assert procfile_names(root / "Procfile.dev") == procfile_names(root / "Procfile")
    env_example = (root / ".env.example").read_text()
    assert f"\n{upper}_API_URL=" in env_example and f"\n# {upper}_PORT={port}\n" in env_example

    # The guide's code is as clean as the project's (import order aside: it depends on where the tree lives).
    lint = subprocess.run([str(ROOT / ".venv" / "bin" / "ruff"), "check", "--config", str(ROOT / "pyproject.toml"),
                           "--ignore", "I001", "services", "tests"], cwd=root, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    compile((root / "services" / name / "__main__.py").read_text(), "__main__.py", "exec")

    report = migrate(database_url, root=root)
    assert report.registered == [name]

    service = importlib.import_module(f"services.{name}").SERVICE
    sim_module = importlib.import_module(f"tests.simulators.{name}")
    sim = next(v for k, v in vars(sim_module).items() if k.endswith("Simulator") and v is not Simulator)().start()
    server, _ = start_service(service, {**env, service.upstream_url_env: sim.url})
    try:
        inst = admin.create_instance(service=name, credentials={"api_key": sim_module.GOOD_KEY})
        assert inst["urls"]["call"].startswith(f"http://127.0.0.1:{port}/")
        base = f"{server.url}/{inst['instance_id']}"
        assert [t["name"] for t in http("GET", base + "/mcp/tools").json["tools"]] == [t.name for t in service.tools]
        assert ok(call_tool(server, inst["instance_id"], "get_viewer"))["name"] == "Ada"
        # An error inside a 200 answer becomes an isError result through json_answer.
        err = failed(call_tool(server, inst["instance_id"], "get_issue", {"id": "ENG-9"}))
        assert err["upstream"] == name and err["code"] == "upstream_error" and "Entity not found" in err["message"]
        assert http("GET", base + "/api/issues/ENG-1").json["identifier"] == "ENG-1"
        missing = http("GET", base + "/api/issues/ENG-9")
        assert missing.status == 502 and "Entity not found" in missing.json["error"]["message"]
        assert http("GET", base + "/api/issues/a%20b").status == 400

        wrong = admin.create_instance(service=name, credentials={"api_key": "lin_api_wrong"})
        refused = failed(call_tool(server, wrong["instance_id"], "get_viewer"))
        assert "Authentication required" in refused["message"] and "lin_api_wrong" not in refused["message"]

        # The guide's own test passes too.
        guide_test = importlib.import_module(f"tests.test_{name}_service")
        for test_name, test in vars(guide_test).items():
            if test_name.startswith("test_"):
                test(env, admin)
    finally:
        server.stop()
        sim.stop()
