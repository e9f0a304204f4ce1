"""Every outcome of resolving /{instance}/...: 400, 404, 403 (inactive / expired), 503, 200."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import free_port, http, wait_for

# One application in-process (pytest-tornado, see tests/inprocess.py) unless a real process is the point.
pytest_plugins = ["tests.inprocess"]

PATHS = ["/mcp/tools", "/health", "/api/files/abc123"]


@pytest.mark.gen_test
async def test_non_uuid_is_400_on_every_instance_path(fetch):
    for path in PATHS:
        resp = await fetch("GET", f"/not-a-uuid{path}")
        assert resp.status == 400, path
        assert resp.json["error"]["code"] == "invalid_instance_id"
    resp = await fetch("POST", "/1234/mcp/call", {"name": "get_me"})
    assert resp.status == 400


@pytest.mark.gen_test
async def test_unknown_instance_is_404(fetch, figma):
    resp = await fetch("POST", f"/{uuid.uuid4()}/mcp/call", {"name": "get_me"})
    assert resp.status == 404
    assert resp.json["error"]["code"] == "instance_not_found"
    assert figma.recorded() == []


@pytest.mark.gen_test
async def test_instance_of_another_service_is_404(admin, fetch, database_url, credentials_key, figma):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO mcp_table (name, display_name, port, auth_type) "
                     "VALUES ('other', 'Other', 49399, 'api_key')")
    inst = admin.create_instance(service="other", credentials={"api_key": "k"})
    resp = await fetch("GET", f"/{inst['instance_id']}/mcp/tools")
    assert resp.status == 404
    assert resp.json["error"]["code"] == "instance_not_found"


@pytest.mark.gen_test
async def test_inactive_instance_is_403_and_says_so(admin, fetch):
    inst = admin.create_instance()
    assert admin("PATCH", f"/api/instances/{inst['instance_id']}", {"status": "inactive"}).status == 200
    resp = await fetch("GET", f"/{inst['instance_id']}/mcp/tools")
    assert resp.status == 403
    assert resp.json["error"]["code"] == "instance_inactive"
    assert "inactive" in resp.json["error"]["message"]


@pytest.mark.parametrize("how", ["status", "time"])
@pytest.mark.gen_test
async def test_expired_instance_is_403_and_says_so(admin, fetch, eventually, database_url, how):
    inst = admin.create_instance(expires_at="2099-01-01T00:00:00Z")
    with psycopg.connect(database_url, autocommit=True) as conn:
        if how == "status":
            conn.execute("UPDATE service_instances SET status = 'expired' WHERE id = %s", (inst["instance_id"],))
        else:  # the clock passes expires_at: no status change is needed
            conn.execute("UPDATE service_instances SET expires_at = now() - interval '1 second' WHERE id = %s",
                         (inst["instance_id"],))
    async def refused():
        return (r := await fetch("GET", f"/{inst['instance_id']}/mcp/tools")).status == 403 and r

    resp = await eventually(refused, 5, what="403")
    assert resp.json["error"]["code"] == "instance_expired"
    health = await fetch("GET", f"/{inst['instance_id']}/health")
    assert health.status == 200 and health.json["instance"]["status"] == "expired"


@pytest.mark.gen_test
async def test_cached_instance_expires_on_time_without_any_write(admin, fetch, runtime):
    inst = admin.create_instance(expires_at="2099-01-01T00:00:00Z")
    path = f"/{inst['instance_id']}/mcp/tools"
    assert (await fetch("GET", path)).status == 200  # now cached, with its expiry
    runtime.resolver.now = lambda: datetime(2099, 1, 1, 0, 0, 1, tzinfo=UTC)
    resp = await fetch("GET", path)
    assert resp.status == 403
    assert resp.json["error"]["code"] == "instance_expired"


def test_deactivation_takes_effect_at_once_in_a_running_process(admin, spawn):
    service = spawn("services.figma", "FIGMA_PORT", {"INSTANCE_CACHE_TTL": "300"})
    inst = admin.create_instance()
    url = f"{service.url}/{inst['instance_id']}/mcp/tools"
    wait_for(lambda: http("GET", url).status == 200, 5)  # cached for 300 s from here on
    assert admin("PATCH", f"/api/instances/{inst['instance_id']}", {"status": "inactive"}).status == 200
    wait_for(lambda: http("GET", url).status == 403, 1.5, what="deactivation to reach the service")
    assert admin("PATCH", f"/api/instances/{inst['instance_id']}", {"status": "active"}).status == 200
    wait_for(lambda: http("GET", url).status == 200, 1.5, what="reactivation")
    assert admin("DELETE", f"/api/instances/{inst['instance_id']}").status == 204
    wait_for(lambda: http("GET", url).status == 404, 1.5, what="deletion")


@pytest.mark.parametrize("overrides", [{"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                                        "DB_TIMEOUT": "0.5"}], indirect=True)
@pytest.mark.gen_test
async def test_database_unreachable_is_503_with_retry_after(fetch):
    assert (await fetch("GET", "/health")).json["status"] == "healthy"
    resp = await fetch("POST", f"/{uuid.uuid4()}/mcp/call", {"name": "get_me"})
    assert resp.status == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json["error"]["code"] == "database_unavailable"
    assert "postgres" not in resp.body.decode().lower()


@pytest.mark.gen_test
async def test_recording_usage_does_not_empty_the_cache(admin, fetch, runtime, eventually):
    inst = admin.create_instance()
    runtime.ensure_started()
    await asyncio.wait_for(runtime.listener.connected.wait(), 5)
    assert (await fetch("POST", f"/{inst['instance_id']}/mcp/call", {"name": "get_me"})).status == 200
    generation = runtime.resolver._generation

    async def last_used():
        return admin("GET", f"/api/instances/{inst['instance_id']}").json["last_used_at"]

    # The usage flush writes last_used_at; only changes that matter to resolution are announced.
    await eventually(last_used, 10, what="last_used_at")
    await asyncio.sleep(0.3)
    assert runtime.resolver._generation == generation
    assert runtime.resolver.is_cached(inst["instance_id"])
