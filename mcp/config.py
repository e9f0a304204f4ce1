"""Settings read once from the environment at process start, then passed down explicitly."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mcp.paths import PROJECT_ROOT
from mcp.protocol.origins import (
    LOCAL_HOSTS,
    OriginPolicy,
    local_origins,
    origin_of,
    parse_host_entry,
    parse_origin_entry,
)
from mcp.server.forwarded import TrustedProxies
from mcp.tenancy.credentials import CredentialCipher, CredentialKeyError, parse_key


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0")
    return value


def _trusted_proxies(env: Mapping[str, str]) -> TrustedProxies:
    try:
        return TrustedProxies.parse((env.get("TRUSTED_PROXIES") or "").split(","))
    except ValueError as e:
        raise ConfigError(f"TRUSTED_PROXIES: {e}") from None


def _rate_limit_scope(env: Mapping[str, str]) -> str:
    scope = (env.get("RATE_LIMIT_SCOPE") or "global").strip().lower()
    if scope not in ("global", "process"):
        raise ConfigError(f"RATE_LIMIT_SCOPE must be global or process, got {scope!r}")
    return scope


def _allow_list(env: Mapping[str, str], name: str, defaults: tuple[str, ...], public: str | None,
                parse: Callable[[str], str]) -> tuple[str, ...]:
    """A comma-separated allow-list (or the defaults when unset), plus PUBLIC_URL's own entry."""
    raw = env.get(name)
    entries: list[str] = []
    for item in (raw.split(",") if raw else defaults):
        if not item.strip():
            continue
        try:
            entries.append(parse(item))
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
    if public and public not in entries:
        entries.append(public)
    return tuple(entries)


def _public_entries(public_url: str | None) -> tuple[str | None, str | None]:
    """PUBLIC_URL's origin and host as allow-list entries (None, None when unset or not http(s))."""
    origin = origin_of(public_url) if public_url else None
    if origin is None:
        return None, None
    try:
        return parse_origin_entry(origin), parse_host_entry(origin.split("://", 1)[1])
    except ValueError:
        return None, None


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration. See .env.example for every variable."""

    project_root: Path
    database_url: str | None
    credential_keys: tuple[bytes, ...]
    admin_token: str | None = None
    public_url: str | None = None
    bind_host: str = "127.0.0.1"
    db_timeout_s: float = 2.0
    db_pool_max: int = 10
    instance_cache_ttl_s: float = 60.0
    upstream_timeout_s: float = 30.0
    usage_flush_interval_s: float = 1.0
    usage_buffer_max: int = 50_000
    shutdown_timeout_s: float = 3.5
    max_body_bytes: int = 1 << 20
    rate_limit_per_minute: float = 600.0
    rate_limit_burst: float = 60.0
    # "global": one bucket per instance in PostgreSQL, shared by every process and host (mcp/tenancy/rate_limit.py);
    # "process": each process keeps its own, so N processes allow N times the rate.
    rate_limit_scope: str = "global"
    upstream_concurrency: int = 8
    unknown_id_limit_per_minute: float = 60.0
    log_level: str = "INFO"
    # Who may talk to the MCP endpoint (see mcp/protocol/origins.py); PUBLIC_URL's origin and host are added.
    allowed_origins: tuple[str, ...] = local_origins()
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    # Tools per tools/list page on the MCP endpoint.
    mcp_page_size: int = 100
    # Peers whose X-Real-IP / X-Forwarded-For are believed (nginx); none by default.
    trusted_proxies: TrustedProxies = TrustedProxies()
    # Seconds a client may take to send a request body once its headers are in; then the connection closes.
    body_timeout_s: float = 20.0
    # Seconds a connection may wait for a request head (keep-alive idle, slow headers); longer than nginx's 60.
    idle_timeout_s: float = 75.0
    # Open client connections per process; beyond it new ones are closed at once (0: derived from RLIMIT_NOFILE).
    max_connections: int = 0
    # Seconds a request may run in all (instance lookup, upstream calls); then it is answered 504.
    request_timeout_s: float = 60.0
    # Where each service process appends its usage records before answering (survives SIGKILL).
    usage_spool_dir: Path | None = None
    # An OAuth access token this close to its expiry (seconds) is refreshed before a call (mcp/server/fresh_tokens.py).
    oauth_refresh_margin_s: float = 60.0
    # Processes of this service sharing its port (MCP_WORKERS, set by the supervisor's --workers): a reload's
    # handover steers new connections to the listener that joined the port after them (mcp.server.serve).
    workers: int = 1
    environ: Mapping[str, str] | None = None

    @cached_property
    def origin_policy(self) -> OriginPolicy:
        return OriginPolicy(self.allowed_origins, self.allowed_hosts)

    @property
    def embedded_url_file(self) -> Path:
        """Where ``python -m db.embedded start`` records the embedded server's address."""
        return self.project_root / ".data" / "embedded-db.url"

    def cipher(self) -> CredentialCipher:
        if not self.credential_keys:
            raise ConfigError("CREDENTIALS_KEY is not set; scripts/start-all-services writes one into .env")
        return CredentialCipher(self.credential_keys)

    def get(self, name: str, default: str | None = None) -> str | None:
        """A raw variable from the environment the settings were loaded from (service extras)."""
        return (self.environ or {}).get(name, default)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every variable once; raise ConfigError naming the first bad one."""
    env = dict(os.environ if environ is None else environ)
    keys: list[bytes] = []
    try:
        if env.get("CREDENTIALS_KEY"):
            keys.append(parse_key(env["CREDENTIALS_KEY"]))
        for i, old in enumerate(filter(None, (env.get("CREDENTIALS_OLD_KEYS") or "").split(","))):
            keys.append(parse_key(old, f"CREDENTIALS_OLD_KEYS[{i}]"))
    except CredentialKeyError as e:
        raise ConfigError(str(e)) from None
    root = Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)
    public_url = (env.get("PUBLIC_URL") or "").rstrip("/") or None
    public_origin, public_host = _public_entries(public_url)
    page_size = _int(env, "MCP_PAGE_SIZE", 100)
    if page_size < 1:
        raise ConfigError("MCP_PAGE_SIZE must be at least 1")
    return Settings(
        project_root=root,
        database_url=env.get("DATABASE_URL") or None,
        credential_keys=tuple(keys),
        admin_token=env.get("ADMIN_TOKEN") or None,
        public_url=public_url,
        bind_host=env.get("BIND_HOST") or "127.0.0.1",
        db_timeout_s=_float(env, "DB_TIMEOUT", 2.0),
        db_pool_max=_int(env, "DB_POOL_MAX", 10),
        instance_cache_ttl_s=_float(env, "INSTANCE_CACHE_TTL", 60.0),
        upstream_timeout_s=_float(env, "UPSTREAM_TIMEOUT", 30.0),
        usage_flush_interval_s=_float(env, "USAGE_FLUSH_INTERVAL", 1.0),
        usage_buffer_max=_int(env, "USAGE_BUFFER_MAX", 50_000),
        shutdown_timeout_s=_float(env, "SHUTDOWN_TIMEOUT", 3.5),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", 1 << 20),
        rate_limit_per_minute=_float(env, "RATE_LIMIT_PER_MINUTE", 600.0),
        rate_limit_burst=_float(env, "RATE_LIMIT_BURST", 60.0),
        rate_limit_scope=_rate_limit_scope(env),
        upstream_concurrency=_int(env, "UPSTREAM_CONCURRENCY_PER_INSTANCE", 8),
        unknown_id_limit_per_minute=_float(env, "UNKNOWN_ID_LIMIT_PER_MINUTE", 60.0),
        log_level=(env.get("LOG_LEVEL") or "INFO").upper(),
        allowed_origins=_allow_list(env, "ALLOWED_ORIGINS", local_origins(), public_origin, parse_origin_entry),
        allowed_hosts=_allow_list(env, "ALLOWED_HOSTS", LOCAL_HOSTS, public_host, parse_host_entry),
        mcp_page_size=page_size,
        trusted_proxies=_trusted_proxies(env),
        body_timeout_s=_positive(env, "BODY_TIMEOUT", 20.0),
        max_connections=_int(env, "MAX_CONNECTIONS", 0),
        idle_timeout_s=_positive(env, "IDLE_TIMEOUT", 75.0),
        request_timeout_s=_positive(env, "REQUEST_TIMEOUT", 60.0),
        oauth_refresh_margin_s=_float(env, "OAUTH_REFRESH_MARGIN", 60.0),
        usage_spool_dir=Path(env["USAGE_SPOOL_DIR"]) if env.get("USAGE_SPOOL_DIR") else root / ".data" / "usage-spool",
        workers=max(1, _int(env, "MCP_WORKERS", 1)),
        environ=env,
    )
