"""Two complete formations sharing one database behind one nginx: the stand-in for two hosts.

Each formation is the project's own Procfile run by honcho, with its own ports (the ``*_PORT`` variables), its
own run, log and usage-spool folders, and the same database, CREDENTIALS_KEY and ADMIN_TOKEN, as two hosts
would have. nginx's configuration is the one ``scripts/nginx-conf --formation ...`` generates. Every step
goes through nginx unless it must reach one formation in particular (to see that both took a change).
"""

from __future__ import annotations

import http.client as httpclient
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp.ops.nginx import CatalogError, FormationSpec, NginxOptions, Route, main, place, render
from tests.conftest import ApiClient
from tests.fixtures.formation import PROJECT_PORTS, Formation, project_formation
from tests.simulators.figma import user_for
from tests.support import ROOT, free_port, http, wait_for
from tests.test_mcp_clients import TOOL_NAMES, run_sdk
from tests.test_nginx import locations, nginx, sdk_python  # noqa: F401 - fixtures
from tests.test_restart_reload import ACCEPT

RATE, BURST = 600, 30  # per instance and minute, shared by both formations through the database
LEASE_S, CREDIT = 1.0, 2  # the shared limiter's lease time and per-process credit (mcp/tenancy/rate_limit.py)
# Every change to an instance must reach both formations within this (the bound).
PROPAGATION_S = 1.0
CLIENTS = 6  # concurrent clients of the load; each has at most one call in flight


# --- the configuration ----------------------------------------------------------------------------------------

def test_formations_are_read_from_host_and_the_ports_that_differ():
    assert FormationSpec.parse("10.0.0.2") == FormationSpec("10.0.0.2", {})
    assert FormationSpec.parse("127.0.0.1:api=5100,figma=49380").ports == {"api": 5100, "figma": 49380}
    assert FormationSpec.parse("[fd00::2]:figma=1") == FormationSpec("[fd00::2]", {"figma": 1})
    for bad in ("127.0.0.1:figma", "127.0.0.1:", "a b", "-x", "h:figma=0", "h:figma=65536", "h:figma=1,figma=2",
                "h;x", "fd00::2:figma=1"):
        with pytest.raises(ValueError, match="--formation"):
            FormationSpec.parse(bad)

    catalog = [Route("figma", 49280), Route("github", 49281)]
    api, routes = place(catalog, 5000, [FormationSpec.parse("10.0.0.2"), FormationSpec.parse("10.0.0.3")])
    assert api == ("10.0.0.2:5000", "10.0.0.3:5000")
    assert [r.addresses for r in routes] == [("10.0.0.2:49280", "10.0.0.3:49280"), ("10.0.0.2:49281", "10.0.0.3:49281")]
    # Two formations on one machine: the second names the ports it moved; the others keep the defaults.
    api, routes = place(catalog, 5000, [FormationSpec.parse("127.0.0.1"),
                                        FormationSpec.parse("127.0.0.1:api=5100,figma=49380,github=49381")])
    assert api == ("127.0.0.1:5000", "127.0.0.1:5100") and routes[0].addresses[1] == "127.0.0.1:49380"
    with pytest.raises(CatalogError, match="github: 127.0.0.1:49281 is listed by two formations"):
        place(catalog, 5000, [FormationSpec.parse("127.0.0.1"), FormationSpec.parse("127.0.0.1:api=1,figma=2")])
    with pytest.raises(CatalogError, match="no active service called figmaa"):
        place(catalog, 5000, [FormationSpec.parse("h:figmaa=1")])
    assert place(catalog, 5001, []) == (("127.0.0.1:5001",), catalog)  # no --formation: as before

    text = render(routes, NginxOptions(api_servers=api))
    assert ("upstream mcp_figma {\n    server 127.0.0.1:49280 max_fails=1 fail_timeout=10s;\n"
            "    server 127.0.0.1:49380 max_fails=1 fail_timeout=10s;\n    keepalive 32;\n}") in text
    assert "upstream mcp_api {\n    server 127.0.0.1:5000 max_fails=1 fail_timeout=10s;\n" in text
    # Only a request that could not be sent goes to the next formation: a sent POST is never sent twice.
    assert "proxy_next_upstream error timeout;" in text and "non_idempotent" not in text.replace(
        "(no `non_idempotent` here)", "")
    proxying = {p: b for p, b in locations(text).items() if "proxy_pass" in b}
    assert all("proxy_next_upstream" not in body for body in proxying.values())  # one rule, the server's
    one = render([Route("figma", 49280)], NginxOptions())
    assert "upstream mcp_figma {\n    server 127.0.0.1:49280;\n    keepalive 16;\n}" in one


def test_the_command_lists_every_formation_and_says_what_remote_hosts_need(database_url, tmp_path, capsys):
    environ = {"DATABASE_URL": database_url, "MCP_PROJECT_ROOT": str(tmp_path)}
    assert main(["--formation", "10.0.0.2", "--formation", "10.0.0.3:figma=50000"], environ) == 0
    printed = capsys.readouterr()
    assert "    server 10.0.0.2:49280 max_fails=1 fail_timeout=10s;\n    server 10.0.0.3:50000 " in printed.out
    assert "    server 10.0.0.2:5000 max_fails=1 fail_timeout=10s;\n    server 10.0.0.3:5000 " in printed.out
    assert "10.0.0.2, 10.0.0.3" in printed.err and "TRUSTED_PROXIES" in printed.err and "BIND_HOST" in printed.err
    assert main(["--formation", "10.0.0.2:figmaa=1"], environ) == 1
    assert "no active service called figmaa" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--formation", "10.0.0.2:figma"], environ)
    assert "is not NAME=PORT" in capsys.readouterr().err


# --- two formations on this machine ---------------------------------------------------------------------------

class Pair:
    """Formations ``a`` and ``b`` and nginx in front of both."""

    def __init__(self, formations: dict[str, Formation], ports: dict[str, dict[str, int]], base: str) -> None:
        self.formations, self.ports, self.base = formations, ports, base
        self.admin = ApiClient(base)

    def figma(self, which: str) -> str:
        """One formation's Figma service, directly (not through nginx)."""
        return f"http://127.0.0.1:{self.ports[which]['mcp-figma']}"

    def tool_calls(self, which: str) -> float:
        """mcp_tool_calls_total of one formation's Figma service, from its /metrics."""
        text = http("GET", self.figma(which) + "/metrics", timeout=10).body.decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "mcp_tool_calls_total")

    def counts(self) -> dict[str, float]:
        return {which: self.tool_calls(which) for which in self.formations}

    def usage_calls(self, iid: str) -> int:
        resp = self.admin("GET", f"/api/instances/{iid}/usage")
        assert resp.status == 200, resp.body
        return resp.json["calls"]


def generate_conf(env: dict[str, str], tmp: Path, listen: int, ports: dict[str, dict[str, int]]) -> str:
    """What ``scripts/nginx-conf`` prints (it runs this module) for both formations, each with its own ports."""
    specs = []
    for p in ports.values():
        named = {"api": p["main-api"], **{n.removeprefix("mcp-"): port for n, port in p.items() if n != "main-api"}}
        specs += ["--formation", "127.0.0.1:" + ",".join(f"{name}={port}" for name, port in named.items())]
    done = subprocess.run([sys.executable, "-m", "mcp.ops.nginx", "--listen", f"127.0.0.1:{listen}",
                           "--access-log", str(tmp / "access.log"), "--error-log", str(tmp / "mcp-error.log"), *specs],
                          cwd=ROOT, env={**env, "MCP_PROJECT_ROOT": str(tmp)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def pair(env, nginx, tmp_path):  # noqa: F811 - the nginx fixture
    extra = {"TRUSTED_PROXIES": "127.0.0.1", "RATE_LIMIT_PER_MINUTE": str(RATE), "RATE_LIMIT_BURST": str(BURST),
             # Long enough that only the database's notifications can explain a change seen within a second.
             "INSTANCE_CACHE_TTL": "300", "RATE_LIMIT_SCOPE": "global"}
    formations: dict[str, Formation] = {}
    ports: dict[str, dict[str, int]] = {}
    try:
        for which in ("a", "b"):
            formations[which], ports[which] = project_formation(tmp_path / which, env, extra)
        for f in formations.values():
            for name in PROJECT_PORTS:
                f.healthy(name, timeout=60)
        listen = free_port()
        nginx(generate_conf(env, tmp_path, listen, ports))
        base = f"http://127.0.0.1:{listen}"
        wait_for(lambda: _answers(base + "/health"), 10, what="nginx to answer")
        yield Pair(formations, ports, base)
    finally:
        for which, f in formations.items():
            f.cleanup(tmp_path / which)


def _answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=2).status == 200
    except OSError:
        return False


def rest_call(conn: httpclient.HTTPConnection, iid: str) -> tuple[int, bytes]:
    conn.request("POST", f"/figma/{iid}/mcp/call", json.dumps({"name": "get_me", "arguments": {}}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def rpc_call(conn: httpclient.HTTPConnection, iid: str) -> tuple[int, bytes]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_me", "arguments": {}}}
    conn.request("POST", f"/figma/{iid}/mcp", json.dumps(body), {"Content-Type": "application/json", "Accept": ACCEPT})
    resp = conn.getresponse()
    return resp.status, resp.read()


class Load:
    """CLIENTS threads calling a tool through nginx, round the given instances, until stopped or done.

    Odd clients keep one connection alive, even ones open a new connection for each call. Every call's
    outcome is kept as (time sent, instance, status, or the exception's name).
    """

    def __init__(self, base: str, instances: list[str], calls_each: int | None = None) -> None:
        self.netloc = urllib.parse.urlsplit(base).netloc
        self.instances, self.calls_each = instances, calls_each
        self.outcomes: list[tuple[float, str, int | str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CLIENTS)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self) -> None:
        for t in self._threads:
            t.join(60)

    def _run(self, client: int) -> None:
        conn = httpclient.HTTPConnection(self.netloc, timeout=30)
        n = 0
        while not self._stop.is_set() and (self.calls_each is None or n < self.calls_each):
            iid = self.instances[(client + n * CLIENTS) % len(self.instances)]
            call = rpc_call if n % 2 else rest_call
            sent = time.monotonic()
            try:
                if client % 2 == 0:
                    conn.close()
                status, body = call(conn, iid)
                outcome: int | str = status if status != 200 or _succeeded(body) else f"error answer {body[:80]!r}"
            except (OSError, httpclient.HTTPException) as e:
                conn.close()
                outcome = type(e).__name__
            with self._lock:
                self.outcomes.append((sent, iid, outcome))
            n += 1
        conn.close()

    def answered(self) -> Counter[str]:
        """Calls answered 200 with a result, by instance."""
        return Counter(iid for _, iid, outcome in self.outcomes if outcome == 200)


def _succeeded(body: bytes) -> bool:
    data = json.loads(body)
    result = data.get("result", data)
    return result.get("isError") is False and result["structuredContent"]["handle"].startswith("user-")


def within(limit: float, check: Callable[[], bool], what: str) -> float:
    """Seconds until ``check()`` holds, asserting it does within ``limit``."""
    started = time.monotonic()
    wait_for(check, limit, interval=0.02, what=what)
    return time.monotonic() - started


def test_two_formations_behind_one_nginx(pair: Pair, sdk_python, figma):  # noqa: F811 - the sdk_python fixture
    admin = pair.admin
    # The API too is on both formations: /health through nginx names the process that answered.
    api_pids = {f.states()["main-api"]["child_pid"] for f in pair.formations.values()}
    assert {http("GET", pair.base + "/health").json["pid"] for _ in range(8)} == api_pids
    instances = [admin.create_instance(user=f"u{i}@example.com", credentials={"api_key": f"figd_{i}"})["instance_id"]
                 for i in range(40)]

    # 1. Calls spread over both formations, and usage from both is complete: every answered call counted once.
    before = pair.counts()
    load = Load(pair.base, instances[:20], calls_each=30).start()
    load.join()
    answered = load.answered()
    assert sum(answered.values()) == len(load.outcomes) == CLIENTS * 30, Counter(o for _, _, o in load.outcomes)
    spread = {which: count - before[which] for which, count in pair.counts().items()}
    assert sum(spread.values()) == CLIENTS * 30, spread
    assert min(spread.values()) >= CLIENTS * 30 * 0.2, spread  # round robin: each takes a fair share
    wait_for(lambda: all(pair.usage_calls(iid) == n for iid, n in answered.items()), 15,
             what="usage of every answered call, from both formations")
    assert all(pair.usage_calls(iid) == 0 for iid in instances[20:])

    # The official SDK through nginx: its requests land on either formation, and no session ties it to one.
    seen = run_sdk(sdk_python, f"{pair.base}/figma/{instances[0]}/mcp", "auto")
    assert "error" not in seen, seen
    assert seen["tools"] == TOOL_NAMES and seen["get_me"]["structured"] == user_for("figd_0")

    # 2. A credential change, a deactivation and a rotated id take effect on both within a second.
    changed, deactivated, rotated = instances[1], instances[2], instances[3]

    def me(which: str, iid: str) -> Any:
        resp = http("POST", f"{pair.figma(which)}/{iid}/mcp/call", {"name": "get_me", "arguments": {}})
        return resp.json["structuredContent"] if resp.status == 200 else resp.status

    for which in pair.formations:  # each formation has the three cached
        assert [me(which, iid) for iid in (changed, deactivated, rotated)] == [
            user_for("figd_1"), user_for("figd_2"), user_for("figd_3")]
    assert admin("PATCH", f"/api/instances/{changed}", {"credentials": {"api_key": "figd_new"}}).status == 200
    assert admin("PATCH", f"/api/instances/{deactivated}", {"status": "inactive"}).status == 200
    resp = admin("POST", f"/api/instances/{rotated}/rotate-id")
    assert resp.status == 200, resp.body
    new_id = resp.json["instance_id"]
    took = within(PROPAGATION_S, lambda: all(
        me(w, changed) == user_for("figd_new") and me(w, deactivated) == 403 and me(w, rotated) == 404
        for w in pair.formations), "the changes on both formations")
    assert all(me(which, new_id) == user_for("figd_3") for which in pair.formations), took

    # 3. The rate limit holds for the pair: one instance hammered through nginx, over both formations.
    limited = instances[4]
    before = pair.counts()
    load = Load(pair.base, [limited]).start()
    time.sleep(6)
    load.stop()
    statuses = Counter(outcome for _, _, outcome in load.outcomes)
    elapsed = max(t for t, _, _ in load.outcomes) - min(t for t, _, _ in load.outcomes)
    accepted = statuses[200]
    bound = BURST + RATE / 60 * (elapsed + 2 * LEASE_S) + 2 * CREDIT  # SECURITY.md's bound, for 2 processes
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0, statuses  # the load went beyond the limit
    assert accepted <= bound, f"{accepted} accepted in {elapsed:.1f}s over two formations; bound {bound:.0f}"
    assert all(count > before[which] for which, count in pair.counts().items())  # both admitted some
    wait_for(lambda: pair.usage_calls(limited) == accepted + answered[limited], 15, what="the limited one's usage")

    # 4. One formation stops mid-load: only the calls in flight on it are lost, nginx sends the rest to the other.
    # The upstream answers slowly, so calls in flight on b at the stop have reached it: were nginx to send
    # one to a after that, the upstream would see it twice.
    figma.delay = 0.1
    upstream_before = len(figma.recorded("/v1/me"))
    load = Load(pair.base, instances[5:40]).start()
    wait_for(lambda: len(load.outcomes) >= 60, 30, what="the load to run")
    stopped = pair.formations["b"]
    killed_at = time.monotonic()
    kill_formation(stopped)
    wait_for(lambda: sum(1 for t, _, _ in load.outcomes if t > killed_at + 1) >= 100, 60,
             what="calls after the stop")
    load.stop()
    lost = [(t - killed_at, outcome) for t, _, outcome in load.outcomes if outcome not in (200, 429)]
    assert len(lost) <= CLIENTS, lost  # at most one call in flight per client when b stopped
    assert all(t < 1 and outcome == 502 for t, outcome in lost), lost  # nginx's answer, to calls sent before it
    after = [outcome for t, _, outcome in load.outcomes if t > killed_at + 1]
    upstream = len(figma.recorded("/v1/me")) - upstream_before
    statuses = Counter(outcome for _, _, outcome in load.outcomes)
    # Each answered call reached the upstream once; each lost one at most once: no sent POST was sent again.
    assert statuses[200] <= upstream <= statuses[200] + len(lost), (upstream, statuses)
    assert after and set(after) <= {200, 429} and after.count(200) >= 0.9 * len(after), Counter(after)


def kill_formation(f: Formation) -> None:
    """Every process of the formation at once, as when its host goes down (no graceful stop)."""
    pids = {p for s in f.states().values() for p in (s.get("pid"), s.get("child_pid")) if isinstance(p, int)}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    f.proc.kill()
    f.proc.wait(10)
