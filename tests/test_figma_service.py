"""The Figma service end to end: main API creates instances, the service calls the simulator."""

from __future__ import annotations

import concurrent.futures

from tests.simulators.figma import user_for
from tests.support import call_tool as call
from tests.support import http


def test_get_me_sends_the_instance_token_as_x_figma_token(admin, figma_service, figma):
    inst = admin.create_instance(credentials={"api_key": "figd_alpha"})
    result = call(figma_service, inst["instance_id"], "get_me")
    assert result["isError"] is False
    assert result["structuredContent"] == user_for("figd_alpha")
    [req] = figma.recorded("/v1/me")
    assert req.method == "GET"
    assert req.header("X-Figma-Token") == "figd_alpha"
    assert req.header("Authorization") is None


def test_oauth_credentials_use_bearer(admin, figma_service, figma):
    inst = admin.create_instance(credentials={"access_token": "figu_oauth"})
    result = call(figma_service, inst["instance_id"], "get_me")
    assert result["structuredContent"]["id"] == user_for("figu_oauth")["id"]
    [req] = figma.recorded("/v1/me")
    assert req.header("Authorization") == "Bearer figu_oauth"
    assert req.header("X-Figma-Token") is None


def test_concurrent_calls_of_two_instances_never_cross_tokens(admin, figma_service, figma):
    a = admin.create_instance(user="a@example.com", credentials={"api_key": "figd_token_a"})
    b = admin.create_instance(user="b@example.com", credentials={"api_key": "figd_token_b"})
    figma.delay = 0.01
    jobs = [(a, "figd_token_a"), (b, "figd_token_b")] * 40
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda j: (j[1], call(figma_service, j[0]["instance_id"], "get_me")), jobs))
    for token, result in results:
        assert result["structuredContent"]["id"] == user_for(token)["id"]
    seen = {r.header("X-Figma-Token") for r in figma.recorded("/v1/me")}
    assert seen == {"figd_token_a", "figd_token_b"}
    assert len(figma.recorded("/v1/me")) == 80


def test_metrics_count_calls_by_tool_and_outcome_without_instance_ids(admin, figma_service, figma):
    inst = admin.create_instance(credentials={"api_key": "figd_m"})
    call(figma_service, inst["instance_id"], "get_me")
    figma.fail("/v1/me", 429, {"status": 429, "err": "Rate limit"}, {"Retry-After": "3"})
    call(figma_service, inst["instance_id"], "get_me")
    text = http("GET", figma_service.url + "/metrics").body.decode()
    assert 'mcp_tool_calls_total{outcome="ok",process="figma",tool="get_me"} 1' in text
    assert 'mcp_tool_calls_total{outcome="error",process="figma",tool="get_me"} 1' in text
    assert 'mcp_upstream_errors_total{code="rate_limited",process="figma",upstream="figma"} 1' in text
    assert 'mcp_tool_call_duration_seconds_count{process="figma",tool="get_me"} 2' in text
    assert 'mcp_http_requests_total{handler="ToolCallHandler",method="POST",process="figma",status="200"} 2' in text
    assert "mcp_process_uptime_seconds" in text
    assert inst["instance_id"] not in text and "ada@example.com" not in text
