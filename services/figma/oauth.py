"""Figma's OAuth 2: tokens live about 90 days; /v1/oauth/refresh gives a new access token and no new refresh
token (the old one stays valid). Client credentials go in an HTTP Basic header, as Figma's docs ask."""

from mcp.oauth.provider import OAuthProvider

OAUTH = OAuthProvider(
    service="figma",
    display_name="Figma",
    authorize_url="https://www.figma.com/oauth",
    token_url="https://api.figma.com/v1/oauth/token",
    refresh_url="https://api.figma.com/v1/oauth/refresh",
    # What the tools use: files and nodes, comments (read and post), versions, and the user (the account label).
    # Team projects need projects:read, which Figma grants only to private (organisation) apps.
    scopes=("current_user:read", "file_content:read", "file_comments:read", "file_comments:write",
            "file_versions:read"),
    scope_separator=" ",
    pkce=True,
    client_auth="basic",
    account_path="/v1/me",
    account_field="handle",
    account_format="{}",
    api_url_env="FIGMA_API_URL",
    api_default_url="https://api.figma.com",
    # Figma answers {"error": true, "status": 400, "message": "Invalid refresh token"}; the client turns the
    # message into the code "invalid_refresh_token".
    reauth_errors=frozenset({"invalid_refresh_token", "invalid_grant"}),
)
