"""The bench's own PostgreSQL: pgserver in a temporary folder, migrated, seeded with instances."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from db.migrate import migrate
from mcp.tenancy.credentials import CredentialCipher

DB_NAME = "mcp_bench"
BENCH_USER = "bench@example.com"


class EmbeddedPostgres:
    """A throwaway server; ``stop`` ends it and removes its data folder."""

    def __init__(self) -> None:
        # Not under a 0700 folder: run as root, pgserver runs PostgreSQL as its own user, which must
        # be able to reach the data folder.
        self.data_dir = Path(tempfile.mkdtemp(prefix="mcp-bench-pg-"))
        self.data_dir.chmod(0o755)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
            import pgserver  # heavy, and only the bench's parent process needs it

            self._server: Any = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        self.admin_url: str = self._server.get_uri()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        self.url = make_conninfo(self.admin_url, dbname=DB_NAME)
        migrate(self.url)

    def stop(self) -> None:
        try:
            self._server.cleanup()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def seed_instances(url: str, cipher: CredentialCipher, count: int, *, start: int = 0) -> list[uuid.UUID]:
    """``count`` active figma instances of one user, credentials encrypted as the platform stores them.

    Each instance gets its own token (``figd_bench_<n>``), so the upstream sees a different tenant per
    instance. Rows go in with COPY; 100,000 take about two seconds.
    """
    ids = [uuid.uuid4() for _ in range(count)]
    with psycopg.connect(url) as conn:
        user_id = conn.execute(
            "INSERT INTO users (email) VALUES (%s) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email "
            "RETURNING id", (BENCH_USER,)).fetchone()[0]  # type: ignore[index]
        with conn.cursor() as cur, cur.copy(
            "COPY service_instances (id, user_id, service_name, status, credentials_enc) FROM STDIN"
        ) as copy:
            for n, instance_id in enumerate(ids, start):
                stored = cipher.encrypt(instance_id, {"api_key": f"figd_bench_{n}"})
                copy.write_row((instance_id, user_id, "figma", "active", stored))
    # As an operator would after a bulk load: otherwise autovacuum starts on the fresh rows while
    # lookups are being timed, and the 100,000-row figure measures that, not the lookup.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) service_instances")
    return ids


def instance_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("SELECT count(*) FROM service_instances").fetchone()[0])  # type: ignore[index]


def usage_rows(url: str, ids: list[uuid.UUID] | None = None) -> int:
    """Usage rows written so far, for the instances ``ids`` only when given."""
    with psycopg.connect(url) as conn:
        if ids is None:
            return int(conn.execute("SELECT count(*) FROM usage").fetchone()[0])  # type: ignore[index]
        return int(conn.execute("SELECT count(*) FROM usage WHERE instance_id = ANY(%s)",  # type: ignore[index]
                                (ids,)).fetchone()[0])
