"""Drop cached instances the moment they change, in every process: PostgreSQL LISTEN/NOTIFY.

A trigger on ``service_instances`` notifies ``mcp_instance_changed`` with the instance id on every
update or delete. Each service process keeps one extra connection listening. While that connection
is down nothing is announced, so on every (re)connect the whole cache is dropped, and the cache's
TTL (``INSTANCE_CACHE_TTL``, 60 s by default) bounds staleness in between.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import psycopg

from mcp.tasks import cancel_and_wait
from mcp.tenancy.instances import InstanceResolver

log = logging.getLogger(__name__)

CHANNEL = "mcp_instance_changed"
# A connection that silently died (a dropped NAT entry, a partitioned network) delivers nothing and
# raises nothing; keepalives notice within about a minute, the reconnect then drops the cache.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


class InvalidationListener:
    """Runs in the background from ``start()`` until ``stop()``; never raises to its owner."""

    def __init__(self, conninfo: Callable[[], str | None], resolver: InstanceResolver) -> None:
        self._conninfo = conninfo
        self._resolver = resolver
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="instance-invalidation")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        delay = 0.5
        warned = False
        while True:
            conninfo = self._conninfo()
            try:
                if not conninfo:
                    raise psycopg.OperationalError("no database configured")
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=3,
                                                                 **_KEEPALIVES) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._resolver.invalidate()
                    self.connected.set()
                    delay, warned = 0.5, False
                    log.info("listening for instance changes")
                    async for note in conn.notifies():
                        self._apply(note.payload)
            except psycopg.Error as e:
                self.connected.clear()
                if not warned:
                    log.warning("instance change listener disconnected (%s); retrying", type(e).__name__)
                    warned = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _apply(self, payload: str) -> None:
        try:
            self._resolver.invalidate(uuid.UUID(payload))
        except ValueError:
            self._resolver.invalidate()
