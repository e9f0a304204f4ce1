"""What a service author builds on: the ``mcp`` package's public names, the schema helpers, the in-body
error helper of the upstream seam, and the port a service's instance URLs and health check use."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

import mcp
from mcp.config import load_settings
from mcp.errors import UpstreamError
from mcp.server.app import make_app
from mcp.server.runtime import ServiceRuntime
from mcp.server.upstream import UpstreamResponse, default_error, json_answer
from services.figma import SERVICE as FIGMA
from services.github import SERVICE as GITHUB
from services.slack import SERVICE as SLACK
from tests.conftest import ApiClient, ThreadServer, start_api
from tests.support import ROOT, free_port, http

# --- the public API ------------------------------------------------------------------------------------------


def test_importing_a_light_module_of_mcp_loads_no_serving_runtime():
    code = "import mcp.paths, mcp.ports, sys; print(sorted(m for m in ('tornado', 'aiohttp') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves():
    out = subprocess.run([sys.executable, "-c", "from mcp import *; import mcp; "
                          "print(all(n in globals() for n in mcp.__all__))"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    for name in mcp.__all__:
        assert getattr(mcp, name) is not None
    assert mcp.Service is FIGMA.__class__ and mcp.UpstreamError is UpstreamError
    with pytest.raises(AttributeError):
        mcp.NoSuchThing  # noqa: B018


# --- the tools' schemas ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", [FIGMA, GITHUB, SLACK], ids=lambda s: s.name)
def test_tools_list_is_byte_for_byte_what_it_was_before_the_shared_schema_helpers(service):
    """tests/fixtures/tool_descriptions.json holds the tools as each service described them with its own copies."""
    expected = json.loads((ROOT / "tests" / "fixtures" / "tool_descriptions.json").read_text())[service.name]
    assert json.dumps([t.describe() for t in service.tools]) == json.dumps(expected)


# --- errors inside a 200 body ----------------------------------------------------------------------------------


def answer(status: int, body: bytes | str, **headers: str) -> UpstreamResponse:
    raw = body.encode() if isinstance(body, str) else body
    return UpstreamResponse(status, CIMultiDictProxy(CIMultiDict(headers)), raw)


def graphql_errors(body):
    errors = body.get("errors") if isinstance(body, dict) else None
    return "; ".join(e["message"] for e in errors) if errors else None


def test_json_answer_returns_the_body_of_a_success():
    assert json_answer(answer(200, '{"data": {"x": 1}}'), "toy", in_body_error=graphql_errors) == {"data": {"x": 1}}
    assert json_answer(answer(204, b""), "toy") == {}


def test_json_answer_raises_the_error_found_inside_a_200_body():
    with pytest.raises(UpstreamError) as e:
        json_answer(answer(200, '{"data": null, "errors": [{"message": "Entity not found"}]}'), "toy",
                    in_body_error=graphql_errors)
    assert e.value.upstream == "toy" and e.value.code == "upstream_error" and e.value.status == 200
    assert e.value.message == "toy refused the request: Entity not found"


@pytest.mark.parametrize(("status", "code", "words"), [
    (400, "bad_request", "check the arguments"), (401, "unauthorized", "replace this instance's credentials"),
    (403, "forbidden", "scopes"), (404, "not_found", "check the ids"), (503, "upstream_unavailable", "try again"),
    (418, "upstream_error", "HTTP 418"),
])
def test_json_answer_names_what_an_error_status_means(status, code, words):
    with pytest.raises(UpstreamError) as e:
        json_answer(answer(status, '{"errors": []}'), "toy", in_body_error=graphql_errors)
    assert (e.value.status, e.value.code) == (status, code) and words in e.value.message


def test_json_answer_passes_retry_after_and_refuses_a_body_that_is_not_json():
    with pytest.raises(UpstreamError) as e:
        json_answer(answer(429, "slow down", **{"Retry-After": "7"}), "toy")
    assert (e.value.code, e.value.retry_after_s, e.value.as_http_error().status) == ("rate_limited", 7, 429)
    with pytest.raises(UpstreamError) as e:
        json_answer(answer(200, "<html>"), "toy")
    assert e.value.code == "bad_response"


def test_json_answer_uses_the_services_own_error_builder_for_every_failure():
    seen = []

    def mine(resp, body):
        seen.append((resp.status, body))
        return UpstreamError("toy", "mine", code="mine")

    for resp in (answer(200, '{"errors": [{"message": "no"}]}'), answer(500, "oops"), answer(200, "<html>")):
        with pytest.raises(UpstreamError, match="mine"):
            json_answer(resp, "toy", in_body_error=graphql_errors, error=mine)
    assert seen == [(200, {"errors": [{"message": "no"}]}), (500, None), (200, None)]
    assert default_error(answer(200, ""), "toy", "said").message == "toy refused the request: said"


# --- the port a service runs on ---------------------------------------------------------------------------------


@pytest.fixture
def figma_on_override(env: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Figma listening on FIGMA_PORT (not its SERVICE_CONFIG port), and the environment that says so."""
    port = free_port()
    proc_env = {**env, "FIGMA_PORT": str(port)}
    runtime = ServiceRuntime.create(FIGMA, load_settings(proc_env), port)
    server = ThreadServer(make_app(runtime), port, runtime.inflight, runtime.start, runtime.stop)
    yield port, proc_env
    server.stop()


def test_the_api_hands_out_urls_and_checks_health_on_the_port_override(figma_on_override):
    port, proc_env = figma_on_override
    api = start_api(proc_env)
    try:
        admin = ApiClient(api.url)
        inst = admin.create_instance()
        assert {u.split("/")[2] for u in inst["urls"].values()} == {f"127.0.0.1:{port}"}
        assert http("GET", inst["urls"]["health"]).json["status"] == "healthy"
        assert admin("GET", f"/api/instances/{inst['instance_id']}").json["urls"] == inst["urls"]
        [figma] = [s for s in admin("GET", "/api/services").json["services"] if s["name"] == "figma"]
        assert figma["port"] == port and figma["health"]["status"] == "healthy"
        [checked] = [s for s in admin("GET", "/api/services/status").json["services"] if s["name"] == "figma"]
        assert (checked["port"], checked["health"]["status"]) == (port, "healthy"), checked
    finally:
        api.stop()


def test_without_an_override_the_catalog_port_is_used(admin):
    inst = admin.create_instance()
    assert inst["urls"]["call"].startswith(f"http://127.0.0.1:{FIGMA.config.port}/")
