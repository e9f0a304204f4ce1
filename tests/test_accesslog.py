"""The access log: the log line format, batched writes, 5xx lines at once through logging."""

from __future__ import annotations

import asyncio
import io
import logging
import re

from mcp.accesslog import AccessLog

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO mcp\.access: 200 POST /\{instance\}/mcp/call 1\.5ms$")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_lines_are_written_together_after_the_interval():
    async def scenario() -> CountingStream:
        out = CountingStream()
        access = AccessLog(out, enabled=True, flush_interval_s=0.05)
        for _ in range(10):
            access.request(200, "POST", "/{instance}/mcp/call", 0.0015)
        assert out.getvalue() == ""  # nothing yet: one write later, not ten now
        await asyncio.sleep(0.2)
        return out

    out = asyncio.run(scenario())
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and all(LINE.match(line) for line in lines), lines[:2]
    assert out.writes == 1


def test_a_full_batch_is_written_at_once():
    async def scenario() -> CountingStream:
        out = CountingStream()
        access = AccessLog(out, enabled=True, flush_interval_s=60, max_lines=4)
        for _ in range(9):
            access.request(200, "POST", "/{instance}/mcp/call", 0.0015)
        assert len(out.getvalue().splitlines()) == 8
        access.flush()
        return out

    out = asyncio.run(scenario())
    assert len(out.getvalue().splitlines()) == 9 and out.writes == 3


def test_server_errors_go_through_logging_at_once(caplog):
    out = CountingStream()
    access = AccessLog(out, enabled=True)
    with caplog.at_level(logging.INFO, logger="mcp.access"):
        access.request(503, "GET", "/{instance}/mcp/tools", 0.002)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "503 GET /{instance}/mcp/tools 2.0ms")]
    assert out.getvalue() == ""


def test_nothing_is_written_when_info_is_off():
    logging.getLogger("mcp.access").setLevel(logging.WARNING)
    try:
        out = CountingStream()
        access = AccessLog(out)
        access.request(200, "GET", "/health", 0.001)
        access.flush()
        assert out.getvalue() == "" and not access.enabled
    finally:
        logging.getLogger("mcp.access").setLevel(logging.NOTSET)


def test_outside_an_event_loop_a_line_is_written_at_once():
    out = CountingStream()
    AccessLog(out, enabled=True).request(200, "POST", "/{instance}/mcp/call", 0.0015)
    assert LINE.match(out.getvalue().strip())
