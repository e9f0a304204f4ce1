"""GET /api/services/status: the supervised processes (as ``scripts/status --json``) and the catalog, checked live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from mcp.errors import Unavailable
from mcp.formation.status import Prober, all_ok, gather_rows
from services.api import store
from services.api.handlers import ApiHandler, probe


def session_prober(session: aiohttp.ClientSession) -> Prober:
    """A health check through the API's shared session: True for HTTP 200 within ``timeout``."""

    async def prober(url: str, timeout: float) -> bool:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    return prober


class ServicesStatusHandler(ApiHandler):
    """Process rows from the supervisors' state files with live health, and each catalog entry's live health.

    Reading /proc is cheap and done inline; the CPU sample and every HTTP check are awaited together,
    so a request takes about one health timeout at worst and never blocks the event loop. A database
    outage costs only the catalog part: ``services`` is null and ``services_error`` says why.
    """

    @property
    def run_dir(self) -> Path:
        settings = self.runtime.settings
        # Relative to the project root, as the supervisors (started there) resolve it.
        return settings.project_root / (settings.get("MCP_RUN_DIR") or ".run")

    async def get(self) -> None:
        session = self.runtime.session
        assert session is not None, "the session is created when the server starts"
        processes, (services, error) = await asyncio.gather(
            gather_rows(self.run_dir, live_health=True, prober=session_prober(session)),
            self.catalog_health(session),
        )
        body: dict[str, Any] = {"processes": processes, "services": services, "ok": all_ok(processes)}
        if error:
            body["services_error"] = error
        self.write_json(body)

    async def catalog_health(self, session: aiohttp.ClientSession) -> tuple[list[dict[str, Any]] | None, str | None]:
        try:
            async with self.runtime.db.connection() as conn:
                rows = await store.catalog(conn)
        except Unavailable as e:
            return None, str(e)
        healths = await asyncio.gather(*(probe(session, r["port"]) for r in rows))
        return [{**r, "health": h} for r, h in zip(rows, healths, strict=True)], None
