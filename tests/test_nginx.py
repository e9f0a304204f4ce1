"""scripts/nginx-conf's configuration, checked by a real nginx proxying a real instance call."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mcp.nginx import CatalogError, NginxOptions, Route, main, render, server_name_from, size_directive
from tests.simulators.figma import user_for
from tests.support import free_port, http, wait_for


def nginx_binary() -> str:
    """nginx, which Debian puts in /usr/sbin (not on every PATH); skipped, or failed in CI, when absent."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("nginx is not installed, and CI must run this test (.ci/run installs it)")
    pytest.skip("nginx is not installed (apt-get install nginx)")


def top_level_conf(tmp: Path, include: Path) -> str:
    """The smallest nginx.conf around the generated file, with every path in the test's folder."""
    temp = "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                          "scgi"))
    # As root, workers would switch to 'nobody', who cannot enter pytest's private folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log info;\n"
            f"events {{ worker_connections 64; }}\nhttp {{\n{temp}\n    access_log {tmp}/other-access.log;\n"
            f"    include {include};\n}}\n")


@pytest.fixture
def nginx(tmp_path):
    """Start nginx on a free port with the given generated configuration; stopped afterwards."""
    binary = nginx_binary()
    procs = []

    def start(text: str) -> Path:
        (tmp_path / "mcp-platform.conf").write_text(text)
        conf = tmp_path / "nginx.conf"
        conf.write_text(top_level_conf(tmp_path, tmp_path / "mcp-platform.conf"))
        base = [binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        procs.append(subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return tmp_path

    yield start
    for proc in procs:
        proc.terminate()  # fast shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_render_strips_prefixes_streams_and_scrubs_the_access_log():
    text = render([Route("figma", 49280), Route("github", 49281)],
                  NginxOptions(listen="8080", server_name=server_name_from("https://mcp.example.com/")))
    assert "listen 8080;" in text and "server_name mcp.example.com;" in text
    assert "location /figma/ {\n        proxy_pass http://mcp_figma/;" in text
    assert "upstream mcp_github {\n    server 127.0.0.1:49281;" in text
    assert "location /api/ {\n        proxy_pass http://mcp_api;" in text and "server 127.0.0.1:5000;" in text
    assert "location = /health {" in text
    for directive in ("proxy_http_version 1.1;", "proxy_buffering off;", "proxy_read_timeout 300s;",
                      "client_max_body_size 1m;", "X-Forwarded-For $proxy_add_x_forwarded_for;",
                      "X-Forwarded-Proto $scheme;", "map $request_uri $scrubbed_uri {",
                      "access_log /var/log/nginx/mcp-platform.access.log mcp_scrubbed;"):
        assert directive in text, directive
    assert "$request_uri" not in text.split("log_format", 1)[1]  # only the scrubbed form is logged
    assert server_name_from(None) == "_" and size_directive(1 << 20) == "1m" and size_directive(1500) == "1500"
    with pytest.raises(CatalogError, match="twice"):
        render([Route("figma", 1), Route("figma", 2)], NginxOptions())
    with pytest.raises(CatalogError, match="URL prefix"):
        Route("api", 49300)


def test_the_command_reads_the_active_catalog(database_url, tmp_path, capsys):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE mcp_table SET active = false WHERE name = 'slack'")
        active = [r[0] for r in conn.execute("SELECT name FROM mcp_table WHERE active ORDER BY name")]
    out = tmp_path / "mcp.conf"
    environ = {"DATABASE_URL": database_url, "MCP_PROJECT_ROOT": str(tmp_path), "API_PORT": "5055"}
    assert main(["--listen", "8080", "--output", str(out)], environ) == 0
    text = out.read_text()
    for name in active:
        assert f"location /{name}/ {{" in text
    assert "location /slack/" not in text and "server 127.0.0.1:5055;" in text
    assert main([], {"MCP_PROJECT_ROOT": str(tmp_path)}) == 1
    assert "no database" in capsys.readouterr().err


def test_an_instance_call_through_nginx_reaches_the_service_and_the_log_has_no_instance_id(
        nginx, api, admin, figma_service, figma, tmp_path):
    port, access_log = free_port(), tmp_path / "access.log"
    nginx(render([Route("figma", figma_service.port)],
                 NginxOptions(listen=f"127.0.0.1:{port}", api_port=api.port, access_log=str(access_log))))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base + "/health"), 10, what="nginx to answer")
    instance = admin.create_instance(credentials={"api_key": "figd_nginx"})["instance_id"]

    resp = http("POST", f"{base}/figma/{instance}/mcp/call?token=secret", {"name": "get_me", "arguments": {}})
    assert resp.status == 200, resp.body
    assert resp.json["isError"] is False and resp.json["structuredContent"] == user_for("figd_nginx")
    assert figma.recorded("/v1/me")[0].header("X-Figma-Token") == "figd_nginx"
    # /api/ keeps its prefix; an unknown prefix is a JSON 404 from nginx itself.
    listed = http("GET", f"{base}/api/instances/{instance}", headers={"Authorization": "Bearer test-admin-token"})
    assert listed.status == 200 and listed.json["instance_id"] == instance
    missing = http("GET", f"{base}/nowhere/")
    assert missing.status == 404 and missing.json["error"]["code"] == "not_found"
    hidden = http("GET", f"{base}/figma/metrics")
    assert hidden.status == 404 and hidden.json["error"]["code"] == "not_found"
    too_big = http("POST", f"{base}/figma/{instance}/mcp/call", raw=b"x" * (2 << 20))
    assert too_big.status == 413 and too_big.json["error"]["code"] == "payload_too_large"

    log = wait_for(lambda: (text := access_log.read_text()) and "/api/instances/" in text and text,
                   5, what="the access log lines")
    assert "POST /figma/{instance}/mcp/call HTTP/1.1\" 200" in log
    assert "GET /api/instances/{instance} HTTP/1.1\" 200" in log
    assert instance not in log and "secret" not in log


def _answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=1).status == 200
    except OSError:
        return False
