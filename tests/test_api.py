"""The main API: auth, instance CRUD, users, usage, validation; secrets never come back."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from mcp.tenancy.credentials import CredentialCipher, parse_key
from tests.support import http, wait_for


def test_health_is_public_and_has_the_seed_shape(api):
    resp = http("GET", api.url + "/health")
    assert resp.status == 200
    assert set(resp.json) == {"service", "status", "uptime", "timestamp", "port", "version", "pid"}


@pytest.mark.parametrize("token,code", [(None, "missing_token"), ("wrong", "invalid_token")])
def test_admin_calls_need_the_token(admin, token, code):
    for method, path in [("GET", "/api/services"), ("POST", "/api/instances"),
                         ("GET", f"/api/instances/{uuid.uuid4()}"), ("GET", "/api/users/a@b.co/instances")]:
        resp = admin(method, path, {} if method == "POST" else None, token=token)
        assert resp.status == 401, (method, path)
        assert resp.json["error"]["code"] == code
        assert "www-authenticate" in resp.headers


def test_catalog_lists_figma_with_live_health(admin, figma_service):
    resp = admin("GET", "/api/services")
    assert resp.status == 200
    [figma] = [s for s in resp.json["services"] if s["name"] == "figma"]
    assert figma["port"] == 49280 and figma["auth_type"] == "api_key"
    # The catalog's port is the production one; in tests nothing listens there (or something else does).
    assert figma["health"]["status"] in {"healthy", "unreachable", "unhealthy"}


def test_create_get_patch_delete(admin, database_url, credentials_key):
    created = admin.create_instance(user="Grace@Example.com", credentials={"api_key": "figd_topsecret"},
                                    expires_at="2099-05-01T00:00:00Z")
    iid = created["instance_id"]
    assert uuid.UUID(iid)
    assert created["user"] == "grace@example.com"
    assert created["status"] == "active"
    assert created["expires_at"].startswith("2099-05-01")
    assert created["urls"]["call"].endswith(f"/{iid}/mcp/call")
    assert "figd_topsecret" not in str(created) and "credentials" not in created

    got = admin("GET", f"/api/instances/{iid}")
    assert got.status == 200 and got.json["instance_id"] == iid
    assert b"figd_topsecret" not in got.body

    patched = admin("PATCH", f"/api/instances/{iid}", {"status": "inactive", "expires_at": None,
                                                      "credentials": {"api_key": "figd_rotated"}})
    assert patched.status == 200
    assert patched.json["status"] == "inactive" and patched.json["expires_at"] is None
    assert b"figd_rotated" not in patched.body

    # Stored encrypted, bound to the instance; the new credentials replaced the old.
    with psycopg.connect(database_url) as conn:
        (raw,) = conn.execute("SELECT credentials_enc FROM service_instances WHERE id = %s", (iid,)).fetchone()
    assert "figd" not in raw and raw.startswith("v1:")
    assert CredentialCipher([parse_key(credentials_key)]).decrypt(uuid.UUID(iid), raw) == {"api_key": "figd_rotated"}

    listed = admin("GET", "/api/users/GRACE@example.com/instances")
    assert listed.status == 200 and [i["instance_id"] for i in listed.json["instances"]] == [iid]

    assert admin("DELETE", f"/api/instances/{iid}").status == 204
    assert admin("GET", f"/api/instances/{iid}").status == 404
    assert admin("DELETE", f"/api/instances/{iid}").status == 404
    assert admin("GET", "/api/users/nobody@example.com/instances").status == 404


@pytest.mark.parametrize("body,field", [
    ({"user": "a@b.co", "credentials": {"api_key": "k"}}, "service"),
    ({"service": "figma", "credentials": {"api_key": "k"}}, "user"),
    ({"service": "figma", "user": "a@b.co"}, "credentials"),
    ({"service": "nope", "user": "a@b.co", "credentials": {"api_key": "k"}}, "service"),
    ({"service": 7, "user": "a@b.co", "credentials": {"api_key": "k"}}, "service"),
    ({"service": "figma", "user": "not-an-email", "credentials": {"api_key": "k"}}, "user"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"password": "k"}}, "credentials"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": ""}}, "credentials"),
    ({"service": "figma", "user": "a@b.co", "credentials": "k"}, "credentials"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": "k", "extra": "x"}}, "credentials"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": "k"}, "expires_at": "soon"}, "expires_at"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": "k"}, "expires_at": "2001-01-01T00:00:00Z"},
     "expires_at"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": "k"}, "expires_at": "2099-01-01T00:00:00"},
     "expires_at"),
    ({"service": "figma", "user": "a@b.co", "credentials": {"api_key": "k"}, "colour": "red"}, "colour"),
])
def test_create_validation_names_the_field(admin, body, field):
    resp = admin("POST", "/api/instances", body)
    assert resp.status == 400, resp.body
    assert resp.json["error"]["field"] == field
    assert resp.json["error"]["message"]
    assert "Traceback" not in resp.body.decode()


def test_credential_errors_name_what_the_service_accepts(admin):
    resp = admin("POST", "/api/instances", {"service": "figma", "user": "a@b.co", "credentials": {"token": "x"}})
    msg = resp.json["error"]["message"]
    assert '"api_key"' in msg and '"access_token"' in msg and "token" in msg


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b"\xff\xfe", b'"text"', b"null"])
def test_malformed_bodies_are_400(admin, raw):
    resp = admin("POST", "/api/instances", raw=raw)
    assert resp.status == 400
    assert resp.json["error"]["code"] in {"invalid_json", "empty_body"}


@pytest.mark.parametrize("body,field", [
    ({"status": "paused"}, "status"), ({"expires_at": 5}, "expires_at"),
    ({"credentials": {"nope": "x"}}, "credentials"),
    ({"owner": "x"}, "owner"),
])
def test_patch_validation(admin, body, field):
    iid = admin.create_instance()["instance_id"]
    resp = admin("PATCH", f"/api/instances/{iid}", body)
    assert resp.status == 400 and resp.json["error"]["field"] == field
    assert admin("PATCH", f"/api/instances/{iid}", {}).status == 400


def test_unknown_and_malformed_instance_ids(admin):
    assert admin("GET", "/api/instances/xyz").status == 400
    assert admin("PATCH", f"/api/instances/{uuid.uuid4()}", {"status": "active"}).status == 404
    assert admin("GET", f"/api/instances/{uuid.uuid4()}/usage").status == 404


def test_usage_counts_calls_errors_and_latency(admin, figma_service, figma):
    iid = admin.create_instance(credentials={"api_key": "figd_u"})["instance_id"]
    call = f"{figma_service.url}/{iid}/mcp/call"
    for _ in range(3):
        assert http("POST", call, {"name": "get_me"}).json["isError"] is False
    figma.fail("/v1/files/", 404, {"status": 404, "err": "Not found"})
    assert http("POST", call, {"name": "get_file", "arguments": {"file_key": "abc"}}).json["isError"] is True

    def usage():
        u = admin("GET", f"/api/instances/{iid}/usage").json
        return u if u["calls"] == 4 else None

    u = wait_for(usage, 10, what="usage to be flushed")
    assert u["errors"] == 1
    by_tool = {t["tool"]: t for t in u["by_tool"]}
    assert by_tool["get_me"]["calls"] == 3 and by_tool["get_me"]["errors"] == 0
    assert by_tool["get_file"]["errors"] == 1
    assert u["latency_ms"]["max"] >= u["latency_ms"]["p50"] > 0
    assert admin("GET", f"/api/instances/{iid}").json["last_used_at"] is not None


def test_unknown_routes_and_methods_are_json(admin):
    assert admin("GET", "/api/nothing").json["error"]["code"] == "not_found"
    resp = admin("PUT", "/api/instances", {})
    assert resp.status == 405 and resp.json["error"]["code"] == "method_not_allowed"


@pytest.fixture
def start_api(env):
    """Start the main API with settings of the test's own; every one is stopped after the test."""
    from services.api.app import create_runtime, make_app
    from tests.conftest import ThreadServer
    from tests.support import free_port

    started = []

    def start(**settings):
        runtime = create_runtime({**env, **settings})
        runtime.port = free_port()
        server = ThreadServer(make_app(runtime), runtime.port, runtime.inflight, runtime.start, runtime.stop)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_a_wrong_token_of_the_right_length_is_refused(start_api):
    import secrets

    real = secrets.token_urlsafe(32)  # what scripts/start-all-services writes: 43 characters
    api = start_api(ADMIN_TOKEN=real)
    last = "A" if real[-1] != "A" else "B"
    for wrong in [secrets.token_urlsafe(32), real[:-1] + last, last + real[1:], real.swapcase()]:
        assert len(wrong) == len(real) and wrong != real
        resp = http("GET", api.url + "/api/services", headers={"Authorization": f"Bearer {wrong}"})
        assert resp.status == 401, wrong
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json["error"]["code"] == "invalid_token"
        text = resp.body.decode() + str(resp.headers)
        assert real not in text and wrong not in text
    assert http("GET", api.url + "/api/services", headers={"Authorization": f"Bearer {real}"}).status == 200


@pytest.mark.parametrize("header,status", [
    # RFC 7235: the scheme is case-insensitive and separated from the credentials by one or more spaces.
    ("Bearer {t}", 200), ("bearer {t}", 200), ("BEARER {t}", 200), ("Bearer  {t}", 200),
    ("Basic {t}", 401), ("Bearer{t}", 401), ("{t}", 401), ("Bearer {t} {t}", 401), ("Bearer {t}x", 401),
    ("Bearer\t{t}", 401), ("Bearer", 401),
])
def test_the_authorization_header_forms_accepted(api, header, status):
    from tests.conftest import ADMIN_TOKEN

    resp = http("GET", api.url + "/api/services", headers={"Authorization": header.format(t=ADMIN_TOKEN)})
    assert resp.status == status, resp.body
    if status == 401:
        assert resp.json["error"]["code"] == "invalid_token"


def test_api_metrics_are_public_and_show_no_id_or_token(admin, api, figma_service):
    import re

    from tests.conftest import ADMIN_TOKEN

    iid = admin.create_instance(credentials={"api_key": "figd_metrics_secret"})["instance_id"]
    admin("GET", f"/api/instances/{iid}")
    admin("GET", f"/api/instances/{iid}/usage")
    admin("PATCH", f"/api/instances/{iid}", {"status": "inactive"})
    admin("GET", f"/api/instances/{uuid.uuid4()}")
    admin("GET", f"/api/instances/{iid}", token="wrong")
    new = admin("POST", f"/api/instances/{iid}/rotate-id").json["instance_id"]
    admin("GET", f"/api/instances/{new}/usage")
    admin("DELETE", f"/api/instances/{new}")
    resp = http("GET", api.url + "/metrics")  # no token: public
    assert resp.status == 200
    text = resp.body.decode()
    assert 'mcp_http_requests_total{' in text and 'handler="InstanceResourceHandler"' in text  # measured
    assert not re.search(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", text, re.I), text
    # Sample values are floats printed in full (0.0022614002227783203): an id could only hide in names and labels.
    series = "\n".join(line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#"))
    assert not re.search(r"[0-9a-f]{12,}", series, re.I), series
    assert ADMIN_TOKEN not in text and "figd_metrics_secret" not in text and "ada@example.com" not in text


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_the_configured_body_limit_is_the_one_applied_by_the_api(start_api, framing):
    import http.client as http_client
    import json

    from tests.conftest import ADMIN_TOKEN

    api = start_api(MAX_BODY_BYTES="2048")
    for n, (size, status) in enumerate([(3000, 413), (1500, 201)]):
        start = json.dumps({"service": "figma", "user": f"b{n}@example.com",
                            "credentials": {"api_key": "figd_body"}}).encode()
        body = start[:-1] + b" " * (size - len(start)) + b"}"
        assert len(body) == size
        conn = http_client.HTTPConnection("127.0.0.1", api.port, timeout=30)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"}
        if framing == "chunked":
            conn.request("POST", "/api/instances", body=iter([body[:1000], body[1000:]]), encode_chunked=True,
                         headers=headers)
        else:
            conn.request("POST", "/api/instances", body=body, headers=headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        conn.close()
        assert resp.status == status, (size, answer)
        if status == 413:
            assert answer["error"]["code"] == "payload_too_large"
        else:
            assert uuid.UUID(answer["instance_id"])
