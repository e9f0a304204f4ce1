"""The asyncio load generator, for machines without wrk: ``python -m bench.load SPEC.json``.

Runs in its own process (the bench starts it, pinned away from the server under test) and prints one
JSON LoadResult. Raw asyncio protocols over keep-alive HTTP/1.1 with requests built once in advance:
several times cheaper per request than an HTTP client library, so it loads a Python server harder
than it loads its own CPU.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from bench.loadspec import ERROR_REGEX, OK_REGEX, LoadResult, LoadSpec
from bench.lookup import percentile

_HEAD_END = b"\r\n\r\n"
_OK = re.compile(OK_REGEX.encode())
_ERROR = re.compile(ERROR_REGEX.encode())
_TIMEOUT_S = 10.0


def build_requests(spec: LoadSpec) -> list[bytes]:
    body = spec.body.encode() if spec.body is not None else b""
    out = []
    for target in spec.targets:
        headers = {"Host": f"{spec.host}:{spec.port}", **spec.headers, **target.headers}
        if spec.body is not None:
            headers["Content-Length"] = str(len(body))
        head = f"{spec.method} {target.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(head.encode("latin-1") + b"\r\n" + body)
    return out


class Run:
    """The state every connection shares: the requests to cycle through, the window, the results."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.requests = build_requests(spec)
        self._next = 0
        self.running = True
        self.window = (float("inf"), float("inf"))
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def next_request(self) -> bytes:
        self._next += 1
        return self.requests[self._next % len(self.requests)]

    def in_window(self, now: float) -> bool:
        return self.window[0] <= now <= self.window[1]

    def record(self, status: int, body: bytes, started: float, now: float) -> None:
        if not self.in_window(now):
            return
        if status != 200:
            self.errors[f"status_{status}"] += 1
        elif self.spec.check_body and (not _OK.search(body) or _ERROR.search(body)):
            self.errors["bad_body"] += 1
        else:
            self.latencies.append(now - started)

    def error(self, kind: str) -> None:
        if self.in_window(time.perf_counter()):
            self.errors[kind] += 1


class Client(asyncio.Protocol):
    """One keep-alive connection sending a request as soon as the previous answer is complete."""

    def __init__(self, run: Run, done: asyncio.Future[None]) -> None:
        self.run = run
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_len = -1
        self.length = -1
        self.chunked = False
        self.status = 0
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if not self.run.running:
            self.transport.close()
            return
        self.buf.clear()
        self.head_len = -1
        self.sent_at = time.perf_counter()
        self.transport.write(self.run.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.head_len < 0:
            end = self.buf.find(_HEAD_END)
            if end < 0:
                return
            self.head_len = end + 4
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            self.chunked = b"transfer-encoding: chunked" in head
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            self.length = int(match.group(1)) if match else 0
        if self.chunked:
            if not self.buf.endswith(b"0\r\n\r\n"):
                return
            body = bytes(self.buf[self.head_len:])
        else:
            if len(self.buf) < self.head_len + self.length:
                return
            body = bytes(self.buf[self.head_len:self.head_len + self.length])
        self.run.record(self.status, body, self.sent_at, time.perf_counter())
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.run.running:
            self.run.error("connection_closed")
        if not self.done.done():
            self.done.set_result(None)


async def _connection(run: Run, loop: asyncio.AbstractEventLoop) -> None:
    """Keep one connection busy until the run stops, reconnecting if the server closes it."""
    while run.running:
        done: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(lambda d=done: Client(run, d), run.spec.host, run.spec.port)  # type: ignore[misc]
        except OSError:
            run.error("connect")
            await asyncio.sleep(0.05)
            continue
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=run.spec.warmup_s + run.spec.duration_s + _TIMEOUT_S)
        except TimeoutError:
            run.error("timeout")
            return


async def run_load(spec: LoadSpec) -> LoadResult:
    run = Run(spec)
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_connection(run, loop)) for _ in range(spec.connections)]
    start = time.perf_counter() + spec.warmup_s
    run.window = (start, start + spec.duration_s)
    await asyncio.sleep(spec.warmup_s + spec.duration_s)
    run.running = False
    _, pending = await asyncio.wait(tasks, timeout=2.0)
    for task in pending:
        task.cancel()
    lat = sorted(x * 1000.0 for x in run.latencies)
    return LoadResult(
        generator="asyncio", connections=spec.connections, duration_s=spec.duration_s, requests=len(lat),
        errors=sum(run.errors.values()), rps=round(len(lat) / spec.duration_s, 1),
        p50_ms=round(percentile(lat, 50), 3), p90_ms=round(percentile(lat, 90), 3),
        p99_ms=round(percentile(lat, 99), 3), max_ms=round(lat[-1], 3) if lat else 0.0,
        error_detail=dict(run.errors),
    )


def main() -> None:
    spec = LoadSpec.read(Path(sys.argv[1]))
    result = asyncio.run(run_load(spec))
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
