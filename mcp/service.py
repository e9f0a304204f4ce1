"""What a service is: its validated SERVICE_CONFIG, its tools, its upstream client and routes."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mcp.ports import port_env

if TYPE_CHECKING:
    from mcp.oauth.provider import OAuthProvider
    from mcp.protocol.tools import Tool
    from mcp.server.upstream import UpstreamHTTP

PORT_MIN = 49160
PORT_MAX = 49999
AUTH_TYPES = ("api_key", "oauth", "basic_auth")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

# The credential fields each auth type requires; checked when an instance is created or updated.
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    "api_key": ("api_key",),
    "oauth": ("access_token",),
    "basic_auth": ("username", "password"),
}


class ServiceConfigError(ValueError):
    """SERVICE_CONFIG breaks a rule; the message names the field and the value."""


@dataclass(frozen=True)
class ServiceConfig:
    """A service's identity, validated on construction (see ``validate``)."""

    name: str
    port: int
    auth_type: str
    display_name: str = ""
    description: str = ""
    version: str = "0.1.0"
    icon: str = ""
    # Further auth types whose credentials the service also accepts (Figma takes OAuth tokens too).
    also_accepts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_service_config(self)


def validate_service_config(cfg: ServiceConfig) -> None:
    """Raise ServiceConfigError unless name, port and auth type follow the platform's rules."""
    if not isinstance(cfg.name, str) or not cfg.name:
        raise ServiceConfigError("SERVICE_CONFIG.name is required")
    if not _NAME_RE.match(cfg.name):
        raise ServiceConfigError(
            f"SERVICE_CONFIG.name {cfg.name!r} must be lower-case letters, digits, '-' or '_' "
            "and start with a letter"
        )
    if isinstance(cfg.port, bool) or not isinstance(cfg.port, int):
        raise ServiceConfigError(f"SERVICE_CONFIG.port of {cfg.name!r} is required and must be an integer")
    if not PORT_MIN <= cfg.port <= PORT_MAX:
        raise ServiceConfigError(
            f"SERVICE_CONFIG.port {cfg.port} of {cfg.name!r} is outside {PORT_MIN}-{PORT_MAX}"
        )
    for auth in (cfg.auth_type, *cfg.also_accepts):
        if auth not in AUTH_TYPES:
            raise ServiceConfigError(
                f"SERVICE_CONFIG auth type {auth!r} of {cfg.name!r} is not one of {', '.join(AUTH_TYPES)}"
            )


def validate_credentials(service: str, auth_types: Sequence[str], credentials: Any) -> dict[str, str]:
    """Check credentials against the auth types a service accepts; return a clean copy.

    Raises ValueError with a message naming the missing or unexpected field.
    """
    if not isinstance(credentials, dict):
        raise ValueError("credentials must be a JSON object")
    shapes = [CREDENTIAL_FIELDS[a] for a in auth_types if a in CREDENTIAL_FIELDS]
    keys = set(credentials)
    for shape in shapes:
        if keys == set(shape):
            clean: dict[str, str] = {}
            for k in shape:
                v = credentials[k]
                if not isinstance(v, str) or not v.strip():
                    raise ValueError(f"credentials.{k} must be a non-empty string")
                if len(v) > 4096:
                    raise ValueError(f"credentials.{k} is longer than 4096 characters")
                clean[k] = v
            return clean
    wanted = " or ".join("{" + ", ".join(f'"{k}"' for k in s) + "}" for s in shapes)
    got = ", ".join(sorted(keys)) or "no fields"
    raise ValueError(f"{service} credentials must be {wanted}; got {got}")


ClientFactory = Callable[["UpstreamHTTP", dict[str, str]], Any]


@dataclass(frozen=True)
class Service:
    """Everything the toolkit needs to serve one service.

    ``client_factory(http, credentials)`` builds the upstream client for one call from the shared
    HTTP session and that instance's decrypted credentials; the client is what tool handlers and
    direct endpoints receive, so credentials travel with the call and never sit in process state.
    """

    config: ServiceConfig
    tools: Sequence[Tool]
    client_factory: ClientFactory
    upstream_url_env: str
    upstream_default_url: str
    routes: Sequence[tuple[str, type, dict[str, Any]] | tuple[str, type]] = field(default_factory=tuple)
    # Error codes of the upstream's own vocabulary that the client reports (Slack's "channel_not_found"),
    # beyond the common ones of mcp.server.upstream; metrics label any other code "other".
    upstream_error_codes: frozenset[str] = frozenset()
    # How tenants connect their upstream accounts (None: only credentials posted by an operator).
    oauth: OAuthProvider | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def server_info(self) -> dict[str, Any]:
        """The MCP Implementation object the service presents (initialize, and every modern result)."""
        cfg = self.config
        info: dict[str, Any] = {"name": cfg.name, "version": cfg.version}
        if cfg.display_name:
            info["title"] = cfg.display_name
        if cfg.description:
            info["description"] = cfg.description
        return info

    @property
    def port_env(self) -> str:
        """The variable that overrides the port (tests, side-by-side runs); honcho's $PORT is deliberately ignored."""
        return port_env(self.config.name)
