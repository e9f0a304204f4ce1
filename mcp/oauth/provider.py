"""What a service declares about its upstream's OAuth: endpoints, scopes, PKCE, how to name the account.

A service package declares one ``OAuthProvider`` (``services/<name>/oauth.py`` -> ``OAUTH``); ``db.migrate``
stores ``to_json()`` in ``mcp_table.oauth`` so the API, which never imports a service, can rebuild it with
``from_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

CLIENT_AUTH_METHODS = ("body", "basic")


@dataclass(frozen=True)
class OAuthProvider:
    service: str
    display_name: str
    authorize_url: str  # the real endpoint (default when <NAME>_OAUTH_AUTHORIZE_URL is unset)
    token_url: str
    refresh_url: str | None = None  # None: token_url
    scopes: tuple[str, ...] = ()  # default scopes
    scope_separator: str = " "
    pkce: bool = True
    client_auth: str = "body"  # "body": client_id/secret in the form; "basic": HTTP Basic
    account_path: str | None = None  # GET <service API URL><path> with the new token -> account JSON
    account_field: str = ""  # dotted field in that JSON, or in the token response if account_path is None
    account_format: str = "{}"
    api_url_env: str = ""  # e.g. "GITHUB_API_URL" (where account_path is fetched)
    api_default_url: str = ""
    reauth_errors: frozenset[str] = frozenset({"invalid_grant"})  # token-endpoint codes meaning "reconnect"

    def __post_init__(self) -> None:
        if self.client_auth not in CLIENT_AUTH_METHODS:
            raise ValueError(f"OAuthProvider {self.service!r}: client_auth {self.client_auth!r} is not one of "
                             f"{', '.join(CLIENT_AUTH_METHODS)}")
        if not self.scope_separator:
            raise ValueError(f"OAuthProvider {self.service!r}: scope_separator must not be empty")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, frozenset):
                value = sorted(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OAuthProvider:
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        if "scopes" in kwargs:
            kwargs["scopes"] = tuple(kwargs["scopes"])
        if "reauth_errors" in kwargs:
            kwargs["reauth_errors"] = frozenset(kwargs["reauth_errors"])
        return cls(**kwargs)
