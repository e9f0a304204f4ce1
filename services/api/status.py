"""GET /api/services/status: the supervised processes (as ``scripts/status --json``) and the catalog, checked live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mcp.errors import Unavailable
from mcp.formation.status import all_ok, gather_rows
from services.api import store
from services.api.handlers import ApiHandler, probe


class ServicesStatusHandler(ApiHandler):
    """Process rows from the supervisors' state files with live health, and each catalog entry's live health.

    Reading the process facts (psutil) is cheap and done inline; the CPU sample and every health check
    (mcp.formation.health, the supervisor's own probe) are awaited together, so a request takes about one
    health timeout at worst and never blocks the event loop. A database outage costs only the catalog
    part: ``services`` is null and ``services_error`` says why.
    """

    @property
    def run_dir(self) -> Path:
        settings = self.runtime.settings
        # Relative to the project root, as the supervisors (started there) resolve it.
        return settings.project_root / (settings.get("MCP_RUN_DIR") or ".run")

    async def get(self) -> None:
        processes, (services, error) = await asyncio.gather(
            gather_rows(self.run_dir, live_health=True),
            self.catalog_health(),
        )
        body: dict[str, Any] = {"processes": processes, "services": services, "ok": all_ok(processes)}
        if error:
            body["services_error"] = error
        self.write_json(body)

    async def catalog_health(self) -> tuple[list[dict[str, Any]] | None, str | None]:
        try:
            async with self.runtime.db.connection() as conn:
                rows = await store.catalog(conn)
        except Unavailable as e:
            return None, str(e)
        # The port each service runs on (its <NAME>_PORT override), as GET /api/services reports it.
        rows = [{**r, "port": self.runtime.service_port(r["name"], r["port"])} for r in rows]
        healths = await asyncio.gather(*(probe(r["port"]) for r in rows))
        return [{**r, "health": h} for r, h in zip(rows, healths, strict=True)], None
