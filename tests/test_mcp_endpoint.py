"""POST /{instance}/mcp over plain HTTP: every rule of the Streamable HTTP endpoint, in both eras."""

from __future__ import annotations

import base64
import http.client as http_client
import json
import uuid

import psycopg
import pytest

from mcp.config import ConfigError, load_settings
from mcp.protocol.methods import MAX_BATCH, SUPPORTED_VERSIONS
from services.figma import SERVICE as FIGMA
from tests.conftest import start_service
from tests.simulators.figma import user_for
from tests.support import free_port, http, wait_for

MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"
META = {"io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}}


def post(service, iid, body=None, *, raw=None, headers=None, version=None):
    """POST to the MCP endpoint with a conforming client's headers unless told otherwise."""
    hdrs = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if version is not None:
        hdrs["MCP-Protocol-Version"] = version
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    data = raw if raw is not None else json.dumps(body).encode()
    return http("POST", f"{service.url}/{iid}/mcp", raw=data, headers=hdrs)


def req(method, params=None, rid=1):
    msg = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def modern(service, iid, method, params=None, *, rid=1, headers=None, meta=META):
    """A 2026-07-28 request: _meta in the body, mirrored in the headers."""
    body = req(method, {**(params or {}), **({"_meta": meta} if meta is not None else {})}, rid)
    hdrs = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if params and "name" in params:
        hdrs["Mcp-Name"] = params["name"]
    hdrs.update(headers or {})
    return post(service, iid, body, headers=hdrs)


def rpc_error(resp, status, code, rid=1):
    assert resp.status == status, resp.body
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json
    assert body["jsonrpc"] == "2.0" and body["id"] == rid and "result" not in body
    assert body["error"]["code"] == code and body["error"]["message"]
    assert "Traceback" not in resp.body.decode()
    return body["error"]


def result_of(resp, rid=1):
    assert resp.status == 200, resp.body
    body = resp.json
    assert body["jsonrpc"] == "2.0" and body["id"] == rid, body
    assert "error" not in body, body
    return body["result"]


@pytest.fixture
def iid(admin):
    return admin.create_instance(credentials={"api_key": "figd_mcp_secret"})["instance_id"]


# --- legacy era: initialize, notifications, ping, tools ---------------------------------------


def test_initialize_negotiates_a_version(figma_service, iid):
    offers = [("2025-11-25", "2025-11-25"), ("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"),
              ("2024-11-05", "2025-11-25"), ("2026-07-28", "2025-11-25"), ("1.0", "2025-11-25")]
    for asked, answered in offers:
        resp = post(figma_service, iid, req("initialize", {"protocolVersion": asked, "capabilities": {},
                                                           "clientInfo": {"name": "t", "version": "1"}}))
        result = result_of(resp)
        assert result["protocolVersion"] == answered, asked
        assert result["capabilities"] == {"tools": {"listChanged": False}}
        assert result["serverInfo"] == {"name": "figma", "version": FIGMA.config.version, "title": "Figma",
                                        "description": FIGMA.config.description}
        assert "mcp-session-id" not in resp.headers  # stateless: no session is ever issued
        assert "resultType" not in result


def test_initialize_without_a_version_is_invalid_params(figma_service, iid):
    rpc_error(post(figma_service, iid, req("initialize", {"capabilities": {}})), 200, -32602)


def test_notifications_and_responses_are_202_without_a_body(figma_service, iid):
    for body in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                 {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}},
                 {"jsonrpc": "2.0", "id": 7, "result": {}},
                 {"jsonrpc": "2.0", "id": 7, "error": {"code": -1, "message": "no"}}):
        resp = post(figma_service, iid, body, version="2025-11-25")
        assert resp.status == 202 and resp.body == b"", body


def test_ping(figma_service, iid):
    assert result_of(post(figma_service, iid, req("ping", rid="p-1"), version="2025-11-25"), "p-1") == {}


def test_tools_list_is_the_registry_shared_with_rest(figma_service, iid):
    result = result_of(post(figma_service, iid, req("tools/list"), version="2025-06-18"))
    assert "nextCursor" not in result
    assert result["tools"] == http("GET", f"{figma_service.url}/{iid}/mcp/tools").json["tools"]
    for tool in result["tools"]:
        assert tool["inputSchema"]["type"] == "object" and tool["outputSchema"]["type"] == "object"


def test_tools_list_pages_with_cursors(env, admin):
    server, runtime = start_service(FIGMA, {**env, "MCP_PAGE_SIZE": "4"})
    try:
        iid = admin.create_instance()["instance_id"]
        names, cursor, pages = [], None, 0
        while True:
            params = {"cursor": cursor} if cursor else {}
            result = result_of(post(server, iid, req("tools/list", params), version="2025-11-25"))
            names += [t["name"] for t in result["tools"]]
            pages += 1
            assert len(result["tools"]) <= 4
            cursor = result.get("nextCursor")
            if cursor is None:
                break
        assert pages == 3 and names == runtime.registry.names()
        modern_page = result_of(modern(server, iid, "tools/list"))
        assert len(modern_page["tools"]) == 4 and modern_page["nextCursor"]
    finally:
        server.stop()


def test_invalid_cursor_is_invalid_params(figma_service, iid):
    for cursor in ("not base64!", base64.urlsafe_b64encode(b"other:4").decode(),
                   base64.urlsafe_b64encode(b"tools:999").decode(), base64.urlsafe_b64encode(b"tools:0").decode(),
                   17, {"o": 1}):
        err = rpc_error(post(figma_service, iid, req("tools/list", {"cursor": cursor}), version="2025-11-25"), 200,
                        -32602)
        assert "cursor" in err["message"]
        err = rpc_error(modern(figma_service, iid, "tools/list", {"cursor": cursor}), 400, -32602)
        assert "cursor" in err["message"]


def test_tools_call_reaches_the_upstream_with_the_instance_token(figma_service, iid, figma):
    result = result_of(post(figma_service, iid, req("tools/call", {"name": "get_me", "arguments": {}}),
                            version="2025-11-25"))
    assert result["isError"] is False
    assert result["structuredContent"] == user_for("figd_mcp_secret")
    [text] = result["content"]
    assert text["type"] == "text" and json.loads(text["text"]) == result["structuredContent"]
    [call] = figma.recorded("/v1/me")
    assert call.header("X-Figma-Token") == "figd_mcp_secret"


def test_tools_call_results_equal_the_rest_results(figma_service, iid, figma):
    args = {"file_key": "abc", "ids": ["1:2"], "scale": 9}
    rest = http("POST", f"{figma_service.url}/{iid}/mcp/call", {"name": "render_images", "arguments": args})
    mcp = result_of(post(figma_service, iid, req("tools/call", {"name": "render_images", "arguments": args})))
    assert mcp == rest.json
    assert mcp["isError"] is True and mcp["structuredContent"]["field"] == "scale"
    assert "scale" in mcp["content"][0]["text"]
    assert figma.recorded() == []  # validated before the handler ran


def test_invalid_arguments_name_the_missing_field(figma_service, iid, figma):
    result = result_of(modern(figma_service, iid, "tools/call", {"name": "get_file", "arguments": {}}))
    assert result["isError"] is True and result["structuredContent"]["field"] == "file_key"
    assert figma.recorded() == []


def test_unknown_tool_or_malformed_call_is_invalid_params(figma_service, iid, figma):
    for params in ({"name": "no_such_tool"}, {}, {"name": 5}, {"name": "get_me", "arguments": ["x"]}):
        err = rpc_error(post(figma_service, iid, req("tools/call", params), version="2025-11-25"), 200, -32602)
        if params.get("name") == "no_such_tool":
            assert "no_such_tool" in err["message"] and "get_me" in err["message"]
    assert figma.recorded() == []


def test_unknown_tool_in_the_modern_era_is_400(figma_service, iid):
    rpc_error(modern(figma_service, iid, "tools/call", {"name": "no_such_tool"}), 400, -32602)


def test_upstream_failures_are_is_error_results_with_credentials_redacted(figma_service, iid, figma):
    figma.fail("/v1/me", 401, {"status": 401, "err": "token figd_mcp_secret is invalid"})
    resp = post(figma_service, iid, req("tools/call", {"name": "get_me"}), version="2025-11-25")
    result = result_of(resp)
    assert result["isError"] is True and result["structuredContent"]["code"] == "unauthorized"
    assert "figd_mcp_secret" not in resp.body.decode()


def test_tool_calls_are_recorded_for_usage_and_metrics(admin, figma_service, iid, figma):
    result_of(post(figma_service, iid, req("tools/call", {"name": "get_me"})))
    result_of(modern(figma_service, iid, "tools/call", {"name": "get_me"}))
    result_of(modern(figma_service, iid, "tools/call", {"name": "get_file", "arguments": {}}))

    def usage():
        u = admin("GET", f"/api/instances/{iid}/usage").json
        return u if u["calls"] == 3 else None

    u = wait_for(usage, 10, what="usage to be flushed")
    assert {t["tool"]: t["calls"] for t in u["by_tool"]} == {"get_me": 2, "get_file": 1}
    text = http("GET", figma_service.url + "/metrics").body.decode()
    assert 'mcp_tool_calls_total{outcome="ok",process="figma",tool="get_me"} 2' in text
    assert 'mcp_tool_calls_total{outcome="invalid_arguments",process="figma",tool="get_file"} 1' in text
    assert 'handler="McpHandler",method="POST",process="figma",status="200"' in text


def test_unknown_method_legacy(figma_service, iid):
    rpc_error(post(figma_service, iid, req("resources/list"), version="2025-11-25"), 200, -32601)
    rpc_error(post(figma_service, iid, req("server/discover")), 200, -32601)


# --- MCP-Protocol-Version and sessions ------------------------------------------------------


def test_unsupported_protocol_version_header_is_400(figma_service, iid):
    for version in ("2024-11-05", "2099-01-01", "latest"):
        err = rpc_error(post(figma_service, iid, req("tools/list"), version=version), 400, -32022)
        assert err["data"] == {"supported": list(SUPPORTED_VERSIONS), "requested": version}
        assert version in err["message"]


def test_a_repeated_version_header_is_refused(figma_service, iid):
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    body = json.dumps(req("ping")).encode()
    conn.putrequest("POST", f"/{iid}/mcp")
    for name, value in [("Accept", ACCEPT), ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("MCP-Protocol-Version", "2025-11-25"), ("MCP-Protocol-Version", "2025-06-18")]:
        conn.putheader(name, value)
    conn.endheaders(body)
    resp = conn.getresponse()
    assert resp.status == 400
    answer = json.loads(resp.read())
    assert answer["id"] == 1 and answer["error"]["code"] == -32020 and "more than once" in answer["error"]["message"]
    conn.close()


def test_any_process_serves_any_request_and_session_ids_are_ignored(env, admin, figma):
    a, _ = start_service(FIGMA, env)
    b, _ = start_service(FIGMA, env)
    try:
        iid = admin.create_instance(credentials={"api_key": "figd_two"})["instance_id"]
        init = post(a, iid, req("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                               "clientInfo": {"name": "t", "version": "1"}}))
        assert result_of(init)["protocolVersion"] == "2025-06-18" and "mcp-session-id" not in init.headers
        assert post(b, iid, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    version="2025-06-18").status == 202
        result = result_of(post(b, iid, req("tools/call", {"name": "get_me"}), version="2025-06-18",
                                headers={"Mcp-Session-Id": "made-up-session"}))
        assert result["structuredContent"] == user_for("figd_two")
    finally:
        a.stop()
        b.stop()


def test_get_and_delete_are_405(figma_service, iid):
    for method in ("GET", "DELETE", "PUT"):
        resp = http(method, f"{figma_service.url}/{iid}/mcp", headers={"Accept": "text/event-stream",
                                                                        "Mcp-Session-Id": "x"})
        err = rpc_error(resp, 405, -32000, rid=None)
        assert resp.headers["allow"] == "POST" and err["data"]["code"] == "method_not_allowed"


def test_head_and_unknown_methods_are_405(figma_service, iid):
    assert http("HEAD", f"{figma_service.url}/{iid}/mcp").status == 405
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    conn.request("PROPFIND", f"/{iid}/mcp")
    resp = conn.getresponse()
    assert resp.status == 405 and json.loads(resp.read())["error"]["code"] == -32600
    conn.close()


def test_every_tool_of_every_service_declares_an_object_output_schema():
    from services.github import SERVICE as GITHUB
    from services.slack import SERVICE as SLACK

    for service in (FIGMA, GITHUB, SLACK):
        for tool in service.tools:
            assert tool.output_schema and tool.output_schema["type"] == "object", (service.name, tool.name)


# --- batches ----------------------------------------------------------------------------------


def test_batches_are_answered_in_2025_03_26(figma_service, iid, figma):
    batch = [req("ping", rid=1), {"jsonrpc": "2.0", "method": "notifications/initialized"},
             req("tools/call", {"name": "get_me"}, rid="two"), req("nope", rid=3), {"id": 4},
             req("initialize", {"protocolVersion": "2025-03-26"}, rid=5)]
    for version in (None, "2025-03-26"):
        resp = post(figma_service, iid, batch, version=version)
        assert resp.status == 200, resp.body
        answers = resp.json
        assert [a["id"] for a in answers] == [1, "two", 3, 4, 5]
        assert answers[0]["result"] == {}
        assert answers[1]["result"]["structuredContent"] == user_for("figd_mcp_secret")
        assert answers[2]["error"]["code"] == -32601
        assert answers[3]["error"]["code"] == -32600
        assert answers[4]["error"]["code"] == -32600 and "batch" in answers[4]["error"]["message"]


def test_a_batch_of_notifications_is_202(figma_service, iid):
    resp = post(figma_service, iid, [{"jsonrpc": "2.0", "method": "notifications/initialized"}])
    assert resp.status == 202 and resp.body == b""


def test_batches_are_refused_where_the_version_has_none(figma_service, iid):
    for version in ("2025-06-18", "2025-11-25", MODERN):
        err = rpc_error(post(figma_service, iid, [req("ping")], version=version), 400, -32600, rid=None)
        assert "batch" in err["message"]


def test_empty_or_oversized_batches_are_invalid(figma_service, iid):
    for batch in ([], [req("ping", rid=i) for i in range(MAX_BATCH + 1)]):
        rpc_error(post(figma_service, iid, batch), 400, -32600, rid=None)


# --- modern era (2026-07-28) ------------------------------------------------------------------


def test_server_discover(figma_service, iid):
    result = result_of(modern(figma_service, iid, "server/discover"))
    assert result["supportedVersions"] == list(SUPPORTED_VERSIONS) and MODERN in result["supportedVersions"]
    assert result["capabilities"] == {"tools": {}}
    assert result["resultType"] == "complete"
    assert result["ttlMs"] > 0 and result["cacheScope"] == "private"
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "figma"


def test_modern_tools_list_and_call(figma_service, iid, figma):
    listed = result_of(modern(figma_service, iid, "tools/list"))
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "private" and listed["ttlMs"] > 0
    assert [t["name"] for t in listed["tools"]] == [t.name for t in FIGMA.tools]
    called = result_of(modern(figma_service, iid, "tools/call", {"name": "get_me", "arguments": {}}, rid="c"),
                       "c")
    assert called["resultType"] == "complete" and called["isError"] is False
    assert called["structuredContent"] == user_for("figd_mcp_secret")
    assert called["_meta"]["io.modelcontextprotocol/serverInfo"]["version"] == FIGMA.config.version


def test_meta_fields_are_required_on_every_modern_request(figma_service, iid):
    cases = [
        (None, "_meta"),
        ({"io.modelcontextprotocol/clientCapabilities": {}}, "protocolVersion"),
        ({"io.modelcontextprotocol/protocolVersion": MODERN}, "clientCapabilities"),
        ({"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": []},
         "clientCapabilities"),
    ]
    for meta, missing in cases:
        err = rpc_error(modern(figma_service, iid, "tools/list", meta=meta), 400, -32602)
        assert missing in err["message"]


def test_headers_must_match_the_body(figma_service, iid, figma):
    cases = [
        ({"MCP-Protocol-Version": None}, "MCP-Protocol-Version"),
        ({"MCP-Protocol-Version": "2025-11-25"}, "MCP-Protocol-Version"),
        ({"Mcp-Method": None}, "Mcp-Method"),
        ({"Mcp-Method": "tools/list"}, "Mcp-Method"),
        ({"Mcp-Name": None}, "Mcp-Name"),
        ({"Mcp-Name": "get_file"}, "Mcp-Name"),
        ({"Mcp-Name": "=?base64?not-base64?="}, "Mcp-Name"),
    ]
    for headers, word in cases:
        err = rpc_error(modern(figma_service, iid, "tools/call", {"name": "get_me"}, headers=headers), 400, -32020)
        assert word in err["message"], headers
    assert figma.recorded() == []


def test_mcp_name_may_be_base64_encoded(figma_service, iid):
    encoded = "=?base64?" + base64.b64encode(b"get_me").decode() + "?="
    assert result_of(modern(figma_service, iid, "tools/call", {"name": "get_me"},
                            headers={"Mcp-Name": encoded}))["isError"] is False


def test_unknown_method_modern_is_404(figma_service, iid):
    for method in ("nope/nothing", "ping", "initialize", "resources/list"):
        err = rpc_error(modern(figma_service, iid, method, {"protocolVersion": "2025-11-25"}), 404, -32601)
        if method == "initialize":
            assert "2025-11-25" in err["message"]


def test_modern_notification_is_202_and_responses_are_refused(figma_service, iid):
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": META, "requestId": 1}}
    resp = post(figma_service, iid, note, version=MODERN)
    assert resp.status == 202 and resp.body == b""
    rpc_error(post(figma_service, iid, {"jsonrpc": "2.0", "id": 9, "result": {}}, version=MODERN), 400, -32600, 9)


# --- both eras: Accept, Content-Type, JSON, JSON-RPC shape --------------------------------------


def test_accept_without_json_is_406(figma_service, iid):
    for accept in ("text/html", "text/event-stream", "application/json;q=0, text/event-stream"):
        err = rpc_error(post(figma_service, iid, req("ping"), headers={"Accept": accept}), 406, -32600, rid=None)
        assert err["data"]["code"] == "not_acceptable"


def test_accept_with_json_is_fine(figma_service, iid):
    for accept in (None, "*/*", "application/*", "application/json"):
        assert result_of(post(figma_service, iid, req("ping"), headers={"Accept": accept})) == {}, accept


def test_content_type_must_be_json(figma_service, iid):
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        err = rpc_error(post(figma_service, iid, req("ping"), headers={"Content-Type": ctype}), 415, -32600,
                        rid=None)
        assert err["data"]["code"] == "unsupported_media_type"


def test_content_type_with_charset_is_fine(figma_service, iid):
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert result_of(post(figma_service, iid, req("ping"), headers=headers)) == {}


def test_malformed_json_is_parse_error(figma_service, iid):
    for raw in (b"", b"{nope", b"\xc3\x28", b"[" * 100000, b'{"a": NaN}'):
        for version in (None, MODERN):
            rpc_error(post(figma_service, iid, raw=raw, version=version), 400, -32700, rid=None)


def test_invalid_requests(figma_service, iid):
    cases = [
        (5, None), ("x", None), ({"id": 1, "method": "ping"}, 1), ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 1),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, None),
        ({"jsonrpc": "2.0", "id": 1, "method": 3}, 1), ({"jsonrpc": "2.0", "id": 1}, 1),
    ]
    for body, rid in cases:
        for version in ("2025-11-25", MODERN):
            rpc_error(post(figma_service, iid, body, version=version), 400, -32600, rid=rid)


def test_params_must_be_an_object(figma_service, iid):
    rpc_error(post(figma_service, iid, {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}), 400, -32602)


def test_body_too_large_is_413_before_it_is_read(figma_service, iid):
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    conn.putrequest("POST", f"/{iid}/mcp")
    for name, value in [("Accept", ACCEPT), ("Content-Type", "application/json"), ("Content-Length", str(5 << 20))]:
        conn.putheader(name, value)
    conn.endheaders()  # the body is never sent: the answer must not wait for it
    resp = conn.getresponse()
    assert resp.status == 413 and resp.getheader("Connection") == "close"
    answer = json.loads(resp.read())
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert answer["error"]["data"]["code"] == "payload_too_large"
    conn.close()


# --- Origin and Host ----------------------------------------------------------------------------


def test_a_foreign_origin_is_403_before_the_instance_is_looked_up(figma_service, iid):
    for origin in ("https://evil.example", "null", "http://localhost.evil.example", "file://",
                   "http://127.0.0.1.nip.io:8000"):
        for target in (iid, str(uuid.uuid4()), "not-a-uuid"):
            resp = post(figma_service, target, req("ping"), headers={"Origin": origin})
            err = rpc_error(resp, 403, -32000, rid=None)
            assert err["data"]["code"] == "origin_not_allowed"


def test_an_answer_given_before_the_body_is_read_closes_the_connection(figma_service, iid):
    # Tornado drops the connection when it answers before reading a body; the client must be told,
    # or a keep-alive client sends its next request into the closing socket.
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    body = json.dumps(req("ping")).encode()
    base = {"Accept": ACCEPT, "Content-Type": "application/json"}
    for _ in range(2):  # keep-alive works for answers given after the body
        conn.request("POST", f"/{iid}/mcp", body=body, headers=base)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") is None
        resp.read()
    conn.request("POST", f"/{uuid.uuid4()}/mcp", body=body, headers=base)
    resp = conn.getresponse()
    assert resp.status == 404 and resp.getheader("Connection") == "close"
    conn.close()


def test_local_origins_are_allowed(figma_service, iid):
    for origin in ("http://localhost:6274", "http://127.0.0.1", "https://[::1]:8443", "http://LOCALHOST:3000"):
        assert result_of(post(figma_service, iid, req("ping"), headers={"Origin": origin})) == {}, origin


def test_a_foreign_host_is_421(figma_service, iid):
    resp = post(figma_service, iid, req("ping"), headers={"Host": "attacker.example:80"})
    err = rpc_error(resp, 421, -32600, rid=None)
    assert err["data"]["code"] == "host_not_allowed"


def test_public_url_and_configured_origins_and_hosts_are_allowed(env, admin):
    extra = {"PUBLIC_URL": "https://mcp.example.com", "ALLOWED_ORIGINS": "https://app.example.com,http://dev:*"}
    server, _ = start_service(FIGMA, {**env, **extra})
    try:
        iid = admin.create_instance()["instance_id"]
        for origin in ("https://mcp.example.com", "https://app.example.com", "http://dev:5173"):
            assert result_of(post(server, iid, req("ping"), headers={"Origin": origin})) == {}, origin
        for origin in ("http://localhost:3000", "http://app.example.com", "https://mcp.example.com:8443"):
            rpc_error(post(server, iid, req("ping"), headers={"Origin": origin}), 403, -32000, rid=None)
        # nginx passes Host $host (PUBLIC_URL's name); localhost stays allowed for direct access.
        assert result_of(post(server, iid, req("ping"), headers={"Host": "mcp.example.com"})) == {}
        assert result_of(post(server, iid, req("ping"))) == {}
    finally:
        server.stop()


def test_allow_lists_are_validated_when_settings_load():
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        load_settings({"ALLOWED_ORIGINS": "ftp://files.example.com"})
    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        load_settings({"ALLOWED_HOSTS": "a b"})
    with pytest.raises(ConfigError, match="MCP_PAGE_SIZE"):
        load_settings({"MCP_PAGE_SIZE": "0"})
    anything = load_settings({"ALLOWED_ORIGINS": "*", "ALLOWED_HOSTS": "*"}).origin_policy
    assert anything.origin_allowed("https://evil.example") and anything.host_allowed("evil.example")


# --- instance resolution reaches MCP clients as JSON-RPC errors --------------------------------


def test_bad_instance_id_is_400(figma_service):
    err = rpc_error(post(figma_service, "not-a-uuid", req("ping")), 400, -32602, rid=None)
    assert err["data"]["code"] == "invalid_instance_id" and err["data"]["status"] == 400


def test_unknown_instance_is_404(figma_service, figma):
    err = rpc_error(post(figma_service, str(uuid.uuid4()), req("tools/call", {"name": "get_me"})), 404, -32000,
                    rid=None)
    assert err["data"]["code"] == "instance_not_found"
    assert figma.recorded() == []


def test_inactive_and_expired_instances_are_403(admin, figma_service, database_url):
    inactive = admin.create_instance(user="i@example.com")["instance_id"]
    assert admin("PATCH", f"/api/instances/{inactive}", {"status": "inactive"}).status == 200
    err = rpc_error(modern(figma_service, inactive, "tools/list"), 403, -32000, rid=None)
    assert err["data"]["code"] == "instance_inactive" and "inactive" in err["message"]
    expired = admin.create_instance(user="e@example.com")["instance_id"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE service_instances SET status = 'expired' WHERE id = %s", (expired,))
    resp = wait_for(lambda: (r := post(figma_service, expired, req("ping"))).status == 403 and r, 6, what="403")
    assert rpc_error(resp, 403, -32000, rid=None)["data"]["code"] == "instance_expired"


def test_database_down_is_503_with_retry_after(spawn):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    service = spawn("services.figma", "FIGMA_PORT", {"DATABASE_URL": dead, "DB_TIMEOUT": "0.5"})
    resp = post(service, str(uuid.uuid4()), req("initialize", {"protocolVersion": "2025-11-25"}))
    err = rpc_error(resp, 503, -32000, rid=None)
    assert resp.headers["retry-after"] == "5" and err["data"]["code"] == "database_unavailable"
    assert "postgres" not in resp.body.decode().lower()


def test_an_instance_over_its_rate_gets_429_with_retry_after(env, admin):
    server, _ = start_service(FIGMA, {**env, "RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "2"})
    try:
        iid = admin.create_instance()["instance_id"]
        answers = [post(server, iid, req("ping")) for _ in range(3)]
        assert [a.status for a in answers] == [200, 200, 429]
        err = rpc_error(answers[2], 429, -32000, rid=None)
        assert err["data"]["code"] == "rate_limited" and int(answers[2].headers["retry-after"]) >= 1
    finally:
        server.stop()


def test_the_api_hands_out_the_mcp_url(admin):
    inst = admin.create_instance()
    assert inst["urls"]["mcp"].endswith(f"/{inst['instance_id']}/mcp")
