"""GitHub's OAuth: GitHub Apps (user tokens expire after 8 hours; refresh tokens after 6 months, single use)
and OAuth Apps (tokens that do not expire unless the owner opts in). Both use the same endpoints and PKCE."""

from mcp.oauth.provider import OAuthProvider

OAUTH = OAuthProvider(
    service="github",
    display_name="GitHub",
    authorize_url="https://github.com/login/oauth/authorize",
    token_url="https://github.com/login/oauth/access_token",
    # OAuth Apps honour these; GitHub Apps ignore scopes (their permissions are set on the app).
    scopes=("repo", "read:user"),
    scope_separator=" ",
    pkce=True,
    client_auth="body",
    account_path="/user",
    account_field="login",
    account_format="@{}",
    api_url_env="GITHUB_API_URL",
    api_default_url="https://api.github.com",
    # GitHub answers a dead, reused or expired refresh token with HTTP 200 {"error": "bad_refresh_token"}.
    reauth_errors=frozenset({"bad_refresh_token", "invalid_grant"}),
)
