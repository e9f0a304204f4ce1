"""wrk as the load generator when it is installed (Debian: ``apt-get install wrk``).

The request list, the body and the result check are a generated Lua script; its ``done`` hook prints
the figures as one JSON line after a marker, so nothing depends on wrk's human-readable output.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

from bench.loadspec import ERROR_LUA, OK_LUA, LoadResult, LoadSpec
from bench.procs import pinned_command

MARKER = "BENCH-RESULT "

_LUA = r"""
local targets = %(targets)s
local method = %(method)s
local body = %(body)s
local check = %(check)s
local ok_pattern = %(ok_pattern)s
local error_pattern = %(error_pattern)s
local threads = {}
local counter = 0
-- A global on purpose: each wrk thread runs its own Lua state, and done() can read a thread's count
-- only through thread:get(), which sees globals alone (a local here would always read as nil).
bad = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = tonumber(id) or 0
end

function request()
  counter = counter + 1
  local t = targets[(counter %% #targets) + 1]
  return wrk.format(method, t.path, t.headers, body)
end

function response(status, headers, resp_body)
  -- wrk itself counts statuses >= 400 (summary.errors.status); anything else that is not a 200
  -- carrying a successful tool result is counted here.
  if status < 400 and (status ~= 200 or (check and (not string.find(resp_body, ok_pattern)
                                                     or string.find(resp_body, error_pattern)))) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local not_ok = 0
  for _, thread in ipairs(threads) do
    local count = thread:get("bad")
    if count == nil then
      error("the body check's counter is not readable from done()")
    end
    not_ok = not_ok + count
  end
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"bad_body":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, not_ok,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=5)
    except OSError:
        return "wrk"
    return (out.stdout or out.stderr).splitlines()[0].split(" [")[0].strip() if (out.stdout or out.stderr) else "wrk"


def _lua_str(value: str | None) -> str:
    return "nil" if value is None else json.dumps(value)  # a JSON string is a valid Lua string literal


def _lua_headers(headers: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in headers.items()) + "}"


def script(spec: LoadSpec) -> str:
    targets = ",\n  ".join(
        f"{{path = {_lua_str(t.path)}, headers = {_lua_headers({**spec.headers, **t.headers})}}}"
        for t in spec.targets)
    return _LUA % {"targets": "{\n  " + targets + "\n}", "method": _lua_str(spec.method),
                   "body": _lua_str(spec.body), "check": "true" if spec.check_body else "false",
                   "ok_pattern": _lua_str(OK_LUA), "error_pattern": _lua_str(ERROR_LUA), "marker": MARKER}


def _wrk(spec: LoadSpec, lua: Path, duration_s: float, threads: int, cpus: set[int] | None) -> dict[str, int]:
    seconds = max(1, math.ceil(duration_s))
    argv = ["wrk", f"-t{threads}", f"-c{spec.connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(lua),
            f"http://{spec.host}:{spec.port}"]
    out = subprocess.run(pinned_command(argv, cpus), capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")


def run(spec: LoadSpec, work_dir: Path, cpus: set[int] | None) -> LoadResult:
    """A warm-up run (discarded), then the measured run; wrk's durations are whole seconds."""
    lua = work_dir / "wrk-request.lua"
    lua.write_text(script(spec))
    threads = max(1, min(len(cpus) if cpus else 2, spec.connections))
    if spec.warmup_s > 0:
        _wrk(spec, lua, spec.warmup_s, threads, cpus)
    raw = _wrk(spec, lua, spec.duration_s, threads, cpus)
    duration = raw["duration_us"] / 1e6
    detail = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout", "bad_body") if raw[k]}
    errors = raw["status"] + raw["bad_body"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    good = max(0, raw["requests"] - raw["status"] - raw["bad_body"])
    return LoadResult(
        generator=version(), connections=spec.connections, duration_s=round(duration, 3), requests=good,
        errors=errors, rps=round(good / duration, 1) if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000.0, p90_ms=raw["p90_us"] / 1000.0, p99_ms=raw["p99_us"] / 1000.0,
        max_ms=raw["max_us"] / 1000.0, error_detail=detail,
    )
