"""Main API handlers. Everything under /api/ needs ``Authorization: Bearer $ADMIN_TOKEN``."""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from mcp.config import Settings
from mcp.errors import BadRequest, Conflict, NotFound, Unauthorized
from mcp.formation.health import probe as probe_health
from mcp.ports import service_port
from mcp.server.base import BaseHandler, InFlight
from mcp.server.connections import ConnectionStats
from mcp.server.metrics import Metrics
from mcp.server.upstream import make_session
from mcp.service import validate_credentials
from mcp.tenancy.credentials import CredentialCipher
from mcp.tenancy.database import Database
from mcp.tenancy.instances import parse_instance_id
from services.api import API_NAME, API_PORT, API_VERSION, store
from services.api.oauth_apps import OAuthApps
from services.api.token_keeper import KeeperSettings, TokenKeeper
from services.api.tool_policy import parse_tool_policy

# No control characters (PostgreSQL text cannot hold NUL) and no lone surrogates (not UTF-8).
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f\ud800-\udfff]{1,64}@[^@\s\x00-\x1f\x7f\ud800-\udfff]{1,189}"
                    r"\.[^@\s\x00-\x1f\x7f\ud800-\udfff]{1,63}$")
# mcp_table's CHECK on name: anything else names no service, and is not worth a query (NUL cannot be sent).
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# Credentials are sent upstream as HTTP header values, which cannot hold control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What an operator may set. "pending" and "reauth_required" are shown, never set: only connecting an account
# (POST /api/connect, then its callback) leaves them.
STATUSES = ("active", "inactive", "expired")
UNCONNECTED = ("pending", "reauth_required")
SERVICE_PROBE_TIMEOUT_S = 1.5


def accepted_auth_types(entry: Mapping[str, Any]) -> list[str]:
    """The auth types a catalog entry's service takes credentials for: its own and ``also_accepts``."""
    return [entry["auth_type"], *entry["also_accepts"]]


@dataclass
class ApiRuntime:
    settings: Settings
    db: Database
    cipher: CredentialCipher
    port: int = API_PORT
    metrics: Metrics = field(default_factory=lambda: Metrics(API_NAME))
    inflight: InFlight = field(default_factory=InFlight)
    connections: ConnectionStats = field(default_factory=ConnectionStats)
    started_at: float = field(default_factory=time.time)
    session: aiohttp.ClientSession | None = None
    keeper_settings: KeeperSettings = field(default_factory=KeeperSettings)
    oauth_apps: OAuthApps = field(init=False)
    keeper: TokenKeeper | None = None

    def __post_init__(self) -> None:
        self.oauth_apps = OAuthApps(self.settings.environ or {})

    async def start(self) -> None:
        """Create what needs the running loop: the session used to probe services' health and to talk to OAuth
        providers, and the background job keeping refresh tokens alive."""
        self.session = make_session(5.0)
        self.keeper = TokenKeeper(self.db, self.cipher, self.oauth_apps, self.upstream_session, self.keeper_settings)
        self.keeper.start()

    def upstream_session(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the runtime has not started"
        return self.session

    async def stop(self) -> None:
        if self.keeper is not None:
            await self.keeper.stop()
            self.keeper = None
        self.metrics.close()
        await self.db.close()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def service_port(self, service: str, port: int) -> int:
        """The port the service listens on: its <NAME>_PORT override in this environment, else the catalog's.

        A malformed override keeps the catalog's port: the service itself refuses to start with it.
        """
        try:
            return service_port(service, port, self.settings.environ or {})
        except ValueError:
            return port

    def instance_urls(self, service: str, port: int, instance_id: uuid.UUID | str) -> dict[str, str]:
        """Where a client reaches the instance: through PUBLIC_URL (nginx) when set, else the port it runs on."""
        if self.settings.public_url:
            base = f"{self.settings.public_url}/{service}/{instance_id}"
        else:
            host = self.settings.bind_host if self.settings.bind_host not in ("0.0.0.0", "::") else "127.0.0.1"
            base = f"http://{host}:{self.service_port(service, port)}/{instance_id}"
        return {"base": base, "health": f"{base}/health", "tools": f"{base}/mcp/tools", "call": f"{base}/mcp/call",
                "mcp": f"{base}/mcp"}


def parse_email(value: Any, field_name: str = "user") -> str:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        raise BadRequest(f"'{field_name}' must be an email address", field=field_name)
    return value.strip().lower()


def parse_expiry(value: Any) -> datetime | None:
    """expires_at: null, or an ISO-8601 time with a timezone, in the future."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("'expires_at' must be an ISO-8601 date-time string or null", field="expires_at")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("'expires_at' is not an ISO-8601 date-time, e.g. 2027-01-31T00:00:00Z",
                         field="expires_at") from None
    if when.tzinfo is None:
        raise BadRequest("'expires_at' needs a timezone, e.g. 2027-01-31T00:00:00Z", field="expires_at")
    try:
        in_utc = when.astimezone(UTC)
    except OverflowError:
        in_utc = None
    if in_utc is None or in_utc.year >= 9999:
        # Representable in every time zone (the database hands times back in its session's zone).
        raise BadRequest("'expires_at' must be before the year 9999", field="expires_at")
    if when <= datetime.now(UTC):
        raise BadRequest("'expires_at' must be in the future", field="expires_at")
    return when


def check_credentials(service: str, auth_types: list[str], credentials: Any) -> dict[str, str]:
    """validate_credentials, and no control characters: every value travels in an HTTP header upstream."""
    try:
        creds = validate_credentials(service, auth_types, credentials)
    except ValueError as e:
        raise BadRequest(str(e), field="credentials") from None
    for name, value in creds.items():
        if _CONTROL.search(value):
            raise BadRequest(f"credentials.{name} must not contain control characters (line breaks, tabs, NUL)",
                             field="credentials")
    return creds


def reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; accepted: {', '.join(sorted(allowed))}",
                         field=unknown[0])


class ApiHandler(BaseHandler):
    """Deny by default: every handler needs the admin token unless it sets ``public = True``."""

    public = False

    def initialize(self, runtime: ApiRuntime, **_: Any) -> None:  # type: ignore[override]
        super().initialize(inflight=runtime.inflight)
        self.runtime = runtime

    def prepare(self) -> None:
        super().prepare()
        if self.public:
            return
        header = self.request.headers.get("Authorization", "")
        if not header:
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <ADMIN_TOKEN>'", code="missing_token")
        scheme, _, token = header.partition(" ")
        expected = self.runtime.settings.admin_token or ""
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise Unauthorized("the admin token is not valid", code="invalid_token")

    def instance_view(self, row: dict[str, Any]) -> dict[str, Any]:
        view = {k: row[k] for k in ("service", "user", "status", "expires_at", "created_at", "updated_at",
                                    "last_used_at", "account", "scopes", "token_expires_at")}
        if row["status"] == "active" and row["expires_at"] is not None and row["expires_at"] <= datetime.now(
                UTC):
            view["status"] = "expired"
        view["tools"] = row["tool_policy"]  # the stored policy; null: every tool of the service
        return {"instance_id": str(row["id"]), **view,
                "urls": self.runtime.instance_urls(row["service"], row["port"], row["id"])}

    def instance_id(self, segment: str) -> uuid.UUID:
        return parse_instance_id(segment)

    async def existing_instance(self, conn: Any, instance_id: uuid.UUID) -> dict[str, Any]:
        """The instance's row, or 404."""
        row = await store.get_instance(conn, instance_id)
        if row is None:
            raise NotFound("no instance with this id", code="instance_not_found")
        return row


class ApiHealthHandler(ApiHandler):
    public = True

    async def get(self) -> None:
        self.write_json({
            "service": API_NAME, "status": "healthy", "uptime": round(time.time() - self.runtime.started_at, 3),
            "timestamp": datetime.now(UTC).isoformat(), "port": self.runtime.port, "version": API_VERSION,
            "pid": os.getpid(),  # which process answered: during a reload two share the port
        })


async def probe(port: int) -> dict[str, Any]:
    """A service's live /health, judged by the formation's one probe (mcp.formation.health), or why it could
    not be had."""
    health = await probe_health(f"http://127.0.0.1:{port}/health", SERVICE_PROBE_TIMEOUT_S)
    if health.http_status is None:
        return {"status": "unreachable", "reason": health.error}
    return {"status": "healthy" if health.healthy else "unhealthy", "http_status": health.http_status,
            "latency_ms": health.latency_ms, "uptime": (health.body or {}).get("uptime")}


class ServicesHandler(ApiHandler):
    """GET /api/services: the catalog, each entry with its live health."""

    async def get(self) -> None:
        async with self.runtime.db.connection() as conn:
            rows = await store.catalog(conn)
        rows = [{**r, "port": self.runtime.service_port(r["name"], r["port"])} for r in rows]
        healths = await asyncio.gather(*(probe(self.runtime.service_port(r["name"], r["port"])) for r in rows))
        self.write_json({"services": [{**r, "health": h} for r, h in zip(rows, healths, strict=True)]})


class InstancesHandler(ApiHandler):
    """POST /api/instances: create an instance (and its user if new)."""

    async def post(self) -> None:
        body = self.json_body()
        reject_unknown(body, {"service", "user", "credentials", "expires_at", "tools"})
        for name in ("service", "user", "credentials"):
            if name not in body:
                raise BadRequest(f"'{name}' is required", field=name, code="missing_field")
        service = body["service"]
        if not isinstance(service, str) or not service:
            raise BadRequest("'service' must be a service name", field="service")
        email = parse_email(body["user"])
        expires_at = parse_expiry(body.get("expires_at"))
        instance_id = uuid.uuid4()
        async with self.runtime.db.connection() as conn:
            entry = await store.catalog_entry(conn, service) if _SERVICE_NAME.fullmatch(service) else None
            if entry is None or not entry["active"]:
                names = ", ".join(r["name"] for r in await store.catalog(conn) if r["active"])
                raise BadRequest(f"unknown service {service!r}; available: {names}", field="service",
                                 code="unknown_service")
            creds = check_credentials(service, accepted_auth_types(entry), body["credentials"])
            policy = (parse_tool_policy(body["tools"], service, await store.service_tools(conn, service))
                      if body.get("tools") is not None else None)
            sealed = self.runtime.cipher.encrypt(instance_id, creds)
            async with conn.transaction():
                user_id = await store.upsert_user(conn, email)
                await store.insert_instance(conn, instance_id, user_id, service, expires_at, sealed,
                                            tool_policy=policy)
            row = await store.get_instance(conn, instance_id)
        assert row is not None
        self.set_header("Location", f"/api/instances/{instance_id}")
        self.write_json(self.instance_view(row), status=201)


class InstanceResourceHandler(ApiHandler):
    """GET / PATCH / DELETE /api/instances/{id}. Credentials can be replaced, never read."""

    async def get(self, instance: str) -> None:
        instance_id = self.instance_id(instance)
        async with self.runtime.db.connection() as conn:
            row = await self.existing_instance(conn, instance_id)
        self.write_json(self.instance_view(row))

    async def patch(self, instance: str) -> None:
        instance_id = self.instance_id(instance)
        body = self.json_body()
        reject_unknown(body, {"status", "credentials", "expires_at", "tools"})
        if not body:
            raise BadRequest("nothing to change: send status, credentials, expires_at or tools", code="empty_body")
        changes: dict[str, Any] = {}
        if "status" in body:
            if body["status"] not in STATUSES:
                raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}", field="status")
            changes["status"] = body["status"]
        if "expires_at" in body:
            changes["expires_at"] = parse_expiry(body["expires_at"])
        async with self.runtime.db.connection() as conn:
            row = await self.existing_instance(conn, instance_id)
            if changes.get("status") == "active" and row["status"] in UNCONNECTED and "credentials" not in body:
                raise Conflict(f"this instance has no connected account (status {row['status']}): connect it with "
                               "POST /api/connect and this instance_id, or send credentials",
                               code="instance_not_connected", field="status")
            if "credentials" in body:
                entry = await store.catalog_entry(conn, row["service"])
                assert entry is not None
                creds = check_credentials(row["service"], accepted_auth_types(entry),
                                          body["credentials"])
                changes["credentials_enc"] = self.runtime.cipher.encrypt(instance_id, creds)
                # Pasted credentials are static: nothing to refresh, in a service or in the background.
                changes["token_expires_at"] = changes["refresh_expires_at"] = None
            if "tools" in body:
                changes["tool_policy"] = parse_tool_policy(body["tools"], row["service"],
                                                           await store.service_tools(conn, row["service"]))
            if not await store.update_instance(conn, instance_id, changes):
                raise NotFound("no instance with this id", code="instance_not_found")
            row = await store.get_instance(conn, instance_id)
        assert row is not None
        self.write_json(self.instance_view(row))

    async def delete(self, instance: str) -> None:
        instance_id = self.instance_id(instance)
        async with self.runtime.db.connection() as conn:
            if not await store.delete_instance(conn, instance_id):
                raise NotFound("no instance with this id", code="instance_not_found")
        self.set_status(204)
        self.finish()


class RotateIdHandler(ApiHandler):
    """POST /api/instances/{id}/rotate-id: a new id (and URL) for the instance; the old one stops at once.

    Instance ids are bearer capabilities, so a leaked URL is revoked by rotating its id.
    """

    async def post(self, instance: str) -> None:
        old = self.instance_id(instance)
        new = uuid.uuid4()
        cipher = self.runtime.cipher

        def reseal(stored: str) -> str:
            return cipher.encrypt(new, cipher.decrypt(old, stored))

        async with self.runtime.db.connection() as conn:
            if not await store.rotate_instance_id(conn, old, new, reseal):
                raise NotFound("no instance with this id", code="instance_not_found")
            row = await store.get_instance(conn, new)
        assert row is not None
        self.set_header("Location", f"/api/instances/{new}")
        self.write_json({**self.instance_view(row), "previous_instance_id": str(old)})


class UserInstancesHandler(ApiHandler):
    """GET /api/users/{email}/instances."""

    async def get(self, email: str) -> None:
        address = parse_email(email, "email")
        async with self.runtime.db.connection() as conn:
            rows = await store.user_instances(conn, address)
        if rows is None:
            raise NotFound("no user with this email", code="user_not_found")
        self.write_json({"user": address, "instances": [self.instance_view(r) for r in rows]})


class UsageHandler(ApiHandler):
    """GET /api/instances/{id}/usage: calls, errors and latency, in total and per tool."""

    async def get(self, instance: str) -> None:
        instance_id = self.instance_id(instance)
        async with self.runtime.db.connection() as conn:
            row = await self.existing_instance(conn, instance_id)
            summary = await store.usage_summary(conn, instance_id)
        t = summary["total"]

        def ms(v: Any) -> float | None:
            return None if v is None else round(float(v), 2)

        self.write_json({
            "instance_id": str(instance_id), "service": row["service"], "status": self.instance_view(row)["status"],
            "calls": t["calls"], "errors": t["errors"],
            "latency_ms": {"avg": ms(t["avg_ms"]), "p50": ms(t["p50_ms"]), "p95": ms(t["p95_ms"]),
                           "max": ms(t["max_ms"])},
            "first_call": t["first_call"], "last_call": t["last_call"],
            "by_tool": [{"tool": r["tool"], "calls": r["calls"], "errors": r["errors"],
                         "avg_latency_ms": ms(r["avg_ms"]), "last_call": r["last_call"]} for r in summary["by_tool"]],
        })
