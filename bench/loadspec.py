"""What a load run sends and what it reports, shared by both load generators (wrk and asyncio).

A run is closed-loop: ``connections`` keep-alive connections each send the next request as soon as
the previous answer arrived, for ``warmup_s`` (discarded) then ``duration_s`` (measured). Requests
cycle through ``targets`` (one per instance for the full path). An answer counts as good when its
status is 200 and its body matches ``ok_pattern`` (a tool result with ``"isError": false``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# "isError": false, whatever the spacing; a Lua pattern and a regex that mean the same.
OK_REGEX = r'"isError"\s*:\s*false'
OK_LUA = '"isError"%s*:%s*false'


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
    server_cpu: float | None = None  # CPUs the server under test used, on average, warm-up included
    server_us_per_call: float | None = None  # its CPU time per answered call, in microseconds

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
