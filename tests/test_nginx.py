"""scripts/nginx-conf's configuration, checked by a real nginx in front of real services and real MCP clients.

What the service receives through nginx (Host, the client's address, a reused upstream connection) is
seen by a recording server routed like any catalog service; what nginx logs is checked against
instance ids in every encoding a client can put in a request line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
import uuid
from http.client import HTTPConnection
from pathlib import Path

import pytest

from mcp.ops.nginx import (
    CatalogError,
    NginxOptions,
    Route,
    ensure_trusted_proxy,
    main,
    render,
    server_name_from,
    size_directive,
)
from services.figma import SERVICE as FIGMA
from tests.conftest import start_service
from tests.fixtures.recorder import Recorder
from tests.mcp_clients import install
from tests.simulators.figma import user_for
from tests.support import ROOT, free_port, http, wait_for
from tests.test_mcp_clients import TOOL_NAMES, run_sdk

# What a service must receive from nginx on every proxied request, whatever the location.
FULL_HEADER_SET = {"Host", "X-Real-IP", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
                   "X-Forwarded-Prefix", "Forwarded", "Connection"}


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


def options(port: int, tmp: Path, api_port: int = 5000) -> NginxOptions:
    """A server on 127.0.0.1:<port> whose logs are in the test's folder."""
    return NginxOptions(listen=f"127.0.0.1:{port}", api_port=api_port, access_log=str(tmp / "access.log"),
                        error_log=str(tmp / "mcp-error.log"))


def start_nginx(nginx, routes: list[Route], tmp: Path, api_port: int = 5000) -> str:
    """nginx proxying these routes; its base URL once it answers."""
    port = free_port()
    nginx(render(routes, options(port, tmp, api_port)))
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(base + "/nowhere"), 10, what="nginx to answer")
    return base


def _answers(url: str) -> bool:
    try:
        http("GET", url, timeout=1)
        return True
    except OSError:
        return False


def locations(text: str) -> dict[str, str]:
    """Each ``location`` block of a rendered configuration: its pattern -> its body."""
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"\n\s*location ([^{]+)\{([^}]*)\}", text)}


# -- the configuration text ---------------------------------------------------------------------------------------

def test_render_strips_prefixes_streams_and_scrubs_the_access_log():
    text = render([Route("figma", 49280), Route("github", 49281)],
                  NginxOptions(listen="8080", server_name=server_name_from("https://mcp.example.com/")))
    assert "listen 8080;" in text and "server_name mcp.example.com;" in text
    assert "location /figma/ {\n        proxy_pass http://mcp_figma/;" in text
    assert "upstream mcp_github {\n    server 127.0.0.1:49281;" in text
    assert "location /api/ {\n        proxy_pass http://mcp_api;" in text and "server 127.0.0.1:5000;" in text
    assert "location = /health {" in text
    for directive in ("proxy_http_version 1.1;", "proxy_buffering off;", "proxy_read_timeout 300s;",
                      "client_max_body_size 1m;", "map $request_uri $scrubbed_uri {",
                      "access_log /var/log/nginx/mcp-platform.access.log mcp_scrubbed;",
                      "error_log /var/log/nginx/mcp-platform.error.log crit;"):
        assert directive in text, directive
    assert "TRUSTED_PROXIES" in text  # the generated file says what the services need to believe X-Real-IP
    assert "$request_uri" not in text.split("log_format", 1)[1]  # only the scrubbed form is logged
    assert "$request " not in text and "$request\"" not in text and "$http_referer" not in text
    assert server_name_from(None) == "_" and size_directive(1 << 20) == "1m" and size_directive(1500) == "1500"
    with pytest.raises(CatalogError, match="twice"):
        render([Route("figma", 1), Route("figma", 2)], NginxOptions())
    with pytest.raises(CatalogError, match="URL prefix"):
        Route("api", 49300)


def test_every_proxying_location_sends_the_full_header_set():
    """A location's own proxy_set_header replaces every inherited one, so each must carry the whole set."""
    text = render([Route("figma", 49280), Route("git-hub", 49281)], NginxOptions())
    blocks = locations(text)
    proxying = {pattern: body for pattern, body in blocks.items() if "proxy_pass" in body}
    assert set(proxying) == {"= /health", "/api/", "/oauth/", "/figma/", "/git-hub/"}
    for pattern, body in proxying.items():
        headers = dict(re.findall(r"proxy_set_header (\S+) (.*?);", body))
        assert set(headers) >= FULL_HEADER_SET, (pattern, FULL_HEADER_SET - set(headers))
        assert headers["Host"] == "$host" and headers["X-Real-IP"] == "$remote_addr"
        assert headers["X-Forwarded-For"] == "$remote_addr"  # the edge: a client's own header is not kept
        assert headers["Connection"] == '""' and "proxy_http_version 1.1;" in body
        assert headers["Forwarded"] == '""'  # a client's own is dropped
        prefix = f"/{pattern.strip('/')}" if pattern not in ("= /health", "/api/", "/oauth/") else '""'
        assert headers["X-Forwarded-Prefix"] == prefix, pattern
    # Outside the locations, nothing a location could be mistaken to inherit.
    outside = re.sub(r"\n\s*location [^{]+\{[^}]*\}", "", text)
    assert "proxy_set_header" not in outside


def test_writing_the_file_makes_the_services_trust_nginx(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("ADMIN_TOKEN=x\nCREDENTIALS_KEY=y")  # no newline at the end
    env_file.chmod(0o600)
    said = ensure_trusted_proxy(env_file, {})
    assert env_file.read_text().splitlines()[:2] == ["ADMIN_TOKEN=x", "CREDENTIALS_KEY=y"]
    assert "TRUSTED_PROXIES=127.0.0.1" in env_file.read_text().splitlines()
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert any("restart" in line for line in said)
    # Run again: nothing to add, nothing to say about .env.
    before = env_file.read_text()
    assert ensure_trusted_proxy(env_file, {"TRUSTED_PROXIES": "127.0.0.1"}) == []
    assert env_file.read_text() == before

    # An operator's own value is theirs: kept, with a warning when it leaves nginx out.
    env_file.write_text("TRUSTED_PROXIES=10.0.0.0/8\n")
    said = ensure_trusted_proxy(env_file, {"TRUSTED_PROXIES": "10.0.0.0/8"})
    assert env_file.read_text() == "TRUSTED_PROXIES=10.0.0.0/8\n"
    assert any("127.0.0.1" in line and "warning" in line for line in said)
    env_file.write_text("TRUSTED_PROXIES=127.0.0.0/8,10.1.2.3\n")
    assert ensure_trusted_proxy(env_file, {}) == []
    assert env_file.read_text() == "TRUSTED_PROXIES=127.0.0.0/8,10.1.2.3\n"
    # An exported variable overrides .env for the scripts: say so when it leaves nginx out.
    said = ensure_trusted_proxy(env_file, {"TRUSTED_PROXIES": "10.9.9.9"})
    assert any("environment" in line and "127.0.0.1" in line for line in said)

    # No .env yet: it is created as the scripts create it (with its secrets), then the entry is added.
    fresh = tmp_path / "fresh" / ".env"
    fresh.parent.mkdir()
    ensure_trusted_proxy(fresh, {})
    values = dict(line.split("=", 1) for line in fresh.read_text().splitlines() if "=" in line
                  and not line.startswith("#"))
    assert values["TRUSTED_PROXIES"] == "127.0.0.1" and values["ADMIN_TOKEN"] and values["CREDENTIALS_KEY"]
    assert oct(fresh.stat().st_mode & 0o777) == "0o600"


def test_the_command_reads_the_active_catalog(database_url, tmp_path, capsys):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE mcp_table SET active = false WHERE name = 'slack'")
        active = [r[0] for r in conn.execute("SELECT name FROM mcp_table WHERE active ORDER BY name")]
    out = tmp_path / "mcp.conf"
    env_file = tmp_path / ".env"
    env_file.write_text("ADMIN_TOKEN=x\n")
    environ = {"DATABASE_URL": database_url, "MCP_PROJECT_ROOT": str(tmp_path), "API_PORT": "5055"}

    # Printing: .env is left alone, and stderr says what the services need.
    assert main(["--listen", "8080"], environ) == 0
    printed = capsys.readouterr()
    assert "location /figma/ {" in printed.out and "TRUSTED_PROXIES=127.0.0.1" in printed.err
    assert env_file.read_text() == "ADMIN_TOKEN=x\n"

    # Writing: the file, and TRUSTED_PROXIES in the project's .env, with the restart to do.
    assert main(["--listen", "8080", "--output", str(out)], environ) == 0
    text = out.read_text()
    for name in active:
        assert f"location /{name}/ {{" in text
    assert "location /slack/" not in text and "server 127.0.0.1:5055;" in text
    assert "TRUSTED_PROXIES=127.0.0.1" in env_file.read_text().splitlines()
    assert "restart" in capsys.readouterr().err
    assert main([], {"MCP_PROJECT_ROOT": str(tmp_path)}) == 1
    assert "no database" in capsys.readouterr().err


# -- what a service receives through nginx ------------------------------------------------------------------------

@pytest.fixture
def recorder():
    rec = Recorder()
    yield rec
    rec.stop()


def test_the_service_gets_the_clients_host_and_address_over_a_reused_connection(nginx, recorder, tmp_path):
    base = start_nginx(nginx, [Route("rec", recorder.port)], tmp_path)
    spoof = {"X-Real-IP": "203.0.113.7", "X-Forwarded-For": "203.0.113.8, 198.51.100.9",
             "X-Forwarded-Host": "evil.example", "Forwarded": "for=203.0.113.10"}
    for i in range(5):
        resp = http("POST" if i % 2 else "GET", f"{base}/rec/some-id/mcp?i={i}", body={"i": i} if i % 2 else None,
                    headers={"Host": "mcp.example.com", **(spoof if i >= 3 else {})})
        assert resp.status == 200, resp.body
    assert [s.path for s in recorder.seen] == [f"/some-id/mcp?i={i}" for i in range(5)]
    for seen in recorder.seen:
        assert seen.headers["host"] == ["mcp.example.com"], seen  # what the client sent, not the upstream's name
        assert seen.headers["x-forwarded-host"] == ["mcp.example.com"], seen
        assert seen.headers["x-real-ip"] == ["127.0.0.1"], seen  # nginx's $remote_addr, whatever the client says
        assert seen.headers["x-forwarded-for"] == ["127.0.0.1"], seen
        assert seen.headers["x-forwarded-proto"] == ["http"] and seen.headers["x-forwarded-prefix"] == ["/rec"]
        assert "close" not in (seen.header("Connection") or "").lower(), seen
        assert "forwarded" not in seen.headers, seen
    # Upstream keepalive: one TCP connection from nginx carried every request.
    assert len({seen.peer for seen in recorder.seen}) == 1, [seen.peer for seen in recorder.seen]


@pytest.fixture(scope="session")
def sdk_python():
    """The official SDK's python, as tests/test_mcp_clients.py gets it (its own venv under .cache/)."""
    try:
        return install.sdk_python(ROOT / ".cache")
    except install.Unavailable as e:
        if install.in_ci():
            pytest.fail(f"the official MCP Python SDK must run in CI: {e}")
        pytest.skip(f"the official MCP Python SDK is unavailable here: {e}")


@pytest.fixture
def proxied_figma(env):
    """The Figma service as deployed behind nginx: it believes the proxy on 127.0.0.1."""
    server, _ = start_service(FIGMA, {**env, "TRUSTED_PROXIES": "127.0.0.1"})
    yield server
    server.stop()


@pytest.mark.parametrize("mode,version", [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
def test_the_official_sdk_works_through_nginx(nginx, sdk_python, api, admin, proxied_figma, figma, tmp_path,
                                              mode, version):
    base = start_nginx(nginx, [Route("figma", proxied_figma.port)], tmp_path, api.port)
    iid = admin.create_instance(credentials={"api_key": "figd_via_nginx"})["instance_id"]
    seen = run_sdk(sdk_python, f"{base}/figma/{iid}/mcp", mode)
    assert "error" not in seen, seen
    assert seen["protocol_version"] == version and seen["server_info"]["name"] == "figma"
    assert seen["tools"] == TOOL_NAMES
    assert seen["get_me"]["is_error"] is False and seen["get_me"]["structured"] == user_for("figd_via_nginx")
    assert [r.header("X-Figma-Token") for r in figma.recorded("/v1/me")] == ["figd_via_nginx"]
    assert seen["invalid"]["is_error"] is True and seen["protocol_error"]["code"] == -32602


def test_raw_json_rpc_and_rest_work_through_nginx(nginx, api, admin, proxied_figma, figma, tmp_path):
    base = start_nginx(nginx, [Route("figma", proxied_figma.port)], tmp_path, api.port)
    iid = admin.create_instance(credentials={"api_key": "figd_nginx"})["instance_id"]
    # What curl sends: no session, no initialize, the legacy era's header.
    listed = http("POST", f"{base}/figma/{iid}/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                  headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                           "MCP-Protocol-Version": "2025-11-25"})
    assert listed.status == 200, listed.body
    assert [tool["name"] for tool in listed.json["result"]["tools"]] == TOOL_NAMES

    resp = http("POST", f"{base}/figma/{iid}/mcp/call?token=secret", {"name": "get_me", "arguments": {}})
    assert resp.status == 200, resp.body
    assert resp.json["isError"] is False and resp.json["structuredContent"] == user_for("figd_nginx")
    # /api/ keeps its prefix; an unknown prefix is a JSON 404 from nginx itself.
    got = http("GET", f"{base}/api/instances/{iid}", headers={"Authorization": "Bearer test-admin-token"})
    assert got.status == 200 and got.json["instance_id"] == iid
    assert http("GET", f"{base}/health").status == 200
    missing = http("GET", f"{base}/nowhere/")
    assert missing.status == 404 and missing.json["error"]["code"] == "not_found"
    hidden = http("GET", f"{base}/figma/metrics")
    assert hidden.status == 404 and hidden.json["error"]["code"] == "not_found"
    too_big = http("POST", f"{base}/figma/{iid}/mcp/call", raw=b"x" * (2 << 20))
    assert too_big.status == 413 and too_big.json["error"]["code"] == "payload_too_large"

    log = wait_for(lambda: (text := (tmp_path / "access.log").read_text()) and '" 413 ' in text and text,
                   10, what="the access log lines")  # nginx logs a request after answering it
    assert 'POST /figma/{instance}/mcp HTTP/1.1" 200' in log
    assert 'POST /figma/{instance}/mcp/call HTTP/1.1" 200' in log
    assert 'GET /api/instances/{instance} HTTP/1.1" 200' in log
    assert 'GET /health HTTP/1.1" 200' in log and 'GET /figma/metrics HTTP/1.1" 404' in log
    assert "secret" not in log
    assert_no_id(iid, tmp_path)


# -- instance ids never reach nginx's logs ------------------------------------------------------------------------

def raw_request(base: str, method: str, target: str, body: bytes = b"") -> int:
    """One request with the request line exactly as given (no client normalises it); the status, or 0."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def encodings(iid: str) -> list[str]:
    """The id in the forms a client can write it in a URL (the service decodes %xx; nginx logs the raw form)."""
    pct = "".join(f"%{ord(c):02x}" for c in iid)
    return [iid, iid.upper(), f"%{ord(iid[0]):02X}{iid[1:]}", f"{iid}%20", f"{iid}%00", f"%7B{iid}%7D",
            f"urn:uuid:{iid}", f"{iid};{uuid.uuid4()}", f"..%2F{iid}", iid.replace("-", "%2D"), pct, pct.upper(),
            f"%25{iid}", f"{{{iid}}}", iid.replace("-", "")]


def attacks(iid: str, base: str) -> list[tuple[str, str]]:
    """(method, request target): every encoding, wherever an id could sit in a path, and some odd targets."""
    targets = []
    for form in encodings(iid):
        targets += [f"/figma/{form}/mcp/call", f"/figma/{form}", f"/figma/x/{form}/mcp", f"/figma//{form}/mcp",
                    f"/{form}/mcp", f"/api/instances/{form}", f"/api/instances/{form}/usage",
                    f"/api/users/{form}/instances", f"/api/{form}", f"/nowhere/{form}", f"/gone/{form}/mcp",
                    f"/figma/{form}?token={form}", f"/figma/mcp/{form}"]
    targets += [f"{base}/figma/{iid}/mcp", f"/figma/{iid}#frag", f"/figma/%2e%2e/{iid}", f"/figma/../{iid}/mcp",
                f"/figma/{iid}/../../api/instances/{iid}", f"//figma/{iid}", f"/figma/a%2F{iid}%2Fmcp",
                f"/figma\\{iid}/mcp", f"/FIGMA/{iid}/mcp", f"/figma/{iid} x", f"/figma;x/{iid}"]
    return [("POST" if t.endswith("/call") else "GET", t) for t in targets]


def id_leaks(text: str, iid: str) -> list[str]:
    """Log tokens that hold 8 or more consecutive hex digits of the id, after any number of %-decodings."""
    digits = iid.replace("-", "").lower()
    grams = {digits[i:i + 8] for i in range(len(digits) - 7)}
    found = []
    for token in re.split(r"[\s\"\[\]]+", text):
        decoded = token
        for _ in range(5):
            decoded = urllib.parse.unquote(decoded.replace("\\x", "%"))
        hexes = re.sub(r"[^0-9a-f]", "", decoded.lower())
        if any(g in hexes for g in grams):
            found.append(token)
    return found


def assert_no_id(iid: str, tmp: Path) -> None:
    for name in ("access.log", "mcp-error.log", "error.log"):
        path = tmp / name
        text = path.read_text(errors="replace") if path.exists() else ""
        assert not id_leaks(text, iid), (name, id_leaks(text, iid)[:5])


def test_no_encoding_of_an_instance_id_reaches_the_logs(nginx, api, admin, proxied_figma, figma, tmp_path):
    gone = free_port()  # a service that is down: nginx fails to connect, which it would log as an error
    base = start_nginx(nginx, [Route("figma", proxied_figma.port), Route("gone", gone)], tmp_path, api.port)
    iid = admin.create_instance()["instance_id"]
    sent = attacks(iid, base)
    statuses = [raw_request(base, method, target) for method, target in sent]
    assert raw_request(base, "POST", f"/figma/{iid}/mcp/call", b'{"name": "get_me", "arguments": {}}') == 200
    assert raw_request(base, "POST", f"/figma/{iid}/mcp/call", b"x" * (2 << 20)) == 413
    assert 502 in statuses and 400 in statuses  # the failures that nginx writes to its error log were made

    log = wait_for(lambda: (text := (tmp_path / "access.log").read_text()).count("\n") >= len(sent) + 2 and text,
                   10, what="every request in the access log")
    assert_no_id(iid, tmp_path)
    # Still a useful log: the service, where the id was, and the path after it when it is plain.
    assert 'POST /figma/{instance}/mcp/call HTTP/1.1" 200' in log
    assert "GET /api/instances/{instance}/usage HTTP/1.1" in log
    assert "GET /gone/{instance}/mcp HTTP/1.1\" 502" in log
    assert "GET /figma/{instance}/{path} HTTP/1.1" in log  # an id after the instance segment


def test_an_error_answer_never_spoils_the_pooled_connection_for_the_next_client(nginx, api, admin, proxied_figma,
                                                                                 figma, tmp_path):
    """nginx shares its upstream connections among clients: a service that closes one after an answer must
    say so (Connection: close), or the next client's POST on it, which nginx does not retry, gets a 502."""
    iid = admin.create_instance()["instance_id"]
    unknown = str(uuid.uuid4())
    host, port = "127.0.0.1", proxied_figma.port
    for method, path in (("GET", f"/{unknown}/mcp/tools"), ("GET", "/not-an-id/mcp/tools"),
                         ("POST", f"/{unknown}/mcp/call"), ("DELETE", f"/{iid}/mcp")):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".encode())
            head = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 4"), head
            if b"\r\nconnection: close" in head.lower():
                continue
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _read_answer(sock).startswith(b"HTTP/1.1 200"), (method, "closed without Connection: close")

    base = start_nginx(nginx, [Route("figma", proxied_figma.port)], tmp_path, api.port)
    client = HTTPConnection(*urllib.parse.urlsplit(base).netloc.split(":"), timeout=30)
    call = json.dumps({"name": "get_me", "arguments": {}})
    statuses = []
    for _ in range(20):  # back to back on one client connection, so nginx reuses its upstream one at once
        for method, path, body in (("GET", f"/figma/{unknown}/mcp/tools", None),
                                   ("POST", f"/figma/{iid}/mcp/call", call)):
            client.request(method, path, body, {"Content-Type": "application/json"})
            answer = client.getresponse()
            answer.read()
            statuses.append(answer.status)
    client.close()
    assert statuses == [404, 200] * 20


def _read_answer(sock: socket.socket) -> bytes:
    """One answer's head and body (Content-Length framed), or what arrived before the connection ended."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        return data
    return head


def test_oauth_callbacks_reach_the_api_and_their_query_is_never_logged(nginx, api, tmp_path):
    """The provider sends the browser to PUBLIC_URL/oauth/<service>/callback?code=..&state=..: nginx must pass it
    to the API, and neither nginx's log nor the API's may keep the code or the state."""
    base = start_nginx(nginx, [], tmp_path, api.port)
    url = f"{base}/oauth/github/callback?code=codesecret4711&state=statesecret0815"
    resp = http("GET", url, headers={"Accept": "application/json"})
    assert resp.status == 400 and resp.json["error"]["code"] == "invalid_state"  # the API's answer, not nginx's
    page = http("GET", url, headers={"Accept": "text/html"})
    assert page.status == 400 and page.headers["content-type"].startswith("text/html")
    log = wait_for(lambda: (text := (tmp_path / "access.log").read_text()).count("/oauth/") >= 2 and text, 10,
                   what="the access log lines")
    assert 'GET /oauth/github/callback HTTP/1.1" 400' in log
    assert "secret" not in log
