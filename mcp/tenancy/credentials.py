"""Credentials at rest: AES-256-GCM, versioned, bound to the instance they belong to.

Stored form: ``v1:<key id>:<base64url, unpadded (12-byte nonce || ciphertext || 16-byte tag)>``. The key id
(first 8 hex digits of SHA-256 of the key) picks the decryption key, so older keys stay readable during a
rotation. The instance id is authenticated data: a ciphertext copied onto another instance's row does not
decrypt there. The cipher is ``cryptography``'s AESGCM; every way a stored value can fail to decrypt is
reported as ``DecryptionError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_AAD_PREFIX = b"mcp-platform/credentials/v1/"
# Only a well-formed key id is repeated in an error (errors are logged; the stored text could be anything).
_KEY_ID = re.compile(r"[0-9a-f]{8}")


class CredentialKeyError(ValueError):
    """A configured key is not 32 bytes of URL-safe base64."""


class DecryptionError(Exception):
    """A stored credential could not be decrypted (unknown key, tampered, or wrong instance)."""


def generate_key() -> str:
    """A new random key in the form CREDENTIALS_KEY expects."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


def parse_key(text: str, name: str = "CREDENTIALS_KEY") -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode() + b"=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise CredentialKeyError(f"{name} is not valid URL-safe base64") from None
    if len(raw) != KEY_BYTES:
        raise CredentialKeyError(f"{name} must decode to 32 bytes (got {len(raw)}); generate one with "
                        "python -c 'import mcp.tenancy.credentials as c; print(c.generate_key())'")
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class CredentialCipher:
    """Encrypts with the first key; decrypts with whichever configured key wrote the value.

    ``nonces(n)`` gives n fresh random bytes; it is a plain attribute so that tests can fix the nonce and
    compare output byte for byte. Anything but a CSPRNG there breaks GCM.
    """

    def __init__(self, keys: Sequence[bytes], nonces: Callable[[int], bytes] = os.urandom) -> None:
        if not keys:
            raise CredentialKeyError("at least one credentials key is required")
        if any(len(k) != KEY_BYTES for k in keys):
            raise CredentialKeyError("a credentials key must be 32 bytes (AES-256)")
        self._current_id = key_id(keys[0])
        self._aead = {key_id(k): AESGCM(k) for k in keys}
        self.nonces = nonces

    @property
    def current_key_id(self) -> str:
        return self._current_id

    @property
    def current_prefix(self) -> str:
        """How every value written now starts: anything else was written by another key or format."""
        return f"{FORMAT_VERSION}:{self._current_id}:"

    def encrypt(self, instance_id: uuid.UUID, credentials: dict[str, str]) -> str:
        nonce = self.nonces(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the nonce source gave {len(nonce)} bytes, not {NONCE_BYTES}")
        plaintext = json.dumps(credentials, separators=(",", ":")).encode()
        sealed = self._aead[self._current_id].encrypt(nonce, plaintext, _AAD_PREFIX + instance_id.bytes)
        blob = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return self.current_prefix + blob

    def decrypt(self, instance_id: uuid.UUID, stored: str) -> dict[str, str]:
        parts = stored.split(":", 2)
        if len(parts) != 3 or parts[0] != FORMAT_VERSION:
            raise DecryptionError("stored credentials are not in a known format")
        _, kid, blob = parts
        aead = self._aead.get(kid)
        if aead is None:
            named = f"key {kid}" if _KEY_ID.fullmatch(kid) else "a malformed key id"
            raise DecryptionError(f"stored credentials were written with {named}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        except (binascii.Error, ValueError):
            raise DecryptionError("stored credentials are not valid base64") from None
        if len(raw) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("stored credentials are truncated")
        try:
            plaintext = aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _AAD_PREFIX + instance_id.bytes)
        except (InvalidTag, ValueError, OverflowError):
            raise DecryptionError("stored credentials failed authentication") from None
        try:
            credentials = json.loads(plaintext)
        except ValueError:  # authentic but not JSON: nothing this code wrote
            raise DecryptionError("stored credentials are not a JSON object") from None
        if not isinstance(credentials, dict):
            raise DecryptionError("stored credentials are not a JSON object")
        return credentials
