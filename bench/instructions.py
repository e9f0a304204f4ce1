"""Instructions per call under callgrind: a repeatable figure for deciding hot-path changes.

``python -m bench.instructions {baseline,rest,mcp} [--calls N] [--instances N] [--set NAME=VALUE ...]``

On a shared 2-core machine calls/s and even CPU time per call move by +-10% from run to run, more
than most single changes are worth. ``valgrind --tool=callgrind`` counts the instructions the
server executes instead, which repeats to about 1%. The server under test (the bare baseline, or
``python -m services.figma`` for the REST and MCP rows) runs under callgrind on a free port with its
own embedded PostgreSQL and the upstream simulator; a client warms it up (every instance cached),
callgrind's counters are zeroed, ``--calls`` calls are made over 4 connections, and the counters
are dumped. Slow under valgrind (about 20 s for 1,000 calls), and timing-driven work is distorted:
the usage flush runs once a second of wall time, so under valgrind it writes ~50 rows per flush,
not thousands. ``--set USAGE_FLUSH_INTERVAL=1000 --set INSTANCE_CACHE_TTL=3600`` leaves that work
out and counts the request path alone. Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import jsonrpc
from bench.database import EmbeddedPostgres, seed_instances
from bench.procs import clean_env, free_port, healthy, wait_until
from mcp.paths import PROJECT_ROOT
from mcp.tenancy.credentials import CredentialCipher, generate_key, parse_key

REST_BODY = json.dumps({"name": "get_me", "arguments": {}}, separators=(",", ":")).encode()
MCP_BODY = json.dumps(jsonrpc.TOOL_CALL, separators=(",", ":")).encode()
JSON = {"Content-Type": "application/json"}
MCP_HEADERS = {**jsonrpc.BASE_HEADERS, "MCP-Protocol-Version": jsonrpc.PROTOCOL_VERSION}


def _request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _drive(port: int, requests: list[bytes], connections: int = 4) -> None:
    async def one(chunk: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for req in chunk:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                if b'"isError":false' not in body:
                    raise RuntimeError(f"not a successful tool call: {head[:80]!r} {body[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(one(requests[i::connections]) for i in range(connections)))


def measure(row: str, calls: int, instances: int, settings: dict[str, str]) -> int:
    """Instructions per call of the server under test for ``row``."""
    work = Path(tempfile.mkdtemp(prefix="mcp-instructions-"))
    pg = EmbeddedPostgres()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        key = generate_key()
        ids = seed_instances(pg.url, CredentialCipher([parse_key(key)]), instances)
        sim_port, port = free_port(), free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.upstream_sim", "--port", str(sim_port)],
                                      cwd=PROJECT_ROOT, env=clean_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        if not wait_until(lambda: healthy(sim_url + "/health"), 20):
            raise RuntimeError("the upstream simulator did not start")
        out = work / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
        if row == "baseline":
            argv = [*valgrind, sys.executable, "-m", "bench.baseline", "--port", str(port), "--upstream", sim_url]
            env = clean_env()
            requests = [_request("/mcp/call", REST_BODY, JSON)]
        else:
            argv = [*valgrind, sys.executable, "-m", "services.figma"]
            env = clean_env(DATABASE_URL=pg.url, CREDENTIALS_KEY=key, ADMIN_TOKEN=secrets.token_urlsafe(24),
                            FIGMA_API_URL=sim_url, MCP_PROJECT_ROOT=str(work), LOG_LEVEL="INFO",
                            FIGMA_PORT=str(port), **settings)
            requests = ([_request(f"/{i}/mcp/call", REST_BODY, JSON) for i in ids] if row == "rest"
                        else [_request(f"/{i}/mcp", MCP_BODY, MCP_HEADERS) for i in ids])
        with open(work / "server.log", "wb") as log:
            server = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(server)
        if not wait_until(lambda: healthy(f"http://127.0.0.1:{port}/health"), 240, interval=0.5):
            raise RuntimeError("the server did not start: " + (work / "server.log").read_text()[-2000:])
        asyncio.run(_drive(port, [requests[k % len(requests)] for k in range(max(3 * len(requests), 300))]))
        time.sleep(1.5)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
        asyncio.run(_drive(port, [requests[k % len(requests)] for k in range(calls)]))
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        time.sleep(0.5)
        dumps = sorted(work.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        for line in dumps[-1].read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return round(int(line.split()[1]) / calls)
        raise RuntimeError("callgrind wrote no totals")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=("baseline", "rest", "mcp"))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the service process, e.g. USAGE_FLUSH_INTERVAL=1000")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("bench.instructions needs valgrind: apt-get install valgrind")
    settings = dict(item.split("=", 1) for item in args.set)
    per_call = measure(args.row, args.calls, args.instances, settings)
    print(f"{args.row}: {per_call:,} instructions per call ({args.calls:,} calls"
          + (f"; {', '.join(args.set)}" if args.set else "") + ")")


if __name__ == "__main__":
    main()
