"""The provider side of OAuth 2 shared by the simulators: authorization codes, grants, access and refresh
tokens, their lifetimes, rotation, revocation, and a record of every token-endpoint request.

Each simulator (figma, github, slack) speaks its provider's wire format on top of this; the control API
(``oauth_client_id``, ``token_lifetime_s``, ``deny_next()``, ``revoke()``, ``token_requests``,
``reused_refresh_tokens()`` ...) is the same on all three. Every piece of state is guarded by the
simulator's lock: the simulator answers in its own thread while tests read from the main thread.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

CLIENT_ID = "sim-client-id"
CLIENT_SECRET = "sim-client-secret"
CODE_LIFETIME_S = 600.0


@dataclass
class TokenRequest:
    """One token-endpoint request as the simulator saw it."""

    grant_type: str            # "authorization_code" or "refresh_token" (Figma's refresh URL records the latter)
    credential: str            # the code or refresh token sent ("" if none)
    outcome: str               # "ok", the provider's error code, or "http_<status>" for an injected failure
    at: float                  # time.time()
    account: str | None = None  # whose grant it concerned, when known


@dataclass
class Code:
    account: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    expires_at: float
    used: bool = False


@dataclass
class Grant:
    """One authorization: what a user approved, and the tokens it currently has."""

    account: str
    scope: str
    refresh_token: str | None
    refresh_expires_at: float | None
    access_tokens: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class AccessToken:
    grant: Grant
    expires_at: float | None
    superseded: bool = False   # rotation made it invalid before its expiry (GitHub)


@dataclass
class ProviderRules:
    """What differs between providers in the token life cycle."""

    access_prefix: str
    refresh_prefix: str
    default_access_lifetime_s: float | None
    default_refresh_lifetime_s: float | None
    rotate_refresh: bool                 # a refresh returns a new refresh token and kills the old one
    refresh_kills_old_access: bool       # after a refresh, the previous access token stops working


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class OAuthState:
    """Codes, grants and tokens of one simulated provider. Methods ending in ``_locked`` expect the lock held."""

    def __init__(self, rules: ProviderRules, lock: threading.Lock) -> None:
        self.rules = rules
        self.lock = lock
        self.clear()

    def clear(self) -> None:
        self.codes: dict[str, Code] = {}
        self.grants: list[Grant] = []
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, Grant] = {}
        self.used_refresh: set[str] = set()
        self.requests: list[TokenRequest] = []
        self.deny = 0
        self.failures: list[int] = []
        self.token_lifetime_s: float | None = None
        self.refresh_lifetime_s: float | None = None
        self.authorize_as = "octocat"
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET

    # Lifetimes ----------------------------------------------------------------------------------

    def access_lifetime(self) -> float | None:
        return self.token_lifetime_s if self.token_lifetime_s is not None else self.rules.default_access_lifetime_s

    def refresh_lifetime(self) -> float | None:
        if self.refresh_lifetime_s is not None:
            return self.refresh_lifetime_s
        return self.rules.default_refresh_lifetime_s

    @staticmethod
    def expires_in(lifetime: float | None) -> int | None:
        # Providers send whole seconds; a sub-second test lifetime still has to read as "expires soon".
        return None if lifetime is None else max(1, round(lifetime))

    # Issuing ------------------------------------------------------------------------------------

    def new_code_locked(self, *, client_id: str, redirect_uri: str, scope: str, code_challenge: str | None,
                        code_challenge_method: str | None) -> str:
        code = secrets.token_hex(10)
        self.codes[code] = Code(self.authorize_as, client_id, redirect_uri, scope, code_challenge,
                                code_challenge_method, time.time() + CODE_LIFETIME_S)
        return code

    def _new_access_locked(self, grant: Grant) -> tuple[str, float | None]:
        token = self.rules.access_prefix + secrets.token_urlsafe(24)
        lifetime = self.access_lifetime()
        entry = AccessToken(grant, None if lifetime is None else time.time() + lifetime)
        self.access[token] = entry
        grant.access_tokens.add(token)
        return token, lifetime

    def _new_refresh_locked(self, grant: Grant) -> str:
        token = self.rules.refresh_prefix + secrets.token_urlsafe(32)
        self.refresh[token] = grant
        grant.refresh_token = token
        lifetime = self.refresh_lifetime()
        grant.refresh_expires_at = None if lifetime is None else time.time() + lifetime
        return token

    def new_grant_locked(self, account: str, scope: str) -> dict[str, Any]:
        """A fresh grant: {"access_token", "refresh_token", "expires_in", "refresh_token_expires_in"}."""
        grant = Grant(account, scope, None, None)
        self.grants.append(grant)
        access, lifetime = self._new_access_locked(grant)
        refresh = self._new_refresh_locked(grant)
        return {"access_token": access, "refresh_token": refresh, "expires_in": self.expires_in(lifetime),
                "refresh_token_expires_in": self.expires_in(self.refresh_lifetime()), "account": account,
                "scope": scope}

    # Token endpoint logic -----------------------------------------------------------------------

    def take_failure_locked(self) -> int | None:
        return self.failures.pop(0) if self.failures else None

    def record_locked(self, grant_type: str, credential: str, outcome: str, account: str | None = None) -> None:
        self.requests.append(TokenRequest(grant_type, credential, outcome, time.time(), account))

    def redeem_code_locked(self, code: str, redirect_uri: str | None, verifier: str | None,
                           client_id: str) -> tuple[str, Code | None]:
        """("ok", code) or (reason, None); reason in unknown, used, expired, redirect_uri, pkce, client."""
        entry = self.codes.get(code)
        if entry is None:
            return "unknown", None
        if entry.used:
            return "used", None
        if entry.expires_at < time.time():
            return "expired", None
        if entry.client_id != client_id:
            return "client", None
        if redirect_uri is not None and redirect_uri != entry.redirect_uri:
            return "redirect_uri", None
        if entry.code_challenge is not None:
            method = (entry.code_challenge_method or "plain").upper()
            expected = s256(verifier) if verifier and method == "S256" else verifier
            if not verifier or expected != entry.code_challenge:
                return "pkce", None
        entry.used = True
        return "ok", entry

    def exchange_code_locked(self, code: str, redirect_uri: str | None, verifier: str | None,
                             client_id: str) -> tuple[str, Code | None, dict[str, Any]]:
        """A code for a new grant: ("ok", code, tokens), recorded, else (reason, None, {}) as ``redeem_code_locked``
        says (the provider records the failure in its own words)."""
        reason, entry = self.redeem_code_locked(code, redirect_uri, verifier, client_id)
        if entry is None:
            return reason, None, {}
        tokens = self.new_grant_locked(entry.account, entry.scope)
        self.record_locked("authorization_code", code, "ok", entry.account)
        return "ok", entry, tokens

    def use_refresh_locked(self, token: str) -> tuple[str, Grant | None, dict[str, Any]]:
        """Refresh a grant: ("ok", grant, tokens), recorded, else (reason, grant or None, {}) with reason in unknown,
        used, revoked, expired (the provider records the failure in its own words)."""
        grant = self.refresh.get(token)
        if grant is None:
            return "unknown", None, {}
        if token in self.used_refresh:
            return "used", grant, {}
        if grant.revoked:
            return "revoked", grant, {}
        if grant.refresh_expires_at is not None and grant.refresh_expires_at < time.time():
            return "expired", grant, {}
        if self.rules.refresh_kills_old_access:
            for old in grant.access_tokens:
                self.access[old].superseded = True
        access, lifetime = self._new_access_locked(grant)
        out: dict[str, Any] = {"access_token": access, "expires_in": self.expires_in(lifetime)}
        if self.rules.rotate_refresh:
            self.used_refresh.add(token)
            out["refresh_token"] = self._new_refresh_locked(grant)
            out["refresh_token_expires_in"] = self.expires_in(self.refresh_lifetime())
        self.record_locked("refresh_token", token, "ok", grant.account)
        return "ok", grant, out

    # Resource side ------------------------------------------------------------------------------

    def check_access(self, token: str) -> tuple[str, Grant | None]:
        """("unknown", None) for a token this provider never issued (the simulators' older rules apply),
        else ("ok" | "expired" | "revoked", grant)."""
        with self.lock:
            entry = self.access.get(token)
            if entry is None:
                return "unknown", None
            if entry.grant.revoked or entry.superseded:
                return "revoked", entry.grant
            if entry.expires_at is not None and entry.expires_at < time.time():
                return "expired", entry.grant
            return "ok", entry.grant


class OAuthMixin:
    """The control API of a simulated OAuth provider. A subclass sets ``oauth_rules``, the paths, the
    environment prefix, and adds its wire-format handlers (calling ``_oauth`` for the logic)."""

    oauth_rules: ProviderRules
    oauth_env_prefix: str = ""
    authorize_path: str = ""
    token_path: str = ""
    refresh_path: str | None = None
    single_use_refresh: bool = True
    default_scope: str = ""   # the scope of a grant when the authorize request names none
    _lock: threading.Lock
    url: str

    def _oauth_init(self) -> None:
        self._oauth = OAuthState(self.oauth_rules, self._lock)

    # Configuration --------------------------------------------------------------------------------

    @property
    def oauth_client_id(self) -> str:
        return self._oauth.client_id

    @oauth_client_id.setter
    def oauth_client_id(self, value: str) -> None:
        self._oauth.client_id = value

    @property
    def oauth_client_secret(self) -> str:
        return self._oauth.client_secret

    @oauth_client_secret.setter
    def oauth_client_secret(self, value: str) -> None:
        self._oauth.client_secret = value

    @property
    def token_lifetime_s(self) -> float | None:
        return self._oauth.token_lifetime_s

    @token_lifetime_s.setter
    def token_lifetime_s(self, value: float | None) -> None:
        with self._lock:
            self._oauth.token_lifetime_s = value

    @property
    def refresh_lifetime_s(self) -> float | None:
        return self._oauth.refresh_lifetime_s

    @refresh_lifetime_s.setter
    def refresh_lifetime_s(self, value: float | None) -> None:
        with self._lock:
            self._oauth.refresh_lifetime_s = value

    @property
    def authorize_as(self) -> str:
        """The account of the user who clicks "Allow" on the next authorize requests."""
        return self._oauth.authorize_as

    @authorize_as.setter
    def authorize_as(self, value: str) -> None:
        with self._lock:
            self._oauth.authorize_as = value

    @property
    def authorize_url(self) -> str:
        return self.url + self.authorize_path

    @property
    def token_url(self) -> str:
        return self.url + self.token_path

    @property
    def refresh_url(self) -> str:
        return self.url + (self.refresh_path or self.token_path)

    def oauth_env(self) -> dict[str, str]:
        p = self.oauth_env_prefix
        env = {f"{p}_OAUTH_CLIENT_ID": self.oauth_client_id, f"{p}_OAUTH_CLIENT_SECRET": self.oauth_client_secret,
               f"{p}_OAUTH_AUTHORIZE_URL": self.authorize_url, f"{p}_OAUTH_TOKEN_URL": self.token_url}
        if self.refresh_path:
            env[f"{p}_OAUTH_REFRESH_URL"] = self.refresh_url
        return env

    # Control ----------------------------------------------------------------------------------------

    def oauth_reset(self) -> None:
        with self._lock:
            self._oauth.clear()

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self.oauth_reset()

    def deny_next(self, times: int = 1) -> None:
        """The next ``times`` authorize requests come back as a user who clicked "Cancel"."""
        with self._lock:
            self._oauth.deny += times

    def fail_token_endpoint(self, status: int = 503, times: int = 1) -> None:
        """The next ``times`` token/refresh requests fail with this HTTP status, consuming nothing."""
        with self._lock:
            self._oauth.failures.extend([status] * times)

    def issue_tokens(self, account: str = "octocat", scope: str | None = None) -> dict[str, Any]:
        """A grant minted directly, as if ``account`` had completed the browser dance."""
        with self._lock:
            return self._oauth.new_grant_locked(account, scope if scope is not None else self.default_scope)

    def revoke(self, refresh_token: str | None = None) -> None:
        """Revoke one grant (found by any refresh token it had) or, with no argument, every grant: its refresh
        token is refused from now on and its access tokens stop working."""
        with self._lock:
            if refresh_token is None:
                grants = list(self._oauth.grants)
            else:
                grant = self._oauth.refresh.get(refresh_token)
                if grant is None:
                    raise KeyError("no grant has this refresh token")
                grants = [grant]
            for grant in grants:
                grant.revoked = True

    def expire_access_tokens(self) -> None:
        """Every issued access token is expired from now on (as if its lifetime had passed)."""
        with self._lock:
            past = time.time() - 1
            for entry in self._oauth.access.values():
                entry.expires_at = past

    # Records ----------------------------------------------------------------------------------------

    @property
    def token_requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._oauth.requests)

    def reused_refresh_tokens(self) -> list[str]:
        """Single-use refresh tokens sent more than once (injected failures excluded: they consume nothing)."""
        if not self.single_use_refresh:
            return []
        with self._lock:
            sent = Counter(r.credential for r in self._oauth.requests
                           if r.grant_type == "refresh_token" and not r.outcome.startswith("http_"))
        return [token for token, n in sent.items() if n > 1]

    def refresh_count(self, account: str | None = None) -> int:
        """Successful refreshes (of this account's grants, if given)."""
        with self._lock:
            return sum(1 for r in self._oauth.requests if r.grant_type == "refresh_token" and r.outcome == "ok"
                       and (account is None or r.account == account))

    def token_status(self, access_token: str) -> str:
        """"ok", "expired", "revoked" (revoked grant, or superseded by a refresh) or "unknown" (never issued)."""
        return self._oauth.check_access(access_token)[0]

    def grant_scope(self, access_token: str) -> str | None:
        with self._lock:
            entry = self._oauth.access.get(access_token)
            return entry.grant.scope if entry else None

    # Shared handler pieces --------------------------------------------------------------------------

    async def _authorize(self, request: web.Request, missing: Callable[[str], web.Response],
                         deny_params: dict[str, str]) -> web.Response:
        """The authorize page of a user who clicks "Allow" (or "Cancel" after ``deny_next()``)."""
        q = request.query
        client_id, redirect_uri, state = q.get("client_id", ""), q.get("redirect_uri", ""), q.get("state")
        if not client_id or client_id != self.oauth_client_id:
            return missing("client_id")
        if not redirect_uri:
            return missing("redirect_uri")
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        extra = {"state": state} if state is not None else {}
        with self._lock:
            if self._oauth.deny:
                self._oauth.deny -= 1
                raise web.HTTPFound(with_query(redirect_uri, {**deny_params, **extra}))
            code = self._oauth.new_code_locked(client_id=client_id, redirect_uri=redirect_uri,
                                               scope=self._requested_scope(request), code_challenge=challenge,
                                               code_challenge_method=method)
        raise web.HTTPFound(with_query(redirect_uri, {"code": code, **extra}))

    def _requested_scope(self, request: web.Request) -> str:
        return request.query.get("scope", self.default_scope)


async def form_of(request: web.Request) -> dict[str, str]:
    """A token request's parameters: the form body, plus the query string (GitHub documents them as query
    parameters and accepts both)."""
    args = dict(request.query)
    if request.body_exists:
        raw = await request.read()  # cached by aiohttp: the recording middleware read it first
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            if isinstance(body, dict):
                args.update({k: str(v) for k, v in body.items()})
        else:
            args.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return args


def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def client_credentials(request: web.Request, args: dict[str, str]) -> tuple[str, str]:
    """(client_id, client_secret) from HTTP Basic or, failing that, the form."""
    basic = basic_credentials(request)
    if basic is not None:
        return basic
    return args.get("client_id", ""), args.get("client_secret", "")
