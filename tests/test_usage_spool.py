"""The usage spool: an answered call is counted even when its process is killed, and counted once."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from mcp.tenancy.database import Database
from mcp.tenancy.usage import UsageRecorder
from mcp.tenancy.usage_spool import UsageSpool
from tests.support import ROOT, http, wait_for


def usage_rows(database_url: str) -> tuple[int, int]:
    """(rows, rows without a record key)."""
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*), count(*) FILTER (WHERE record_key IS NULL) FROM usage").fetchone()


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool"))


@pytest.mark.parametrize("flush_interval", ["5", "0.3"])
def test_answered_calls_survive_sigkill_and_are_counted_once(admin, spawn, figma, database_url, tmp_path,
                                                            flush_interval):
    # 5 s: nothing was flushed when the process dies, so every record must come back from the spool.
    # 0.3 s: most were, by the dead process itself; the rest come from its spool. (A replay overlapping rows
    # already written is made deterministic in the next test.)
    extra = {"USAGE_FLUSH_INTERVAL": flush_interval, "RATE_LIMIT_PER_MINUTE": "0"}
    service = spawn("services.figma", "FIGMA_PORT", extra)
    ids = [admin.create_instance(user=f"k{i}@example.com")["instance_id"] for i in range(4)]
    figma.delay = 0.02  # calls overlap, so some are in flight when the process dies
    answered: list[int] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        while not stop.is_set():
            try:
                resp = http("POST", f"{service.url}/{ids[worker % 4]}/mcp/call", {"name": "get_me"}, timeout=10)
            except OSError:
                continue  # in flight when it died, or sent after
            if resp.status == 200:
                answered.append(1)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        workers = [pool.submit(load, i) for i in range(12)]
        wait_for(lambda: len(answered) >= 150, 60, what="150 answered calls")
        service.proc.kill()
        service.proc.wait(10)
        stop.set()
        for w in workers:
            w.result(30)
    answered_total = len(answered)
    upstream_calls = len(figma.recorded("/v1/me"))  # each call that was recorded made one upstream call
    assert answered_total <= upstream_calls <= answered_total + 12
    spool_dir = tmp_path / ".data" / "usage-spool"
    (dead_file,) = spool_files(spool_dir)  # the dead process's file, left behind

    # The same service again, with the same environment: it adopts the dead process's file.
    again = spawn("services.figma", "FIGMA_PORT", extra)
    wait_for(lambda: usage_rows(database_url)[0] >= answered_total, 30, what=f"{answered_total} usage rows")
    wait_for(lambda: not dead_file.exists(), 30, what="the dead process's spool file drained and deleted")
    rows, keyless = usage_rows(database_url)
    # Every answered call, plus at most the ones in flight that were recorded; never one twice.
    assert answered_total <= rows <= upstream_calls and keyless == 0
    assert 'mcp_usage_records_dropped{process="figma"} 0' in http("GET", again.url + "/metrics").body.decode()
    assert again.stop() == 0
    assert spool_files(spool_dir) == []  # a clean shutdown leaves nothing behind
    assert usage_rows(database_url)[0] == rows


def test_a_file_replayed_after_a_crash_between_insert_and_truncate_counts_each_record_once(admin, database_url,
                                                                                          tmp_path):
    iid = uuid.UUID(admin.create_instance()["instance_id"])
    spool_dir = tmp_path / "spool"

    async def scenario() -> None:
        db = Database(database_url, Path("/nonexistent"), max_size=2)
        first = UsageRecorder(db, interval_s=3600, spool_dir=spool_dir, service="figma")
        first.start()
        for n in range(10):
            first.record(iid, "figma", "get_me", "ok", 0.001 * n)
        (own,) = spool_files(spool_dir)
        written_lines = own.read_bytes()
        assert await first.flush() and own.read_bytes() == b""  # written, then truncated
        for _ in range(5):
            first.record(iid, "figma", "get_file", "ok", 0.002)
        # A process that died after its insert committed but before it truncated leaves exactly this: records
        # already in the database followed by records that are not, in a file nobody holds.
        dead = spool_dir / "figma-4242-0123456789ab.spool"
        dead.write_bytes(written_lines + own.read_bytes())
        dead.chmod(0o600)
        assert usage_rows(database_url)[0] == 10

        second = UsageRecorder(db, interval_s=3600, spool_dir=spool_dir, service="figma")
        second.start()  # adopts and drains the dead file at once
        for _ in range(200):
            if not dead.exists():
                break
            await asyncio.sleep(0.05)
        assert not dead.exists()
        assert usage_rows(database_url)[0] == 15
        await first.close()  # its own copy of the last five: already there
        await second.close()
        assert usage_rows(database_url)[0] == 15
        assert first.dropped == second.dropped == 0
        assert spool_files(spool_dir) == []
        await db.close()

    asyncio.run(scenario())
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT tool, count(*) FROM usage GROUP BY tool ORDER BY tool").fetchall() == [
            ("get_file", 5), ("get_me", 10)]


def test_only_files_of_dead_processes_of_the_same_service_are_adopted(tmp_path):
    spool_dir = tmp_path / "spool"
    worker = UsageSpool.open(spool_dir, "figma")
    sibling = UsageSpool.open(spool_dir, "figma")  # another worker of the same service, alive
    assert worker is not None and sibling is not None
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in spool_files(spool_dir)} == {0o600}
    assert worker.adopt() == 0 and sibling.adopt() == 0  # each holds its own file's lock

    line = f"{'0' * 32}\t{uuid.uuid4().hex}\tfigma\tget_me\tok\t10\t1700000000000000\n".encode()
    for name in ("figma-1-aaaaaaaaaaaa.spool", "figma-x-1-bbbbbbbbbbbb.spool", "github-1-cccccccccccc.spool"):
        (spool_dir / name).write_bytes(line)
    # Files a process created but died before locking and renaming: removed once old, never while young.
    stale, young = spool_dir / ".figma-7-dddddddddddd.spool.tmp", spool_dir / ".figma-8-eeeeeeeeeeee.spool.tmp"
    stale.write_bytes(b"")
    young.write_bytes(b"")
    os.utime(stale, (1_600_000_000, 1_600_000_000))
    assert sibling.adopt() == 1  # figma's dead file; not figma-x's nor github's
    assert not stale.exists() and young.exists()
    young.unlink()
    assert worker.adopt() == 0  # the sibling holds it now
    assert sibling.adopt() == 0  # and does not take it twice

    worker.close()
    sibling.close()  # its own (empty) file goes; the adopted one was not drained, so it stays for the next
    assert sorted(p.name for p in spool_files(spool_dir)) == [
        "figma-1-aaaaaaaaaaaa.spool", "figma-x-1-bbbbbbbbbbbb.spool", "github-1-cccccccccccc.spool"]


def test_records_stay_spooled_through_an_outage_and_a_shutdown(admin, database_url, tmp_path):
    iid = uuid.UUID(admin.create_instance()["instance_id"])
    spool_dir = tmp_path / "spool"

    async def scenario() -> None:
        down = Database("postgresql://127.0.0.1:1/none", Path("/nonexistent"), max_size=1, timeout_s=0.3)
        during = UsageRecorder(down, interval_s=3600, spool_dir=spool_dir, service="figma")
        during.start()
        for _ in range(7):
            during.record(iid, "figma", "get_me", "ok", 0.001)
        assert not await during.flush() and during.pending == 7
        await during.close(timeout_s=1)  # the database is still down: the file stays for the next process
        assert len(spool_files(spool_dir)) == 1
        await down.close()

        db = Database(database_url, Path("/nonexistent"), max_size=2)
        after = UsageRecorder(db, interval_s=3600, spool_dir=spool_dir, service="figma")
        after.start()
        await asyncio.sleep(0)
        await after.close()
        await db.close()

    asyncio.run(scenario())
    assert usage_rows(database_url) == (7, 0)
    assert spool_files(spool_dir) == []


def test_a_full_spool_drops_new_records_loudly_and_drained_files_rotate(admin, database_url, tmp_path, caplog):
    iid = uuid.UUID(admin.create_instance()["instance_id"])
    spool_dir = tmp_path / "spool"

    async def scenario() -> None:
        db = Database(database_url, Path("/nonexistent"), max_size=2)
        usage = UsageRecorder(db, interval_s=3600, max_buffer=50, spool_dir=spool_dir, service="figma")
        usage.start()
        assert usage._spool is not None
        usage._spool.rotate_bytes = 1000  # a new file every ~9 records drained
        for _ in range(60):
            usage.record(iid, "figma", "get_me", "ok", 0.001)
        assert usage.pending == 50 and usage.dropped == 10
        assert await usage.flush() and usage.pending == 0
        (current,) = spool_files(spool_dir)  # the drained files were deleted; the one being written is empty
        assert current.stat().st_size == 0
        for _ in range(3):
            usage.record(iid, "figma", "get_me", "ok", 0.001)
        await usage.close()
        await db.close()

    asyncio.run(scenario())
    assert usage_rows(database_url) == (53, 0)
    assert spool_files(spool_dir) == []
    assert [r.getMessage() for r in caplog.records if "dropped so far" in r.getMessage()] == [
        "usage spool full: 1 usage records dropped so far (at most 50 wait to be written)"]


_FULL_DISK = textwrap.dedent("""
    import asyncio, json, resource, sys, uuid
    from pathlib import Path
    from mcp.tenancy.database import Database
    from mcp.tenancy.usage import UsageRecorder

    async def main():
        db = Database(sys.argv[1], Path("/nonexistent"), max_size=1)
        usage = UsageRecorder(db, interval_s=3600, spool_dir=Path(sys.argv[2]), service="figma")
        usage.start()
        # The spool's file may not grow past 1000 bytes (a full disk, as far as write() can tell): the
        # tenth line is written in part, the next ones not at all. Python ignores SIGXFSZ, so write() fails.
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        for _ in range(20):
            usage.record(uuid.UUID(sys.argv[3]), "figma", "get_me", "ok", 0.001)
        pending = usage.pending
        await usage.close()
        print(json.dumps({"pending": pending, "written": usage.written, "dropped": usage.dropped}))

    asyncio.run(main())
""")


def test_a_spool_write_that_fails_falls_back_to_memory_logs_once_and_loses_nothing(admin, database_url, tmp_path):
    iid = admin.create_instance()["instance_id"]
    spool_dir = tmp_path / "spool"
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, database_url, str(spool_dir), iid], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"pending": 20, "written": 20, "dropped": 0}
    assert out.stderr.count("writing the usage spool in") == 1 and "memory only" in out.stderr
    assert iid not in out.stderr and iid.replace("-", "") not in out.stderr
    assert usage_rows(database_url) == (20, 0)
    assert spool_files(spool_dir) == []


def test_an_unusable_spool_directory_falls_back_to_memory_and_never_fails_a_call(admin, spawn, figma,
                                                                               database_url, tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    service = spawn("services.figma", "FIGMA_PORT", {"USAGE_SPOOL_DIR": str(not_a_dir / "spool")})
    iid = admin.create_instance()["instance_id"]
    for _ in range(5):
        assert http("POST", f"{service.url}/{iid}/mcp/call", {"name": "get_me"}).status == 200
    wait_for(lambda: usage_rows(database_url)[0] == 5, 15, what="5 usage rows")
    assert service.stop() == 0
    log = service.output()
    assert log.count("usage spool directory") == 1 and "memory only" in log
    assert iid not in log and iid.replace("-", "") not in log
    assert not os.path.exists(tmp_path / ".data" / "usage-spool")


def test_a_damaged_line_is_skipped_alone_and_counted(admin, database_url, tmp_path):
    iid = uuid.UUID(admin.create_instance()["instance_id"])
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)

    def line(n: int) -> bytes:
        return f"{n:032x}\t{iid.hex}\tfigma\tget_me\tok\t{n}\t1700000000000000\n".encode()

    dead = spool_dir / "figma-4242-0123456789ab.spool"
    # A garbled line in the middle, and a last line cut short (no newline: never a record).
    dead.write_bytes(line(1) + line(2) + line(3) + b"\x00garbled\n" + line(4) + line(5) + line(6)[:40])

    async def scenario() -> UsageRecorder:
        db = Database(database_url, Path("/nonexistent"), max_size=2)
        usage = UsageRecorder(db, interval_s=3600, spool_dir=spool_dir, service="figma")
        usage.start()
        await asyncio.sleep(0)  # the flusher's first round adopts and drains
        await usage.close()
        await db.close()
        return usage

    usage = asyncio.run(scenario())
    assert usage.dropped == 1
    assert usage_rows(database_url) == (5, 0)
    assert spool_files(spool_dir) == []


def test_what_a_process_drains_from_memory_is_exactly_what_its_file_holds(tmp_path):
    """The drain reads this process's own records from memory; the file (what a restart replays) must agree."""
    from mcp.tenancy.usage_spool import Segment, parse

    spool = UsageSpool.open(tmp_path / "spool", "figma")
    recorder = UsageRecorder(Database(None, tmp_path / "none.url"), spool_dir=None, service="figma")
    recorder._spool = spool
    for i in range(120):
        recorder.record(uuid.uuid4(), "figma", f"tool_{i % 3}", "ok" if i % 5 else "error", i / 1000.0)
    [segment] = spool.segments()
    from_memory = spool.read(segment, 50)
    on_disk = Segment(segment.path, segment.fd, own=False, offset=segment.offset)  # the same file, read from disk
    from_file = spool.read(on_disk, 50)
    assert from_memory == from_file and len(from_memory[0]) == 50
    spool.advance(segment, from_memory[1])
    on_disk.offset = segment.offset
    assert spool.read(segment, 500) == spool.read(on_disk, 500)
    rows, end, bad = spool.read(segment, 500)
    assert len(rows) == 70 and bad == 0 and end == os.fstat(segment.fd).st_size
    assert [parse(line) for line in segment.path.read_bytes().splitlines()][50:] == rows
    spool.close()
