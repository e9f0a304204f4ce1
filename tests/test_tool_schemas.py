"""Tool input schemas are JSON Schema 2020-12, checked when a service is built; arguments are judged by them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from mcp.protocol.tools import InvalidToolSchema, Tool, ToolRegistry
from mcp.server.serve import EXIT_CONFIG
from mcp.tenancy.credentials import generate_key
from services.figma import SERVICE as FIGMA
from services.github import SERVICE as GITHUB
from services.slack import SERVICE as SLACK
from tests.support import ROOT, base_env, free_port


async def echo(client, args):
    return {"args": args, "types": {k: type(v).__name__ for k, v in args.items()}}


def tool(schema, name="probe"):
    return Tool(name, "A tool for tests", schema, echo)


def call(registry, name, arguments):
    return asyncio.run(registry.call(registry.get(name), arguments, client=None)).result


@pytest.mark.parametrize("service", [FIGMA, GITHUB, SLACK], ids=lambda s: s.name)
def test_every_tool_of_every_service_builds(service):
    registry = ToolRegistry(service.tools)
    assert len(registry) == len(service.tools) > 0
    for described in registry.describe():
        assert described["inputSchema"]["type"] == "object"


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "object", "properties": {"depth": {"type": "int"}}}, "type"),  # unknown type name
    (False, "type"),  # MCP requires an object schema; false alone would refuse every call
    ({"type": "object", "properties": {"n": {"minimum": "1"}}}, "minimum"),
    ({"type": "object", "properties": {"n": {"$ref": "#/$defs/nowhere"}}}, "$ref"),
])
def test_an_invalid_schema_stops_the_registry_naming_tool_and_keyword(schema, keyword):
    with pytest.raises(InvalidToolSchema) as err:
        ToolRegistry([tool({"type": "object"}, "fine"), tool(schema, "broken_tool")])
    assert err.value.tool == "broken_tool" and err.value.keyword == keyword
    assert "'broken_tool'" in str(err.value) and repr(keyword) in str(err.value)


def test_a_false_subschema_builds_and_refuses_its_field():
    # Inside a schema, false is valid 2020-12: "this property is never accepted".
    registry = ToolRegistry([tool({"type": "object", "properties": {"legacy": False, "q": {"type": "string"}}})])
    assert call(registry, "probe", {"q": "x"})["isError"] is False
    result = call(registry, "probe", {"q": "x", "legacy": 1})
    assert result["isError"] is True and result["structuredContent"]["field"] == "legacy"


def test_invalid_arguments_are_an_is_error_result_naming_the_field():
    registry = ToolRegistry([tool({
        "type": "object",
        "properties": {"depth": {"type": "integer", "minimum": 1, "maximum": 4},
                       "ids": {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+:[0-9]+$"}}},
        "required": ["ids"], "additionalProperties": False})])
    for arguments, field, sentence in [
        ({"ids": ["1:2"], "depth": 9}, "depth", "depth must be at most 4"),
        ({"ids": ["1:2", "3:4", "x"]}, "ids[2]", "ids[2] must match '^[0-9]+:[0-9]+$'"),
        ({}, "ids", "ids is required"),
        ({"ids": [], "dpeth": 1}, "dpeth", "dpeth is not an accepted argument"),
    ]:
        result = call(registry, "probe", arguments)
        message = f"invalid arguments for probe: {sentence}"
        assert result == {"content": [{"type": "text", "text": message}], "isError": True,
                          "structuredContent": {"code": "invalid_arguments", "field": field, "message": message}}


def test_integral_floats_reach_the_handler_as_ints():
    registry = ToolRegistry([tool({"type": "object", "properties": {"depth": {"type": "integer"}}})])
    result = call(registry, "probe", {"depth": 3.0})
    assert result["structuredContent"] == {"args": {"depth": 3}, "types": {"depth": "int"}}
    assert call(registry, "probe", {"depth": 3.5})["structuredContent"]["field"] == "depth"


BROKEN_SERVICE = '''
from mcp.protocol.tools import Tool
from mcp.server.app import run
from mcp.service import Service, ServiceConfig


async def handler(client, args):
    return {}


SERVICE = Service(
    config=ServiceConfig(name="broken", port=49390, auth_type="api_key"),
    tools=[Tool("get_thing", "Gets a thing", {"type": "object", "properties": {"depth": {"type": "int"}}}, handler)],
    client_factory=lambda http, credentials: None,
    upstream_url_env="BROKEN_API_URL",
    upstream_default_url="http://127.0.0.1:9",
)

if __name__ == "__main__":
    run(SERVICE)
'''


def test_a_service_with_an_invalid_schema_refuses_to_start(tmp_path):
    (tmp_path / "broken_service.py").write_text(textwrap.dedent(BROKEN_SERVICE))
    env = base_env(PYTHONPATH=f"{ROOT}:{tmp_path}", MCP_PROJECT_ROOT=str(tmp_path), CREDENTIALS_KEY=generate_key(),
                   DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", BROKEN_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "-m", "broken_service"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert "'get_thing'" in proc.stderr and "'type'" in proc.stderr and "Traceback" not in proc.stderr
