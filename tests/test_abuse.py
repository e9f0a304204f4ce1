"""Abuse is bounded: per-instance rate limits, per-instance upstream concurrency, cheap rejection of
guessed instance ids, and no credential ever crossing between instances under heavy concurrency."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid

import aiohttp
import pytest

from services.figma import SERVICE as FIGMA
from tests.conftest import start_service
from tests.simulators.figma import user_for
from tests.support import http


@pytest.fixture
def limited(env):
    def start(**limits: str):
        server, runtime = start_service(FIGMA, {**env, **limits})
        servers.append(server)
        server.runtime = runtime
        return server

    servers: list = []
    yield start
    for s in servers:
        s.stop()


def test_a_noisy_instance_gets_429_and_others_do_not(admin, limited, figma):
    service = limited(RATE_LIMIT_PER_MINUTE="60", RATE_LIMIT_BURST="5")
    noisy = admin.create_instance(user="noisy@example.com")["instance_id"]
    quiet = admin.create_instance(user="quiet@example.com")["instance_id"]
    statuses = [http("POST", f"{service.url}/{noisy}/mcp/call", {"name": "get_me"}).status for _ in range(8)]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    limited_resp = http("GET", f"{service.url}/{noisy}/mcp/tools")
    assert limited_resp.status == 429 and int(limited_resp.headers["retry-after"]) >= 1
    assert limited_resp.json["error"]["code"] == "rate_limited"
    assert http("POST", f"{service.url}/{quiet}/mcp/call", {"name": "get_me"}).status == 200
    assert len(figma.recorded("/v1/me")) == 6  # rejected calls never reached the upstream


def test_upstream_concurrency_is_capped_per_instance(admin, limited, figma):
    service = limited(UPSTREAM_CONCURRENCY_PER_INSTANCE="2")
    busy = admin.create_instance(user="busy@example.com", credentials={"api_key": "figd_busy"})["instance_id"]
    other = admin.create_instance(user="other@example.com", credentials={"api_key": "figd_other"})["instance_id"]
    figma.delay = 0.3
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        busy_calls = [pool.submit(http, "POST", f"{service.url}/{busy}/mcp/call", {"name": "get_me"})
                      for _ in range(6)]
        other_call = pool.submit(http, "POST", f"{service.url}/{other}/mcp/call", {"name": "get_me"})
        assert other_call.result(10).json["isError"] is False
        assert all(f.result(20).json["isError"] is False for f in busy_calls)
    assert figma.max_in_flight["figd_busy"] == 2
    assert len(figma.recorded("/v1/me")) == 7


def test_guessing_instance_ids_is_answered_from_memory(admin, limited):
    service = limited(UNKNOWN_ID_LIMIT_PER_MINUTE="6", TRUSTED_PROXIES="127.0.0.1")  # a burst of 3 per client
    known = admin.create_instance()["instance_id"]
    assert http("GET", f"{service.url}/{known}/mcp/tools").status == 200  # cached from here on
    loads = []
    resolver = service.runtime.resolver
    original = resolver._load

    async def counting_load(instance_id):
        loads.append(instance_id)
        return await original(instance_id)

    resolver._load = counting_load
    statuses = [http("GET", f"{service.url}/{uuid.uuid4()}/mcp/tools").status for _ in range(20)]
    assert statuses[:3] == [404] * 3 and set(statuses[3:]) == {429}
    assert len(loads) == 3  # the other 17 guesses never reached the database
    # Non-v4 UUIDs are never looked up at all.
    assert http("GET", f"{service.url}/{uuid.uuid1()}/mcp/tools").status in (404, 429)
    assert len(loads) == 3
    # The same client's real, cached instance keeps working.
    assert http("GET", f"{service.url}/{known}/mcp/tools").status == 200


def test_the_unknown_id_budget_is_per_client_as_a_local_proxy_names_it(limited):
    service = limited(UNKNOWN_ID_LIMIT_PER_MINUTE="6", TRUSTED_PROXIES="127.0.0.1")  # a burst of 3 per client

    def guess(headers: dict[str, str]) -> int:
        return http("GET", f"{service.url}/{uuid.uuid4()}/mcp/tools", headers=headers).status

    # nginx (a peer on this machine) names the client in X-Real-IP, or last in X-Forwarded-For.
    assert [guess({"X-Real-IP": "203.0.113.7"}) for _ in range(4)] == [404, 404, 404, 429]
    assert guess({"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}) == 429  # the same client, named the other way
    assert guess({"X-Real-IP": "203.0.113.8"}) == 404  # another client has its own budget
    assert guess({"X-Forwarded-For": "203.0.113.7, 203.0.113.9"}) == 404  # the last hop counts
    # A value that is not an address is ignored: the request counts against the proxy itself.
    assert [guess({"X-Real-IP": "not an address"}) for _ in range(4)] == [404, 404, 404, 429]


def test_hundreds_of_concurrent_calls_from_dozens_of_instances_never_cross_credentials(admin, figma_service, figma):
    instances = {admin.create_instance(user=f"u{i}@example.com", credentials={"api_key": f"figd_tenant_{i:03d}"})
                 ["instance_id"]: f"figd_tenant_{i:03d}" for i in range(40)}
    figma.delay = 0.005

    async def run() -> list[tuple[str, dict]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:
            async def one(iid: str) -> tuple[str, dict]:
                async with session.post(f"{figma_service.url}/{iid}/mcp/call", json={"name": "get_me"}) as r:
                    return iid, await r.json()

            return await asyncio.gather(*(one(iid) for iid in list(instances) * 10))

    results = asyncio.run(run())
    assert len(results) == 400
    for iid, result in results:
        assert result["isError"] is False, result
        assert result["structuredContent"]["id"] == user_for(instances[iid])["id"]
    assert sorted(r.header("X-Figma-Token") for r in figma.recorded("/v1/me")) == sorted(list(instances.values()) * 10)
