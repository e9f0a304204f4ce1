"""This deployment's OAuth app registration for one provider, read once from the environment at start.

Variables, for a service named ``github``: ``GITHUB_OAUTH_CLIENT_ID`` and ``GITHUB_OAUTH_CLIENT_SECRET``
(required), and optionally ``GITHUB_OAUTH_AUTHORIZE_URL``, ``GITHUB_OAUTH_TOKEN_URL``, ``GITHUB_OAUTH_REFRESH_URL``
(Figma refreshes at its own endpoint), ``GITHUB_OAUTH_SCOPES`` (comma or space separated). The upstream API URL
(where the account is looked up) is the service's own ``<api_url_env>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from mcp.oauth.provider import OAuthProvider


@dataclass(frozen=True)
class OAuthApp:
    provider: OAuthProvider
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    refresh_url: str
    scopes: tuple[str, ...]
    api_url: str

    def __repr__(self) -> str:  # the client secret must never reach a log through a repr
        return f"OAuthApp(service={self.provider.service!r}, client_id={self.client_id!r})"


def _prefix(service: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", service.upper()) + "_OAUTH_"


def oauth_variables(service: str) -> list[str]:
    """The variables a service needs set before accounts can be connected."""
    prefix = _prefix(service)
    return [f"{prefix}CLIENT_ID", f"{prefix}CLIENT_SECRET"]


def parse_scopes(text: str) -> tuple[str, ...]:
    """A comma- or space-separated list, as operators write it."""
    return tuple(s for s in re.split(r"[,\s]+", text) if s)


def oauth_app(provider: OAuthProvider, environ: Mapping[str, str]) -> OAuthApp | None:
    """The app for ``provider`` from ``environ``; None when its client id or secret is unset."""
    prefix = _prefix(provider.service)
    client_id = environ.get(f"{prefix}CLIENT_ID", "").strip()
    client_secret = environ.get(f"{prefix}CLIENT_SECRET", "").strip()
    if not client_id or not client_secret:
        return None
    token_url = environ.get(f"{prefix}TOKEN_URL", "").strip() or provider.token_url
    # An overridden token URL (a simulator, a proxy) carries the refresh endpoint with it unless that is set too.
    default_refresh = provider.refresh_url or provider.token_url
    if environ.get(f"{prefix}TOKEN_URL", "").strip() and provider.refresh_url is None:
        default_refresh = token_url
    refresh_url = environ.get(f"{prefix}REFRESH_URL", "").strip() or default_refresh
    scopes_text = environ.get(f"{prefix}SCOPES", "").strip()
    api_url = ((environ.get(provider.api_url_env, "").strip() if provider.api_url_env else "")
               or provider.api_default_url).rstrip("/")
    return OAuthApp(
        provider=provider,
        client_id=client_id,
        client_secret=client_secret,
        authorize_url=environ.get(f"{prefix}AUTHORIZE_URL", "").strip() or provider.authorize_url,
        token_url=token_url,
        refresh_url=refresh_url,
        scopes=parse_scopes(scopes_text) if scopes_text else provider.scopes,
        api_url=api_url,
    )
