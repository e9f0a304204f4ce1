"""The OAuth 2.0 wire protocol against one provider: authorize URL, code exchange, refresh, account name.

authlib prepares the requests (PKCE S256, token generation, form encoding); aiohttp sends them on the
caller's session. Every failure is one of three exceptions, and no message ever holds a token, a code, a
PKCE verifier or the client secret:

- ``ReauthRequired``: the grant is dead (``invalid_grant`` or the provider's own word for it, or a 401 from the
  token endpoint); only a new authorization helps.
- ``TokenEndpointUnavailable``: 5xx, 429, timeout, unreachable, or an answer that is not an OAuth response;
  trying again later may work.
- ``OAuthError``: any other refusal (``invalid_client``, ``invalid_request``...): the app is misconfigured.

GitHub and Slack answer errors with HTTP 200 and an ``error`` field (Slack also ``"ok": false``), so any
``error`` field is a failure whatever the status.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri, prepare_token_request
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from mcp.oauth.settings import OAuthApp

log = logging.getLogger(__name__)

TOKEN_TIMEOUT_S = 10.0
VERIFIER_LENGTH = 64  # RFC 7636: 43-128 unreserved characters
_SECRET_KEYS = frozenset({"access_token", "refresh_token", "id_token"})
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_MAX_DESCRIPTION = 200


class OAuthError(Exception):
    """A refusal from the provider or a failure to reach it. ``code`` is the provider's error code or ours."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ReauthRequired(OAuthError):
    """The grant is dead: the user must authorize again."""


class TokenEndpointUnavailable(OAuthError):
    """The token endpoint could not answer usefully now; the same request may work later."""


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    refresh_expires_at: datetime | None
    scopes: str | None  # space-separated, as granted
    response: dict[str, Any]  # the token response without any token (for account_field)

    def __repr__(self) -> str:  # tokens must never reach a log through a repr
        return f"TokenSet(expires_at={self.expires_at!r}, scopes={self.scopes!r})"


def new_pkce() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = generate_token(VERIFIER_LENGTH)
    return verifier, create_s256_code_challenge(verifier)


def authorization_url(app: OAuthApp, *, state: str, redirect_uri: str, scopes: Sequence[str],
                      code_challenge: str | None) -> str:
    """Where to send the user's browser to authorize ``app``."""
    extra: dict[str, str] = {}
    if code_challenge is not None:
        extra = {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    scope = app.provider.scope_separator.join(scopes) or None
    return prepare_grant_uri(app.authorize_url, app.client_id, "code", redirect_uri=redirect_uri, scope=scope,
                             state=state, **extra)


async def exchange_code(session: aiohttp.ClientSession, app: OAuthApp, *, code: str, redirect_uri: str,
                        code_verifier: str | None) -> TokenSet:
    """Trade an authorization code (and its PKCE verifier) for tokens."""
    params: dict[str, str] = {"code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        params["code_verifier"] = code_verifier
    secrets = [code, code_verifier or ""]
    return await _token_request(session, app, app.token_url, "authorization_code", params, secrets)


async def refresh_tokens(session: aiohttp.ClientSession, app: OAuthApp, refresh_token: str) -> TokenSet:
    """Trade a refresh token for new tokens. Sent exactly once: no retry here, since providers that rotate
    refresh tokens (GitHub, Slack) treat a second use as theft and revoke the grant."""
    params = {"refresh_token": refresh_token}
    return await _token_request(session, app, app.refresh_url, "refresh_token", params, [refresh_token])


async def fetch_account(session: aiohttp.ClientSession, app: OAuthApp, tokens: TokenSet) -> str | None:
    """The account's label ("@octocat"), or None when the provider does not say or cannot be asked now."""
    provider = app.provider
    if not provider.account_field:
        return None
    if provider.account_path is None:
        data: Any = tokens.response
    else:
        url = app.api_url + provider.account_path
        headers = {"Authorization": f"Bearer {tokens.access_token}", "Accept": "application/json"}
        try:
            async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT_S),
                                   allow_redirects=False) as resp:
                if resp.status != 200:
                    log.warning("%s account lookup answered HTTP %s", provider.service, resp.status)
                    return None
                data = json.loads(await resp.text())
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            log.warning("%s account lookup failed: %s", provider.service, type(e).__name__)
            return None
    value = _dotted(data, provider.account_field)
    if value is None or isinstance(value, dict | list) or str(value) == "":
        return None
    return provider.account_format.format(value)


def _dotted(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _client_auth(app: OAuthApp, params: dict[str, str]) -> dict[str, str]:
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    if app.provider.client_auth == "basic":
        # RFC 6749 2.3.1: both parts form-encoded before base64.
        pair = f"{quote(app.client_id, safe='')}:{quote(app.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        params["client_id"] = app.client_id
        params["client_secret"] = app.client_secret
    return headers


async def _token_request(session: aiohttp.ClientSession, app: OAuthApp, url: str, grant_type: str,
                         params: dict[str, str], secrets: Iterable[str]) -> TokenSet:
    service = app.provider.display_name or app.provider.service
    headers = _client_auth(app, params)
    body = prepare_token_request(grant_type, **params)
    redact = [s for s in (*secrets, app.client_secret) if s]
    try:
        # No redirects: a 307 would carry the refresh token to another address, a second send.
        async with session.post(url, data=body, headers=headers, allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=TOKEN_TIMEOUT_S)) as resp:
            status = resp.status
            text = await resp.text()
    except (TimeoutError, aiohttp.ClientError) as e:
        raise TokenEndpointUnavailable("token_endpoint_unreachable",
                                       f"the {service} token endpoint could not be reached "
                                       f"({type(e).__name__})") from None
    if status >= 500 or status == 429:
        raise TokenEndpointUnavailable("token_endpoint_error", f"the {service} token endpoint answered HTTP {status}")
    if 300 <= status < 400:
        raise OAuthError("token_endpoint_redirect",
                         f"the {service} token endpoint answered a redirect (HTTP {status}); check its URL")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        if status == 401:
            raise ReauthRequired("unauthorized", f"the {service} token endpoint refused the grant (HTTP 401)")
        raise TokenEndpointUnavailable("invalid_token_response",
                                       f"the {service} token endpoint answered HTTP {status} without a JSON object")
    error = data.get("error")
    if (error is not None and error is not False) or status >= 400 or data.get("ok") is False:
        description = data.get("error_description")
        if not isinstance(error, str):
            # Figma's shape: {"error": true, "status": 400, "message": "Invalid refresh token"}.
            description = data.get("message")
            error = _code_of(description)
        raise _refusal(app, service, status, error, description, redact)
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenEndpointUnavailable("invalid_token_response",
                                       f"the {service} token endpoint answered without an access token")
    refresh_token = data.get("refresh_token")
    now = datetime.now(UTC)
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_at=_expiry(now, data.get("expires_in")),
        refresh_expires_at=_expiry(now, data.get("refresh_token_expires_in")),
        scopes=_scopes(data.get("scope")),
        response=_without_tokens(data),
    )


def _refusal(app: OAuthApp, service: str, status: int, error: Any, description: Any,
             redact: Sequence[str]) -> OAuthError:
    code = str(error) if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "unknown_error"
    message = f"the {service} token endpoint refused: {code} (HTTP {status})"
    if isinstance(description, str) and description.strip():
        text = description.strip()[:_MAX_DESCRIPTION]
        for secret in redact:
            text = text.replace(secret, "[redacted]")
        message += f": {text}"
    if code in app.provider.reauth_errors or (status == 401 and code in ("unknown_error", "unauthorized")):
        return ReauthRequired(code, message)
    return OAuthError(code, message)


def _code_of(message: Any) -> str | None:
    """A code from a provider's short error message ("Invalid refresh token" -> "invalid_refresh_token")."""
    if not isinstance(message, str) or len(message) > 64:
        return None
    code = re.sub(r"[^a-z0-9]+", "_", message.strip().lower()).strip("_")
    return code or None


def _expiry(now: datetime, seconds: Any) -> datetime | None:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return None
    if value <= 0 or value != value or value > 10 * 365 * 86400:
        return None
    return now + timedelta(seconds=value)


def _scopes(scope: Any) -> str | None:
    if isinstance(scope, list):
        scope = " ".join(str(s) for s in scope)
    if not isinstance(scope, str):
        return None
    # GitHub and Slack separate granted scopes with commas; store them space-separated.
    return " ".join(s for s in re.split(r"[,\s]+", scope) if s) or None


def _without_tokens(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_tokens(v) for k, v in data.items() if k not in _SECRET_KEYS}
    if isinstance(data, list):
        return [_without_tokens(v) for v in data]
    return data
