"""Authorizations in progress: the ``state`` parameter that binds a callback to one instance and service.

The state is random (``generate_token``, 48 characters) and is the capability that completes a connection, so
only its SHA-256 is stored. Consuming is ``DELETE ... RETURNING``: of two callbacks with the same state exactly
one gets the row. A state consumed after its 10 minutes is reported as ``expired`` (and still used up).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from authlib.common.security import generate_token

from mcp.tenancy.credentials import CredentialCipher, DecryptionError

STATE_TTL_S = 600
STATE_LENGTH = 48


@dataclass(frozen=True)
class PendingAuthorization:
    instance_id: uuid.UUID
    scopes: tuple[str, ...]
    code_verifier: str | None
    expired: bool

    def __repr__(self) -> str:  # the verifier must never reach a log through a repr
        return f"PendingAuthorization(scopes={self.scopes!r}, expired={self.expired!r})"


def _hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


async def create_state(conn: psycopg.AsyncConnection, cipher: CredentialCipher, *, instance_id: uuid.UUID,
                       service: str, scopes: Sequence[str], code_verifier: str | None) -> tuple[str, datetime]:
    """Record a new authorization for ``instance_id``; returns (state, expires_at)."""
    state = generate_token(STATE_LENGTH)
    verifier_enc = None if code_verifier is None else cipher.encrypt(instance_id, {"code_verifier": code_verifier})
    # Expired rows are of no use to anyone: clear them while we are here.
    await conn.execute("DELETE FROM oauth_states WHERE expires_at < now() - interval '1 hour'")
    cur = await conn.execute(
        "INSERT INTO oauth_states (state_hash, instance_id, service_name, verifier_enc, scopes, expires_at) "
        "VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING expires_at",
        (_hash(state), instance_id, service, verifier_enc, " ".join(scopes), STATE_TTL_S))
    row = await cur.fetchone()
    expires_at = row["expires_at"] if isinstance(row, dict) else row[0]  # type: ignore[index]
    return state, expires_at


async def consume_state(conn: psycopg.AsyncConnection, cipher: CredentialCipher, *, state: str,
                        service: str) -> PendingAuthorization | None:
    """Use up ``state`` for ``service``; None when it is unknown, already used, or for another service."""
    if not state or len(state) > 512:
        return None
    cur = await conn.execute(
        "DELETE FROM oauth_states WHERE state_hash = %s AND service_name = %s "
        "RETURNING instance_id, verifier_enc, scopes, expires_at < now() AS expired",
        (_hash(state), service))
    row = await cur.fetchone()
    if row is None:
        return None
    instance_id, verifier_enc, scopes, expired = (
        (row["instance_id"], row["verifier_enc"], row["scopes"], row["expired"]) if isinstance(row, dict)
        else row)  # type: ignore[misc]
    verifier = None
    if verifier_enc is not None:
        try:
            verifier = cipher.decrypt(instance_id, verifier_enc).get("code_verifier")
        except DecryptionError:
            return None  # written under a key no longer configured: as good as unknown
    return PendingAuthorization(instance_id=instance_id, scopes=tuple(scopes.split()), code_verifier=verifier,
                                expired=bool(expired))
