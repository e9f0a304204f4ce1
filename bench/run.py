"""One bench run, start to finish: set up, start everything, measure each row, stop everything.

Rows, all under the same load generator and the same load:
  upstream   the simulator alone (its ceiling: it must be far above every other row)
  baseline   bare Tornado + the same aiohttp call, no tenancy
  full_rest  POST /{instance}/mcp/call on ``python -m services.figma``, cycling over N instances
  full_mcp   POST /{instance}/mcp (JSON-RPC tools/call), when the service answers it
  workers    the same MCP call on the service with N workers sharing its port (bench.workers)
  sdk_peer / fastmcp_peer / ts_peer
             the same tool on the MCP Python SDK, on FastMCP and on the MCP TypeScript SDK (Node), each
             its own Streamable HTTP server, stateless with JSON responses (bench.peer_env)
Each row: a saturated run (throughput, p50/p99 with queueing) and a light one (1 connection: the
cost of one call without queueing), with the server's RSS idle and at peak under load.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import jsonrpc, lookup, peer_env, profile, report, workers, wrk
from bench.cpu import CpuMeter, postmaster_pid
from bench.database import EmbeddedPostgres, instance_count, seed_instances, usage_rows
from bench.loadspec import LoadSpec, Target
from bench.measure import Measurer, Row, log
from bench.options import Options
from bench.procs import (
    Proc,
    ProcGroup,
    clean_env,
    free_port,
    healthy,
    http,
    pin,
    wait_until,
)
from mcp.paths import PROJECT_ROOT
from mcp.tenancy.credentials import CredentialCipher, generate_key, parse_key

REST_BODY = json.dumps({"name": "get_me", "arguments": {}}, separators=(",", ":"))
MCP_BODY = json.dumps(jsonrpc.TOOL_CALL, separators=(",", ":"))
JSON_HEADERS = {"Content-Type": "application/json"}
# The platform's processes, as in the Procfile: (name, module, port variable).
PLATFORM = (("main-api", "services.api", "API_PORT"), ("mcp-figma", "services.figma", "FIGMA_PORT"),
            ("mcp-github", "services.github", "GITHUB_PORT"), ("mcp-slack", "services.slack", "SLACK_PORT"))


def revision() -> str:
    """The commit measured, with ``+changes`` when mcp/, services/ or db/ differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mcp", "services", "db"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def tool_calls_answered(url: str) -> int:
    """Successful tool calls a service process has answered, from its /metrics."""
    total = 0.0
    for line in http("GET", url + "/metrics").body.decode().splitlines():
        if line.startswith("mcp_tool_calls_total{") and 'outcome="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Bench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.work = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
        self.procs = ProcGroup(self.work)
        self.db: EmbeddedPostgres | None = None
        cpus = sorted(os.sched_getaffinity(0))
        if opts.pin and len(cpus) >= 2:
            self.server_cpus: set[int] | None = {cpus[0]}
            self.load_cpus: set[int] | None = set(cpus[1:])
            self.pinning = (f"server under test on CPU {cpus[0]}; load generator and upstream simulator on "
                            f"CPU {','.join(map(str, cpus[1:]))}; PostgreSQL unpinned")
        else:
            self.server_cpus = self.load_cpus = None
            self.pinning = "no pinning"
        use_wrk = opts.loadgen == "wrk" or (opts.loadgen == "auto" and wrk.available())
        if opts.loadgen == "wrk" and not wrk.available():
            raise SystemExit("bench: --loadgen wrk, but wrk is not installed (apt-get install wrk)")
        if opts.profile_dir is not None and profile.py_spy() is None:
            raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
        self.generator = wrk.version() if use_wrk else "asyncio (python -m bench.load)"
        self.cpu = CpuMeter(self._our_roots)
        self.measurer = Measurer(opts, self.work, self.load_cpus, use_wrk, self.cpu)
        self.results: dict[str, dict[str, Any]] = {}
        self.service_env: dict[str, str] = {}  # the platform processes' environment, set when they start

    def _our_roots(self) -> set[int]:
        roots = {os.getpid()}
        if self.db is not None:
            postmaster = postmaster_pid(self.db.data_dir)
            if postmaster is not None:
                roots.add(postmaster)
        return roots

    def _unavailable(self, name: str, label: str, note: str) -> None:
        log(f"{label}: not available: {note}")
        self.results[name] = {"name": name, "label": label, "available": False, "note": note}

    def _spec(self, port: int, method: str, targets: list[Target], body: str | None,
              headers: dict[str, str], check: bool = True) -> LoadSpec:
        return LoadSpec(host="127.0.0.1", port=port, method=method, targets=targets, body=body, headers=headers,
                        connections=self.opts.connections, duration_s=self.opts.duration_s,
                        warmup_s=self.opts.warmup_s, check_body=check)

    # Phases --------------------------------------------------------------------------------------

    def _database(self, cipher: CredentialCipher) -> tuple[list[uuid.UUID], list[dict[str, Any]]]:
        log("starting an embedded PostgreSQL in a temporary folder")
        started = time.monotonic()
        self.db = EmbeddedPostgres()
        log(f"database up and migrated in {time.monotonic() - started:.1f} s")
        ids = seed_instances(self.db.url, cipher, self.opts.instances)
        timings = [self._lookups(cipher, ids)]
        more = self.opts.lookup_instances - self.opts.instances
        if more > 0:
            log(f"seeding {more:,} more instances")
            seed_instances(self.db.url, cipher, more, start=self.opts.instances)
            timings.append(self._lookups(cipher, ids))
        return ids, [t.as_dict() for t in timings]

    def _lookups(self, cipher: CredentialCipher, ids: list[uuid.UUID]) -> lookup.LookupTiming:
        assert self.db is not None
        total = instance_count(self.db.url)
        self.cpu.start()
        timing = lookup.measure_lookups(self.db.url, cipher, ids, total, self.opts.lookups)
        timing = replace(timing, foreign_cpu=self.cpu.stop())
        log(f"uncached lookup at {total:,} instances: p50 {timing.p50_ms:.3f} ms, p99 {timing.p99_ms:.3f} ms")
        return timing

    def _start_platform(self, env: dict[str, str]) -> tuple[dict[str, Proc], dict[str, float]]:
        """Every process of the Procfile at once; seconds from start until each answers /health."""
        procs: dict[str, Proc] = {}
        for name, module, port_var in PLATFORM:
            port = free_port()
            procs[name] = self.procs.start(name, [sys.executable, "-m", module], {**env, port_var: str(port)},
                                           port=port, cwd=PROJECT_ROOT)
        t0 = min(p.started_at for p in procs.values())
        ready: dict[str, float] = {}

        def poll() -> bool:
            for name, proc in procs.items():
                if name not in ready and (not proc.alive() or healthy(proc.url + "/health")):
                    if not proc.alive():
                        raise RuntimeError(f"{name} exited during start:\n{proc.output()}")
                    ready[name] = round(time.monotonic() - t0, 3)
            return len(ready) == len(procs)

        if not wait_until(poll, 30.0, interval=0.005):
            missing = [n for n in procs if n not in ready]
            raise RuntimeError(f"not healthy after 30 s: {', '.join(missing)}")
        return procs, ready

    def _start_peer(self, name: str, peer: peer_env.PythonPeer | peer_env.NodePeer,
                    sim_url: str) -> tuple[Proc | None, str, str | None]:
        """A peer, ready for tools/call, or (None, why not, its version if installed)."""
        if self.opts.peer == "skip":
            return None, "skipped (--peer skip)", None
        version, note = peer.ensure(install=self.opts.peer == "install" or not self.opts.quick)
        if version is None:
            return None, note, None
        if isinstance(peer, peer_env.NodePeer):
            peer.prepare()
        port = free_port()
        proc = self.procs.start(name, peer.command(port, sim_url), clean_env(), port=port, cwd=self.work,
                                cpus=self.server_cpus)
        url = f"{proc.url}/mcp"

        def up() -> bool:
            if not proc.alive():
                return True
            try:
                jsonrpc.initialize(url)
                return True
            except jsonrpc.NotAvailable:
                return False

        wait_until(up, 30.0, interval=0.05)
        if not proc.alive():
            return None, f"{peer.title} peer exited: {proc.output(500)}", version
        proc.ready_s = round(time.monotonic() - proc.started_at, 3)
        return proc, "", version

    def _peer_row(self, name: str, label: str, peer: peer_env.PythonPeer | peer_env.NodePeer,
                  sim_url: str) -> Row | None:
        """A peer's row, or None with the peer recorded as not available (and why)."""
        proc, note, version = self._start_peer(name, peer, sim_url)
        if version:
            label = f"{label} ({peer.framework} {version})"
        if proc is None:
            self._unavailable(name, label, note)
            return None
        try:
            session = jsonrpc.initialize(f"{proc.url}/mcp")
            jsonrpc.call_tool(f"{proc.url}/mcp", session)
        except (jsonrpc.NotAvailable, ValueError, OSError) as e:
            self._unavailable(name, label, f"tools/call failed: {e}")
            return None
        return Row(name, label, proc, self._spec(proc.port, "POST", [Target("/mcp", session.headers)], MCP_BODY,
                                                 jsonrpc.BASE_HEADERS),
                   extra={"version": version, "start_s": proc.ready_s})

    def _mcp_targets(self, base_url: str, ids: list[uuid.UUID]) -> list[Target]:
        """Targets for the platform's JSON-RPC endpoint; NotAvailable until it answers tools/call."""
        first = jsonrpc.initialize(f"{base_url}/{ids[0]}/mcp")
        jsonrpc.call_tool(f"{base_url}/{ids[0]}/mcp", first)
        if first.session_id is None:
            return [Target(f"/{i}/mcp", first.headers) for i in ids]
        log(f"the MCP endpoint is stateful: opening {len(ids):,} sessions")
        return [Target(f"/{i}/mcp", jsonrpc.initialize(f"{base_url}/{i}/mcp").headers) for i in ids]

    def _wait_usage(self, expected: int, ids: list[uuid.UUID]) -> int:
        assert self.db is not None
        rows = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = usage_rows(self.db.url, ids)
            if now >= expected or now == rows:
                return now
            rows = now
            time.sleep(1.5)
        return rows

    def _profile(self, rows: list[Row]) -> dict[str, Any]:
        """Each row again, under py-spy; its top entries (the run's figures are not reported)."""
        assert self.opts.profile_dir is not None
        out_dir = self.opts.profile_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        profiles: dict[str, Any] = {}
        for row in rows:
            raw = out_dir / f"{row.name}.pyspy.txt"
            spec = replace(row.spec, warmup_s=0.0)
            log(f"{row.label}: profiling with py-spy for {spec.duration_s:g} s")
            spy = profile.start(row.pids()[0], spec.duration_s + 1, raw)  # of several workers, the first
            time.sleep(0.5)
            result = self.measurer.load(spec)
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0 or not raw.exists():
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-800:]}")
            summary = profile.summarize(raw)
            (out_dir / f"{row.name}.profile.json").write_text(json.dumps(summary.as_dict(), indent=2))
            profiles[row.name] = {"label": row.label, "raw": str(raw), "run_rps": result.rps,
                                  "foreign_cpu": result.foreign_cpu, **summary.as_dict()}
        return profiles

    # The run -------------------------------------------------------------------------------------

    def _start_service(self, key: str, sim: Proc) -> tuple[Proc, dict[str, float], dict[str, float | None]]:
        """The platform's processes: start them all (timed), note idle RSS, keep only figma (pinned)."""
        assert self.db is not None
        root = self.work / "project-root"
        root.mkdir()
        env = clean_env(DATABASE_URL=self.db.url, CREDENTIALS_KEY=key, ADMIN_TOKEN=secrets.token_urlsafe(24),
                        FIGMA_API_URL=sim.url, GITHUB_API_URL=sim.url, SLACK_API_URL=sim.url,
                        MCP_PROJECT_ROOT=str(root), LOG_LEVEL="INFO")
        self.service_env = env
        log("starting the platform's processes (main API, figma, github, slack) at once")
        platform_procs, ready = self._start_platform(env)
        log(f"all healthy {max(ready.values()):.2f} s after start")
        time.sleep(1.0)
        idle = {name: p.rss_mb() for name, p in platform_procs.items()}
        figma = platform_procs["mcp-figma"]
        for name, proc in platform_procs.items():
            if name != "mcp-figma":
                self.procs.stop(proc)  # idle from here on; stopped so they cannot disturb the runs
        pin(figma.pid, self.server_cpus)
        return figma, ready, idle

    def _start_helper(self, name: str, module: str, *args: str, cpus: set[int] | None) -> Proc:
        port = free_port()
        proc = self.procs.start(name, [sys.executable, "-m", module, "--port", str(port), *args], clean_env(),
                                port=port, cwd=PROJECT_ROOT, cpus=cpus)
        proc.wait_healthy()
        return proc

    def _supervised_memory(self) -> dict[str, Any]:
        """Idle RSS of the service as the Procfile runs it: its supervisor plus one worker."""
        try:
            service = workers.start_supervised(self.procs, self.service_env, self.work, "figma-supervised", 1)
        except RuntimeError as e:
            log(f"the supervised service did not start: {e}")
            return {"launcher": "supervisor, 1 worker", "workers": None, "supervisor": None, "total": None,
                    "note": str(e)[:500]}
        try:
            time.sleep(1.0)
            return {"launcher": service.launcher, **service.rss()}
        finally:
            for proc in service.started:
                self.procs.stop(proc)

    def _workers_row(self, ids: list[uuid.UUID]) -> Row | None:
        """The full MCP path on the service with N workers on one port; None (recorded as such) without."""
        n = self.opts.workers
        name, label = "workers", f"full path, MCP, {n} workers"
        launcher = self.opts.workers_launcher
        if launcher == "auto":
            launcher = "supervisor" if workers.supervisor_has_workers() else "direct"
        try:
            if launcher == "supervisor":
                service = workers.start_supervised(self.procs, self.service_env, self.work, "figma-workers", n)
            else:
                service = workers.start_direct(self.procs, self.service_env, "figma-worker", n)
            targets = self._mcp_targets(service.url, ids)
        except (RuntimeError, jsonrpc.NotAvailable, ValueError, OSError) as e:
            self._unavailable(name, label, f"{launcher}: {e}")
            return None
        log(f"{label}: {service.launcher}, pids {service.worker_pids()}, unpinned (both CPUs)")
        return Row(name, label, service.started[0],
                   self._spec(service.port, "POST", targets, MCP_BODY, jsonrpc.BASE_HEADERS),
                   prime=True, workers=service.worker_pids,
                   supervisor=service.supervisor_pids if service.supervisor else None,
                   extra={"workers": n, "launcher": service.launcher,
                          "pinning": "workers and supervisor unpinned (both CPUs); load generator and simulator "
                                     "as for every row"})

    def _rows(self, sim: Proc, figma: Proc, ids: list[uuid.UUID], worker_ids: list[uuid.UUID]) -> list[Row]:
        """Every row that can be measured; the others are recorded as not available, with why."""
        baseline = self._start_helper("baseline", "bench.baseline", "--upstream", sim.url, cpus=self.server_cpus)
        rows = [Row("upstream", "upstream simulator alone", sim,
                    self._spec(sim.port, "GET", [Target("/v1/me", {"X-Figma-Token": "figd_bench_ceiling"})],
                               None, {}, check=False), light=False)]
        _preflight(baseline.url + "/mcp/call", "the baseline")
        rows.append(Row("baseline", "baseline (bare Tornado + aiohttp)", baseline,
                        self._spec(baseline.port, "POST", [Target("/mcp/call")], REST_BODY, JSON_HEADERS),
                        extra={"start_s": baseline.ready_s}))
        _preflight(f"{figma.url}/{ids[0]}/mcp/call", "the full path")
        rows.append(Row("full_rest", f"full path, REST ({len(ids):,} instances)", figma,
                        self._spec(figma.port, "POST", [Target(f"/{i}/mcp/call") for i in ids], REST_BODY,
                                   JSON_HEADERS), prime=True))
        try:
            targets = self._mcp_targets(figma.url, ids)
        except (jsonrpc.NotAvailable, ValueError, OSError) as e:
            self._unavailable("full_mcp", "full path, MCP JSON-RPC", f"POST /{{instance}}/mcp: {e}")
        else:
            rows.append(Row("full_mcp", f"full path, MCP ({len(ids):,} instances)", figma,
                            self._spec(figma.port, "POST", targets, MCP_BODY, jsonrpc.BASE_HEADERS)))
            # The MCP row's exact request (the headers MCP requires, the JSON-RPC body) to the bare
            # handler: what Tornado itself costs for that request, next to the REST-shaped baseline.
            rows.append(Row("baseline_mcp", "baseline, MCP-shaped request", baseline,
                            self._spec(baseline.port, "POST", [Target("/mcp", targets[0].headers)], MCP_BODY,
                                       jsonrpc.BASE_HEADERS)))
            if self.opts.workers > 0:
                row = self._workers_row(worker_ids)
                if row is not None:
                    rows.append(row)
        for name, label, peer in (("sdk_peer", "MCP SDK peer", peer_env.SDK),
                                  ("fastmcp_peer", "FastMCP peer", peer_env.FASTMCP),
                                  ("ts_peer", "TypeScript SDK peer", peer_env.TYPESCRIPT)):
            row = self._peer_row(name, label, peer, sim.url)
            if row is not None:
                rows.append(row)
        return rows

    def run(self) -> dict[str, Any]:
        """Set up, measure every row, stop everything; the report (as written to the JSON file)."""
        o = self.opts
        started = time.monotonic()
        load_before = os.getloadavg()
        key = generate_key()
        try:
            cipher = CredentialCipher([parse_key(key)])
            ids, lookups = self._database(cipher)
            assert self.db is not None
            # The workers row has instances of its own, so the one-worker process's usage stays checkable.
            worker_ids = (seed_instances(self.db.url, cipher, o.instances, start=o.lookup_instances)
                          if o.workers > 0 else [])
            sim = self._start_helper("upstream-sim", "bench.upstream_sim", cpus=self.load_cpus)
            figma, ready, idle = self._start_service(key, sim)
            supervised = self._supervised_memory()
            rows = self._rows(sim, figma, ids, worker_ids)
            usage_before = usage_rows(self.db.url, ids)
            calls_before = tool_calls_answered(figma.url)
            self.measurer.measure_all(rows)
            self.results.update((row.name, row.as_dict()) for row in rows)
            calls = tool_calls_answered(figma.url) - calls_before
            usage = {"calls": calls, "rows": self._wait_usage(usage_before + calls, ids) - usage_before}
            # The baseline too: the same frames (Tornado, aiohttp) side by side show what tenancy adds.
            profiled = (self._profile([r for r in rows if r.server is figma or r.name in ("baseline", "workers")])
                        if o.profile_dir else None)
            loaded = {"mcp-figma": max((r.rss_loaded_mb for r in rows if r.server is figma and r.rss_loaded_mb),
                                       default=None)}
        finally:
            self.procs.stop_all()
            if self.db is not None:
                self.db.stop()
        if not o.keep_logs:
            shutil.rmtree(self.work, ignore_errors=True)
        out: dict[str, Any] = {
            "schema": 1,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "scripts/bench " + " ".join(sys.argv[1:]),
            "quick": o.quick,
            "revision": revision(),
            "elapsed_s": round(time.monotonic() - started, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "pinning": self.pinning, "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
            "load": {"generator": self.generator, "connections": o.connections, "duration_s": o.duration_s,
                     "rounds": o.rounds, "warmup_s": o.warmup_s, "instances": o.instances,
                     "light_connections": o.light_connections, "light_duration_s": o.light_duration_s},
            "results": _ordered_with_ratios(self.results),
            "startup": {"all_healthy_s": max(ready.values()), "per_process": ready,
                        "note": "every Procfile process started at once, directly (no supervisor), warm database"},
            "rss_mb": {"service_idle": idle, "service_loaded": loaded, "supervised_idle": supervised,
                       "supervised_loaded_estimate": _supervised_loaded(supervised, loaded["mcp-figma"])},
            "lookup": lookups,
            "usage": usage,
            "logs": str(self.work) if o.keep_logs else None,
        }
        if profiled is not None:
            out["profile"] = profiled
        out["targets"] = report.evaluate(out)
        return out


def _preflight(url: str, what: str) -> None:
    answer = http("POST", url, json.loads(REST_BODY)).json()
    if answer.get("isError") is not False:
        raise RuntimeError(f"{what}'s preflight call failed: {answer}")


def _ordered_with_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows in table order, each available one with its ratio and p99 difference to the baseline."""
    order = ("upstream", "baseline", "full_rest", "baseline_mcp", "full_mcp", "workers", "sdk_peer",
             "fastmcp_peer", "ts_peer")
    out = {name: results[name] for name in order if name in results}
    base = out["baseline"]["saturated"]
    for row in out.values():
        if row.get("available") and row["name"] != "upstream":
            row["ratio_to_baseline"] = round(row["saturated"]["rps"] / base["rps"], 3) if base["rps"] else None
            row["p99_delta_ms"] = round(row["saturated"]["p99_ms"] - base["p99_ms"], 3)
    one, many = out.get("full_mcp"), out.get("workers")
    if one and many and one.get("available") and many.get("available"):
        s1, sn = one["saturated"], many["saturated"]
        many["ratio_to_one_worker"] = round(sn["rps"] / s1["rps"], 3) if s1["rps"] else None
        if s1.get("server_us_per_call") and sn.get("server_us_per_call"):
            many["cpu_per_call_to_one_worker"] = round(sn["server_us_per_call"] / s1["server_us_per_call"], 3)
    return out


def _supervised_loaded(idle: dict[str, Any], service_loaded: float | None) -> float | None:
    """The one-worker service under load with its supervisor: the measured service's peak RSS plus the
    supervisor's idle RSS (the supervised copy is only measured idle; the supervisor's RSS barely moves)."""
    if service_loaded is None or idle.get("supervisor") is None:
        return None
    return round(service_loaded + idle["supervisor"], 1)
