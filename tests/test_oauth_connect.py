"""Connecting accounts: POST /api/connect, the provider's authorize page (a simulator whose user clicks Allow), a
real HTTP redirect to the API's callback, and the instance serving calls with the new token; the failures that
must change nothing; the API's background job that keeps refresh tokens alive.

Every service (figma, github, slack) goes through the whole dance against its simulator, which speaks the
provider's wire format.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import psycopg
import pytest

from mcp.config import ConfigError
from mcp.tenancy.credentials import CredentialCipher
from services.api.app import create_runtime
from services.api.pages import CONTENT_SECURITY_POLICY
from tests.conftest import ApiClient, ThreadServer, start_api
from tests.support import Response, call_tool, ok, wait_for

USER = "ada@example.com"
NAMES = {"github": "GitHub", "figma": "Figma", "slack": "Slack"}
# A tool per service that reaches upstream with the instance's token.
PROBE_TOOL = {"github": ("get_me", {}), "figma": ("get_me", {}), "slack": ("list_channels", {"limit": 1})}


@pytest.fixture
def sims(figma, github, slack) -> dict[str, Any]:
    return {"figma": figma, "github": github, "slack": slack}


@pytest.fixture
def oauth_env(env, figma_sim, github_sim, slack_sim) -> dict[str, str]:
    """The API's environment with each simulator registered as the service's OAuth app."""
    return {**env, **figma_sim.oauth_env(), **github_sim.oauth_env(), **slack_sim.oauth_env(),
            "GITHUB_API_URL": github_sim.url, "SLACK_API_URL": slack_sim.api_url,
            "OAUTH_REFRESH_INTERVAL": "0.3"}


@pytest.fixture
def oauth_api(oauth_env) -> Iterator[ThreadServer]:
    server = start_api(oauth_env)
    yield server
    server.stop()


@pytest.fixture
def client(oauth_api) -> ApiClient:
    return ApiClient(oauth_api.url)


@pytest.fixture
def db(env) -> Iterator[psycopg.Connection]:
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        yield conn


def browse(url: str, accept: str = "text/html,application/xhtml+xml,*/*;q=0.8") -> Response:
    """A browser's GET that does not follow redirects (aiohttp, allow_redirects=False)."""

    async def go() -> Response:
        async with aiohttp.ClientSession() as session, session.get(
                url, allow_redirects=False, headers={"Accept": accept}) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read())

    return asyncio.run(go())


def start(client: ApiClient, service: str, **extra: Any) -> dict[str, Any]:
    resp = client("POST", "/api/connect", {"service": service, "user": USER, **extra})
    assert resp.status == 201, resp.body
    return resp.json


def to_callback(api: ThreadServer, authorize_url: str, service: str) -> str:
    """The provider's authorize page, as a user who clicks Allow: a 302 back to the API's callback."""
    resp = browse(authorize_url)
    assert resp.status == 302, resp.body
    location = resp.headers["location"]
    assert location.startswith(f"{api.url}/oauth/{service}/callback?"), location
    return location


def connect(api: ThreadServer, client: ApiClient, service: str, accept: str | None = None,
            **extra: Any) -> tuple[dict[str, Any], Response]:
    started = start(client, service, **extra)
    callback = to_callback(api, started["authorize_url"], service)
    page = browse(callback, accept) if accept else browse(callback)
    return started, page


def instance_row(db: psycopg.Connection, instance_id: str) -> dict[str, Any]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    row = cur.execute("SELECT * FROM service_instances WHERE id = %s", (instance_id,)).fetchone()
    assert row is not None
    return row


def tokens(env: dict[str, str], db: psycopg.Connection, instance_id: str) -> dict[str, str]:
    """The instance's stored credentials, decrypted as the platform does."""
    from mcp.config import load_settings

    cipher: CredentialCipher = load_settings(env).cipher()
    return cipher.decrypt(uuid.UUID(instance_id), instance_row(db, instance_id)["credentials_enc"])


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# -- the whole dance, for every service ---------------------------------------------------------------------------

@pytest.mark.parametrize("service", ["github", "figma", "slack"])
def test_connecting_an_account_through_real_redirects(service, oauth_api, client, sims, env, db, request):
    sim = sims[service]
    sim.authorize_as = {"github": "octocat", "figma": "ada-figma", "slack": "Acme Corp"}[service]
    running = request.getfixturevalue(f"{service}_service")
    started = start(client, service)
    assert started["status"] == "pending"
    iid = started["instance_id"]
    assert client("GET", f"/api/instances/{iid}").json["status"] == "pending"
    authorize = query_of(started["authorize_url"])
    assert started["authorize_url"].startswith(sim.authorize_url + "?")
    assert authorize["redirect_uri"] == f"{oauth_api.url}/oauth/{service}/callback"
    assert authorize["client_id"] == sim.oauth_client_id and authorize["state"]
    if service != "slack":  # Slack's PKCE is for public clients only (services/slack/oauth.py)
        assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43

    page = browse(to_callback(oauth_api, started["authorize_url"], service))
    assert page.status == 200, page.body
    html = page.body.decode()
    view = client("GET", f"/api/instances/{iid}").json
    account = {"github": "@octocat", "figma": "ada-figma", "slack": "Acme Corp"}[service]
    assert f"Connected to {NAMES[service]} as {account}" in html
    assert f'<code id="mcp-url">{view["urls"]["mcp"]}</code>' in html and 'id="copy"' in html
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"

    assert view["status"] == "active" and view["account"] == account and view["scopes"]
    assert view["token_expires_at"] is not None
    stored = tokens(env, db, iid)
    assert set(stored) == {"access_token", "refresh_token"}
    assert sim._oauth.check_access(stored["access_token"])[0] == "ok"
    # A call through the service reaches the provider's API with the new token.
    name, args = PROBE_TOOL[service]
    ok(call_tool(running, iid, name, args))
    used = [r.header("Authorization") for r in sim.recorded() if r.header("Authorization")]
    assert f"Bearer {stored['access_token']}" in used
    assert sim.reused_refresh_tokens() == []


def test_the_callback_answers_json_when_asked(oauth_api, client, github):
    started, resp = connect(oauth_api, client, "github", accept="application/json")
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/json")
    body = resp.json
    assert body["instance_id"] == started["instance_id"] and body["status"] == "active"
    assert body["account"] == "@octocat" and body["urls"]["mcp"].endswith(f"/{started['instance_id']}/mcp")
    assert "access_token" not in resp.body.decode() and "refresh_token" not in resp.body.decode()


def test_the_page_escapes_what_the_provider_says(oauth_api, client, github):
    github.authorize_as = "<script>alert(1)</script>"
    _, page = connect(oauth_api, client, "github")
    assert page.status == 200
    html = page.body.decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The only script is the copy button's, allowed by its hash.
    assert len(re.findall(r"<script>", html)) == 1


# -- failures change nothing --------------------------------------------------------------------------------------

def test_a_state_works_once(oauth_api, client, github, env, db):
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    assert browse(callback).status == 200
    before = instance_row(db, started["instance_id"])
    again = browse(callback)
    assert again.status == 400 and "not valid" in again.body.decode() and "invalid_state" in again.body.decode()
    as_json = browse(callback, "application/json")
    assert as_json.status == 400 and as_json.json["error"]["code"] == "invalid_state"
    after = instance_row(db, started["instance_id"])
    assert (after["credentials_enc"], after["status"]) == (before["credentials_enc"], "active")
    # A state made up, or a real one sent to another service's callback, is as unknown.
    state = query_of(callback)["state"]
    for url in (f"{oauth_api.url}/oauth/github/callback?code=x&state=made-up",
                f"{oauth_api.url}/oauth/figma/callback?code=x&state={state}"):
        assert browse(url, "application/json").json["error"]["code"] == "invalid_state"


def test_a_state_for_another_service_is_not_accepted(oauth_api, client, github, figma, db):
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    moved = callback.replace("/oauth/github/", "/oauth/figma/")
    assert browse(moved, "application/json").json["error"]["code"] == "invalid_state"
    assert instance_row(db, started["instance_id"])["status"] == "pending"


def test_an_expired_state_is_refused_and_used_up(oauth_api, client, github, db):
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    db.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
    page = browse(callback)
    assert page.status == 400 and "expired" in page.body.decode()
    assert instance_row(db, started["instance_id"])["status"] == "pending"
    assert browse(callback, "application/json").json["error"]["code"] == "invalid_state"
    assert github.token_requests == []  # the code was never exchanged


def test_an_expired_state_answers_state_expired_in_json(oauth_api, client, github, db):
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    db.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
    resp = browse(callback, "application/json")
    assert resp.status == 400 and resp.json["error"]["code"] == "state_expired"


def test_a_denied_authorization_changes_nothing(oauth_api, client, github, db):
    github.deny_next()
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    assert query_of(callback)["error"] == "access_denied"
    page = browse(callback)
    assert page.status == 400 and "Authorization was denied" in page.body.decode()
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert instance_row(db, started["instance_id"])["status"] == "pending"
    assert github.token_requests == []
    # The state went with the denial: the same link cannot be replayed with a code.
    replay = callback.replace("error=access_denied", "code=whatever")
    assert browse(replay, "application/json").json["error"]["code"] == "invalid_state"


def test_a_failed_exchange_leaves_the_instance_as_it_was(oauth_api, client, github, env, db):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    before = instance_row(db, iid)
    started = start(client, "github", instance_id=iid)
    assert started["instance_id"] == iid and started["status"] == "active"
    github.fail_token_endpoint(503)
    page = browse(to_callback(oauth_api, started["authorize_url"], "github"))
    assert page.status == 502 and "Could not finish connecting" in page.body.decode()
    after = instance_row(db, iid)
    assert {k: after[k] for k in ("credentials_enc", "status", "token_expires_at", "account")} == \
        {k: before[k] for k in ("credentials_enc", "status", "token_expires_at", "account")}
    # A new instance whose exchange fails stays pending.
    github.fail_token_endpoint(503)
    fresh, resp = connect(oauth_api, client, "github", accept="application/json")
    assert resp.status == 502 and resp.json["error"]["code"] == "token_exchange_failed"
    assert instance_row(db, fresh["instance_id"])["status"] == "pending"


def test_a_callback_without_state_or_code(oauth_api, client, github, db):
    base = f"{oauth_api.url}/oauth/github/callback"
    for url, code in ((base, "missing_state"), (f"{base}?code=abc", "missing_state")):
        resp = browse(url, "application/json")
        assert resp.status == 400 and resp.json["error"]["code"] == code
    page = browse(base)
    assert page.status == 400 and "incomplete" in page.body.decode()
    started = start(client, "github")
    state = query_of(started["authorize_url"])["state"]
    resp = browse(f"{base}?state={state}", "application/json")
    assert resp.status == 400 and resp.json["error"]["code"] == "missing_code"
    assert instance_row(db, started["instance_id"])["status"] == "pending"


# -- reconnecting ---------------------------------------------------------------------------------------------------

def test_reconnecting_a_reauth_required_instance_restores_it(oauth_api, client, github, github_service, env, db):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    urls = client("GET", f"/api/instances/{iid}").json["urls"]
    old = tokens(env, db, iid)
    github.revoke()
    db.execute("UPDATE service_instances SET status = 'reauth_required' WHERE id = %s", (iid,))
    assert client("GET", f"/api/instances/{iid}").json["status"] == "reauth_required"
    assert client("GET", f"/api/users/{USER}/instances").json["instances"][0]["status"] == "reauth_required"
    assert client("GET", f"/api/instances/{iid}/usage").json["status"] == "reauth_required"
    # An operator cannot just switch it back on: its account must be connected again.
    refused = client("PATCH", f"/api/instances/{iid}", {"status": "active"})
    assert refused.status == 409 and refused.json["error"]["code"] == "instance_not_connected"

    started = start(client, "github", instance_id=iid)
    assert started["instance_id"] == iid and started["status"] == "reauth_required"
    page = browse(to_callback(oauth_api, started["authorize_url"], "github"))
    assert page.status == 200, page.body
    view = client("GET", f"/api/instances/{iid}").json
    assert view["status"] == "active" and view["urls"] == urls
    new = tokens(env, db, iid)
    assert new["access_token"] != old["access_token"] and new["refresh_token"] != old["refresh_token"]
    wait_for(lambda: call_tool(github_service, iid, "get_me")["isError"] is False, 10,
             what="the service to see the reconnected instance")


def test_reconnect_checks_the_instance(oauth_api, client, github, figma):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    cases = [
        ({"service": "github", "user": "bob@example.com", "instance_id": iid}, 409, "instance_user_mismatch"),
        ({"service": "figma", "user": USER, "instance_id": iid}, 409, "instance_service_mismatch"),
        ({"service": "github", "user": USER, "instance_id": "00000000-0000-4000-8000-000000000000"}, 404,
         "instance_not_found"),
        ({"service": "github", "user": USER, "instance_id": "nope"}, 400, None),
        ({"service": "github", "user": USER, "scopes": ["has space"]}, 400, "bad_request"),
        ({"service": "github", "user": USER, "extra": 1}, 400, "bad_request"),
        ({"service": "nosuch", "user": USER}, 400, "unknown_service"),
        ({"service": "github"}, 400, "missing_field"),
    ]
    for body, status, code in cases:
        resp = client("POST", "/api/connect", body)
        assert resp.status == status, (body, resp.body)
        if code:
            assert resp.json["error"]["code"] == code, (body, resp.body)
    assert client("POST", "/api/connect", {"service": "github", "user": USER}, token=None).status == 401


def test_a_link_for_a_deleted_instance_connects_nothing(oauth_api, client, github):
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    assert client("DELETE", f"/api/instances/{started['instance_id']}").status == 204
    resp = browse(callback, "application/json")
    assert resp.status == 404 and resp.json["error"]["code"] == "instance_not_found"
    assert github.token_requests == []


def test_pasted_credentials_make_a_connected_instance_static(oauth_api, client, github, db):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    resp = client("PATCH", f"/api/instances/{iid}", {"credentials": {"access_token": "ghp_pasted"}})
    assert resp.status == 200 and resp.json["token_expires_at"] is None
    row = instance_row(db, iid)
    # Nothing left for a service or the background job to refresh.
    assert row["token_expires_at"] is None and row["refresh_expires_at"] is None


def test_requested_scopes_are_sent_and_recorded(oauth_api, client, github):
    started, page = connect(oauth_api, client, "github", scopes=["read:user"])
    assert query_of(started["authorize_url"])["scope"] == "read:user"
    assert page.status == 200
    assert client("GET", f"/api/instances/{started['instance_id']}").json["scopes"] == "read:user"


# -- no OAuth app --------------------------------------------------------------------------------------------------

def test_without_oauth_settings_connect_names_the_variables(admin):
    resp = admin("POST", "/api/connect", {"service": "github", "user": USER})
    assert resp.status == 409, resp.body
    err = resp.json["error"]
    assert err["code"] == "oauth_not_configured"
    assert err["variables"] == ["GITHUB_OAUTH_CLIENT_ID", "GITHUB_OAUTH_CLIENT_SECRET"]
    assert "GITHUB_OAUTH_CLIENT_ID" in err["message"] and "GITHUB_OAUTH_CLIENT_SECRET" in err["message"]
    assert admin("GET", f"/api/users/{USER}/instances").status == 404  # nothing was created


# -- the background job ---------------------------------------------------------------------------------------------

def test_the_api_refreshes_a_refresh_token_about_to_expire(oauth_api, client, github, env, db):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    old = tokens(env, db, iid)
    assert github.refresh_count() == 0
    db.execute("UPDATE service_instances SET refresh_expires_at = now() + interval '1 hour' WHERE id = %s", (iid,))
    wait_for(lambda: github.refresh_count() == 1, 15, what="the background refresh")
    row = wait_for(lambda: (r := instance_row(db, iid))["credentials_enc"] != old and r["refresh_expires_at"]
                   and r, 10, what="the new tokens stored")
    new = tokens(env, db, iid)
    assert new["refresh_token"] != old["refresh_token"] and new["access_token"] != old["access_token"]
    assert row["status"] == "active"
    [refresh] = [r for r in github.token_requests if r.grant_type == "refresh_token"]
    assert refresh.credential == old["refresh_token"] and refresh.outcome == "ok"
    # The new refresh token lives months: the next passes leave it alone.
    db.execute("SELECT pg_sleep(1)")
    assert github.refresh_count() == 1 and github.reused_refresh_tokens() == []


def test_the_api_marks_a_dead_grant_for_reconnecting(oauth_api, client, github, db):
    connected, _ = connect(oauth_api, client, "github")
    iid = connected["instance_id"]
    github.revoke()
    db.execute("UPDATE service_instances SET refresh_expires_at = now() + interval '1 hour' WHERE id = %s", (iid,))
    wait_for(lambda: client("GET", f"/api/instances/{iid}").json["status"] == "reauth_required", 15,
             what="reauth_required")
    sent = [r for r in github.token_requests if r.grant_type == "refresh_token"]
    assert len(sent) == 1 and github.reused_refresh_tokens() == []


# -- secrets never reach a log --------------------------------------------------------------------------------------

def test_no_token_code_state_or_instance_id_in_logs(oauth_api, client, github, env, db, caplog, capfd):
    caplog.set_level("DEBUG")
    started = start(client, "github")
    callback = to_callback(oauth_api, started["authorize_url"], "github")
    assert browse(callback).status == 200
    assert browse(callback).status == 400  # reused
    github.deny_next()
    denied = start(client, "github")
    assert browse(to_callback(oauth_api, denied["authorize_url"], "github")).status == 400
    github.fail_token_endpoint(503)
    failed_start = start(client, "github")
    failed_callback = to_callback(oauth_api, failed_start["authorize_url"], "github")
    assert browse(failed_callback).status == 502
    iid = started["instance_id"]
    db.execute("UPDATE service_instances SET refresh_expires_at = now() + interval '1 hour' WHERE id = %s", (iid,))
    wait_for(lambda: github.refresh_count() == 1, 15, what="the background refresh")
    wait_for(lambda: any(r.name == "services.api.token_keeper" for r in caplog.records), 10,
             what="the keeper's log line")
    db.execute("SELECT pg_sleep(0.7)")  # the access log writes its lines within half a second

    secrets = [iid, denied["instance_id"], failed_start["instance_id"], github.oauth_client_secret]
    for url in (callback, failed_callback, started["authorize_url"]):
        q = query_of(url)
        secrets += [v for k, v in q.items() if k in ("state", "code", "code_challenge")]
    secrets += list(tokens(env, db, iid).values())
    secrets += [r.credential for r in github.token_requests]
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "GET /oauth/github/callback" in text  # the access log saw the callbacks, without their query
    for secret in secrets:
        assert secret and secret not in text, "a secret reached the logs"


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_a_bad_refresh_setting_refuses_to_start(env, value):
    with pytest.raises(ConfigError, match="OAUTH_REFRESH_INTERVAL"):
        create_runtime({**env, "OAUTH_REFRESH_INTERVAL": value})
