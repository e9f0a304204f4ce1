"""``python -m mcp.ops <command>``: the helpers the shell scripts call, each a few lines over the modules that
do the work (``envfile``, ``procfile``, ``processes``, ``mcp.formation``).

``python -m mcp.ops ensure-env``      write .env with a new ADMIN_TOKEN and CREDENTIALS_KEY if absent
``python -m mcp.ops env-exports``     .env as shell exports, skipping variables the caller already set
``python -m mcp.ops processes``       each Procfile process with its port and health URL
``python -m mcp.ops wait-healthy``    wait until every process is healthy (mcp.formation.health) or errored (its
                                      supervisor gave up, e.g. its port is taken); name the others
``python -m mcp.ops check-ports``     fail, naming them and who holds them, if any Procfile port is already taken
``python -m mcp.ops restart NAME|all``  restart through the supervisor and wait until healthy (mcp.ops.control)
``python -m mcp.ops reload NAME|all``   zero-downtime: a new process beside the old one, then the old one stops
``python -m mcp.ops honcho-pids``     the honcho processes running this checkout's Procfile, one per line
``python -m mcp.ops stop-honcho``     SIGTERM them, wait, SIGKILL what is left (works without .run)
``python -m mcp.ops reap``            stop any process of this project that outlived a stop; verify ports
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from mcp.formation.facts import cmdline, port_free, port_owner
from mcp.formation.health import probe
from mcp.ops.control import DEFAULT_TIMEOUT_S, States, operate, select, states_by_name
from mcp.ops.envfile import ensure_env, read_env_file
from mcp.ops.processes import honcho_pids, reap, stop_honcho
from mcp.ops.procfile import Process, procfile_processes
from mcp.paths import PROJECT_ROOT

PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2


# wait-healthy: some process is errored (named), every other one is healthy.
EXIT_SOME_ERRORED = 3


async def wait_healthy(processes: list[Process], deadline_s: float,
                       states: States | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Probe every process until each is healthy or errored (by its supervisor's state file, if ``states`` is
    given), or the deadline passes; (the errored ones, the others not healthy), by name with why."""
    end = time.monotonic() + deadline_s
    pending = {p.name: "not checked" for p in processes}
    errored: dict[str, str] = {}
    while pending and time.monotonic() < end:
        for name, state in (states() if states is not None else {}).items():
            if name in pending and state.get("status") == "errored":
                errored[name] = str(state.get("reason") or "errored")
                del pending[name]
        waiting = [p for p in processes if p.name in pending]
        verdicts = await asyncio.gather(*(probe(p.health_url, PROBE_TIMEOUT_S) for p in waiting))
        for proc, health in zip(waiting, verdicts, strict=True):
            if health.healthy:
                del pending[proc.name]
            else:
                pending[proc.name] = health.reason or "unhealthy"
        if pending:
            await asyncio.sleep(POLL_INTERVAL_S)
    return errored, pending


def port_holder(port: int) -> str:
    """"pid 4242 (nc)", or "another process" when the holder cannot be seen (another user's)."""
    owner = port_owner(port)
    if owner is None:
        return "another process"
    argv = cmdline(owner)
    return f"pid {owner}" + (f" ({os.path.basename(argv[0])})" if argv and argv[0] else "")


def control(kind: str, names: list[str], run_dir: Path, timeout_s: float) -> int:
    """``restart``/``reload`` each named process (or ``all``) in turn; 0 if every one ended healthy."""
    known = list(states_by_name(run_dir))
    chosen, unknown = select(known, names)
    if unknown or not chosen:
        listed = ", ".join(known) or f"none (no state files in {run_dir}; is the formation running?)"
        print(f"unknown process {', '.join(unknown) or '(none given)'}; known: {listed}", file=sys.stderr)
        return 2
    failed = False
    for name in chosen:
        print(f"{name}: {kind}ing ...", flush=True)
        outcome = operate(kind, name, lambda: states_by_name(run_dir), timeout_s)
        print(f"{name}: {outcome.message}", file=sys.stdout if outcome.ok else sys.stderr, flush=True)
        failed |= not outcome.ok
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m mcp.ops")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ensure-env")
    sub.add_parser("env-exports")
    p = sub.add_parser("processes")
    p.add_argument("--procfile", default="Procfile")
    p.add_argument("--json", action="store_true")
    w = sub.add_parser("wait-healthy")
    w.add_argument("--procfile", default="Procfile")
    w.add_argument("--timeout", type=float, default=30.0)
    for name in ("check-ports", "reap"):
        sub.add_parser(name).add_argument("--procfile", default="Procfile")
    for name in ("restart", "reload"):
        c = sub.add_parser(name)
        c.add_argument("names", nargs="+", metavar="NAME", help="a Procfile process, or all")
        c.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for each")
    for name in ("honcho-pids", "stop-honcho"):
        h = sub.add_parser(name)
        h.add_argument("--pid-file", type=Path, help="also this pid, if it is a honcho (.run/honcho.pid)")
        # honcho TERMs every process group and KILLs them 5 s later; give it that and a margin.
        h.add_argument("--timeout", type=float, default=8.0)
    args = parser.parse_args(argv)
    root = Path(os.environ.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)
    run_dir = Path(os.environ.get("MCP_RUN_DIR") or root / ".run")
    if args.cmd == "ensure-env":
        if ensure_env(root / ".env"):
            print("wrote .env with a new ADMIN_TOKEN and CREDENTIALS_KEY")
        return 0
    if args.cmd == "env-exports":
        for key, value in read_env_file(root / ".env").items():
            if key not in os.environ:
                print(f"export {key}={shlex.quote(value)}")
        return 0
    if args.cmd in ("restart", "reload"):
        return control(args.cmd, args.names, run_dir, args.timeout)
    if args.cmd in ("honcho-pids", "stop-honcho"):
        pids = honcho_pids(root, args.pid_file)
        if args.cmd == "honcho-pids":
            print("\n".join(map(str, pids)))
        else:
            stop_honcho(pids, args.timeout)
        return 0
    processes = procfile_processes(root / args.procfile)
    if args.cmd == "processes":
        if args.json:
            print(json.dumps([asdict(p) | {"health_url": p.health_url} for p in processes]))
        else:
            for proc in processes:
                print(f"{proc.name} {proc.port} {proc.health_url}")
        return 0
    if args.cmd == "check-ports":
        taken = [p for p in processes if not port_free(p.port)]
        for proc in taken:
            print(f"port {proc.port} ({proc.name}) is already in use by {port_holder(proc.port)}", file=sys.stderr)
        return 1 if taken else 0
    if args.cmd == "reap":
        problems = reap(root, processes)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    errored, failures = asyncio.run(wait_healthy(processes, args.timeout, lambda: states_by_name(run_dir)))
    for name, reason in errored.items():
        print(f"{name}: errored: {reason}", file=sys.stderr)
    for name, reason in failures.items():
        print(f"{name}: not healthy after {args.timeout:.0f}s: {reason}", file=sys.stderr)
    if failures or len(errored) == len(processes):
        return 1
    return EXIT_SOME_ERRORED if errored else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
