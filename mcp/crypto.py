"""Credentials at rest: AES-256-GCM, versioned, bound to the instance they belong to.

Stored form: ``v1:<key id>:<base64url(nonce || ciphertext+tag)>``. The key id (first 8 hex digits
of SHA-256 of the key) picks the decryption key, so older keys stay readable during a rotation.
The instance id is authenticated data: a ciphertext copied onto another instance's row does not
decrypt there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import uuid
from collections.abc import Sequence

from mcp.aesgcm import AesGcmFactory, AuthenticationFailed

FORMAT_VERSION = "v1"
_AAD_PREFIX = b"mcp-platform/credentials/v1/"


class CredentialKeyError(ValueError):
    """A configured key is not 32 bytes of URL-safe base64."""


class DecryptionError(Exception):
    """A stored credential could not be decrypted (unknown key, tampered, or wrong instance)."""


def generate_key() -> str:
    """A new random key in the form CREDENTIALS_KEY expects."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def parse_key(text: str, name: str = "CREDENTIALS_KEY") -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode() + b"=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise CredentialKeyError(f"{name} is not valid URL-safe base64") from None
    if len(raw) != 32:
        raise CredentialKeyError(f"{name} must decode to 32 bytes (got {len(raw)}); generate one with "
                        "python -c 'import mcp.crypto as c; print(c.generate_key())'")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class CredentialCipher:
    """Encrypts with the first key; decrypts with whichever configured key wrote the value."""

    def __init__(self, keys: Sequence[bytes], aead: AesGcmFactory | None = None) -> None:
        if not keys:
            raise CredentialKeyError("at least one credentials key is required")
        make = aead if aead is not None else AesGcmFactory()
        self._current_id = key_id(keys[0])
        self._aead = {key_id(k): make(k) for k in keys}

    @property
    def current_key_id(self) -> str:
        return self._current_id

    def encrypt(self, instance_id: uuid.UUID, credentials: dict[str, str]) -> str:
        nonce = os.urandom(12)
        plaintext = json.dumps(credentials, separators=(",", ":")).encode()
        sealed = self._aead[self._current_id].encrypt(nonce, plaintext, _AAD_PREFIX + instance_id.bytes)
        blob = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT_VERSION}:{self._current_id}:{blob}"

    def decrypt(self, instance_id: uuid.UUID, stored: str) -> dict[str, str]:
        try:
            version, kid, blob = stored.split(":", 2)
        except ValueError:
            raise DecryptionError("stored credentials are not in a known format") from None
        if version != FORMAT_VERSION:
            raise DecryptionError(f"stored credentials use unknown format {version!r}")
        aead = self._aead.get(kid)
        if aead is None:
            raise DecryptionError(f"stored credentials were written with key {kid}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            plaintext = aead.decrypt(raw[:12], raw[12:], _AAD_PREFIX + instance_id.bytes)
        except (AuthenticationFailed, ValueError, binascii.Error):
            raise DecryptionError("stored credentials failed authentication") from None
        return json.loads(plaintext)

    def needs_rotation(self, stored: str) -> bool:
        return not stored.startswith(f"{FORMAT_VERSION}:{self._current_id}:")
