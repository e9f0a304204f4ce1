"""The bench's options, from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from mcp.paths import PROJECT_ROOT

DEFAULT_JSON = PROJECT_ROOT / ".cache" / "bench" / "bench.json"


@dataclass(frozen=True)
class Options:
    quick: bool
    duration_s: float
    warmup_s: float
    prime_s: float  # a discarded run that fills a full-path process's instance cache before the rounds
    connections: int
    rounds: int
    light_connections: int
    light_duration_s: float
    instances: int
    lookup_instances: int
    lookups: int
    json_out: Path
    loadgen: str  # auto | wrk | asyncio
    pin: bool
    peer: str  # auto | install | skip
    workers: int  # workers of the workers row; 0 leaves the row out
    workers_launcher: str  # auto | supervisor | direct
    profile_dir: Path | None
    keep_logs: bool


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Tool-call cost: bare baseline, full path (REST, MCP, N workers), the peers, side by side.")
    p.add_argument("--quick", action="store_true", help="short runs (2 s) and 10,000 lookup instances")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 10, quick 2)")
    p.add_argument("--warmup", type=float, help="seconds of discarded warm-up per run (default 1, quick 0.5)")
    p.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    p.add_argument("--rounds", type=int,
                   help="interleaved rounds of every row; the median round by throughput is reported "
                        "(default 3, quick 1)")
    p.add_argument("--light-connections", type=int, default=1,
                   help="connections of the light-load latency run (default 1; 0 skips it)")
    p.add_argument("--light-duration", type=float, help="seconds of the light-load run (default 5, quick 1)")
    p.add_argument("--instances", type=int, default=1000, help="instances the full-path load cycles through")
    p.add_argument("--lookup-instances", type=int,
                   help="instances in the database for the lookup-scaling figure (default 100000, quick 10000)")
    p.add_argument("--lookups", type=int, help="uncached lookups timed at each size (default 2000, quick 500)")
    p.add_argument("--json-out", type=Path, default=DEFAULT_JSON, help=f"default: {DEFAULT_JSON}")
    p.add_argument("--loadgen", choices=("auto", "wrk", "asyncio"), default="auto",
                   help="auto: wrk when installed, else the asyncio generator")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the server under test and the load side to separate CPUs")
    p.add_argument("--peer", choices=("auto", "install", "skip"), default="auto",
                   help="the peers (MCP SDK, FastMCP, TypeScript SDK): auto = install each into .cache/ on a full "
                        "run, use them if present with --quick")
    p.add_argument("--workers", type=int, default=2,
                   help="workers of the workers row, the full MCP path with N workers on one port (default 2; "
                        "0 leaves the row out)")
    p.add_argument("--workers-launcher", choices=("auto", "supervisor", "direct"), default="auto",
                   help="how the workers row starts them: the supervisor's --workers, or N processes on one port "
                        "(auto: the supervisor when it has --workers)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="then the baseline, the full-path rows and one worker of the workers row again under "
                        "py-spy; raw stacks and top entries into DIR")
    p.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed at the end)")
    a = p.parse_args(argv)
    quick = a.quick
    return Options(
        quick=quick,
        duration_s=a.duration or (2.0 if quick else 10.0),
        warmup_s=a.warmup if a.warmup is not None else (0.5 if quick else 1.0),
        prime_s=1.0 if quick else 3.0,
        connections=a.connections,
        rounds=max(1, a.rounds or (1 if quick else 3)),
        light_connections=a.light_connections,
        light_duration_s=a.light_duration or (1.0 if quick else 5.0),
        instances=a.instances,
        lookup_instances=max(a.lookup_instances or (10_000 if quick else 100_000), a.instances),
        lookups=a.lookups or (500 if quick else 2000),
        json_out=a.json_out,
        loadgen=a.loadgen,
        pin=a.pin,
        peer=a.peer,
        workers=max(0, a.workers),
        workers_launcher=a.workers_launcher,
        profile_dir=a.profile,
        keep_logs=a.keep_logs,
    )
