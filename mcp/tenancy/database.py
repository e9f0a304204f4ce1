"""The process's PostgreSQL pool: opened lazily, so a process starts and serves /health without it.

Every failure to reach the database becomes ``Unavailable`` (HTTP 503 with Retry-After). The pool
keeps trying in the background and requests succeed again once the server is back; no restart.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mcp.errors import Unavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


def resolve_database_url(database_url: str | None, embedded_url_file: Path) -> str | None:
    """DATABASE_URL when set, else the address the embedded server recorded, else None."""
    if database_url:
        return database_url
    try:
        return embedded_url_file.read_text().strip() or None
    except OSError:
        return None


async def check_idle_connection(conn: psycopg.AsyncConnection) -> None:
    """The pool's check before handing out a connection, without a round trip when it is healthy.

    An idle connection has nothing to read. If its socket is readable, the server has closed it (or
    sent a notice): only then is it checked for real, which raises for a dead one, so the pool
    replaces it. psycopg_pool's own check sends an empty query on every checkout, which was half the
    round trips of every cache miss.
    """
    if not conn.closed:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return
    await AsyncConnectionPool.check_connection(conn)


class Database:
    """A lazily opened AsyncConnectionPool.

    ``connection()`` waits at most ``timeout_s`` for a connection and raises Unavailable when the
    database cannot be reached, is not configured, or the pool is closed. Callers own nothing:
    the connection returns to the pool when the block exits. ``close()`` is for shutdown.
    """

    def __init__(
        self, database_url: str | None, embedded_url_file: Path, *, timeout_s: float = 2.0,
        max_size: int = 10, application_name: str = "mcp-platform",
    ) -> None:
        self._database_url = database_url
        self._embedded_url_file = embedded_url_file
        self._timeout_s = timeout_s
        self._max_size = max_size
        self._application_name = application_name
        self._pool: AsyncConnectionPool | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def conninfo(self) -> str | None:
        return resolve_database_url(self._database_url, self._embedded_url_file)

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._closed:
                raise Unavailable("the service is shutting down", retry_after=RETRY_AFTER_S)
            if self._pool is None:
                conninfo = self.conninfo
                if not conninfo:
                    raise Unavailable(
                        "no database is configured: set DATABASE_URL or start the embedded one "
                        "with scripts/start-all-services",
                        code="database_unavailable",
                        retry_after=RETRY_AFTER_S,
                    )
                pool = AsyncConnectionPool(
                    conninfo,
                    min_size=1,
                    max_size=self._max_size,
                    open=False,
                    timeout=self._timeout_s,
                    kwargs={"autocommit": True, "row_factory": dict_row,
                            "application_name": self._application_name, "connect_timeout": 3},
                    check=check_idle_connection,
                    reconnect_timeout=0,  # never give up: keep retrying until the database returns
                    name=self._application_name,
                )
                await pool.open(wait=False)
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection in autocommit mode with dict rows."""
        pool = await self._get_pool()
        try:
            async with pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as e:
            log.warning("database unavailable: %s", type(e).__name__)
            raise Unavailable(
                "the database is unavailable; try again shortly",
                code="database_unavailable",
                retry_after=RETRY_AFTER_S,
            ) from None

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close(timeout=1.0)
