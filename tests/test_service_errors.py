"""Every client mistake on a service gets a JSON error with the right status; never HTML or a traceback."""

from __future__ import annotations

import http.client as http_client
import json
import uuid

import pytest

from tests.support import free_port

# Tests that need one application in-process use pytest-tornado (the app on the test's loop, see
# tests/inprocess.py); those that drive raw sockets use figma_service, a server in its own thread.
pytest_plugins = ["tests.inprocess"]


@pytest.fixture
def instance(admin):
    return admin.create_instance(credentials={"api_key": "figd_secret_value"})["instance_id"]


def assert_json_error(resp, status, code=None):
    assert resp.status == status, resp.body
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    text = resp.body.decode()
    assert "Traceback" not in text and "<html" not in text.lower() and "figd_secret_value" not in text


@pytest.mark.gen_test
async def test_unknown_route(fetch):
    assert_json_error(await fetch("GET", "/nothing/here/at/all"), 404, "not_found")
    assert_json_error(await fetch("DELETE", "/"), 404, "not_found")


@pytest.mark.gen_test
async def test_wrong_method(fetch, instance):
    assert_json_error(await fetch("GET", f"/{instance}/mcp/call"), 405, "method_not_allowed")
    assert_json_error(await fetch("POST", f"/{instance}/mcp/tools", {}), 405)
    assert_json_error(await fetch("POST", "/health", {}), 405)


@pytest.mark.parametrize("raw,code", [
    (b"", "empty_body"), (b"{nope", "invalid_json"), (b"[]", "invalid_json"), (b"\xc3\x28", "invalid_json"),
    (b"[" * 100000, "invalid_json"),
])
@pytest.mark.gen_test
async def test_malformed_json(fetch, instance, raw, code):
    assert_json_error(await fetch("POST", f"/{instance}/mcp/call", raw=raw), 400, code)


@pytest.mark.parametrize("body,status,field", [
    ({}, 400, "name"), ({"name": ""}, 400, "name"), ({"name": 5}, 400, "name"),
    ({"name": "get_me", "arguments": []}, 400, "arguments"), ({"name": "no_such_tool"}, 404, "name"),
])
@pytest.mark.gen_test
async def test_missing_or_wrong_fields(fetch, instance, body, status, field, figma):
    resp = await fetch("POST", f"/{instance}/mcp/call", body)
    assert_json_error(resp, status)
    assert resp.json["error"]["field"] == field
    assert figma.recorded() == []


@pytest.mark.gen_test
async def test_invalid_arguments_are_an_is_error_result_naming_the_field(fetch, instance, figma):
    resp = await fetch("POST", f"/{instance}/mcp/call",
                       {"name": "render_images", "arguments": {"file_key": "abc", "ids": ["1:2"], "scale": 9}})
    assert resp.status == 200
    result = resp.json
    assert result["isError"] is True
    assert result["structuredContent"]["field"] == "scale"
    assert "scale" in result["content"][0]["text"]
    assert figma.recorded() == []


def test_body_too_large_is_refused_before_it_is_read(figma_service, instance):
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    conn.putrequest("POST", f"/{instance}/mcp/call")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(5 << 20))
    conn.endheaders()  # the body is never sent: the answer must not wait for it
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "payload_too_large"
    conn.close()


def test_chunked_body_too_large_is_413(figma_service, instance):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    conn.request("POST", f"/{instance}/mcp/call", body=chunks(), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 413
    assert json.loads(resp.read())["error"]["code"] == "payload_too_large"
    conn.close()


@pytest.mark.parametrize("status,headers,code,words", [
    (401, {}, "unauthorized", "replace"),
    (403, {}, "forbidden", "token"),
    (404, {}, "not_found", "file key"),
    (429, {"Retry-After": "42", "X-Figma-Rate-Limit-Type": "low"}, "rate_limited", "42"),
    (500, {}, "upstream_unavailable", "try again"),
])
@pytest.mark.gen_test
async def test_upstream_failures_become_is_error_results(fetch, instance, figma, status, headers, code, words):
    figma.fail("/v1/files/abc", status, {"status": status, "err": "nope"}, headers)
    resp = await fetch("POST", f"/{instance}/mcp/call", {"name": "get_file", "arguments": {"file_key": "abc"}})
    assert resp.status == 200
    result = resp.json
    assert result["isError"] is True
    err = result["structuredContent"]
    assert err["upstream"] == "figma" and err["status"] == status and err["code"] == code
    assert words in result["content"][0]["text"]
    if status == 429:
        assert err["retry_after_s"] == 42 and err["rate_limit_type"] == "low"


@pytest.mark.parametrize("overrides", [{"FIGMA_API_URL": f"http://127.0.0.1:{free_port()}"}], indirect=True)
@pytest.mark.gen_test
async def test_unreachable_upstream_is_an_is_error_result(fetch, instance):
    result = (await fetch("POST", f"/{instance}/mcp/call", {"name": "get_me"})).json
    assert result["isError"] is True and result["structuredContent"]["code"] == "unreachable"


@pytest.mark.gen_test
async def test_direct_endpoint(fetch, instance, figma):
    ok = await fetch("GET", f"/{instance}/api/files/abc123?depth=1")
    assert ok.status == 200 and ok.json["name"] == "File abc123"
    [req] = figma.recorded("/v1/files/abc123")
    assert req.query == {"depth": "1"} and req.header("X-Figma-Token") == "figd_secret_value"
    assert_json_error(await fetch("GET", f"/{instance}/api/files/missing"), 404, "upstream_not_found")
    assert_json_error(await fetch("GET", f"/{instance}/api/files/abc?depth=x"), 400)
    assert_json_error(await fetch("GET", f"/{instance}/api/files/a.b"), 400)
    figma.fail("/v1/files/abc", 429, {"status": 429, "err": "Rate limit"}, {"Retry-After": "7"})
    limited = await fetch("GET", f"/{instance}/api/files/abc")
    assert_json_error(limited, 429)
    assert limited.headers["retry-after"] == "7"


def test_a_rest_answer_given_before_the_body_is_read_closes_the_connection(figma_service, admin):
    # As on /mcp: Tornado drops the connection when it answers before reading a body (here a 404
    # from the instance lookup), so the answer says Connection: close; answers after the body keep it.
    iid = admin.create_instance()["instance_id"]
    conn = http_client.HTTPConnection("127.0.0.1", figma_service.port, timeout=10)
    body, headers = json.dumps({"name": "get_me"}).encode(), {"Content-Type": "application/json"}
    for _ in range(2):
        conn.request("POST", f"/{iid}/mcp/call", body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") is None
        resp.read()
    conn.request("POST", f"/{uuid.uuid4()}/mcp/call", body=body, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 404 and resp.getheader("Connection") == "close"
    assert json.loads(resp.read())["error"]["code"] == "instance_not_found"
    conn.close()


def padded_call(size: int) -> bytes:
    """A valid get_me call of exactly ``size`` bytes (JSON whitespace as padding)."""
    call = b'{"name": "get_me", "arguments": {}}'
    return call[:-1] + b" " * (size - len(call)) + b"}"


@pytest.mark.parametrize("overrides", [{"MAX_BODY_BYTES": "2048"}], indirect=True)
@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.gen_test
async def test_the_configured_body_limit_is_the_one_applied(fetch, instance, figma, framing):
    for size, status in [(3000, 413), (1500, 200)]:
        body = padded_call(size)
        assert len(body) == size
        if framing == "chunked":  # no Content-Length: Tornado's client sends the chunks as they come
            async def chunks(write, body=body):
                await write(body[:1000])
                await write(body[1000:])

            resp = await fetch("POST", f"/{instance}/mcp/call", body_producer=chunks,
                               headers={"Content-Type": "application/json"})
        else:
            resp = await fetch("POST", f"/{instance}/mcp/call", raw=body)
        assert resp.status == status, (size, resp.body)
        if status == 413:
            assert resp.json["error"]["code"] == "payload_too_large" and "2048" in resp.json["error"]["message"]
        else:
            assert resp.json["isError"] is False
