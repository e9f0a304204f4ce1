"""Every outcome of resolving /{instance}/...: 400, 404, 403 (inactive / expired), 503, 200."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support import free_port, http, wait_for

PATHS = ["/mcp/tools", "/health", "/api/files/abc123"]


def test_non_uuid_is_400_on_every_instance_path(figma_service):
    for path in PATHS:
        resp = http("GET", f"{figma_service.url}/not-a-uuid{path}")
        assert resp.status == 400, path
        assert resp.json["error"]["code"] == "invalid_instance_id"
    resp = http("POST", f"{figma_service.url}/1234/mcp/call", {"name": "get_me"})
    assert resp.status == 400


def test_unknown_instance_is_404(figma_service, figma):
    resp = http("POST", f"{figma_service.url}/{uuid.uuid4()}/mcp/call", {"name": "get_me"})
    assert resp.status == 404
    assert resp.json["error"]["code"] == "instance_not_found"
    assert figma.recorded() == []


def test_instance_of_another_service_is_404(admin, figma_service, database_url, credentials_key, figma):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO mcp_table (name, display_name, port, auth_type) "
                     "VALUES ('other', 'Other', 49399, 'api_key')")
    inst = admin.create_instance(service="other", credentials={"api_key": "k"})
    resp = http("GET", f"{figma_service.url}/{inst['instance_id']}/mcp/tools")
    assert resp.status == 404
    assert resp.json["error"]["code"] == "instance_not_found"


def test_inactive_instance_is_403_and_says_so(admin, figma_service):
    inst = admin.create_instance()
    assert admin("PATCH", f"/api/instances/{inst['instance_id']}", {"status": "inactive"}).status == 200
    resp = http("GET", f"{figma_service.url}/{inst['instance_id']}/mcp/tools")
    assert resp.status == 403
    assert resp.json["error"]["code"] == "instance_inactive"
    assert "inactive" in resp.json["error"]["message"]


@pytest.mark.parametrize("how", ["status", "time"])
def test_expired_instance_is_403_and_says_so(admin, figma_service, database_url, how):
    inst = admin.create_instance(expires_at="2099-01-01T00:00:00Z")
    with psycopg.connect(database_url, autocommit=True) as conn:
        if how == "status":
            conn.execute("UPDATE service_instances SET status = 'expired' WHERE id = %s", (inst["instance_id"],))
        else:  # the clock passes expires_at: no status change is needed
            conn.execute("UPDATE service_instances SET expires_at = now() - interval '1 second' WHERE id = %s",
                         (inst["instance_id"],))
    resp = wait_for(lambda: (r := http("GET", f"{figma_service.url}/{inst['instance_id']}/mcp/tools")).status == 403
                    and r, 5, what="403")
    assert resp.json["error"]["code"] == "instance_expired"
    health = http("GET", f"{figma_service.url}/{inst['instance_id']}/health")
    assert health.status == 200 and health.json["instance"]["status"] == "expired"


def test_cached_instance_expires_on_time_without_any_write(admin, figma_service):
    inst = admin.create_instance(expires_at="2099-01-01T00:00:00Z")
    url = f"{figma_service.url}/{inst['instance_id']}/mcp/tools"
    assert http("GET", url).status == 200  # now cached, with its expiry
    resolver = figma_service.runtime.resolver
    resolver.now = lambda: datetime(2099, 1, 1, 0, 0, 1, tzinfo=UTC)
    resp = http("GET", url)
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


def test_database_unreachable_is_503_with_retry_after(spawn):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    service = spawn("services.figma", "FIGMA_PORT", {"DATABASE_URL": dead, "DB_TIMEOUT": "0.5"})
    assert http("GET", service.url + "/health").json["status"] == "healthy"
    resp = http("POST", f"{service.url}/{uuid.uuid4()}/mcp/call", {"name": "get_me"})
    assert resp.status == 503
    assert resp.headers["retry-after"] == "5"
    assert resp.json["error"]["code"] == "database_unavailable"
    assert "postgres" not in resp.body.decode().lower()


def test_recording_usage_does_not_empty_the_cache(admin, figma_service):
    inst = admin.create_instance()
    url = f"{figma_service.url}/{inst['instance_id']}/mcp/call"
    listener = figma_service.runtime.listener
    wait_for(lambda: listener is not None and listener.connected.is_set(), 5, what="the change listener")
    assert http("POST", url, {"name": "get_me"}).status == 200
    resolver = figma_service.runtime.resolver
    generation = resolver._generation
    # The usage flush writes last_used_at; only changes that matter to resolution are announced.
    wait_for(lambda: admin("GET", f"/api/instances/{inst['instance_id']}").json["last_used_at"], 10)
    time.sleep(0.3)
    assert resolver._generation == generation
    assert resolver.is_cached(inst["instance_id"])
