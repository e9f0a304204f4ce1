"""Attacks at the HTTP level, each as an outsider would send it: batches that multiply the rate,
cross-site pages on the REST endpoints, forged forwarding headers, calls that never end, and an
upstream that quotes the token back."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from services.figma import SERVICE as FIGMA
from tests.conftest import start_service
from tests.support import http, wait_for

TOKEN = "figd_quoted_secret_0123456789"


@pytest.fixture
def limited(env):
    servers: list = []

    def start(**settings: str):
        server, runtime = start_service(FIGMA, {**env, **settings})
        server.runtime = runtime
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def guess(service, headers: dict[str, str]) -> int:
    return http("GET", f"{service.url}/{uuid.uuid4()}/mcp/tools", headers=headers).status


@pytest.mark.parametrize("trusted", [None, "10.0.0.0/8, 192.0.2.1"])
def test_forwarding_headers_from_an_untrusted_peer_buy_no_fresh_budget(limited, trusted):
    settings = {"UNKNOWN_ID_LIMIT_PER_MINUTE": "6"}  # a burst of 3 unknown ids per client
    if trusted:
        settings["TRUSTED_PROXIES"] = trusted
    service = limited(**settings)
    # A new client address on each request: from a peer that is not a trusted proxy, ignored.
    statuses = [guess(service, {"X-Real-IP": f"203.0.113.{i}", "X-Forwarded-For": f"198.51.100.{i}"})
                for i in range(5)]
    assert statuses[:3] == [404, 404, 404] and set(statuses[3:]) == {429}


def test_forwarding_headers_from_a_trusted_proxy_name_the_client(limited):
    service = limited(UNKNOWN_ID_LIMIT_PER_MINUTE="6", TRUSTED_PROXIES="127.0.0.1")
    assert [guess(service, {"X-Real-IP": "203.0.113.7"}) for _ in range(4)] == [404, 404, 404, 429]
    assert guess(service, {"X-Real-IP": "203.0.113.8"}) == 404


def batch_of_calls(n: int) -> list[dict]:
    return [{"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}
            for i in range(n)]


def test_each_call_in_a_batch_costs_a_token(limited, admin, figma):
    service = limited(RATE_LIMIT_PER_MINUTE="60", RATE_LIMIT_BURST="10")
    iid = admin.create_instance(credentials={"api_key": "figd_batch"})["instance_id"]
    # A 2025-03-26 batch: no MCP-Protocol-Version header.
    resp = http("POST", f"{service.url}/{iid}/mcp", batch_of_calls(32),
                headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream"})
    assert resp.status == 200, resp.body
    answers = resp.json
    assert [a["id"] for a in answers] == list(range(32))
    done = [a for a in answers if "result" in a]
    refused = [a for a in answers if "error" in a]
    assert len(done) == 10  # the burst, the request's own token included
    assert all(a["error"]["code"] == -32000 and a["error"]["data"]["code"] == "rate_limited"
               and a["error"]["data"]["retry_after_s"] >= 1 for a in refused)
    assert len(figma.recorded(r"^/v1/me$")) == 10  # the refused calls never reached the upstream
    assert http("POST", f"{service.url}/{iid}/mcp/call", {"name": "get_me"}).status == 429


@pytest.mark.parametrize("path,method", [
    ("/mcp/call", "POST"), ("/mcp/tools", "GET"), ("/health", "GET"), ("/api/files/abc", "GET"), ("/mcp", "POST"),
])
def test_every_instance_endpoint_refuses_a_foreign_origin_and_host(admin, figma_service, figma, path, method):
    iid = admin.create_instance(credentials={"api_key": "figd_browser"})["instance_id"]
    url = f"{figma_service.url}/{iid}{path}"
    body = {"name": "get_me", "arguments": {}} if method == "POST" else None
    if path == "/mcp":
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": body}
    origin = http(method, url, body, headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert origin.status == 403, origin.body
    host = http(method, url, body, headers={"Host": "evil.example", "Content-Type": "application/json"})
    assert host.status == 421, host.body
    for resp in (origin, host):
        error = resp.json.get("error")
        code = error["data"]["code"] if "data" in error else error["code"]
        assert code in ("origin_not_allowed", "host_not_allowed")
    assert figma.recorded(r"^/v1/") == []
    # The allowed Origin and Host still work.
    ok = http(method, url, body, headers={"Origin": "http://localhost:3000", "Accept": "application/json",
                                          "Content-Type": "application/json"})
    assert ok.status in (200, 502), ok.body  # /api/files/abc is a 502 only if the simulator lacks the file


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_rest_tool_call_must_be_sent_as_json(admin, figma_service, figma, content_type):
    iid = admin.create_instance()["instance_id"]
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    resp = http("POST", f"{figma_service.url}/{iid}/mcp/call",
                raw=json.dumps({"name": "get_me"}).encode(), headers=headers)
    assert resp.status == 415 and resp.json["error"]["code"] == "unsupported_media_type"
    assert figma.recorded(r"^/v1/") == []


def test_a_call_past_the_request_deadline_is_abandoned(limited, admin, figma):
    service = limited(REQUEST_TIMEOUT="1", UPSTREAM_TIMEOUT="60")
    iid = admin.create_instance()["instance_id"]
    figma.delay = 30  # an upstream that never answers in time
    started = time.monotonic()
    rest = http("POST", f"{service.url}/{iid}/mcp/call", {"name": "get_me"})
    assert rest.status == 200 and rest.json["isError"] is True
    assert rest.json["structuredContent"]["code"] == "deadline_exceeded"
    mcp = http("POST", f"{service.url}/{iid}/mcp",
               {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}},
               headers={"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"})
    assert mcp.status == 200 and mcp.json["result"]["isError"] is True
    direct = http("GET", f"{service.url}/{iid}/api/files/abc")
    assert direct.status == 504 and direct.json["error"]["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 20  # three calls, each cut at about a second
    usage = wait_for(lambda: (u := admin("GET", f"/api/instances/{iid}/usage").json)["calls"] >= 2 and u, 15,
                     what="the two tool calls in usage")
    assert usage["calls"] == usage["errors"] == 2


def test_an_upstream_that_does_not_answer_is_cut_at_the_upstream_timeout(limited, admin, figma):
    service = limited(REQUEST_TIMEOUT="60", UPSTREAM_TIMEOUT="1")  # the request deadline is far away
    iid = admin.create_instance()["instance_id"]
    figma.delay = 30
    started = time.monotonic()
    rest = http("POST", f"{service.url}/{iid}/mcp/call", {"name": "get_me"}, timeout=60)
    assert rest.status == 200 and rest.json["isError"] is True
    assert rest.json["structuredContent"]["code"] == "timeout"
    assert time.monotonic() - started < 20  # cut at about a second, not when the upstream finally answers


@pytest.mark.parametrize("status", [401, 403, 500])
def test_a_token_quoted_by_the_upstream_is_redacted_on_the_direct_endpoint(admin, figma_service, figma, status):
    iid = admin.create_instance(credentials={"api_key": TOKEN})["instance_id"]
    figma.fail(r"^/v1/files/", status, body={"status": status, "err": f"bad token {TOKEN} (X-Figma-Token)"}, times=5)
    resp = http("GET", f"{figma_service.url}/{iid}/api/files/abc")
    assert resp.status >= 400 and resp.json["error"]
    assert TOKEN not in resp.body.decode() and "[redacted]" in resp.body.decode()
    assert TOKEN not in json.dumps(dict(resp.headers))
