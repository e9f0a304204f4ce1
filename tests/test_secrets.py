"""Secrets stay secret: key rotation re-encrypts every row, instance ids can be rotated, and the
raw rows, responses and metrics never show a credential."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest

from db.rotate_keys import rotate
from mcp.tenancy.credentials import CredentialCipher, DecryptionError, generate_key, key_id, parse_key
from tests.support import ROOT, http, wait_for


def stored(database_url: str, iid: str) -> str:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT credentials_enc FROM service_instances WHERE id = %s", (iid,)).fetchone()[0]


def test_ciphertext_is_bound_to_its_instance():
    cipher = CredentialCipher([parse_key(generate_key())])
    a, b = uuid.uuid4(), uuid.uuid4()
    sealed = cipher.encrypt(a, {"api_key": "figd_x"})
    assert cipher.decrypt(a, sealed) == {"api_key": "figd_x"}
    with pytest.raises(DecryptionError):
        cipher.decrypt(b, sealed)  # copied onto another row, it does not open
    with pytest.raises(DecryptionError):
        cipher.decrypt(a, sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1])
    with pytest.raises(DecryptionError):
        CredentialCipher([parse_key(generate_key())]).decrypt(a, sealed)


def test_key_rotation_re_encrypts_every_row_and_services_keep_working(admin, env, database_url, figma):
    from services.figma import SERVICE
    from tests.conftest import start_service

    old_key = env["CREDENTIALS_KEY"]
    ids = [admin.create_instance(user=f"r{i}@example.com", credentials={"api_key": f"figd_rot_{i}"})["instance_id"]
           for i in range(5)]
    new_key = generate_key()
    both = CredentialCipher([parse_key(new_key), parse_key(old_key)])
    report = rotate(database_url, both, batch=2)
    assert report.rotated == 5 and report.unreadable == []
    for iid in ids:
        assert stored(database_url, iid).startswith(f"v1:{key_id(parse_key(new_key))}:")
    assert rotate(database_url, both).rotated == 0  # idempotent
    # A process holding only the new key serves every instance.
    server, _ = start_service(SERVICE, {**env, "CREDENTIALS_KEY": new_key})
    try:
        for iid in ids:
            result = http("POST", f"{server.url}/{iid}/mcp/call", {"name": "get_me"}).json
            assert result["isError"] is False
        assert [r.header("X-Figma-Token") for r in figma.recorded("/v1/me")] == [f"figd_rot_{i}" for i in range(5)]
    finally:
        server.stop()


def test_rotation_command_reports_rows_no_key_can_read(admin, env, database_url):
    admin.create_instance()
    out = subprocess.run([sys.executable, "-m", "db.rotate_keys", "--database-url", database_url], cwd=ROOT,
                         env={**env, "CREDENTIALS_KEY": generate_key(), "CREDENTIALS_OLD_KEYS": ""},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no configured key can read" in out.stderr


def test_rotating_an_instance_id_revokes_the_old_url_at_once(admin, spawn, database_url):
    service = spawn("services.figma", "FIGMA_PORT", {"INSTANCE_CACHE_TTL": "300"})
    inst = admin.create_instance(credentials={"api_key": "figd_keep"})
    old = inst["instance_id"]
    assert http("POST", f"{service.url}/{old}/mcp/call", {"name": "get_me"}).status == 200  # cached
    # Usage is written in batches; let this call's record land so the rotation can carry it over.
    wait_for(lambda: admin("GET", f"/api/instances/{old}/usage").json["calls"] == 1, 10)
    rotated = admin("POST", f"/api/instances/{old}/rotate-id")
    assert rotated.status == 200
    new = rotated.json["instance_id"]
    assert new != old and rotated.json["previous_instance_id"] == old
    assert rotated.json["urls"]["call"].endswith(f"/{new}/mcp/call")
    wait_for(lambda: http("GET", f"{service.url}/{old}/mcp/tools").status == 404, 1.5, what="old id revoked")
    result = http("POST", f"{service.url}/{new}/mcp/call", {"name": "get_me"}).json
    assert result["isError"] is False
    assert admin("GET", f"/api/instances/{old}").status == 404
    assert admin("POST", f"/api/instances/{old}/rotate-id").status == 404
    usage = wait_for(lambda: (u := admin("GET", f"/api/instances/{new}/usage").json)["calls"] >= 2 and u, 10)
    assert usage["calls"] == 2  # the history moved with the instance


def mcp_tools_call(service, iid: str, name: str, arguments: dict | None = None):
    """tools/call on the MCP endpoint (POST /{id}/mcp), as a 2025-11-25 client sends it."""
    import json

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}
    return http("POST", f"{service.url}/{iid}/mcp", raw=json.dumps(body).encode(),
                headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
                         "MCP-Protocol-Version": "2025-11-25"})


@pytest.mark.parametrize("upstream", ["github", "slack"])
def test_an_upstream_quoting_the_token_is_redacted_on_both_transports(admin, spawn, github, slack, upstream):
    """The token an upstream echoes in its error reaches neither the client (REST and MCP) nor a log."""
    if upstream == "github":
        secret, tool, path = "ghp_PLANTED_github_7731", "get_me", "^/user$"
        service = spawn("services.github", "GITHUB_PORT", {"GITHUB_API_URL": github.url, "LOG_LEVEL": "DEBUG"})
        iid = admin.create_instance(service="github", credentials={"api_key": secret})["instance_id"]
        sim = github

        def quoting(status: int) -> dict:
            return {"message": f"Bad credentials: token {secret} was rejected",
                    "documentation_url": "https://docs.github.com/rest"}
    else:
        secret, tool, path = "xoxb-7731-PLANTED-slack", "list_channels", "conversations.list"
        service = spawn("services.slack", "SLACK_PORT", {"SLACK_API_URL": slack.api_url, "LOG_LEVEL": "DEBUG"})
        iid = admin.create_instance(service="slack", credentials={"access_token": secret})["instance_id"]
        sim = slack

        def quoting(status: int) -> dict:
            return {"ok": False, "error": "invalid_auth" if status < 500 else "internal_error",
                    "response_metadata": {"messages": [f"token {secret} is not valid here"]}}

    answers = []
    for status in (401, 500):
        sim.fail(path, status, quoting(status))
        rest = http("POST", f"{service.url}/{iid}/mcp/call", {"name": tool, "arguments": {}})
        assert rest.status == 200 and rest.json["isError"] is True, rest.body
        sim.fail(path, status, quoting(status))
        mcp = mcp_tools_call(service, iid, tool)
        assert mcp.status == 200 and mcp.json["result"]["isError"] is True, mcp.body
        answers += [rest, mcp]
    assert len(sim.recorded(path)) == 4  # every call reached the upstream and got the quoting answer
    for resp in answers:
        text = resp.body.decode()
        assert secret not in text and "[redacted]" in text, text
    assert service.stop() == 0
    output = service.output()
    assert "POST /{instance}/mcp" in output  # the log is there
    assert secret not in output and iid not in output
