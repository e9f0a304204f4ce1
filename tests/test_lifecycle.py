"""Process lifecycle: start without a database, survive its outage, shut down cleanly, refuse bad config."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from db.migrate import migrate
from mcp.tenancy.credentials import CredentialCipher, parse_key
from tests.support import ROOT, ServiceProcess, base_env, free_port, http, wait_for


def test_starts_and_serves_health_with_no_database_configured(spawn, tmp_path):
    env_without_db = {"DATABASE_URL": "", "MCP_PROJECT_ROOT": str(tmp_path / "empty")}
    service = spawn("services.figma", "FIGMA_PORT", env_without_db)
    health = http("GET", service.url + "/health")
    assert health.status == 200
    assert set(health.json) == {"service", "status", "uptime", "timestamp", "port", "version", "pid"}
    assert health.json["service"] == "figma" and health.json["port"] == service.port
    resp = http("GET", f"{service.url}/{uuid.uuid4()}/mcp/tools")
    assert resp.status == 503 and "DATABASE_URL" in resp.json["error"]["message"]


def test_database_outage_gives_503_then_recovers_without_restart(own_postgres, credentials_key, figma_sim, tmp_path):
    url, ctl, data = own_postgres
    migrate(url)
    iid = uuid.uuid4()
    sealed = CredentialCipher([parse_key(credentials_key)]).encrypt(iid, {"api_key": "figd_outage"})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('o@example.com')")
        conn.execute("INSERT INTO service_instances (id, user_id, service_name, credentials_enc) "
                     "SELECT %s, id, 'figma', %s FROM users", (iid, sealed))
    port = free_port()
    env = base_env(DATABASE_URL=url, CREDENTIALS_KEY=credentials_key, FIGMA_API_URL=figma_sim.url,
                   FIGMA_PORT=str(port), INSTANCE_CACHE_TTL="0", DB_TIMEOUT="1", MCP_PROJECT_ROOT=str(tmp_path))
    service = ServiceProcess("services.figma", env, port, tmp_path / "figma.log")
    try:
        service.wait_healthy()
        call = f"{service.url}/{iid}/mcp/call"
        assert http("POST", call, {"name": "get_me"}).status == 200
        ctl("-m", "fast", "stop")
        down = http("POST", call, {"name": "get_me"})
        assert down.status == 503 and down.headers["retry-after"]
        assert http("GET", service.url + "/health").status == 200  # the process itself is fine
        ctl("-o", "-h ''", "-o", f"-k {data}", "-l", f"{data}/log", "start")
        wait_for(lambda: http("POST", call, {"name": "get_me"}).status == 200, 20, what="recovery")
        assert service.proc.poll() is None  # same process, no restart
    finally:
        service.stop()


def test_sigterm_during_a_slow_call_completes_it_and_flushes_usage(admin, spawn, figma, database_url):
    service = spawn("services.figma", "FIGMA_PORT", {"USAGE_FLUSH_INTERVAL": "60"})
    iid = admin.create_instance(credentials={"api_key": "figd_slow"})["instance_id"]
    figma.fail("/v1/me", 200, {"id": "slow-user"}, delay=1.5)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(http, "POST", f"{service.url}/{iid}/mcp/call", {"name": "get_me"})
        wait_for(lambda: figma.recorded("/v1/me"), 5, what="the call to reach the upstream")
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        resp = pending.result(10)
    assert resp.status == 200 and resp.json["structuredContent"] == {"id": "slow-user"}
    assert service.proc.wait(5) == 0
    assert time.monotonic() - started < 4.5
    # New connections are refused once it is down.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", service.port), timeout=1):
        pass
    # The usage record was flushed at shutdown (the periodic flush was 60 s away).
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tool, outcome FROM usage WHERE instance_id = %s", (iid,)).fetchall()
    assert rows == [("get_me", "ok")]


def test_port_in_use_exits_98_and_says_so(env):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "services.figma"], cwd=ROOT, capture_output=True, text=True,
                             env={**env, "FIGMA_PORT": str(port)}, timeout=30)
    assert out.returncode == 98
    assert f"port {port} is already in use" in out.stderr


def test_missing_or_bad_credentials_key_refuses_to_start(env):
    for key in ("", "not-a-key"):
        out = subprocess.run([sys.executable, "-m", "services.figma"], cwd=ROOT, capture_output=True, text=True,
                             env={**env, "CREDENTIALS_KEY": key, "FIGMA_PORT": str(free_port())}, timeout=30)
        assert out.returncode == 78
        assert "CREDENTIALS_KEY" in out.stderr
        assert "Traceback" not in out.stderr


def test_api_refuses_to_start_without_admin_token(env):
    out = subprocess.run([sys.executable, "-m", "services.api"], cwd=ROOT, capture_output=True, text=True,
                         env={**env, "ADMIN_TOKEN": "", "API_PORT": str(free_port())}, timeout=30)
    assert out.returncode == 78 and "ADMIN_TOKEN" in out.stderr


def test_logs_never_contain_credentials_or_instance_ids(admin, spawn, figma):
    service = spawn("services.figma", "FIGMA_PORT", {"LOG_LEVEL": "DEBUG"})
    secret = "figd_PLANTED_SECRET_4242"
    iid = admin.create_instance(credentials={"api_key": secret})["instance_id"]
    base = f"{service.url}/{iid}"
    http("POST", base + "/mcp/call", {"name": "get_me"})
    figma.fail("/v1/me", 401, {"status": 401, "err": f"token {secret} is invalid"})
    failed = http("POST", base + "/mcp/call", {"name": "get_me"})
    http("GET", base + "/mcp/tools")
    http("GET", base + "/api/files/missing?token=" + secret)
    http("POST", base + "/mcp/call", raw=b"{broken")
    assert service.stop() == 0
    output = service.output()
    assert "POST /{instance}/mcp/call" in output  # the access log is there, scrubbed
    assert secret not in output and iid not in output
    # Figma quoting the token back in its error does not carry it to the client either.
    assert failed.status == 200 and failed.json["isError"] is True
    assert secret not in failed.body.decode() and "[redacted]" in failed.body.decode()
