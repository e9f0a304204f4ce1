"""Slack's OAuth v2 (bot tokens). With token rotation on, access tokens expire after 12 hours and each refresh
token works once (oauth.v2.access with grant_type=refresh_token returns a new one)."""

from mcp.oauth.provider import OAuthProvider

OAUTH = OAuthProvider(
    service="slack",
    display_name="Slack",
    authorize_url="https://slack.com/oauth/v2/authorize",
    token_url="https://slack.com/api/oauth.v2.access",
    # Bot scopes for the tools: channels and private channels (list, history, threads), posting and reactions,
    # users and profiles. search.messages needs a user token (user_scope=search:read), which this does not ask.
    scopes=("channels:read", "channels:history", "groups:read", "groups:history", "chat:write",
            "reactions:write", "users:read", "users.profile:read"),
    scope_separator=",",
    # Slack's PKCE makes the app a public client (a one-way switch in its settings); a server-side app with a
    # client secret does not use it.
    pkce=False,
    client_auth="basic",  # Slack's docs prefer HTTP Basic to client_id/client_secret in the form
    account_path=None,
    account_field="team.name",  # from the token response: {"team": {"id", "name"}}
    account_format="{}",
    api_url_env="SLACK_API_URL",
    api_default_url="https://slack.com/api",
    reauth_errors=frozenset({"invalid_refresh_token", "invalid_grant", "token_revoked", "token_expired"}),
)
