"""python -m db.migrate: idempotent, discovers service.sql files, refuses bad registrations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from db.migrate import MIGRATIONS_DIR, MigrationError, migrate
from tests.support import ROOT


def make_service(root: Path, directory: str, *, name: str | None = None, port: int = 49500,
                 auth: str = "api_key", sql_port: int | None = None, sql_name: str | None = None,
                 sql_auth: str | None = None, procfile: bool = True) -> None:
    pkg = root / "services" / directory
    pkg.mkdir(parents=True)
    (root / "services" / "__init__.py").touch()
    (pkg / "__init__.py").write_text(textwrap.dedent(f"""
        from mcp.service import ServiceConfig
        SERVICE_CONFIG = ServiceConfig(name={name or directory!r}, port={port}, auth_type={auth!r})
    """))
    (pkg / "service.sql").write_text(
        "INSERT INTO mcp_table (name, display_name, port, auth_type) "
        f"VALUES ('{sql_name or name or directory}', 'X', {sql_port or port}, '{sql_auth or auth}') "
        "ON CONFLICT (name) DO UPDATE SET port = EXCLUDED.port, auth_type = EXCLUDED.auth_type;\n")
    if procfile:
        with (root / "Procfile").open("a") as f:
            f.write(f"mcp-{directory}: exec python -m services.{directory}\n")


def catalog(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT name, port, auth_type FROM mcp_table ORDER BY name").fetchall()


def test_migrating_twice_is_a_no_op(empty_database_url):
    first = migrate(empty_database_url)
    assert first.applied == sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    assert "figma" in first.registered
    before = catalog(empty_database_url)
    second = migrate(empty_database_url)
    assert second.applied == []
    assert catalog(empty_database_url) == before


def test_the_command_line_reports_and_exits_zero(empty_database_url):
    out = subprocess.run([sys.executable, "-m", "db.migrate", "--database-url", empty_database_url],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "0001_core" in out.stdout and "figma" in out.stdout


def test_a_new_service_folder_is_discovered(tmp_path, empty_database_url):
    make_service(tmp_path, "widgets", port=49500)
    report = migrate(empty_database_url, root=tmp_path)
    assert report.registered == ["widgets"]
    assert catalog(empty_database_url) == [("widgets", 49500, "api_key")]


@pytest.mark.parametrize("setup,expected", [
    (lambda r: make_service(r, "a", port=49100), ["services/a/service.sql", "49100", "49160-49999"]),
    (lambda r: make_service(r, "a", auth="token"), ["services/a/service.sql", "'token'", "api_key"]),
    (lambda r: (make_service(r, "a", port=49500), make_service(r, "b", port=49500)),
     ["duplicate port 49500", "services/a/service.sql", "services/b/service.sql"]),
    (lambda r: (make_service(r, "a", name="same", port=49500), make_service(r, "b", name="same", port=49501)),
     ["duplicate service name 'same'", "services/a/service.sql", "services/b/service.sql"]),
    (lambda r: make_service(r, "a", port=49500, sql_port=49501), ["services/a/service.sql", "49501", "49500"]),
    (lambda r: make_service(r, "a", port=49500, sql_port=40000), ["services/a/service.sql", "40000"]),
    (lambda r: make_service(r, "a", auth="oauth", sql_auth="api_key"), ["services/a/service.sql", "'api_key'",
                                                                        "'oauth'"]),
    (lambda r: make_service(r, "a", sql_name="other"), ["services/a/service.sql", "'a'"]),
    (lambda r: (make_service(r, "a"), (r / "Procfile").write_text("api: exec python -m services.api\n")),
     ["Procfile", "'a'", "python -m services.a"]),
])
def test_refusals_name_the_file_and_the_values(tmp_path, empty_database_url, setup, expected):
    (tmp_path / "Procfile").write_text("api: exec python -m services.api\n")
    setup(tmp_path)
    with pytest.raises(MigrationError) as err:
        migrate(empty_database_url, root=tmp_path)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))
    # All or nothing: a refused run leaves no trace.
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('mcp_table')").fetchone()[0] is None


def test_a_registered_port_taken_by_another_service_is_refused(tmp_path, empty_database_url):
    migrate(empty_database_url)  # registers figma on 49280
    make_service(tmp_path, "clash", port=49280)
    with pytest.raises(MigrationError) as err:
        migrate(empty_database_url, root=tmp_path)
    assert "services/clash/service.sql" in str(err.value) and "49280" in str(err.value)


def test_an_edited_migration_is_refused(empty_database_url):
    migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = '0001_core'")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(empty_database_url)
