"""The simulators' OAuth endpoints speak each provider's wire format and enforce its token rules, so the
platform's OAuth tests can trust them: codes are single-use and PKCE-bound, GitHub and Slack rotate
single-use refresh tokens, Figma's refresh returns no refresh token, lifetimes and revocation hold."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.support import http

REDIRECT = "http://127.0.0.1:5000/oauth/cb/callback"
VERIFIER = "v" * 43


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def authorize(sim: Any, **params: str) -> tuple[int, dict[str, list[str]]]:
    """GET the authorize URL as a browser would, without following the redirect: (status, redirect query)."""
    query = {"client_id": sim.oauth_client_id, "redirect_uri": REDIRECT, "state": "st-1", "response_type": "code",
             **params}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(f"{sim.authorize_url}?{urlencode(query)}", timeout=10) as resp:
            return resp.status, {}
    except urllib.error.HTTPError as e:
        location = e.headers.get("Location", "")
        if location:
            assert location.startswith(REDIRECT + "?")
        return e.code, parse_qs(urlsplit(location).query)


def post_form(url: str, form: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    resp = http("POST", url, raw=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json",
                         **(headers or {})})
    try:
        return resp.status, resp.json
    except ValueError:
        return resp.status, {"raw": resp.body.decode()}


def client(sim: Any) -> dict[str, str]:
    return {"client_id": sim.oauth_client_id, "client_secret": sim.oauth_client_secret}


def exchange(sim: Any, code: str, verifier: str | None = VERIFIER, redirect_uri: str = REDIRECT
             ) -> tuple[int, dict[str, Any]]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **client(sim)}
    if verifier is not None:
        form["code_verifier"] = verifier
    return post_form(sim.token_url, form)


def refresh(sim: Any, refresh_token: str) -> tuple[int, dict[str, Any]]:
    return post_form(sim.refresh_url, {"grant_type": "refresh_token", "refresh_token": refresh_token, **client(sim)})


def token_error(sim: Any, status: int, body: dict[str, Any]) -> str | None:
    """The provider's error code in a token-endpoint answer, or None if it succeeded."""
    if sim.name == "figma":
        return None if status == 200 else body["message"]
    if sim.name == "slack":
        assert status == 200
        return None if body["ok"] else body["error"]
    assert status == 200
    return body.get("error")


def api_call(sim: Any, token: str) -> tuple[int, dict[str, Any]]:
    """Who the token is, through the API: (status, body)."""
    if sim.name == "github":
        resp = http("GET", sim.url + "/user", headers={"Authorization": f"Bearer {token}"})
    elif sim.name == "figma":
        resp = http("GET", sim.url + "/v1/me", headers={"Authorization": f"Bearer {token}"})
    else:
        resp = http("POST", sim.url + "/api/auth.test", headers={"Authorization": f"Bearer {token}"})
    return resp.status, resp.json


def api_ok(sim: Any, token: str) -> bool:
    status, body = api_call(sim, token)
    return status == 200 and body.get("ok", True) is True


@pytest.fixture(params=["figma", "github", "slack"])
def sim(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


@pytest.fixture(params=["github", "slack"])
def rotating(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def connect(sim: Any, account: str = "octocat") -> dict[str, Any]:
    sim.authorize_as = account
    status, query = authorize(sim, code_challenge=challenge(VERIFIER), code_challenge_method="S256")
    assert status == 302
    status, body = exchange(sim, query["code"][0])
    assert token_error(sim, status, body) is None, body
    return body


# The browser dance ---------------------------------------------------------------------------------------


def test_authorize_redirects_back_with_code_and_state(sim):
    status, query = authorize(sim, code_challenge=challenge(VERIFIER), code_challenge_method="S256")
    assert status == 302
    assert query["state"] == ["st-1"] and query["code"][0]


def test_authorize_rejects_unknown_client_and_missing_redirect(sim):
    status, query = authorize(sim, client_id="someone-else")
    assert status >= 400 and not query
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(f"{sim.authorize_url}?{urlencode({'client_id': sim.oauth_client_id})}", timeout=10)
    assert e.value.code >= 400 and not e.value.headers.get("Location")


def test_deny_next_redirects_with_access_denied(sim):
    sim.deny_next()
    status, query = authorize(sim)
    assert status == 302
    assert query["error"] == ["access_denied"] and query["state"] == ["st-1"] and "code" not in query
    status, query = authorize(sim)
    assert "code" in query


def test_code_exchange_wire_format(sim):
    body = connect(sim)
    if sim.name == "figma":
        assert set(body) == {"user_id", "user_id_string", "access_token", "token_type", "refresh_token", "expires_in"}
        assert body["expires_in"] == 90 * 24 * 3600 and body["user_id_string"] == str(body["user_id"])
    elif sim.name == "github":
        assert body["token_type"] == "bearer" and body["expires_in"] == 28800
        assert body["access_token"].startswith("ghu_") and body["refresh_token"].startswith("ghr_")
        assert body["refresh_token_expires_in"] == 15897600 and body["scope"] == ""
    else:
        assert body["ok"] is True and body["token_type"] == "bot" and body["expires_in"] == 43200
        assert body["access_token"].startswith("xoxe.xoxb-") and body["refresh_token"].startswith("xoxe-1-")
        assert body["team"]["name"] == "octocat" and body["enterprise"] is None and body["authed_user"]["id"]
    assert api_ok(sim, body["access_token"])


def test_account_lookup_names_the_user_who_authorized(sim):
    body = connect(sim, account="hubot")
    status, me = api_call(sim, body["access_token"])
    assert status == 200
    if sim.name == "github":
        assert me["login"] == "hubot"
    elif sim.name == "figma":
        assert me["handle"] == "hubot" and me["id"] == body["user_id_string"] and {"email", "img_url"} <= set(me)
    else:
        assert me["ok"] and me["team"] == "hubot" and me["team_id"] == body["team"]["id"]


def test_github_answers_form_encoded_without_accept_json(github):
    github.authorize_as = "octocat"
    _, query = authorize(github)
    resp = http("POST", github.token_url, raw=urlencode({"code": query["code"][0], "redirect_uri": REDIRECT,
                                                         **client(github)}).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200 and resp.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(resp.body.decode())["token_type"] == ["bearer"]


def test_figma_accepts_http_basic_client_auth(figma):
    _, query = authorize(figma)
    basic = base64.b64encode(f"{figma.oauth_client_id}:{figma.oauth_client_secret}".encode()).decode()
    status, body = post_form(figma.token_url, {"grant_type": "authorization_code", "code": query["code"][0],
                                               "redirect_uri": REDIRECT}, {"Authorization": f"Basic {basic}"})
    assert status == 200 and body["access_token"]


def test_code_is_single_use(sim):
    _, query = authorize(sim)
    code = query["code"][0]
    assert token_error(sim, *exchange(sim, code, verifier=None)) is None
    error = token_error(sim, *exchange(sim, code, verifier=None))
    assert error == {"figma": "Invalid code", "github": "bad_verification_code", "slack": "invalid_code"}[sim.name]
    assert [r.outcome for r in sim.token_requests][0] == "ok"


def test_pkce_verifier_must_match_the_challenge(sim):
    _, query = authorize(sim, code_challenge=challenge(VERIFIER), code_challenge_method="S256")
    code = query["code"][0]
    assert token_error(sim, *exchange(sim, code, verifier="w" * 43)) is not None
    assert token_error(sim, *exchange(sim, code, verifier=None)) is not None
    # A refused verifier consumes nothing: the right one still works.
    assert token_error(sim, *exchange(sim, code)) is None


def test_redirect_uri_must_match(sim):
    _, query = authorize(sim)
    assert token_error(sim, *exchange(sim, query["code"][0], verifier=None,
                                      redirect_uri="http://evil.example/cb")) is not None


def test_wrong_client_secret_is_refused(sim):
    _, query = authorize(sim)
    status, body = post_form(sim.token_url, {"grant_type": "authorization_code", "code": query["code"][0],
                                             "redirect_uri": REDIRECT, "client_id": sim.oauth_client_id,
                                             "client_secret": "nope"})
    error = token_error(sim, status, body)
    assert error == {"figma": "Invalid client credentials", "github": "incorrect_client_credentials",
                     "slack": "bad_client_secret"}[sim.name]


# Refresh -------------------------------------------------------------------------------------------------


def test_refresh_rotates_single_use_refresh_tokens(rotating):
    sim = rotating
    first = sim.issue_tokens("octocat")
    status, body = refresh(sim, first["refresh_token"])
    assert token_error(sim, status, body) is None
    assert body["refresh_token"] != first["refresh_token"] and body["access_token"] != first["access_token"]
    assert api_ok(sim, body["access_token"])
    assert sim.reused_refresh_tokens() == []
    # The old refresh token is spent: its second use fails with the provider's code and is on record.
    error = token_error(sim, *refresh(sim, first["refresh_token"]))
    assert error == {"github": "bad_refresh_token", "slack": "invalid_refresh_token"}[sim.name]
    assert sim.reused_refresh_tokens() == [first["refresh_token"]]
    assert sim.refresh_count() == 1 and sim.refresh_count("octocat") == 1 and sim.refresh_count("hubot") == 0
    # The new one still works.
    assert token_error(sim, *refresh(sim, body["refresh_token"])) is None


def test_github_refresh_invalidates_the_previous_access_token(github):
    first = github.issue_tokens("octocat")
    _, body = refresh(github, first["refresh_token"])
    status, err = api_call(github, first["access_token"])
    assert status == 401 and err == {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                                     "status": "401"}
    assert api_ok(github, body["access_token"])


def test_figma_refresh_returns_no_refresh_token_and_keeps_the_old_one(figma):
    first = figma.issue_tokens("octocat")
    for _ in range(2):
        status, body = refresh(figma, first["refresh_token"])
        assert status == 200 and set(body) == {"access_token", "token_type", "expires_in"}
        assert api_ok(figma, body["access_token"])
    assert figma.reused_refresh_tokens() == [] and figma.refresh_count() == 2
    assert figma.refresh_url.endswith("/v1/oauth/refresh") and figma.refresh_url != figma.token_url


def test_access_token_lifetime_is_respected(sim):
    sim.token_lifetime_s = 1
    tokens = sim.issue_tokens("octocat")
    assert tokens["expires_in"] == 1
    assert api_ok(sim, tokens["access_token"])
    time.sleep(1.5)
    status, body = api_call(sim, tokens["access_token"])
    expected = {"figma": (403, {"status": 403, "err": "Invalid token"}),
                "github": (401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                                 "status": "401"}),
                "slack": (200, {"ok": False, "error": "token_expired"})}[sim.name]
    assert (status, body) == expected
    # Refreshing brings the grant back.
    status, body = refresh(sim, tokens["refresh_token"])
    assert token_error(sim, status, body) is None and api_ok(sim, body["access_token"])


def test_github_refresh_token_lifetime_is_respected(github):
    github.refresh_lifetime_s = 1
    tokens = github.issue_tokens("octocat")
    assert tokens["refresh_token_expires_in"] == 1
    time.sleep(1.5)
    assert token_error(github, *refresh(github, tokens["refresh_token"])) == "bad_refresh_token"


def test_revoke_kills_refresh_and_access_tokens(sim):
    kept, gone = sim.issue_tokens("keeper"), sim.issue_tokens("leaver")
    sim.revoke(gone["refresh_token"])
    error = token_error(sim, *refresh(sim, gone["refresh_token"]))
    assert error == {"figma": "Invalid refresh token", "github": "bad_refresh_token",
                     "slack": "invalid_refresh_token"}[sim.name]
    status, body = api_call(sim, gone["access_token"])
    assert {"figma": status == 403, "github": status == 401,
            "slack": body == {"ok": False, "error": "token_revoked"}}[sim.name]
    assert api_ok(sim, kept["access_token"])
    assert sim.token_status(gone["access_token"]) == "revoked" and sim.token_status(kept["access_token"]) == "ok"
    assert sim.token_status("never-issued") == "unknown"
    sim.revoke()
    assert not api_ok(sim, kept["access_token"])
    assert token_error(sim, *refresh(sim, kept["refresh_token"])) is not None


def test_fail_token_endpoint_is_transient_and_consumes_nothing(sim):
    tokens = sim.issue_tokens("octocat")
    sim.fail_token_endpoint(status=503, times=2)
    for _ in range(2):
        status, _ = refresh(sim, tokens["refresh_token"])
        assert status == 503
    status, body = refresh(sim, tokens["refresh_token"])
    assert token_error(sim, status, body) is None
    assert [r.outcome for r in sim.token_requests] == ["http_503", "http_503", "ok"]
    assert sim.reused_refresh_tokens() == [] and sim.refresh_count() == 1


def test_existing_static_tokens_still_work(sim):
    token = {"figma": "figd_static", "github": "ghp_static", "slack": "xoxb-static"}[sim.name]
    sim.revoke()
    assert api_ok(sim, token)


def test_oauth_env_names_the_platform_variables(sim):
    env = sim.oauth_env()
    prefix = sim.name.upper()
    expected = {f"{prefix}_OAUTH_CLIENT_ID": "sim-client-id", f"{prefix}_OAUTH_CLIENT_SECRET": "sim-client-secret",
                f"{prefix}_OAUTH_AUTHORIZE_URL": sim.authorize_url, f"{prefix}_OAUTH_TOKEN_URL": sim.token_url}
    if sim.name == "figma":
        expected["FIGMA_OAUTH_REFRESH_URL"] = sim.refresh_url
    assert env == expected
    assert json.dumps(env)  # plain strings, ready for a process environment
