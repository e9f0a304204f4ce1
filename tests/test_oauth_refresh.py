"""OAuth tokens refreshed while instances serve calls: ahead of expiry, after an upstream 401, across processes.

Real service processes (or in-process servers), the real simulators' OAuth endpoints (single-use refresh tokens
for GitHub and Slack), real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg.rows import dict_row

from mcp.tenancy.credentials import CredentialCipher, parse_key
from services.figma import SERVICE as FIGMA
from services.github import SERVICE as GITHUB
from services.slack import SERVICE as SLACK
from tests.conftest import ThreadServer, start_service
from tests.support import call_tool, failed, http, ok, wait_for

ACCEPT = "application/json, text/event-stream"
# Generous limits: the load test must fail only on refresh problems, never on the platform's own rate limits.
UNLIMITED = {"RATE_LIMIT_PER_MINUTE": "6000000", "RATE_LIMIT_BURST": "100000",
             "UPSTREAM_CONCURRENCY_PER_INSTANCE": "64"}


@pytest.fixture
def cipher(credentials_key: str) -> CredentialCipher:
    return CredentialCipher((parse_key(credentials_key),))


def new_instance(env: dict[str, str], cipher: CredentialCipher, service: str, creds: dict[str, str],
                 token_expires_at: datetime | None) -> str:
    """An instance row as the connect flow leaves it (tokens encrypted, expiry in its column)."""
    instance_id = uuid.uuid4()
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        user = conn.execute("INSERT INTO users (email) VALUES (%s) ON CONFLICT (email) DO UPDATE SET email = "
                            "excluded.email RETURNING id", ("ada@example.com",)).fetchone()[0]
        conn.execute("INSERT INTO service_instances (id, user_id, service_name, status, credentials_enc, "
                     "token_expires_at) VALUES (%s, %s, %s, 'active', %s, %s)",
                     (instance_id, user, service, cipher.encrypt(instance_id, creds), token_expires_at))
    return str(instance_id)


def connected(env: dict[str, str], cipher: CredentialCipher, sim: Any, service: str, account: str,
              refresh: bool = True) -> tuple[str, dict[str, Any]]:
    """An instance holding a grant the simulator issued to ``account``."""
    grant = sim.issue_tokens(account=account)
    creds = {"access_token": grant["access_token"]}
    if refresh:
        creds["refresh_token"] = grant["refresh_token"]
    expires = datetime.now(UTC) + timedelta(seconds=grant["expires_in"])
    return new_instance(env, cipher, service, creds, expires), grant


def row(env: dict[str, str], cipher: CredentialCipher, instance_id: str) -> dict[str, Any]:
    with psycopg.connect(env["DATABASE_URL"], row_factory=dict_row) as conn:
        found = conn.execute("SELECT * FROM service_instances WHERE id = %s", (instance_id,)).fetchone()
    assert found is not None
    found["creds"] = cipher.decrypt(uuid.UUID(instance_id), found["credentials_enc"])
    return found


def usage_of(env: dict[str, str], instance_id: str) -> list[str]:
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return [r[0] for r in conn.execute("SELECT outcome FROM usage WHERE instance_id = %s", (instance_id,))]


def bearer_tokens(sim: Any, path: str) -> list[str]:
    return [r.header("Authorization").partition(" ")[2] for r in sim.recorded(path) if r.header("Authorization")]


def mcp_call(server: Any, instance_id: str, name: str, arguments: dict[str, Any] | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}
    return http("POST", f"{server.url}/{instance_id}/mcp", body,
                headers={"Accept": ACCEPT, "Content-Type": "application/json"})


SERVICES = {
    "github": (GITHUB, "github", "get_me", {}, "/user"),
    "figma": (FIGMA, "figma", "get_me", {}, "/v1/me"),
    "slack": (SLACK, "slack", "list_channels", {}, "/api/conversations.list"),
}


@pytest.fixture
def sims(github: Any, figma: Any, slack: Any) -> dict[str, Any]:
    return {"github": github, "figma": figma, "slack": slack}


def service_env(env: dict[str, str], sims: dict[str, Any], **extra: str) -> dict[str, str]:
    out = {**env, "GITHUB_API_URL": sims["github"].url, "SLACK_API_URL": sims["slack"].api_url,
           "FIGMA_API_URL": sims["figma"].url, **UNLIMITED, **extra}
    for sim in sims.values():
        out.update(sim.oauth_env())
    return out


@pytest.fixture
def serve(env: dict[str, str], sims: dict[str, Any]) -> Iterator[Any]:
    """Start a service in-process with the simulators' OAuth apps configured."""
    started: list[ThreadServer] = []

    def _serve(name: str, **extra: str) -> ThreadServer:
        server, runtime = start_service(SERVICES[name][0], service_env(env, sims, **extra))
        server.runtime = runtime  # type: ignore[attr-defined]
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


# In one process ------------------------------------------------------------------------------------------------


def test_a_token_about_to_expire_is_refreshed_before_the_call(env, cipher, serve, github):
    server = serve("github")  # the default margin: a token with less than a minute left is refreshed first
    github.token_lifetime_s = 30
    inst, grant = connected(env, cipher, github, "github", "octocat")
    github.token_lifetime_s = None  # the refreshed token lives GitHub's 8 hours
    assert ok(call_tool(server, inst, "get_me"))["login"] == "octocat"
    assert github.refresh_count() == 1 and github.reused_refresh_tokens() == []
    stored = row(env, cipher, inst)
    [used] = bearer_tokens(github, r"^/user$")
    assert used == stored["creds"]["access_token"] != grant["access_token"]  # the old token never went upstream
    assert stored["token_expires_at"] > datetime.now(UTC) + timedelta(hours=7)
    ok(call_tool(server, inst, "get_me"))
    assert github.refresh_count() == 1  # the new token is cached with its expiry: no second refresh
    assert bearer_tokens(github, r"^/user$") == [used, used]


def test_direct_endpoints_refresh_first_and_answer_403_once_the_grant_is_dead(env, cipher, serve, github):
    server = serve("github")
    github.token_lifetime_s = 30
    inst, grant = connected(env, cipher, github, "github", "octocat")
    resp = http("GET", f"{server.url}/{inst}/api/repos/octocat/hello-world")
    assert resp.status == 200, resp.body
    assert github.refresh_count() == 1
    assert bearer_tokens(github, r"^/repos/") == [row(env, cipher, inst)["creds"]["access_token"]]
    github.revoke()
    github.expire_access_tokens()
    with psycopg.connect(env["DATABASE_URL"]) as conn:  # its expiry recorded as passed: refreshed before the call
        conn.execute("UPDATE service_instances SET token_expires_at = now() - interval '1 second' WHERE id = %s",
                     (inst,))

    def answer() -> Any:
        resp = http("GET", f"{server.url}/{inst}/api/repos/octocat/hello-world")
        return resp if resp.status == 403 else None
    resp = wait_for(answer, 10, what="403")
    assert resp.json["error"]["code"] == "instance_reauth_required"
    assert row(env, cipher, inst)["status"] == "reauth_required"
    assert len(bearer_tokens(github, r"^/repos/")) == 1  # the dead token never went upstream


@pytest.mark.parametrize("name", ["github", "figma", "slack"])
def test_an_upstream_refusal_of_the_token_refreshes_once_and_retries(env, cipher, serve, sims, name):
    service, kind, tool, args, path = SERVICES[name]
    sim = sims[name]
    server = serve(name)
    inst, grant = connected(env, cipher, sim, kind, "grace")
    sim.expire_access_tokens()  # the database still says hours left: only the upstream knows
    result = call_tool(server, inst, tool, args)
    assert result["isError"] is False, result
    assert sim.refresh_count() == 1 and sim.reused_refresh_tokens() == []
    sent = bearer_tokens(sim, re.escape(path) + "$")
    # The refused token once, then only the new one (Slack's list follows its cursor with it).
    assert sent[0] == grant["access_token"] and set(sent[1:]) == {row(env, cipher, inst)["creds"]["access_token"]}
    # One call, one usage record: the final outcome.
    wait_for(lambda: usage_of(env, inst) == ["ok"], 10, what="one usage record")
    time.sleep(0.5)
    assert usage_of(env, inst) == ["ok"]


def test_mcp_tool_calls_are_refreshed_the_same_way(env, cipher, serve, github):
    server = serve("github")
    inst, _ = connected(env, cipher, github, "github", "octocat")
    github.expire_access_tokens()
    resp = mcp_call(server, inst, "get_me")
    assert resp.status == 200, resp.body
    result = resp.json["result"]
    assert result["isError"] is False and result["structuredContent"]["login"] == "octocat"
    assert github.refresh_count() == 1


def test_without_a_refresh_token_the_upstream_answer_stands(env, cipher, serve, github):
    server = serve("github")
    inst, _ = connected(env, cipher, github, "github", "octocat", refresh=False)
    github.expire_access_tokens()
    err = failed(call_tool(server, inst, "get_me"))
    assert err["code"] == "unauthorized" and err["status"] == 401
    # A bare access_token whose recorded expiry passed: nothing to refresh with, nothing attempted.
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE service_instances SET token_expires_at = now() - interval '1 hour' WHERE id = %s",
                     (inst,))
    wait_for(lambda: failed(call_tool(server, inst, "get_me"))["code"] == "unauthorized", 10)
    assert github.token_requests == []


def test_a_transient_token_endpoint_failure_is_an_is_error_result_and_the_next_call_works(env, cipher, serve,
                                                                                           github):
    server = serve("github")
    inst, _ = connected(env, cipher, github, "github", "octocat")
    github.expire_access_tokens()
    github.fail_token_endpoint(503)
    result = call_tool(server, inst, "get_me")
    assert result["isError"] is True
    assert result["structuredContent"]["code"] == "token_refresh_failed"
    assert result["content"][0]["text"] == "could not refresh the GitHub token, try again"
    assert row(env, cipher, inst)["status"] == "active"
    assert ok(call_tool(server, inst, "get_me"))["login"] == "octocat"
    assert github.refresh_count() == 1 and github.reused_refresh_tokens() == []


def test_a_revoked_grant_makes_the_instance_reauth_required(env, cipher, serve, github):
    server = serve("github")
    inst, grant = connected(env, cipher, github, "github", "octocat")
    other, _ = connected(env, cipher, github, "github", "hubot")
    github.revoke(grant["refresh_token"])
    result = call_tool(server, inst, "get_me")
    err = failed(result)
    assert err["code"] == "instance_reauth_required"
    assert "POST /api/connect" in err["message"] and "instance_id" in err["message"]
    assert row(env, cipher, inst)["status"] == "reauth_required"
    # The following requests: 403 on REST and on MCP, from this process's cache or the database alike.
    resp = http("POST", f"{server.url}/{inst}/mcp/call", {"name": "get_me", "arguments": {}})
    assert resp.status == 403, resp.body
    assert resp.json["error"]["code"] == "instance_reauth_required"
    assert "POST /api/connect" in resp.json["error"]["message"]
    resp = mcp_call(server, inst, "get_me")
    assert resp.status == 403, resp.body
    assert "POST /api/connect" in resp.json["error"]["message"]
    health = http("GET", f"{server.url}/{inst}/health").json
    assert health["status"] == "reauth_required" and "POST /api/connect" in health["instance"]["message"]
    # One refresh token sent, once; the other instance is untouched.
    assert [r.outcome for r in github.token_requests] == ["bad_refresh_token"]
    assert ok(call_tool(server, other, "get_me"))["login"] == "hubot"


def test_pending_instances_are_refused_with_how_to_connect(env, cipher, serve):
    server = serve("github")
    inst = new_instance(env, cipher, "github", {}, None)
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE service_instances SET status = 'pending' WHERE id = %s", (inst,))
    resp = http("POST", f"{server.url}/{inst}/mcp/call", {"name": "get_me", "arguments": {}})
    assert resp.status == 403 and resp.json["error"]["code"] == "instance_pending"
    assert "POST /api/connect" in resp.json["error"]["message"]
    assert mcp_call(server, inst, "get_me").status == 403


def test_static_credentials_are_never_refreshed(env, cipher, serve, github):
    server = serve("github")
    inst = new_instance(env, cipher, "github", {"api_key": "ghp_static"}, None)
    assert ok(call_tool(server, inst, "get_me"))
    github.fail(r"^/user$", 401, {"message": "Bad credentials"})
    assert failed(call_tool(server, inst, "get_me"))["code"] == "unauthorized"
    assert github.token_requests == []


# Across processes ------------------------------------------------------------------------------------------------


def two_github_processes(spawn: Any, env: dict[str, str], sims: dict[str, Any], **extra: str) -> list[Any]:
    proc_env = service_env(env, sims, **extra)
    return [spawn("services.github", "GITHUB_PORT", proc_env) for _ in range(2)]


def assert_no_secrets_in(logs: str, secrets: set[str], ids: set[str]) -> None:
    for secret in secrets:
        assert secret not in logs
    for instance_id in ids:
        assert instance_id not in logs and instance_id.replace("-", "") not in logs


def sim_secrets(sim: Any, path: str) -> set[str]:
    """Every token the simulator saw: refresh tokens sent to it, access tokens used on it."""
    return {r.credential for r in sim.token_requests if r.credential} | set(bearer_tokens(sim, path))


def test_two_processes_refreshing_one_instance_send_one_token_request(env, cipher, spawn, sims):
    github = sims["github"]
    procs = two_github_processes(spawn, env, sims)
    inst, grant = connected(env, cipher, github, "github", "octocat")
    github.expire_access_tokens()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: call_tool(procs[i % 2], inst, "get_me"), range(20)))
    assert all(r["isError"] is False for r in results), [r for r in results if r["isError"]]
    assert github.refresh_count() == 1
    assert [r.credential for r in github.token_requests] == [grant["refresh_token"]]
    # Then the grant is revoked: both processes answer 403 once the first call has found out.
    github.revoke()
    assert failed(call_tool(procs[0], inst, "get_me"))["code"] == "instance_reauth_required"
    for proc in procs:
        wait_for(lambda p=proc: http("POST", f"{p.url}/{inst}/mcp/call",
                                     {"name": "get_me", "arguments": {}}).status == 403, 10, what="403")
    logs = "".join(p.output() for p in procs)
    assert "refresh token refused" in logs  # the reauth line is there, without a token or the id
    assert_no_secrets_in(logs, sim_secrets(github, r"^/user$"), {inst})


DURATION_S = 30.0
LIFETIME_S = 2.0
MARGIN_S = 0.5
INSTANCES = 20
CONCURRENCY = 200


async def hammer(urls: list[str], instances: list[str], deadline: float) -> tuple[list[Any], dict[str, list[float]]]:
    """CONCURRENCY callers, each calling get_me on instance after instance, through either process."""
    failures: list[Any] = []
    seen: dict[str, list[float]] = defaultdict(list)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as s:
        async def caller(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                inst = instances[i % len(instances)]
                url = f"{urls[i % len(urls)]}/{inst}/mcp/call"
                i += 7
                try:
                    async with s.post(url, json={"name": "get_me", "arguments": {}}) as resp:
                        body = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as e:
                    failures.append(repr(e))
                    continue
                result = json.loads(body) if status == 200 else None
                if result is None or result["isError"]:
                    failures.append((status, body[:300]))
                else:
                    seen[inst].append(time.time())
                    if result["structuredContent"]["login"] != f"user{instances.index(inst)}":
                        failures.append(("wrong account", inst))

        await asyncio.gather(*(caller(n) for n in range(CONCURRENCY)))
    return failures, seen


def test_tokens_expiring_every_two_seconds_under_load_across_two_processes(env, cipher, spawn, sims):
    github = sims["github"]
    procs = two_github_processes(spawn, env, sims, OAUTH_REFRESH_MARGIN=str(MARGIN_S))
    github.token_lifetime_s = LIFETIME_S
    issued_at, instances = [], []
    for i in range(INSTANCES):
        issued_at.append(time.time())
        instances.append(connected(env, cipher, github, "github", f"user{i}")[0])
    failures, seen = asyncio.run(hammer([p.url for p in procs], instances, time.monotonic() + DURATION_S))
    assert failures == []
    assert github.reused_refresh_tokens() == []
    calls = sum(len(v) for v in seen.values())
    assert calls >= 2 * CONCURRENCY  # every caller got answers; the count depends on the machine
    for i, inst in enumerate(instances):
        account = f"user{i}"
        refreshes = github.refresh_count(account)
        # A token lives LIFETIME_S and is replaced MARGIN_S before its end (or when refused): at most one refresh
        # per token that came due, never two for one token; calls ran throughout, so tokens were replaced.
        assert 2 <= refreshes <= math.ceil(DURATION_S / (LIFETIME_S - MARGIN_S)) + 1, (account, refreshes)
        assert max(seen[inst]) - min(seen[inst]) > DURATION_S / 2
        # No token was replaced before it came due: each lived at least LIFETIME_S - MARGIN_S (a process that
        # refreshed a token another had just obtained would show as a short-lived one).
        times = [issued_at[i], *sorted(r.at for r in github.token_requests
                                       if r.account == account and r.grant_type == "refresh_token")]
        lives = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(lives) >= LIFETIME_S - MARGIN_S - 0.05, (account, lives)
    # Every refresh produced a token that was used: the tokens sent are the issued ones plus one per refresh.
    assert len(set(bearer_tokens(github, r"^/user$"))) == INSTANCES + github.refresh_count()
    logs = "".join(p.output() for p in procs)
    assert_no_secrets_in(logs, sim_secrets(github, r"^/user$"), set(instances))
