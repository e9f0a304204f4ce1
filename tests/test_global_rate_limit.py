"""The per-instance rate limit holds across processes: the shared buckets' SQL, the leases, and real processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

from db.migrate import migrate
from mcp.server.limits import RateLimiter
from mcp.tenancy.database import Database
from mcp.tenancy.rate_buckets import RateBuckets, Settled
from mcp.tenancy.rate_limit import SharedRateLimiter
from tests.support import http, wait_for


def settle(url: str, entries: list[tuple[str, float, int]], rate: float, burst: float) -> dict[str, Settled]:
    async def run() -> dict[str, Settled]:
        db = Database(url, None, timeout_s=5)  # type: ignore[arg-type]
        try:
            return await RateBuckets(db, rate, burst).settle(entries)
        finally:
            await db.close()

    return asyncio.run(run())


def bucket(url: str, key: str) -> tuple[float, float] | None:
    """(tokens, seconds since updated_at by the database's clock), None when there is no row."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT tokens, extract(epoch FROM now() - updated_at)::float8 FROM rate_buckets "
                           "WHERE instance_id = %s", (key,)).fetchone()
    return None if row is None else (row[0], row[1])


# --- the bucket SQL -------------------------------------------------------------------------------------------

def test_a_missing_bucket_is_full_and_grants_at_most_what_is_asked(database_url):
    key = str(uuid.uuid4())
    assert settle(database_url, [(key, 0.0, 3)], rate=1, burst=5) == {key: Settled(3, 2.0)}
    got = settle(database_url, [(key, 0.0, 10)], rate=1, burst=5)[key]
    assert got.granted == 2 and 0 <= got.tokens < 1  # the two left (plus a sliver of refill), no more


def test_refill_follows_the_database_clock_and_stops_at_the_burst(database_url):
    key = str(uuid.uuid4())
    settle(database_url, [(key, 0.0, 5)], rate=0.5, burst=5)  # emptied
    with psycopg.connect(database_url) as conn:  # as if the last settle was 6 s ago by the database's clock
        conn.execute("UPDATE rate_buckets SET updated_at = now() - interval '6 seconds' WHERE instance_id = %s",
                     (key,))
    assert settle(database_url, [(key, 0.0, 10)], rate=0.5, burst=5)[key].granted == 3  # 6 s at 0.5/s
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE rate_buckets SET updated_at = now() - interval '1 hour' WHERE instance_id = %s", (key,))
    assert settle(database_url, [(key, 0.0, 10)], rate=0.5, burst=5)[key].granted == 5  # never beyond the burst


def test_credit_is_charged_as_debt_that_the_refill_pays_off_first(database_url):
    key = str(uuid.uuid4())
    got = settle(database_url, [(key, -7.0, 1)], rate=1, burst=5)[key]  # 7 calls admitted on credit
    assert got.granted == 0 and -2.01 < got.tokens <= -1.99
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE rate_buckets SET updated_at = now() - interval '2.5 seconds' WHERE instance_id = %s",
                     (key,))
    got = settle(database_url, [(key, 0.0, 5)], rate=1, burst=5)[key]
    assert got.granted == 0 and 0.49 < got.tokens < 0.6  # -2 + 2.5: the debt first


def test_returned_tokens_go_back_up_to_the_burst(database_url):
    key = str(uuid.uuid4())
    settle(database_url, [(key, 0.0, 4)], rate=0.001, burst=5)
    assert settle(database_url, [(key, 3.0, 0)], rate=0.001, burst=5)[key] == Settled(0, pytest.approx(4, abs=0.01))
    assert settle(database_url, [(key, 3.0, 0)], rate=0.001, burst=5)[key].tokens == 5  # capped


def test_one_statement_settles_many_instances_and_concurrent_settlers_never_overdraw(database_url):
    keys = sorted(str(uuid.uuid4()) for _ in range(20))
    got = settle(database_url, [(k, -1.0, 2) for k in keys], rate=0.001, burst=10)
    assert set(got) == set(keys) and all(g == Settled(2, pytest.approx(7, abs=0.01)) for g in got.values())

    async def hammer() -> int:
        dbs = [Database(database_url, None, timeout_s=10) for _ in range(4)]  # type: ignore[arg-type]
        try:
            async def one(db: Database) -> int:
                total = 0
                for _ in range(10):  # the same keys in shuffled orders: must not deadlock either
                    answer = await RateBuckets(db, 0.001, 10).settle([(k, 0.0, 1) for k in reversed(keys)])
                    total += sum(g.granted for g in answer.values())
                return total

            return sum(await asyncio.gather(*(one(db) for db in dbs)))
        finally:
            for db in dbs:
                await db.close()

    assert asyncio.run(hammer()) == 7 * len(keys)  # exactly what was left, never more


def test_buckets_full_for_a_while_are_deleted(database_url):
    full, draining = str(uuid.uuid4()), str(uuid.uuid4())
    settle(database_url, [(full, 0.0, 1), (draining, -100.0, 0)], rate=1, burst=5)
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE rate_buckets SET full_at = now() - interval '2 minutes' WHERE instance_id = %s",
                     (full,))

    async def collect() -> int:
        db = Database(database_url, None)  # type: ignore[arg-type]
        try:
            return await RateBuckets(db, 1, 5).collect(60)
        finally:
            await db.close()

    assert asyncio.run(collect()) == 1
    assert bucket(database_url, full) is None and bucket(database_url, draining) is not None


# --- the leases, against an in-memory stand-in for the table ---------------------------------------------------

class MemoryBuckets:
    """RateBuckets' contract in memory: refill, debt, returns, grants; ``fail`` makes every statement raise."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.rows: dict[str, tuple[float, float]] = {}
        self.statements: list[list[tuple[str, float, int]]] = []
        self.fail = False

    async def settle(self, entries: list[tuple[str, float, int]]) -> dict[str, Settled]:
        self.statements.append(entries)
        if self.fail:
            raise psycopg.OperationalError("down")
        now, answer = time.monotonic(), {}
        for key, delta, want in entries:
            tokens, at = self.rows.get(key, (self.burst, now))
            level = min(self.burst, min(self.burst, tokens + (now - at) * self.rate) + delta)
            granted = min(want, max(0, int(level // 1)))
            self.rows[key] = (level - granted, now)
            answer[key] = Settled(granted, level - granted)
        return answer

    async def collect(self, full_for_s: float = 60.0) -> int:
        return 0


def limiter(buckets: MemoryBuckets, **kw: Any) -> SharedRateLimiter:
    return SharedRateLimiter(buckets, RateLimiter(buckets.rate, buckets.burst), **kw)  # type: ignore[arg-type]


async def admit(lim: SharedRateLimiter, key: str) -> int:
    wait = lim.acquire(key)
    return wait if isinstance(wait, int) else await wait


def test_the_first_calls_are_credit_and_a_lease_serves_the_rest_without_a_statement_each():
    async def scenario() -> None:
        buckets = MemoryBuckets(rate=100, burst=100)
        lim = limiter(buckets)
        assert lim.acquire("a") == 0 and lim.acquire("a") == 0  # credit: no statement yet
        assert buckets.statements == []
        assert await admit(lim, "a") == 0  # the third waits for the statement that charges the credit
        assert buckets.statements[0] == [("a", -2.0, 100)]
        for _ in range(40):  # a busy instance far below its limit: served from the lease
            assert await admit(lim, "a") == 0
        assert len(buckets.statements) < 10
        await lim.close()

    asyncio.run(scenario())


def test_an_instance_well_below_its_limit_never_waits_for_the_database():
    async def scenario() -> None:
        buckets = MemoryBuckets(rate=30, burst=30)
        lim = limiter(buckets, lease_s=0.3, settle_s=0.3)  # leases expire ten times in the run
        waited = 0
        for _ in range(30):  # a third of its rate, steadily, for 3 s
            wait = lim.acquire("steady")
            if not isinstance(wait, int):
                waited += 1
                wait = await wait
            assert wait == 0
            await asyncio.sleep(0.1)
        assert waited == 0  # credit covers the first calls; a lease in use is renewed as it expires
        await lim.close()

    asyncio.run(scenario())


def test_an_instance_at_its_limit_is_refused_with_the_wait_the_bucket_says_and_others_are_not():
    async def scenario() -> None:
        buckets = MemoryBuckets(rate=0.2, burst=3)
        lim = limiter(buckets)
        answers = await asyncio.gather(*(admit(lim, "noisy") for _ in range(8)))
        assert sorted(answers) == [0, 0, 0, 5, 5, 5, 5, 5]  # the burst, then 1 token at 0.2/s: 5 s
        assert lim.acquire("noisy") == 5  # known empty: refused from memory
        assert await admit(lim, "quiet") == 0
        await lim.close()

    asyncio.run(scenario())


def test_unspent_tokens_go_back_after_the_lease_time(database_url):
    async def scenario() -> None:
        db = Database(database_url, None)  # type: ignore[arg-type]
        lim = SharedRateLimiter(RateBuckets(db, 0.001, 10), RateLimiter(0.001, 10), lease_s=0.3)
        key = str(uuid.uuid4())
        for _ in range(3):
            assert await admit(lim, key) == 0
        held = lim._leases[key].tokens
        assert held > 0 and bucket(database_url, key)[0] == pytest.approx(10 - 3 - held, abs=0.01)
        for _ in range(300):  # handed back within a few seconds (with the next statement, or on their own)
            await asyncio.sleep(0.05)
            if bucket(database_url, key)[0] > 6.9:
                break
        assert bucket(database_url, key)[0] == pytest.approx(7, abs=0.01)  # only what was spent is gone
        await lim.close()
        await db.close()

    asyncio.run(scenario())


def test_a_failing_database_falls_back_to_the_process_limit_and_logs_once(caplog):
    async def scenario() -> None:
        buckets = MemoryBuckets(rate=0.001, burst=3)
        buckets.fail = True
        lim = limiter(buckets, timeout_s=0.5)
        answers = [await admit(lim, "a") for _ in range(7)]
        assert answers[:5] == [0] * 5 and min(answers[5:]) >= 1  # the credit (2), then the local bucket (3)
        assert lim.degraded
        await asyncio.sleep(0.3)
        buckets.fail = False
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not lim.degraded:
                break
        assert not lim.degraded  # the next statement that succeeds brings the shared limit back
        await lim.close()

    asyncio.run(scenario())
    unavailable = [r for r in caplog.records if "shared rate limit is unavailable" in r.getMessage()]
    assert len(unavailable) == 1


# --- real processes ---------------------------------------------------------------------------------------------

RATE, BURST, CREDIT = 120, 4, 2
HELD_S = 2 * (1.0 + 1.0)  # twice (lease_s + settle_s): how long leased tokens can stay unspent, counted twice


def hammer(urls: list[str], iid: str, seconds: float, threads: int = 8) -> tuple[Counter[int], float]:
    """Calls on one instance from ``threads`` threads spread over ``urls`` for ``seconds``: (statuses, elapsed)."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        i = n
        while time.monotonic() < stop:
            status = http("POST", f"{urls[i % len(urls)]}/{iid}/mcp/call", {"name": "get_me"}).status
            i += 1
            with lock:
                statuses[status] += 1

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return statuses, time.monotonic() - started


def test_four_processes_together_admit_one_instance_no_more_than_its_rate(spawn, admin, figma):
    limits = {"RATE_LIMIT_PER_MINUTE": str(RATE), "RATE_LIMIT_BURST": str(BURST), "INSTANCE_CACHE_TTL": "300"}
    procs = [spawn("services.figma", "FIGMA_PORT", limits) for _ in range(4)]
    urls = [p.url for p in procs]
    noisy = admin.create_instance(user="noisy@example.com")["instance_id"]
    quiet = admin.create_instance(user="quiet@example.com")["instance_id"]
    quiet_statuses: list[int] = []
    done = threading.Event()

    def quiet_client() -> None:  # one call every half second (a quarter of its rate), each to the next process
        i = 0
        while not done.is_set():
            quiet_statuses.append(http("POST", f"{urls[i % 4]}/{quiet}/mcp/call", {"name": "get_me"}).status)
            i += 1
            done.wait(0.5)

    side = threading.Thread(target=quiet_client)
    side.start()
    try:
        statuses, elapsed = hammer(urls, noisy, 20)
    finally:
        done.set()
        side.join()
    accepted = statuses[200]
    bound = BURST + RATE / 60 * (elapsed + HELD_S) + len(procs) * CREDIT
    assert set(statuses) <= {200, 429}, statuses
    assert accepted <= bound, f"{accepted} calls accepted in {elapsed:.1f}s; the bound is {bound:.0f} ({statuses})"
    assert statuses[429] > accepted  # the hammering really went past the limit
    assert accepted >= RATE / 60 * elapsed / 2, statuses  # and the instance was not starved either
    assert quiet_statuses and set(quiet_statuses) == {200}, quiet_statuses


def test_with_the_database_down_each_process_falls_back_to_its_own_limit(own_postgres, spawn, credentials_key):
    from tests.test_faults import seed_instance

    url, ctl, _ = own_postgres
    migrate(url)
    iid = str(seed_instance(url, credentials_key, "figd_outage"))
    extra = {"DATABASE_URL": url, "RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "3", "DB_TIMEOUT": "0.5",
             "INSTANCE_CACHE_TTL": "300"}
    procs = [spawn("services.figma", "FIGMA_PORT", extra) for _ in range(2)]
    for p in procs:  # the instance cached in each process
        assert http("POST", f"{p.url}/{iid}/mcp/call", {"name": "get_me"}).status == 200
    ctl("-m", "fast", "stop")
    for p in procs:
        statuses = [http("POST", f"{p.url}/{iid}/mcp/call", {"name": "get_me"}).status for _ in range(12)]
        assert set(statuses) == {200, 429}, statuses  # still serving, still limited, never a 5xx
        assert statuses.count(200) <= 3 + 1 + CREDIT + 1, statuses  # its own burst (+ lease and credit held)
        wait_for(lambda p=p: "shared rate limit is unavailable" in p.output(), 5, what="the fallback logged")
        assert p.output().count("shared rate limit is unavailable") == 1
