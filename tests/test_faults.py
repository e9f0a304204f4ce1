"""Faults: database outage under load (503 then recovery, usage buffered and not lost), changes
reaching every process within a second, and shutdown with many calls in flight."""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
import uuid

import psycopg

from db.migrate import migrate
from mcp.tenancy.credentials import CredentialCipher, parse_key
from tests.support import ServiceProcess, base_env, free_port, http, wait_for


def seed_instance(url: str, key: str, token: str) -> uuid.UUID:
    iid = uuid.uuid4()
    sealed = CredentialCipher([parse_key(key)]).encrypt(iid, {"api_key": token})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES (%s) ON CONFLICT DO NOTHING", (f"{token}@example.com",))
        conn.execute("INSERT INTO service_instances (id, user_id, service_name, credentials_enc) "
                     "SELECT %s, id, 'figma', %s FROM users WHERE email = %s", (iid, sealed, f"{token}@example.com"))
    return iid


def test_outage_under_load_503s_recovers_and_loses_no_usage(own_postgres, credentials_key, figma_sim, tmp_path):
    url, ctl, data = own_postgres
    migrate(url)
    warm = seed_instance(url, credentials_key, "figd_warm")
    port = free_port()
    env = base_env(DATABASE_URL=url, CREDENTIALS_KEY=credentials_key, FIGMA_API_URL=figma_sim.url,
                   FIGMA_PORT=str(port), INSTANCE_CACHE_TTL="300", DB_TIMEOUT="0.5", USAGE_FLUSH_INTERVAL="0.2",
                   RATE_LIMIT_PER_MINUTE="0", UNKNOWN_ID_LIMIT_PER_MINUTE="0", MCP_PROJECT_ROOT=str(tmp_path))
    service = ServiceProcess("services.figma", env, port, tmp_path / "figma.log")
    ok_warm = 0
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        nonlocal ok_warm
        while not stop.is_set():
            if http("POST", f"{service.url}/{warm}/mcp/call", {"name": "get_me"}).status == 200:
                ok_warm += 1
            # An id never seen before needs the database: 404 normally, 503 while it is down.
            statuses.append(http("POST", f"{service.url}/{uuid.uuid4()}/mcp/call", {"name": "get_me"}).status)

    try:
        service.wait_healthy()
        assert http("POST", f"{service.url}/{warm}/mcp/call", {"name": "get_me"}).status == 200
        ok_warm += 1
        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(0.3)
        ctl("-m", "fast", "stop")
        wait_for(lambda: 503 in statuses, 10, what="503 while the database is down")
        during = ok_warm
        # Cached instances keep working through the outage.
        wait_for(lambda: ok_warm > during, 10, what="a cached instance's call during the outage")
        ctl("-o", "-h ''", "-o", f"-k {data}", "-l", f"{data}/log", "start")
        n = len(statuses)
        wait_for(lambda: 404 in statuses[n:], 20, what="recovery")
        stop.set()
        worker.join(10)
        assert service.proc.poll() is None
        assert set(statuses) <= {404, 503}

        def written() -> int:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM usage WHERE instance_id = %s", (warm,)).fetchone()[0]

        # Every successful call of the warm instance, outage included, is recorded once the database is back.
        wait_for(lambda: written() == ok_warm, 15, what=f"{ok_warm} usage rows")
        metrics = http("GET", service.url + "/metrics").body.decode()
        assert 'mcp_usage_records_dropped{process="figma"} 0' in metrics
    finally:
        stop.set()
        service.stop()


def test_changes_reach_every_process_within_a_second(admin, spawn, figma):
    procs = [spawn("services.figma", "FIGMA_PORT", {"INSTANCE_CACHE_TTL": "300"}) for _ in range(2)]
    iid = admin.create_instance(credentials={"api_key": "figd_before"})["instance_id"]

    def tokens_seen_by_all(token: str) -> bool:
        figma.reset()
        for p in procs:
            assert http("POST", f"{p.url}/{iid}/mcp/call", {"name": "get_me"}).status == 200
        return {r.header("X-Figma-Token") for r in figma.recorded("/v1/me")} == {token}

    assert tokens_seen_by_all("figd_before")  # both processes have it cached now
    started = time.monotonic()
    assert admin("PATCH", f"/api/instances/{iid}", {"credentials": {"api_key": "figd_after"}}).status == 200
    wait_for(lambda: tokens_seen_by_all("figd_after"), 1.0, what="new credentials in every process")
    assert admin("PATCH", f"/api/instances/{iid}", {"status": "inactive"}).status == 200
    wait_for(lambda: all(http("GET", f"{p.url}/{iid}/mcp/tools").status == 403 for p in procs), 1.0)
    assert admin("PATCH", f"/api/instances/{iid}", {"status": "active", "expires_at": "2099-01-01T00:00:00Z"}).status \
        == 200
    wait_for(lambda: all(http("GET", f"{p.url}/{iid}/mcp/tools").status == 200 for p in procs), 1.0)
    assert time.monotonic() - started < 5


def test_sigterm_with_many_calls_in_flight_completes_them_all(admin, spawn, figma, database_url):
    service = spawn("services.figma", "FIGMA_PORT", {"USAGE_FLUSH_INTERVAL": "60"})
    ids = [admin.create_instance(user=f"s{i}@example.com")["instance_id"] for i in range(4)]
    figma.delay = 1.0
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        calls = [pool.submit(http, "POST", f"{service.url}/{ids[i % 4]}/mcp/call", {"name": "get_me"})
                 for i in range(20)]
        wait_for(lambda: len(figma.recorded("/v1/me")) == 20, 10, what="20 calls in flight")
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        results = [c.result(10) for c in calls]
    assert [r.status for r in results] == [200] * 20
    assert all(r.json["isError"] is False for r in results)
    assert service.proc.wait(5) == 0 and time.monotonic() - started < 4.5
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM usage").fetchone()[0] == 20
