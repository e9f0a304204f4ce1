"""Per-process collaborators of a service, created once at start and handed to every handler."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import aiohttp

from mcp.config import Settings
from mcp.oauth.refresh import TokenRefresher
from mcp.oauth.settings import oauth_app
from mcp.protocol.tools import ToolRegistry
from mcp.server.base import InFlight
from mcp.server.connections import ConnectionStats
from mcp.server.fresh_tokens import FreshTokens
from mcp.server.limits import ConcurrencyLimiter, RateLimiter
from mcp.server.metrics import Metrics
from mcp.server.upstream import UpstreamHTTP, make_session
from mcp.service import Service
from mcp.tenancy.database import Database
from mcp.tenancy.instances import Instance, InstanceResolver
from mcp.tenancy.invalidation import InvalidationListener
from mcp.tenancy.rate_buckets import RateBuckets
from mcp.tenancy.rate_limit import SharedRateLimiter
from mcp.tenancy.usage import UsageRecorder


@dataclass
class ServiceRuntime:
    """What one service process shares across requests; none of it is per-user."""

    service: Service
    settings: Settings
    port: int
    db: Database
    resolver: InstanceResolver
    usage: UsageRecorder
    registry: ToolRegistry
    upstream_url: str
    metrics: Metrics
    rate_limiter: SharedRateLimiter
    probe_limiter: RateLimiter
    upstream_slots: ConcurrencyLimiter
    inflight: InFlight = field(default_factory=InFlight)
    connections: ConnectionStats = field(default_factory=ConnectionStats)
    started_at: float = field(default_factory=time.time)
    session: aiohttp.ClientSession | None = None
    listener: InvalidationListener | None = None
    # Refreshes OAuth instances' tokens (create() sets it; it refreshes nothing without the service's OAuth app).
    tokens: FreshTokens | None = None

    @classmethod
    def create(cls, service: Service, settings: Settings, port: int | None = None) -> ServiceRuntime:
        db = Database(settings.database_url, settings.embedded_url_file, timeout_s=settings.db_timeout_s,
                      max_size=settings.db_pool_max, application_name=f"mcp-{service.name}")
        usage = UsageRecorder(db, interval_s=settings.usage_flush_interval_s, max_buffer=settings.usage_buffer_max,
                              spool_dir=settings.usage_spool_dir, service=service.name)
        metrics = Metrics(service.name, settings.get("PROMETHEUS_MULTIPROC_DIR") or None, service.upstream_error_codes)
        metrics.gauge("mcp_usage_records_pending", "Usage records waiting to be written", lambda: usage.pending)
        metrics.gauge("mcp_usage_records_dropped", "Usage records dropped (buffer full or unwritable)",
                      lambda: usage.dropped, multiprocess_mode="sum")
        connections = ConnectionStats()
        connections.register(metrics)
        rt = cls(
            connections=connections,
            service=service,
            settings=settings,
            port=port if port is not None else service.config.port,
            db=db,
            resolver=InstanceResolver(db, settings.cipher(), service.name, settings.instance_cache_ttl_s),
            usage=usage,
            metrics=metrics,
            rate_limiter=SharedRateLimiter(
                RateBuckets(db, settings.rate_limit_per_minute / 60.0, settings.rate_limit_burst),
                RateLimiter(settings.rate_limit_per_minute / 60.0, settings.rate_limit_burst),
                shared=settings.rate_limit_scope == "global", timeout_s=settings.db_timeout_s),
            probe_limiter=RateLimiter(settings.unknown_id_limit_per_minute / 60.0,
                                      max(1.0, settings.unknown_id_limit_per_minute / 2)),
            upstream_slots=ConcurrencyLimiter(settings.upstream_concurrency),
            registry=ToolRegistry(service.tools),
            upstream_url=settings.get(service.upstream_url_env) or service.upstream_default_url,
        )
        rt.tokens = rt.fresh_tokens()
        return rt

    def fresh_tokens(self) -> FreshTokens:
        """The token refresher of this process: the service's OAuth app (its <NAME>_OAUTH_* variables) and
        this process's upstream session; OAUTH_REFRESH_MARGIN (seconds, default 60) says how close to its
        expiry a token is refreshed before a call."""
        provider = self.service.oauth
        app = oauth_app(provider, self.settings.environ or {}) if provider is not None else None
        margin_s = self.settings.oauth_refresh_margin_s
        refresher = TokenRefresher(self.db, self.resolver.cipher, app, self.upstream_session, min_validity_s=margin_s)
        display = (provider.display_name if provider is not None else "") or self.service.config.display_name
        return FreshTokens(refresher, self.resolver, display or self.service.name, margin_s)

    def upstream_session(self) -> aiohttp.ClientSession:
        """The process's upstream session (token requests share it)."""
        self.ensure_started()
        assert self.session is not None
        return self.session

    async def start(self) -> None:
        """Create what needs the running loop: the upstream session and the usage flusher."""
        self.ensure_started()

    def ensure_started(self) -> None:
        """Idempotent; must run inside the event loop (handlers call it, so embedded apps need no hook)."""
        if self.session is None:
            self.session = make_session(self.settings.upstream_timeout_s)
        if self.listener is None:
            self.listener = InvalidationListener(lambda: self.db.conninfo, self.resolver)
            self.listener.start()
            self.rate_limiter.start()
        self.usage.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self.tokens is not None:
            await self.tokens.close()  # refreshes in flight store their new tokens before the pool closes
        await self.resolver.close()
        await self.usage.close()
        await self.rate_limiter.close()  # unspent leased tokens go back to the shared buckets
        await self.db.close()
        if self.session is not None:
            await self.session.close()
            self.session = None
        self.metrics.close()

    @cached_property
    def server_info(self) -> dict[str, Any]:
        return self.service.server_info()

    def client_for(self, instance: Instance, deadline: float | None = None) -> Any:
        """The service's upstream client for one call, bound to this instance's credentials; no upstream
        call it makes outlasts ``deadline`` (event-loop time)."""
        self.ensure_started()
        assert self.session is not None
        http = UpstreamHTTP(self.session, self.upstream_url, self.service.name, self.upstream_slots, instance.key,
                            deadline)
        return self.service.client_factory(http, instance.credentials)

