"""mcp.oauth: the OAuth wire protocol, states, token storage, and the one refresh protocol.

The client is checked against a tiny token endpoint of this file's own (exact requests, every error shape) and
against the simulators, which speak GitHub's, Figma's and Slack's real formats and record every token request,
so a refresh token sent twice fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from psycopg.rows import dict_row

import mcp.oauth.client as oauth_client
import mcp.oauth.refresh as refresh_module
from mcp.oauth.client import (
    OAuthError,
    ReauthRequired,
    TokenEndpointUnavailable,
    TokenSet,
    authorization_url,
    exchange_code,
    fetch_account,
    new_pkce,
    refresh_tokens,
)
from mcp.oauth.provider import OAuthProvider
from mcp.oauth.refresh import TokenRefresher, refresh_instance
from mcp.oauth.settings import OAuthApp, oauth_app, oauth_variables
from mcp.oauth.states import consume_state, create_state
from mcp.oauth.tokens import store_tokens
from mcp.tenancy.credentials import CredentialCipher, parse_key
from mcp.tenancy.database import Database
from services.figma.oauth import OAUTH as FIGMA_OAUTH
from services.github.oauth import OAUTH as GITHUB_OAUTH
from services.slack.oauth import OAUTH as SLACK_OAUTH
from tests.support import free_port

# Recognisable secrets: none of them may appear in an exception message or a log line.
CLIENT_SECRET = "CLIENTSECRET-5f1e9a"
REFRESH = "REFRESHTOKEN-7c2d41"
CODE = "AUTHCODE-93be07"
ACCESS = "ACCESSTOKEN-11aa22"


# --- a token endpoint of our own -----------------------------------------------------------------------------

class TokenEndpoint:
    """Records each request; answers with ``reply`` (status, body text or JSON, delay)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.reply: tuple[int, Any] = (200, {})
        self.delay_s = 0.0
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append({"path": request.path, "headers": dict(request.headers),
                              "form": dict(urllib.parse.parse_qsl(body))})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, payload = self.reply
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, content_type="text/html")
        return web.json_response(payload, status=status)


def run_with_endpoint(test: Callable[[TokenEndpoint, aiohttp.ClientSession], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        endpoint = TokenEndpoint()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", endpoint.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", endpoint.port).start()
        try:
            async with aiohttp.ClientSession() as session:
                return await test(endpoint, session)
        finally:
            await runner.cleanup()
    return asyncio.run(main())


def app_for(provider: OAuthProvider, base: str) -> OAuthApp:
    env = {f"{provider.service.upper()}_OAUTH_CLIENT_ID": "client-1",
           f"{provider.service.upper()}_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
           f"{provider.service.upper()}_OAUTH_AUTHORIZE_URL": base + "/authorize",
           f"{provider.service.upper()}_OAUTH_TOKEN_URL": base + "/token",
           f"{provider.service.upper()}_OAUTH_REFRESH_URL": base + "/refresh",
           provider.api_url_env: base}
    app = oauth_app(provider, env)
    assert app is not None
    return app


def test_exchange_sends_pkce_verifier_and_client_auth_in_the_form() -> None:
    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> TokenSet:
        ep.reply = (200, {"access_token": ACCESS, "refresh_token": REFRESH, "expires_in": 28800,
                          "refresh_token_expires_in": 15897600, "scope": "repo,read:user", "token_type": "bearer"})
        tokens = await exchange_code(session, app_for(GITHUB_OAUTH, ep.url), code=CODE,
                                     redirect_uri="http://127.0.0.1:5000/oauth/github/callback",
                                     code_verifier=verifier)
        sent = ep.requests[0]
        assert sent["path"] == "/token"
        assert sent["headers"]["Accept"] == "application/json"  # GitHub answers form-encoded without it
        assert sent["form"] == {"grant_type": "authorization_code", "code": CODE, "code_verifier": verifier,
                                "redirect_uri": "http://127.0.0.1:5000/oauth/github/callback",
                                "client_id": "client-1", "client_secret": CLIENT_SECRET}
        return tokens

    verifier, challenge = new_pkce()
    assert 43 <= len(verifier) <= 128
    before = datetime.now(UTC)
    tokens = run_with_endpoint(go)
    assert (tokens.access_token, tokens.refresh_token) == (ACCESS, REFRESH)
    assert tokens.scopes == "repo read:user"  # GitHub's commas, stored space-separated
    assert before + timedelta(hours=8) <= tokens.expires_at <= datetime.now(UTC) + timedelta(hours=8)
    assert tokens.refresh_expires_at > datetime.now(UTC) + timedelta(days=180)
    assert ACCESS not in json.dumps(tokens.response) and REFRESH not in json.dumps(tokens.response)
    assert ACCESS not in repr(tokens) and REFRESH not in repr(tokens)


def test_basic_client_auth_and_figma_refresh_without_new_refresh_token() -> None:
    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> TokenSet:
        ep.reply = (200, {"access_token": ACCESS, "token_type": "bearer", "expires_in": 7776000})
        tokens = await refresh_tokens(session, app_for(FIGMA_OAUTH, ep.url), REFRESH)
        sent = ep.requests[0]
        assert sent["path"] == "/refresh"
        assert sent["headers"]["Authorization"] == "Basic " + base64.b64encode(
            f"client-1:{CLIENT_SECRET}".encode()).decode()
        assert sent["form"] == {"grant_type": "refresh_token", "refresh_token": REFRESH}
        return tokens

    tokens = run_with_endpoint(go)
    assert tokens.refresh_token is None and tokens.scopes is None


def test_slack_response_loses_every_nested_token_and_names_the_team() -> None:
    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> tuple[TokenSet, str | None]:
        ep.reply = (200, {"ok": True, "access_token": "xoxe.xoxb-" + ACCESS, "token_type": "bot",
                          "scope": "channels:read,chat:write", "refresh_token": "xoxe-1-" + REFRESH,
                          "expires_in": 43200, "team": {"id": "T1", "name": "Acme"},
                          "authed_user": {"id": "U1", "access_token": "xoxp-" + ACCESS}})
        app = app_for(SLACK_OAUTH, ep.url)
        tokens = await exchange_code(session, app, code=CODE, redirect_uri="http://x/cb", code_verifier=None)
        assert "code_verifier" not in ep.requests[0]["form"]
        return tokens, await fetch_account(session, app, tokens)

    tokens, account = run_with_endpoint(go)
    assert ACCESS not in json.dumps(tokens.response)
    assert account == "Acme" and tokens.scopes == "channels:read chat:write"


@pytest.mark.parametrize(("provider", "status", "body", "kind", "code"), [
    (GITHUB_OAUTH, 200, {"error": "bad_refresh_token", "error_description": "The refresh token passed is "
                         f"incorrect or expired: {REFRESH}"}, ReauthRequired, "bad_refresh_token"),
    (GITHUB_OAUTH, 200, {"error": "incorrect_client_credentials"}, OAuthError, "incorrect_client_credentials"),
    (SLACK_OAUTH, 200, {"ok": False, "error": "invalid_refresh_token"}, ReauthRequired, "invalid_refresh_token"),
    (SLACK_OAUTH, 200, {"ok": False, "error": "bad_client_secret"}, OAuthError, "bad_client_secret"),
    (SLACK_OAUTH, 400, {"error": "invalid_grant"}, ReauthRequired, "invalid_grant"),
    (FIGMA_OAUTH, 400, {"error": True, "status": 400, "message": "Invalid refresh token"}, ReauthRequired,
     "invalid_refresh_token"),
    (FIGMA_OAUTH, 401, "<html>Unauthorized</html>", ReauthRequired, "unauthorized"),
    (GITHUB_OAUTH, 503, "<html>unicorn</html>", TokenEndpointUnavailable, "token_endpoint_error"),
    (GITHUB_OAUTH, 502, {"error": "invalid_grant"}, TokenEndpointUnavailable, "token_endpoint_error"),
    (GITHUB_OAUTH, 429, {}, TokenEndpointUnavailable, "token_endpoint_error"),
    (GITHUB_OAUTH, 200, "access_token=x&scope=repo", TokenEndpointUnavailable, "invalid_token_response"),
    (GITHUB_OAUTH, 200, {"token_type": "bearer"}, TokenEndpointUnavailable, "invalid_token_response"),
])
def test_token_endpoint_answers_are_classified_without_secrets(
        provider: OAuthProvider, status: int, body: Any, kind: type, code: str,
        caplog: pytest.LogCaptureFixture) -> None:
    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> OAuthError:
        ep.reply = (status, body)
        with pytest.raises(OAuthError) as info:
            await refresh_tokens(session, app_for(provider, ep.url), REFRESH)
        return info.value

    caplog.set_level(logging.DEBUG)
    exc = run_with_endpoint(go)
    assert type(exc) is kind and exc.code == code
    for text in (str(exc), exc.message, caplog.text):
        assert REFRESH not in text and CLIENT_SECRET not in text


def test_timeout_and_unreachable_are_transient(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(oauth_client, "TOKEN_TIMEOUT_S", 0.5)
    caplog.set_level(logging.DEBUG)

    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> list[OAuthError]:
        ep.delay_s = 3
        errors = []
        for app in (app_for(GITHUB_OAUTH, ep.url), app_for(GITHUB_OAUTH, f"http://127.0.0.1:{free_port()}")):
            with pytest.raises(TokenEndpointUnavailable) as info:
                await exchange_code(session, app, code=CODE, redirect_uri="http://x/cb", code_verifier="v" * 43)
            errors.append(info.value)
        assert len(ep.requests) == 1  # sent once, never retried
        return errors

    for exc in run_with_endpoint(go):
        assert CODE not in str(exc) and CLIENT_SECRET not in str(exc)
    assert CODE not in caplog.text


def test_a_redirect_is_not_followed() -> None:
    """A 307 would carry the refresh token to a second address: a second send."""
    async def go(ep: TokenEndpoint, session: aiohttp.ClientSession) -> None:
        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect("/token")
        ep.reply = (200, {})
        app = app_for(GITHUB_OAUTH, ep.url)
        # Point the refresh at a path that redirects to the recording one.
        ep_app = web.Application()
        ep_app.router.add_post("/moved", redirect)
        runner = web.AppRunner(ep_app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            moved = OAuthApp(**{**app.__dict__, "refresh_url": f"http://127.0.0.1:{port}/moved"})
            with pytest.raises(OAuthError) as info:
                await refresh_tokens(session, moved, REFRESH)
            assert info.value.code == "token_endpoint_redirect"
            assert ep.requests == []
        finally:
            await runner.cleanup()

    run_with_endpoint(go)


# --- providers and settings ------------------------------------------------------------------------------------

def test_providers_round_trip_through_json_and_build_authorize_urls() -> None:
    for provider in (GITHUB_OAUTH, FIGMA_OAUTH, SLACK_OAUTH):
        assert OAuthProvider.from_json(json.loads(json.dumps(provider.to_json()))) == provider
    _, challenge = new_pkce()
    github = oauth_app(GITHUB_OAUTH, {"GITHUB_OAUTH_CLIENT_ID": "id", "GITHUB_OAUTH_CLIENT_SECRET": "s"})
    assert github is not None and github.token_url == "https://github.com/login/oauth/access_token"
    assert github.refresh_url == github.token_url and github.api_url == "https://api.github.com"
    url = authorization_url(github, state="st8", redirect_uri="http://h/oauth/github/callback",
                            scopes=github.scopes, code_challenge=challenge)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith("https://github.com/login/oauth/authorize?")
    assert query == {"response_type": "code", "client_id": "id", "redirect_uri": "http://h/oauth/github/callback",
                     "scope": "repo read:user", "state": "st8", "code_challenge": challenge,
                     "code_challenge_method": "S256"}
    slack = oauth_app(SLACK_OAUTH, {"SLACK_OAUTH_CLIENT_ID": "id", "SLACK_OAUTH_CLIENT_SECRET": "s",
                                    "SLACK_OAUTH_SCOPES": "chat:write, channels:read"})
    assert slack is not None and slack.scopes == ("chat:write", "channels:read")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization_url(
        slack, state="s", redirect_uri="http://h/cb", scopes=slack.scopes, code_challenge=None)).query))
    assert query["scope"] == "chat:write,channels:read" and "code_challenge" not in query
    figma = oauth_app(FIGMA_OAUTH, {"FIGMA_OAUTH_CLIENT_ID": "id", "FIGMA_OAUTH_CLIENT_SECRET": CLIENT_SECRET})
    assert figma is not None and figma.refresh_url == "https://api.figma.com/v1/oauth/refresh"
    assert figma.provider.client_auth == "basic"
    assert CLIENT_SECRET not in repr(figma)  # an app logged by mistake does not leak its secret
    assert oauth_app(FIGMA_OAUTH, {"FIGMA_OAUTH_CLIENT_ID": "id"}) is None
    assert oauth_variables("figma") == ["FIGMA_OAUTH_CLIENT_ID", "FIGMA_OAUTH_CLIENT_SECRET"]


def test_migrate_records_tools_and_oauth(database_url: str) -> None:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        rows = {r["name"]: r for r in conn.execute("SELECT name, tools, oauth FROM mcp_table")}
    assert OAuthProvider.from_json(rows["github"]["oauth"]) == GITHUB_OAUTH
    assert OAuthProvider.from_json(rows["slack"]["oauth"]) == SLACK_OAUTH
    tools = {t["name"]: t["read_only"] for t in rows["slack"]["tools"]}
    assert tools["list_channels"] is True and tools["post_message"] is False


# --- the database side -------------------------------------------------------------------------------------

@pytest.fixture
def cipher(credentials_key: str) -> CredentialCipher:
    return CredentialCipher([parse_key(credentials_key)])


def new_instance(database_url: str, cipher: CredentialCipher, service: str, creds: dict[str, str],
                 token_expires_at: datetime | None = None, status: str = "active") -> uuid.UUID:
    instance_id = uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        user = conn.execute("INSERT INTO users (email) VALUES (%s) ON CONFLICT (email) DO UPDATE SET email = "
                            "excluded.email RETURNING id", ("ada@example.com",)).fetchone()[0]
        conn.execute("INSERT INTO service_instances (id, user_id, service_name, status, credentials_enc, "
                     "token_expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
                     (instance_id, user, service, status, cipher.encrypt(instance_id, creds), token_expires_at))
    return instance_id


def row_of(database_url: str, cipher: CredentialCipher, instance_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM service_instances WHERE id = %s", (instance_id,)).fetchone()
    assert row is not None
    row["creds"] = cipher.decrypt(instance_id, row["credentials_enc"])
    return row


@pytest.fixture
def databases(database_url: str, tmp_path: Path) -> Iterator[Callable[[], Database]]:
    """Database pools as separate processes would have them (each its own connections)."""
    made: list[Database] = []

    def make() -> Database:
        db = Database(database_url, tmp_path / "none.url", timeout_s=10)
        made.append(db)
        return db
    yield make


async def close_all(*dbs: Database) -> None:
    for db in dbs:
        await db.close()


def test_state_is_single_use_bound_to_its_service_and_expires(database_url: str, cipher: CredentialCipher,
                                                              databases: Callable[[], Database]) -> None:
    instance_id = new_instance(database_url, cipher, "github", {}, status="pending")
    verifier, _ = new_pkce()

    async def go() -> None:
        db = databases()
        try:
            async with db.connection() as conn:
                state, expires_at = await create_state(conn, cipher, instance_id=instance_id, service="github",
                                                       scopes=("repo", "read:user"), code_verifier=verifier)
                assert len(state) >= 43
                assert timedelta(minutes=9) < expires_at - datetime.now(UTC) <= timedelta(minutes=10)
                assert await consume_state(conn, cipher, state=state, service="slack") is None
                pending = await consume_state(conn, cipher, state=state, service="github")
                assert pending is not None and not pending.expired
                assert (pending.instance_id, pending.scopes, pending.code_verifier) == (
                    instance_id, ("repo", "read:user"), verifier)
                assert verifier not in repr(pending)
                assert await consume_state(conn, cipher, state=state, service="github") is None  # used up
                assert await consume_state(conn, cipher, state="made-up", service="github") is None

                # Only the hash is stored, and the verifier is encrypted.
                old, _ = await create_state(conn, cipher, instance_id=instance_id, service="github",
                                            scopes=(), code_verifier=verifier)
                cur = await conn.execute("SELECT state_hash, verifier_enc FROM oauth_states")
                stored = json.dumps([[r["state_hash"].hex(), r["verifier_enc"]] for r in await cur.fetchall()])
                assert old not in stored and verifier not in stored
                await conn.execute("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
                late = await consume_state(conn, cipher, state=old, service="github")
                assert late is not None and late.expired
                # Long-dead states are swept when the next one is created.
                stale, _ = await create_state(conn, cipher, instance_id=instance_id, service="github",
                                              scopes=(), code_verifier=None)
                await conn.execute("UPDATE oauth_states SET expires_at = now() - interval '2 hours'")
                await create_state(conn, cipher, instance_id=instance_id, service="github", scopes=(),
                                   code_verifier=None)
                assert await consume_state(conn, cipher, state=stale, service="github") is None
                cur = await conn.execute("SELECT count(*) AS n FROM oauth_states")
                assert (await cur.fetchone())["n"] == 1
        finally:
            await close_all(db)

    asyncio.run(go())


def sim_app(sim: Any, provider: OAuthProvider, api_url: str) -> OAuthApp:
    app = oauth_app(provider, {**sim.oauth_env(), provider.api_url_env: api_url})
    assert app is not None
    return app


def test_connect_through_the_simulators_with_pkce(github: Any, figma: Any, slack: Any) -> None:
    """The browser dance for real: authorize redirects back with a code, the exchange proves the verifier."""
    async def connect(sim: Any, provider: OAuthProvider, api_url: str, account: str) -> tuple[TokenSet, str | None]:
        sim.authorize_as = account
        app = sim_app(sim, provider, api_url)
        verifier, challenge = new_pkce()
        redirect_uri = f"http://127.0.0.1:5000/oauth/{provider.service}/callback"
        url = authorization_url(app, state="st-1", redirect_uri=redirect_uri, scopes=app.scopes,
                                code_challenge=challenge if provider.pkce else None)
        async with aiohttp.ClientSession() as session:
            async with session.get(url, allow_redirects=False) as resp:
                assert resp.status == 302
                back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))
            assert back["state"] == "st-1"
            if provider.pkce:
                with pytest.raises(OAuthError):  # a wrong verifier is refused (and uses the code up)
                    await exchange_code(session, app, code=back["code"], redirect_uri=redirect_uri,
                                        code_verifier=new_pkce()[0])
                async with session.get(url, allow_redirects=False) as resp:
                    back = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(resp.headers["Location"]).query))
            tokens = await exchange_code(session, app, code=back["code"], redirect_uri=redirect_uri,
                                         code_verifier=verifier if provider.pkce else None)
            return tokens, await fetch_account(session, app, tokens)

    async def go() -> None:
        tokens, account = await connect(github, GITHUB_OAUTH, github.url, "octocat")
        assert account == "@octocat" and tokens.refresh_token and tokens.expires_at is not None
        tokens, account = await connect(figma, FIGMA_OAUTH, figma.url, "ada")
        assert account == "ada" and tokens.refresh_token
        tokens, account = await connect(slack, SLACK_OAUTH, slack.api_url, "acme")
        assert account and tokens.refresh_token

    asyncio.run(go())


def github_instance(database_url: str, cipher: CredentialCipher, github: Any,
                    expires_in_s: float = 30) -> tuple[uuid.UUID, dict[str, Any]]:
    grant = github.issue_tokens(account="octocat")
    creds = {"access_token": grant["access_token"], "refresh_token": grant["refresh_token"]}
    instance_id = new_instance(database_url, cipher, "github", creds,
                               token_expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s))
    return instance_id, grant


def test_refresh_rotates_stores_and_notifies(database_url: str, cipher: CredentialCipher, github: Any,
                                             databases: Callable[[], Database]) -> None:
    instance_id, grant = github_instance(database_url, cipher, github)
    app = sim_app(github, GITHUB_OAUTH, github.url)

    async def go() -> dict[str, str]:
        db = databases()
        listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        try:
            await listener.execute("LISTEN mcp_instance_changed")
            async with aiohttp.ClientSession() as session:
                creds = await refresh_instance(db, cipher, app, session, instance_id,
                                               seen_access_token=grant["access_token"])
            notified = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
            assert notified == [str(instance_id)]
            return creds
        finally:
            await listener.close()
            await close_all(db)

    creds = asyncio.run(go())
    assert creds["access_token"] != grant["access_token"] and creds["refresh_token"] != grant["refresh_token"]
    row = row_of(database_url, cipher, instance_id)
    assert row["creds"] == creds and row["status"] == "active"
    assert row["token_expires_at"] > datetime.now(UTC) + timedelta(hours=7)
    assert row["refresh_expires_at"] > datetime.now(UTC) + timedelta(days=100)
    assert github.refresh_count() == 1 and github.reused_refresh_tokens() == []


def test_figma_refresh_keeps_the_refresh_token(database_url: str, cipher: CredentialCipher, figma: Any,
                                               databases: Callable[[], Database]) -> None:
    grant = figma.issue_tokens(account="ada")
    instance_id = new_instance(database_url, cipher, "figma",
                               {"access_token": grant["access_token"], "refresh_token": grant["refresh_token"]},
                               token_expires_at=datetime.now(UTC) + timedelta(seconds=10))

    async def go() -> dict[str, str]:
        db = databases()
        try:
            async with aiohttp.ClientSession() as session:
                return await refresh_instance(db, cipher, sim_app(figma, FIGMA_OAUTH, figma.url), session,
                                              instance_id, seen_access_token=grant["access_token"])
        finally:
            await close_all(db)

    creds = asyncio.run(go())
    assert creds["refresh_token"] == grant["refresh_token"] and creds["access_token"] != grant["access_token"]
    assert row_of(database_url, cipher, instance_id)["creds"] == creds


def test_dead_grant_becomes_reauth_required_and_is_not_retried(
        database_url: str, cipher: CredentialCipher, github: Any, databases: Callable[[], Database],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    instance_id, grant = github_instance(database_url, cipher, github)
    github.revoke()
    app = sim_app(github, GITHUB_OAUTH, github.url)

    async def go() -> list[OAuthError]:
        db = databases()
        errors = []
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    with pytest.raises(ReauthRequired) as info:
                        await refresh_instance(db, cipher, app, session, instance_id,
                                               seen_access_token=grant["access_token"])
                    errors.append(info.value)
        finally:
            await close_all(db)
        return errors

    errors = asyncio.run(go())
    assert errors[0].code == "bad_refresh_token"
    assert row_of(database_url, cipher, instance_id)["status"] == "reauth_required"
    assert len(github.token_requests) == 1  # the second call saw the status and sent nothing
    for text in (caplog.text, *(str(e) for e in errors)):
        assert grant["refresh_token"] not in text and grant["access_token"] not in text
        assert str(instance_id) not in text
    assert "reconnect" in caplog.text or "connected again" in caplog.text


def test_transient_failure_leaves_the_instance_as_it_was(database_url: str, cipher: CredentialCipher,
                                                         github: Any, databases: Callable[[], Database]) -> None:
    instance_id, grant = github_instance(database_url, cipher, github)
    before = row_of(database_url, cipher, instance_id)
    github.fail_token_endpoint(status=503, times=1)
    app = sim_app(github, GITHUB_OAUTH, github.url)

    async def go() -> dict[str, str]:
        db = databases()
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(TokenEndpointUnavailable):
                    await refresh_instance(db, cipher, app, session, instance_id,
                                           seen_access_token=grant["access_token"])
                assert len(github.token_requests) == 1  # not retried inside refresh_instance
                after = row_of(database_url, cipher, instance_id)
                assert (after["status"], after["creds"], after["token_expires_at"]) == (
                    "active", before["creds"], before["token_expires_at"])
                # The endpoint is back: the next call refreshes.
                return await refresh_instance(db, cipher, app, session, instance_id,
                                              seen_access_token=grant["access_token"])
        finally:
            await close_all(db)

    creds = asyncio.run(go())
    assert creds["access_token"] != grant["access_token"]
    assert github.reused_refresh_tokens() == []


def test_two_processes_refreshing_one_instance_send_one_token_request(
        database_url: str, cipher: CredentialCipher, github: Any, databases: Callable[[], Database]) -> None:
    """Two pools (as two processes have) race for the same expiring token: the row lock lets one refresh and
    the other re-reads and uses its tokens."""
    instance_id, grant = github_instance(database_url, cipher, github, expires_in_s=5)
    app = sim_app(github, GITHUB_OAUTH, github.url)

    async def go() -> list[dict[str, str]]:
        first, second = databases(), databases()
        try:
            async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2:
                return list(await asyncio.gather(*(
                    refresh_instance(db, cipher, app, s, instance_id, seen_access_token=grant["access_token"])
                    for db, s in ((first, s1), (second, s2)) for _ in range(5))))
        finally:
            await close_all(first, second)

    results = asyncio.run(go())
    assert len({r["access_token"] for r in results}) == 1
    assert github.refresh_count() == 1 and len(github.token_requests) == 1
    assert github.reused_refresh_tokens() == []
    assert row_of(database_url, cipher, instance_id)["creds"] == results[0]


def test_token_refresher_single_flight_in_one_process(database_url: str, cipher: CredentialCipher, github: Any,
                                                      databases: Callable[[], Database],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """50 concurrent callers in one process: one refresh_instance (one transaction, one token request)."""
    instance_id, grant = github_instance(database_url, cipher, github, expires_in_s=5)
    app = sim_app(github, GITHUB_OAUTH, github.url)
    calls = []
    original = refresh_module.refresh_instance

    async def counting(*args: Any, **kwargs: Any) -> dict[str, str]:
        calls.append(1)
        return await original(*args, **kwargs)
    monkeypatch.setattr(refresh_module, "refresh_instance", counting)

    async def go() -> tuple[list[dict[str, str]], int]:
        db = databases()
        try:
            async with aiohttp.ClientSession() as session:
                refresher = TokenRefresher(db, cipher, app, lambda: session)
                results = await asyncio.gather(*(refresher.refresh(instance_id, grant["access_token"])
                                                 for _ in range(50)))
                await refresher.close()
                return list(results), len(refresher._inflight)
        finally:
            await close_all(db)

    results, left = asyncio.run(go())
    assert len({r["access_token"] for r in results}) == 1 and left == 0
    assert len(calls) == 1 and len(github.token_requests) == 1


def test_store_tokens_activates_and_keeps_what_the_provider_omits(
        database_url: str, cipher: CredentialCipher, databases: Callable[[], Database]) -> None:
    instance_id = new_instance(database_url, cipher, "figma", {}, status="pending")
    expires = datetime.now(UTC) + timedelta(days=90)

    async def go() -> None:
        db = databases()
        try:
            async with db.connection() as conn:
                await store_tokens(conn, cipher, instance_id,
                                   TokenSet("a1", "r1", expires, None, "file_content:read", {}),
                                   keep_refresh_token=None, account="ada", activate=True)
                await store_tokens(conn, cipher, instance_id, TokenSet("a2", None, expires, None, None, {}),
                                   keep_refresh_token="r1")
        finally:
            await close_all(db)

    asyncio.run(go())
    row = row_of(database_url, cipher, instance_id)
    assert row["creds"] == {"access_token": "a2", "refresh_token": "r1"}
    assert (row["status"], row["scopes"], row["account"]) == ("active", "file_content:read", "ada")


def test_refresh_instance_leaves_static_and_inactive_instances_alone(
        database_url: str, cipher: CredentialCipher, github: Any, databases: Callable[[], Database]) -> None:
    static = new_instance(database_url, cipher, "github", {"access_token": "ghp_static"})
    off = new_instance(database_url, cipher, "github", {"access_token": "a", "refresh_token": "r"},
                       status="inactive")
    app = sim_app(github, GITHUB_OAUTH, github.url)

    async def go() -> None:
        db = databases()
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(OAuthError) as info:
                    await refresh_instance(db, cipher, app, session, static, seen_access_token="ghp_static")
                assert info.value.code == "no_refresh_token" and not isinstance(info.value, ReauthRequired)
                with pytest.raises(OAuthError) as info:
                    await refresh_instance(db, cipher, app, session, off, seen_access_token="a")
                assert info.value.code == "instance_not_active"
        finally:
            await close_all(db)

    asyncio.run(go())
    assert github.token_requests == []
    assert row_of(database_url, cipher, static)["status"] == "active"
