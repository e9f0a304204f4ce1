"""The access log: the log line format, batched writes, 5xx lines at once through logging."""

from __future__ import annotations

import asyncio
import io
import logging
import re

from mcp.server.accesslog import AccessLog

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


def test_a_raw_path_or_a_method_that_is_no_method_is_scrubbed_on_the_way_out(caplog):
    iid = "66bf1524-1a2b-4c3d-8e9f-0123456789ab"
    out = CountingStream()
    access = AccessLog(out, enabled=True)
    access.request(200, "POST", f"/%36{iid[1:]}/mcp/call", 0.0015)
    access.request(405, iid, "/health", 0.001)
    with caplog.at_level(logging.INFO, logger="mcp.access"):
        access.request(503, iid.upper(), f"/api/instances/{iid}%00/usage", 0.002)
    text = out.getvalue() + "".join(r.getMessage() for r in caplog.records)
    assert LINE.match(out.getvalue().splitlines()[0])
    assert "405 OTHER /health" in text and "503 OTHER /api/instances/{instance}/usage" in text
    assert "66bf1524" not in text.lower() and "0123456789ab" not in text.lower()
