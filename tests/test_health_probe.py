"""The formation's one health probe (mcp.formation.health): 200 and ``"status": "healthy"``, nothing less,
for the supervisor, scripts/status, ``python -m mcp.ops wait-healthy`` and the main API alike."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading

import pytest

from mcp.formation.health import probe, probe_ok
from tests.support import ROOT, free_port, wait_for

# A process that answers /health with a given status and body, as a raw socket server.
ANSWERING = """
import socket, sys
status, body = sys.argv[2], sys.argv[3].encode()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen()
while True:
    conn, _ = srv.accept()
    conn.recv(65536)
    conn.sendall(f"HTTP/1.1 {status}\\r\\nContent-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n"
                 f"Connection: close\\r\\n\\r\\n".encode() + body)
    conn.close()
"""


class Answering:
    def __init__(self, status: str, body: bytes, chunked: bool = False) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.url = f"http://127.0.0.1:{self.srv.getsockname()[1]}/health"
        if chunked:
            framed = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
            head = f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        else:
            framed = body
            head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self.response = head.encode() + framed
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(self.response)


@pytest.mark.parametrize(("status", "body", "healthy", "reason"), [
    ("200 OK", b'{"status": "healthy", "uptime": 3}', True, None),
    ("200 OK", b'{"status": "degraded"}', False, "status 'degraded'"),
    ("200 OK", b"<html>ok</html>", False, "status None"),
    ("200 OK", b"[]", False, "status None"),
    ("503 Service Unavailable", b'{"status": "healthy"}', False, "HTTP 503"),
])
def test_healthy_means_200_and_status_healthy(status, body, healthy, reason):
    for chunked in (False, True):
        server = Answering(status, body, chunked)
        try:
            verdict = asyncio.run(probe(server.url, 2.0))
        finally:
            server.srv.close()
        assert (verdict.healthy, verdict.reason) == (healthy, reason), (chunked, verdict)
        assert verdict.http_status == int(status.split()[0])


def test_nobody_listening_and_a_silent_listener_are_not_answering():
    verdict = asyncio.run(probe(f"http://127.0.0.1:{free_port()}/health", 2.0))
    assert not verdict.healthy and verdict.http_status is None and verdict.reason.startswith("not answering")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/health"
        assert asyncio.run(probe_ok(url, 0.3)) is False


def test_the_supervisor_and_wait_healthy_do_not_call_a_degraded_200_healthy(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", ANSWERING, str(port), "200 OK", json.dumps({"status": "degraded"})]
    run_dir = tmp_path / "run"
    sup = subprocess.Popen([sys.executable, "-m", "mcp.ops.supervisor", "--name", "degraded", "--port", str(port),
                            "--run-dir", str(run_dir), "--log-dir", str(tmp_path / "logs"), "--health-timeout", "3",
                            "--health-interval", "1", "--fast-health-interval", "0.25", "--unhealthy-threshold",
                            "1000", "--", *command], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state_file = run_dir / "state" / "degraded.json"

        def checked() -> dict | None:
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                return None
            return state if state["last_health_at"] is not None and state["child_pid"] else None

        state = wait_for(checked, 20, interval=0.1, what="a health check of the degraded process")
        assert state["health"] == "unhealthy", state
        procfile = tmp_path / "Procfile"
        procfile.write_text(f"degraded: exec python -m mcp.ops.supervisor --name degraded --port {port} "
                            "-- python -m services.degraded\n")
        done = subprocess.run([sys.executable, "-m", "mcp.ops", "wait-healthy", "--procfile", str(procfile),
                               "--timeout", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "MCP_PROJECT_ROOT": str(tmp_path)})
        assert done.returncode == 1
        assert "degraded: not healthy after 1s: status 'degraded'" in done.stderr
    finally:
        sup.terminate()
        sup.wait(10)
