"""What a load run sends and what it reports, shared by both load generators (wrk and asyncio).

A run is closed-loop: ``connections`` keep-alive connections each send the next request as soon as
the previous answer arrived, for ``warmup_s`` (discarded) then ``duration_s`` (measured). Requests
cycle through ``targets`` (one per instance for the full path). An answer counts as good when its
status is 200 and its body is a successful tool result carrying the upstream's answer: the user's
handle from ``GET /v1/me`` is in it (``OK_*``) and ``"isError": true`` is not (``ERROR_*``). MCP lets a
server leave ``isError`` out when it is false (the TypeScript SDK does), so its absence is no failure;
a JSON-RPC error, a tool error or any other answer lacks the handle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Each a regex and a Lua pattern that mean the same. The simulator's handles are "user-" and hex digits
# (tests.simulators.figma.user_for), in the text content (JSON-escaped) and in structuredContent alike.
OK_REGEX = r'"?handle\\?"\s*:\s*\\?"user-[0-9a-f]+'
OK_LUA = '"?handle\\?"%s*:%s*\\?"user%-%x+'
ERROR_REGEX = r'"isError"\s*:\s*true'
ERROR_LUA = '"isError"%s*:%s*true'


@dataclass(frozen=True)
class Target:
    path: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadSpec:
    host: str
    port: int
    method: str
    targets: list[Target]
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connections: int = 64
    duration_s: float = 10.0
    warmup_s: float = 1.0
    check_body: bool = True

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> LoadSpec:
        raw = json.loads(path.read_text())
        raw["targets"] = [Target(**t) for t in raw["targets"]]
        return cls(**raw)


@dataclass
class LoadResult:
    generator: str
    connections: int
    duration_s: float
    requests: int  # good answers within the measured window
    errors: int  # bad statuses, bodies that are not a successful tool result, socket errors, timeouts
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    error_detail: dict[str, int] = field(default_factory=dict)
    foreign_cpu: float = 0.0  # CPUs used by processes that are not the bench's, on average, during the run
    server_cpu: float | None = None  # CPUs the server under test (all its workers) used, on average, warm-up included
    server_us_per_call: float | None = None  # its CPU time per answered call, in microseconds
    supervisor_us_per_call: float | None = None  # the supervisor's, for a row whose service runs under one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
