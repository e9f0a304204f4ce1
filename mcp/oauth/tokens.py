"""Storing an instance's OAuth tokens: the one place that writes them.

Only secrets go in ``credentials_enc`` (encrypted, bound to the instance); what is not secret (expiries, granted
scopes, the account's name) goes in plain columns, so the API can find tokens due for refresh without
decrypting anything. The row's trigger NOTIFYs every process when the transaction commits.
"""

from __future__ import annotations

import uuid

import psycopg

from mcp.oauth.client import TokenSet
from mcp.tenancy.credentials import CredentialCipher


def token_credentials(tokens: TokenSet, keep_refresh_token: str | None) -> dict[str, str]:
    """What ``credentials_enc`` holds for ``tokens``: the new refresh token, else the one still valid."""
    creds = {"access_token": tokens.access_token}
    refresh = tokens.refresh_token or keep_refresh_token
    if refresh:
        creds["refresh_token"] = refresh
    return creds


async def store_tokens(conn: psycopg.AsyncConnection, cipher: CredentialCipher, instance_id: uuid.UUID,
                       tokens: TokenSet, *, keep_refresh_token: str | None, account: str | None = None,
                       activate: bool = False) -> None:
    """Write ``tokens`` onto the instance row (status 'active' too when ``activate``)."""
    enc = cipher.encrypt(instance_id, token_credentials(tokens, keep_refresh_token))
    await conn.execute(
        "UPDATE service_instances SET credentials_enc = %(enc)s, token_expires_at = %(exp)s, "
        "refresh_expires_at = CASE WHEN %(rexp)s::timestamptz IS NULL AND %(kept)s THEN refresh_expires_at "
        "ELSE %(rexp)s::timestamptz END, "
        "scopes = COALESCE(%(scopes)s, scopes), account = COALESCE(%(account)s, account), "
        "status = CASE WHEN %(activate)s THEN 'active' ELSE status END, updated_at = now() "
        "WHERE id = %(id)s",
        {"enc": enc, "exp": tokens.expires_at, "rexp": tokens.refresh_expires_at,
         "kept": tokens.refresh_token is None, "scopes": tokens.scopes, "account": account,
         "activate": activate, "id": instance_id})
