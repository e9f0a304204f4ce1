"""The README's "Adding a service" guide, followed literally in a temporary tree: the new service is
discovered and validated by the migrations and served by the toolkit with no change to mcp/."""

from __future__ import annotations

import textwrap

from db.migrate import discover_services, migrate
from tests.conftest import start_service
from tests.support import http

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
        "mcp-widgets: exec python -m mcp.ops.supervise --name mcp-widgets --port ${WIDGETS_PORT:-49555} "
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
