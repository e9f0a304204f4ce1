"""Apply the core migrations, then register every ``services/*/service.sql``.

``python -m db.migrate`` is idempotent: applied migrations are recorded in ``schema_migrations``
(with a checksum, so an edited migration is refused rather than silently skipped), and service.sql
files are upserts. Everything runs in one transaction under an advisory lock, so a refusal
changes nothing and two runs at once cannot interleave.

Refusals name the file and the values: a SERVICE_CONFIG that breaks a rule, two services with the
same name or port, a port outside 49160-49999, a service.sql whose port or auth type differs from
its SERVICE_CONFIG, a service.sql that does not register its service, a service missing from the
Procfile, a Procfile line whose supervisor would health-check another port than the service listens on.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import psycopg
from honcho.environ import parse_procfile
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mcp.ops.procfile import command_words, port_word, supervised_module
from mcp.ops.supervisor.config import SupervisorConfigError, parse_workers, workers_env
from mcp.paths import PROJECT_ROOT
from mcp.ports import expand_port, port_env, procfile_port, resolve_port
from mcp.service import Service, ServiceConfig, ServiceConfigError
from mcp.tenancy.database import resolve_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_LOCK_KEY = 0x6D6370  # "mcp": serialises concurrent migration runs


class MigrationError(Exception):
    """The migration was refused; nothing was changed. The message says which file and why."""


@dataclass(frozen=True)
class DiscoveredService:
    directory: Path
    sql_file: Path
    config: ServiceConfig
    module_name: str  # where the package was imported (sys.modules key)

    @property
    def module(self) -> str:
        """How the Procfile starts it: python -m services.<dir>."""
        return f"services.{self.directory.name}"


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


def _load_package(directory: Path, root: Path) -> ModuleType:
    if root.resolve() == PROJECT_ROOT:
        return importlib.import_module(f"services.{directory.name}")
    # A tree elsewhere (tests, a new service being tried out): load it under a private name.
    name = f"_discovered_services_{abs(hash(str(directory)))}_{directory.name}"
    spec = importlib.util.spec_from_file_location(name, directory / "__init__.py",
                                                  submodule_search_locations=[str(directory)])
    if spec is None or spec.loader is None:
        raise MigrationError(f"{directory}: not a Python package (no __init__.py)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def discover_services(root: Path) -> list[DiscoveredService]:
    """Every ``services/<dir>/service.sql`` with its validated SERVICE_CONFIG, checked together."""
    found: list[DiscoveredService] = []
    for sql_file in sorted((root / "services").glob("*/service.sql")):
        directory = sql_file.parent
        rel = sql_file.relative_to(root)
        try:
            module = _load_package(directory, root)
        except ServiceConfigError as e:
            raise MigrationError(f"{rel}: SERVICE_CONFIG is invalid: {e}") from None
        except MigrationError:
            raise
        except Exception as e:
            raise MigrationError(f"{rel}: services.{directory.name} cannot be imported: "
                                 f"{type(e).__name__}: {e}") from None
        config = getattr(module, "SERVICE_CONFIG", None)
        if not isinstance(config, ServiceConfig):
            raise MigrationError(f"{rel}: services.{directory.name} has no SERVICE_CONFIG (a ServiceConfig)")
        found.append(DiscoveredService(directory, sql_file, config, module.__name__))
    by_name: dict[str, DiscoveredService] = {}
    by_port: dict[int, DiscoveredService] = {}
    for svc in found:
        other = by_name.get(svc.config.name)
        if other is not None:
            raise MigrationError(f"duplicate service name {svc.config.name!r}: {other.sql_file.relative_to(root)} "
                                 f"and {svc.sql_file.relative_to(root)}")
        other = by_port.get(svc.config.port)
        if other is not None:
            raise MigrationError(
                f"duplicate port {svc.config.port}: {other.config.name!r} ({other.sql_file.relative_to(root)}) and "
                f"{svc.config.name!r} ({svc.sql_file.relative_to(root)})")
        by_name[svc.config.name] = svc
        by_port[svc.config.port] = svc
    return found


def procfile_line(svc: DiscoveredService) -> str:
    """The Procfile line that starts ``svc`` under the supervisor, on the port the service itself picks, with
    ``<NAME>_WORKERS`` workers (1 when unset)."""
    name = svc.config.name
    port = procfile_port(port_env(name), svc.config.port)
    workers = f"${{{workers_env(f'mcp-{name}')}:-1}}"
    return (f"mcp-{name}: exec scripts/lib/python -m mcp.ops.supervisor --name mcp-{name} --port {port} "
            f"--workers {workers} -- python -m {svc.module}")


def check_procfile(services: list[DiscoveredService], procfile: Path,
                   environ: Mapping[str, str] | None = None) -> None:
    """Every discovered service must be started by a Procfile line (read with honcho's parser), and a line
    that gives its supervisor a ``--port`` must name the port the service listens on in this environment
    (``mcp.ports``), or the supervisor would health-check another port. A ``--workers`` word must stand for a
    worker count (a number or ``auto``) in this environment, or the supervisor would refuse to start."""
    env = os.environ if environ is None else environ
    try:
        entries = parse_procfile(procfile.read_text()).processes
    except OSError:
        raise MigrationError(f"{procfile}: cannot read the Procfile") from None
    except AssertionError:  # honcho's parser asserts that process names are unique
        raise MigrationError(f"{procfile}: a process name appears twice") from None
    started = {}
    for name, command in entries.items():
        words = command_words(command)
        module = supervised_module(words)
        if module is not None:
            started.setdefault(module, (name, port_word(words)))
            options = words[:words.index("--")] if "--" in words else words
            for flag, word in zip(options, options[1:], strict=False):
                if flag != "--workers":
                    continue
                # The shell's ${VAR:-default}, $VAR and plain words, as honcho's shell would expand them.
                var, _, default = word.removeprefix("${").removesuffix("}").lstrip("$").partition(":-")
                value = (env.get(var) or default) if word.startswith("$") else word
                try:
                    parse_workers(value, f"--workers {word}")
                except SupervisorConfigError as e:
                    raise MigrationError(f"{procfile.name}: line {name!r}: {e}") from None
    for svc in services:
        if svc.module not in started:
            raise MigrationError(
                f"{procfile.name}: service {svc.config.name!r} ({svc.directory.name}/) is not started by any "
                f"line; add: {procfile_line(svc)}")
        name, word = started[svc.module]
        if word is None:
            continue  # not supervised with a health check: nothing to compare
        variable = port_env(svc.config.name)
        try:
            listens = resolve_port(variable, svc.config.port, env)
            checked = expand_port(word, env)
        except ValueError as e:
            raise MigrationError(f"{procfile.name}: line {name!r}: {e}") from None
        if checked != listens:
            raise MigrationError(
                f"{procfile.name}: line {name!r} health-checks port {word} ({checked}) but {svc.module} listens on "
                f"{listens} ({variable} if set, else SERVICE_CONFIG.port {svc.config.port}); use: {procfile_line(svc)}")


def _core_migrations() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        text = path.read_text()
        out.append((path.stem, text, hashlib.sha256(text.encode()).hexdigest()))
    return out


def _apply_core(conn: psycopg.Connection, report: MigrationReport) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, checksum text NOT NULL, "
                 "applied_at timestamptz NOT NULL DEFAULT now())")
    applied = {r["version"]: r["checksum"] for r in conn.execute("SELECT version, checksum FROM schema_migrations")}
    for version, sql, checksum in _core_migrations():
        if version in applied:
            if applied[version] != checksum:
                raise MigrationError(f"db/migrations/{version}.sql was changed after it was applied; "
                                     "add a new migration instead of editing an applied one")
            continue
        try:
            conn.execute(sql)  # type: ignore[arg-type]
        except psycopg.Error as e:
            raise MigrationError(f"db/migrations/{version}.sql failed: {e.diag.message_primary or e}") from None
        conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)", (version, checksum))
        report.applied.append(version)


def _register(conn: psycopg.Connection, svc: DiscoveredService, root: Path, report: MigrationReport) -> None:
    rel = svc.sql_file.relative_to(root)
    cfg = svc.config
    try:
        with conn.transaction():
            conn.execute(svc.sql_file.read_text())  # type: ignore[arg-type]
    except psycopg.errors.CheckViolation as e:
        raise MigrationError(f"{rel}: violates {e.diag.constraint_name}: {e.diag.message_detail or e} "
                             f"(ports must be in 49160-49999, auth types api_key, oauth or basic_auth)") from None
    except psycopg.errors.UniqueViolation as e:
        raise MigrationError(f"{rel}: {e.diag.message_detail or e} (another service already has it)") from None
    except psycopg.Error as e:
        raise MigrationError(f"{rel}: {e.diag.message_primary or e}") from None
    row = conn.execute("SELECT name, port, auth_type, also_accepts FROM mcp_table WHERE name = %s",
                       (cfg.name,)).fetchone()
    if row is None:
        raise MigrationError(f"{rel}: does not register a service named {cfg.name!r} (SERVICE_CONFIG.name)")
    if row["port"] != cfg.port:
        raise MigrationError(f"{rel}: port {row['port']} differs from SERVICE_CONFIG port {cfg.port} of "
                             f"{cfg.name!r}")
    if row["auth_type"] != cfg.auth_type:
        raise MigrationError(f"{rel}: auth type {row['auth_type']!r} differs from SERVICE_CONFIG auth type "
                             f"{cfg.auth_type!r} of {cfg.name!r}")
    if sorted(row["also_accepts"]) != sorted(cfg.also_accepts):
        raise MigrationError(f"{rel}: also_accepts {row['also_accepts']} differs from SERVICE_CONFIG.also_accepts "
                             f"{list(cfg.also_accepts)} of {cfg.name!r}")
    _record_tools_and_oauth(conn, svc)
    report.registered.append(cfg.name)


def _record_tools_and_oauth(conn: psycopg.Connection, svc: DiscoveredService) -> None:
    """What the API needs of a service without importing it (services never import each other): its tools, for
    tool policies, and its OAuth provider, for connecting accounts. A package without SERVICE records neither."""
    service = getattr(sys.modules.get(svc.module_name), "SERVICE", None)
    tools: list[dict[str, object]] = []
    oauth = None
    if isinstance(service, Service):
        tools = [{"name": t.name, "read_only": bool(t.read_only)} for t in service.tools]
        oauth = Jsonb(service.oauth.to_json()) if service.oauth is not None else None
    conn.execute("UPDATE mcp_table SET tools = %s, oauth = %s WHERE name = %s",
                 (Jsonb(tools), oauth, svc.config.name))


def migrate(conninfo: str, root: Path = PROJECT_ROOT, procfile: Path | None = None) -> MigrationReport:
    """Apply pending core migrations and register every service; all or nothing."""
    services = discover_services(root)
    check_procfile(services, procfile or root / "Procfile")
    report = MigrationReport()
    with psycopg.connect(conninfo, row_factory=dict_row, connect_timeout=10) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        _apply_core(conn, report)
        for svc in services:
            _register(conn, svc, root, report)
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: $DATABASE_URL, else the embedded server")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    conninfo = args.database_url or resolve_database_url(os.environ.get("DATABASE_URL"),
                                                        PROJECT_ROOT / ".data" / "embedded-db.url")
    if not conninfo:
        print("migrate: no database: set DATABASE_URL or run `python -m db.embedded start`", file=sys.stderr)
        return 2
    try:
        report = migrate(conninfo, args.root)
    except MigrationError as e:
        print(f"migrate: refused: {e}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as e:
        print(f"migrate: cannot connect to the database: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    applied = ", ".join(report.applied) or "none pending"
    print(f"migrate: core migrations applied: {applied}; services registered: {', '.join(report.registered)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
