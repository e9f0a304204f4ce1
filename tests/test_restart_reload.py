"""scripts/restart and scripts/reload, a start that survives one taken port, and plain ``honcho start``.

Real processes throughout: a copy of the checkout started with scripts/start-all-services (as in
test_start_stop), a real program holding a port, steady load from several kinds of clients through a reload
of every process, and honcho run with a PATH that does not contain the virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as httpclient
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mcp.formation.facts import cmdline, pid_alive, port_free
from mcp.server.serve import PortInUse, bind, hand_over
from tests.fixtures.formation import Formation, supervise_line
from tests.support import free_port, http, wait_for
from tests.test_start_stop import NAMES, Checkout, make_copy

HOLDER = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("holding", flush=True)
time.sleep(3600)
"""


def state_of(c: Checkout, name: str) -> dict[str, Any]:
    return json.loads((c.root / ".run" / "state" / f"{name}.json").read_text())


def children(c: Checkout) -> dict[str, int | None]:
    return {name: state_of(c, name).get("child_pid") for name in NAMES}


def supervisors(c: Checkout) -> dict[str, int]:
    return {name: state_of(c, name)["pid"] for name in NAMES}


def hold_port(port: int) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(port)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


@pytest.fixture
def formation(env, tmp_path, github_sim, slack_sim):
    """A copy of the checkout (test_start_stop) whose services reach the three upstream simulators."""
    root = tmp_path / "checkout"
    make_copy(root)
    ports = {var: str(free_port()) for var in ("API_PORT", "FIGMA_PORT", "GITHUB_PORT", "SLACK_PORT")}
    base = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_") and k not in ("MCP_RUN_DIR", "MCP_LOG_DIR")}
    c = Checkout(root, {**base, **ports, "MCP_PROJECT_ROOT": str(root), "START_TIMEOUT": "90",
                        "GITHUB_API_URL": github_sim.url, "SLACK_API_URL": slack_sim.api_url,
                        # the load test's few instances call far faster than a tenant may
                        "RATE_LIMIT_PER_MINUTE": "10000000", "RATE_LIMIT_BURST": "1000000"})
    yield c
    if c.processes():
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.run("stop-services", "--keep-db")
        c.kill_everything()


# --- SO_REUSEPORT: shared only among our own listeners --------------------------------------------------------


def test_our_listeners_share_a_port_but_a_foreign_holder_still_means_port_in_use():
    port = free_port()
    with socket.socket() as foreign:  # another program's listener: no SO_REUSEPORT
        foreign.bind(("127.0.0.1", port))
        foreign.listen()
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            bind(port, "127.0.0.1")
    first = bind(port, "127.0.0.1")
    try:
        second = bind(port, "127.0.0.1")  # a reload's new process beside the old one
        for sock in second:
            sock.close()
        # ... but the formation's port check (start-all-services, the supervisor before a fresh start) refuses it
        assert not port_free(port)
    finally:
        for sock in first:
            sock.close()
    assert port_free(port)


def test_hand_over_sends_new_connections_to_the_successor_so_closing_the_old_listener_drops_none():
    """Without it the kernel queues about half the new connections on the old listener, and closing that
    listener resets them."""
    port = free_port()
    old, new = bind(port, "127.0.0.1"), bind(port, "127.0.0.1")
    clients: list[socket.socket] = []
    try:
        assert hand_over(old)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
        for sock in old:  # the old process closes its listener
            sock.close()
        [listener] = new
        listener.settimeout(5)
        for client in clients:
            client.sendall(b"x")
        for _ in clients:
            conn, _ = listener.accept()
            with conn:
                assert conn.recv(1) == b"x"
    finally:
        for sock in (*old, *new, *clients):
            sock.close()


# --- 1 and 2: a taken port errors only its process; scripts/restart ---------------------------------------------


def test_a_taken_port_errors_only_its_process_and_restart_brings_it_back(formation):
    c = formation
    figma_port = c.ports["mcp-figma"]
    holder = hold_port(figma_port)
    try:
        code, out = c.run("start-all-services")
        reason = f"port {figma_port} is already in use by pid {holder.pid} (python"
        assert code == 1, out
        assert "mcp-figma: errored: " + reason in out, out
        assert "started with errors" in out and "scripts/restart" in out, out

        status_code, rows = c.status()
        assert status_code == 1
        assert rows["mcp-figma"]["status"] == "errored" and reason in rows["mcp-figma"]["reason"], rows
        for name in ("main-api", "mcp-github", "mcp-slack"):
            assert rows[name]["status"] == "running" and rows[name]["health"] == "healthy", rows
        assert reason in (c.root / "logs" / "mcp-figma-error.log").read_text()
        human = subprocess.run([str(c.root / "scripts" / "status")], cwd=c.root, env=c.env, capture_output=True,
                               text=True, timeout=60)
        assert reason in human.stdout, human.stdout

        # Still held: the restart fails and says why, and nothing else moves.
        before, sups = children(c), supervisors(c)
        code, out = c.run("restart", "mcp-figma")
        assert code == 1 and reason in out, out
    finally:
        holder.kill()
        holder.wait()

    code, out = c.run("restart", "mcp-figma")
    assert code == 0, out
    assert "mcp-figma: restarted: pid" in out, out
    after = children(c)
    assert isinstance(after["mcp-figma"], int)
    assert {n: p for n, p in after.items() if n != "mcp-figma"} == {n: p for n, p in before.items() if n != "mcp-figma"}
    assert supervisors(c) == sups
    status_code, rows = c.status()
    assert status_code == 0, rows
    assert http("GET", f"http://127.0.0.1:{figma_port}/health").json["pid"] == after["mcp-figma"]

    # A restart of a running process: the supervisor stays, only its child changes, and it is not a crash.
    github = state_of(c, "mcp-github")
    code, out = c.run("restart", "mcp-github")
    assert code == 0, out
    assert f"(was pid {github['child_pid']})" in out, out
    now = state_of(c, "mcp-github")
    assert now["pid"] == github["pid"] and now["child_pid"] != github["child_pid"]
    assert now["restarts"] == github["restarts"] == 0
    assert now["operator_restarts"] == github.get("operator_restarts", 0) + 1
    assert now["operation"]["kind"] == "restart" and now["operation"]["status"] == "done"
    assert {n: p for n, p in children(c).items() if n != "mcp-github"} == \
        {n: p for n, p in after.items() if n != "mcp-github"}

    code, out = c.run("restart", "mcp-nope")
    assert code == 2 and "unknown process mcp-nope" in out, out


# --- 3: scripts/reload all under steady load ---------------------------------------------------------------------


TOOLS = {"mcp-figma": "get_me", "mcp-github": "get_me", "mcp-slack": "list_channels"}
ACCEPT = "application/json, text/event-stream"


class Load:
    """Clients calling every process until stopped; each failure (an exception, an unexpected answer) is kept."""

    def __init__(self, urls: dict[str, str], instances: dict[str, str], admin_token: str) -> None:
        self.urls, self.instances, self.token = urls, instances, admin_token
        self.done: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # What each request is: (method, URL path, body, headers, check of the decoded answer)
    def requests(self, name: str) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
        if name == "main-api":
            iid = self.instances["mcp-figma"]
            auth = {"Authorization": f"Bearer {self.token}"}
            return [("GET", "/health", None, {}), ("GET", f"/api/instances/{iid}", None, auth)]
        iid, tool = self.instances[name], TOOLS[name]
        rest = json.dumps({"name": tool, "arguments": {}}).encode()
        rpc = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                          "params": {"name": tool, "arguments": {}}}).encode()
        return [("POST", f"/{iid}/mcp/call", rest, {"Content-Type": "application/json"}),
                ("POST", f"/{iid}/mcp", rpc, {"Content-Type": "application/json", "Accept": ACCEPT})]

    @staticmethod
    def judge(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        data = json.loads(body)
        if data.get("isError") or "error" in data or (data.get("result") or {}).get("isError"):
            return f"error answer: {body[:200]!r}"
        return None

    def record(self, kind: str, name: str, failure: str | None) -> None:
        if failure is None:
            self.done[kind] += 1
        else:
            self.failures.append(f"{kind} {name}: {failure}")

    def new_connections(self, name: str) -> None:
        """urllib: a new connection for every request."""
        while not self._stop.is_set():
            for method, path, body, headers in self.requests(name):
                req = urllib.request.Request(self.urls[name] + path, data=body, method=method, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        self.record("urllib", name, self.judge(resp.status, resp.read()))
                except Exception as e:  # noqa: BLE001 - every failure counts
                    self.record("urllib", name, repr(e))

    def keep_alive(self, name: str) -> None:
        """http.client: one connection reused for as long as the server keeps it open."""
        host, port = self.urls[name].removeprefix("http://").split(":")
        conn = httpclient.HTTPConnection(host, int(port), timeout=30)
        while not self._stop.is_set():
            for method, path, body, headers in self.requests(name):
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    self.record("http.client", name, self.judge(resp.status, resp.read()))
                except Exception as e:  # noqa: BLE001
                    self.record("http.client", name, repr(e))
                    conn.close()
        conn.close()

    def aiohttp_clients(self, concurrency: int) -> None:
        """aiohttp: a pooled keep-alive session shared by several concurrent callers."""
        async def caller(session: aiohttp.ClientSession, name: str) -> None:
            while not self._stop.is_set():
                for method, path, body, headers in self.requests(name):
                    try:
                        async with session.request(method, self.urls[name] + path, data=body,
                                                   headers=headers) as resp:
                            self.record("aiohttp", name, self.judge(resp.status, await resp.read()))
                    except Exception as e:  # noqa: BLE001
                        self.record("aiohttp", name, repr(e))

        async def main() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                await asyncio.gather(*(caller(session, name) for name in self.urls for _ in range(concurrency)))

        asyncio.run(main())

    def start(self) -> None:
        for name in self.urls:
            for target in (self.new_connections, self.keep_alive):
                self._threads.append(threading.Thread(target=target, args=(name,), daemon=True))
        self._threads.append(threading.Thread(target=self.aiohttp_clients, args=(2,), daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def across(self, operation: Callable[[], tuple[int, str]]) -> tuple[int, str]:
        """Run ``operation`` (a reload) while this load runs, from 200 answered calls before it to 200 after;
        every request answered, by every kind of client."""
        self.start()
        try:
            wait_for(lambda: sum(self.done.values()) > 200, 60, what="the load to get going")
            code, out = operation()
            served_during = sum(self.done.values())
            wait_for(lambda: sum(self.done.values()) > served_during + 200, 60,
                     what="the load to go on after the reload")
        finally:
            self.stop()
        assert self.failures == [], f"{len(self.failures)} failed of {sum(self.done.values())}: {self.failures[:10]}"
        assert set(self.done) == {"urllib", "http.client", "aiohttp"}, self.done
        return code, out


def test_reload_all_under_steady_load_refuses_and_fails_no_request(formation):
    c = formation
    code, out = c.run("start-all-services")
    assert code == 0, out
    api = f"http://127.0.0.1:{c.ports['main-api']}"
    auth = {"Authorization": f"Bearer {c.env['ADMIN_TOKEN']}"}
    creds = {"mcp-figma": ("figma", {"api_key": "figd_reload"}), "mcp-github": ("github", {"api_key": "ghp_alpha"}),
             "mcp-slack": ("slack", {"access_token": "xoxb-1111-alpha"})}
    instances = {}
    for name, (service, credentials) in creds.items():
        resp = http("POST", f"{api}/api/instances", {"service": service, "user": "reload@example.com",
                                                      "credentials": credentials}, headers=auth)
        assert resp.status == 201, resp.body
        instances[name] = resp.json["instance_id"]
    urls = {name: f"http://127.0.0.1:{port}" for name, port in c.ports.items()}
    load = Load(urls, instances, c.env["ADMIN_TOKEN"])
    before, sups = children(c), supervisors(c)
    code, out = load.across(lambda: c.run("reload", "all"))
    assert code == 0, out
    after = children(c)
    for name in NAMES:
        assert after[name] != before[name], (name, out)
        assert f"{name}: reloaded: pid {after[name]} is healthy and serving; pid {before[name]}" in out, out
        wait_for(lambda pid=before[name]: not pid_alive(pid), 15, what=f"the replaced {name} to exit")
        state = state_of(c, name)
        assert state["operation"]["kind"] == "reload" and state["operation"]["status"] == "done"
        assert state["restarts"] == 0 and state["operator_restarts"] == 1
    assert supervisors(c) == sups
    status_code, rows = c.status()
    assert status_code == 0, rows


# --- 3: a reload whose new process fails leaves the old one serving --------------------------------------------


def test_a_reload_whose_new_process_cannot_serve_keeps_the_old_one(tmp_path, env):
    """The toy service binds without SO_REUSEPORT (like a process started before an upgrade): its successor
    exits with code 98, and a reload must say so and leave the running one alone."""
    run_dir, log_dir, port = tmp_path / "run", tmp_path / "logs", free_port()
    toy = f"{sys.executable} {Path(__file__).parent / 'fixtures' / 'toy_service.py'} --port {port}"
    procfile = tmp_path / "Procfile"
    procfile.write_text(supervise_line("toy", run_dir, log_dir, "--health-timeout 10", toy, port) + "\n")
    f = Formation(procfile, {**env, "MCP_PROJECT_ROOT": str(tmp_path)}, run_dir)
    try:
        old = f.healthy("toy")
        os.kill(old["pid"], signal.SIGHUP)
        state = f.wait("toy", lambda s: (s.get("operation") or {}).get("status") == "failed", "the reload to fail")
        reason = state["operation"]["reason"]
        assert "exited with code 98 before it was healthy" in reason, reason
        assert f"pid {old['child_pid']} keeps serving" in reason, reason
        assert state["child_pid"] == old["child_pid"] and state["status"] == "running"
        assert os.path.exists(f"/proc/{old['child_pid']}")
        assert http("GET", f"http://127.0.0.1:{port}/health").status == 200
        assert "reload failed" in (log_dir / "toy-error.log").read_text()
    finally:
        f.cleanup(tmp_path)


# --- 4: plain honcho start, the virtualenv not on PATH --------------------------------------------------------


def test_plain_honcho_start_works_without_the_virtualenv_on_path(env, tmp_path):
    root = tmp_path / "checkout"
    make_copy(root)
    ports = {var: str(free_port()) for var in ("API_PORT", "FIGMA_PORT")}
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                           if p and Path(p).resolve() != Path(venv_bin).resolve())
    run_env = {k: v for k, v in env.items() if not k.startswith("SUPERVISOR_") and k not in ("VIRTUAL_ENV",)}
    run_env.update(ports, PATH=path, MCP_PROJECT_ROOT=str(root), MCP_RUN_DIR=str(root / ".run"),
                   MCP_LOG_DIR=str(root / "logs"))
    f = Formation(root / "Procfile", run_env, root / ".run", cwd=root, names=("main-api", "mcp-figma"))
    try:
        for name in ("main-api", "mcp-figma"):
            state = f.healthy(name, timeout=60)
            assert state["restarts"] == 0, state
            # The supervisor runs on the checkout's .venv (scripts/lib/python), and so does its child.
            assert cmdline(state["pid"])[0] == str(root / ".venv" / "bin" / "python"), cmdline(state["pid"])
            with open(f"/proc/{state['child_pid']}/environ", "rb") as environ:
                child_path = dict(v.split(b"=", 1) for v in environ.read().split(b"\0") if b"=" in v)[b"PATH"]
            assert child_path.decode().split(os.pathsep)[0] == str(root / ".venv" / "bin"), child_path
        assert "ModuleNotFoundError" not in f.output() and "not found" not in f.output(), f.output()
    finally:
        f.cleanup(root)
