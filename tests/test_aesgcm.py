"""AES-256-GCM through libcrypto must be byte-for-byte what ``cryptography`` produces, and refuse
everything that is not authentic."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp.aesgcm import AesGcmFactory, AuthenticationFailed
from mcp.crypto import CredentialCipher, DecryptionError

LIBCRYPTO = AesGcmFactory()
pytestmark = pytest.mark.skipif(LIBCRYPTO.backend != "libcrypto", reason="no usable libcrypto on this machine")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       plaintext=st.binary(max_size=300), aad=st.binary(max_size=64))
def test_libcrypto_and_cryptography_agree_both_ways(key, nonce, plaintext, aad):
    ours, reference = LIBCRYPTO(key), AESGCM(key)
    sealed = ours.encrypt(nonce, plaintext, aad)
    assert sealed == reference.encrypt(nonce, plaintext, aad)
    assert ours.decrypt(nonce, sealed, aad) == plaintext


@pytest.mark.parametrize("tamper", ["ciphertext", "tag", "nonce", "aad", "key", "truncated", "empty"])
def test_anything_not_authentic_is_refused(tamper):
    key, nonce, aad = os.urandom(32), os.urandom(12), b"instance-a"
    sealed = AESGCM(key).encrypt(nonce, b'{"api_key":"figd_secret"}', aad)
    ours = LIBCRYPTO(key)
    if tamper == "ciphertext":
        sealed = bytes([sealed[0] ^ 1]) + sealed[1:]
    elif tamper == "tag":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 0x80])
    elif tamper == "nonce":
        nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    elif tamper == "aad":
        aad = b"instance-b"
    elif tamper == "key":
        ours = LIBCRYPTO(os.urandom(32))
    elif tamper == "truncated":
        sealed = sealed[:10]
    else:
        sealed = b""
    with pytest.raises(AuthenticationFailed):
        ours.decrypt(nonce, sealed, aad)


def test_wrong_sizes_are_refused_before_openssl_sees_them():
    with pytest.raises(ValueError):
        LIBCRYPTO(os.urandom(16))
    with pytest.raises(ValueError):
        LIBCRYPTO(os.urandom(32)).encrypt(os.urandom(8), b"x", b"")


def test_credentials_written_by_either_backend_read_with_the_other():
    key = os.urandom(32)
    instance = uuid.uuid4()
    ours = CredentialCipher([key])
    reference = CredentialCipher([key], aead=AesGcmFactory(prefer_libcrypto=False))
    assert reference.decrypt(instance, ours.encrypt(instance, {"api_key": "figd_1"})) == {"api_key": "figd_1"}
    assert ours.decrypt(instance, reference.encrypt(instance, {"api_key": "figd_2"})) == {"api_key": "figd_2"}
    with pytest.raises(DecryptionError):
        ours.decrypt(uuid.uuid4(), reference.encrypt(instance, {"api_key": "figd_3"}))


def test_a_service_process_does_not_load_cryptography():
    code = ("import sys, services.figma, mcp.app, mcp.crypto as c; "
            "c.CredentialCipher([bytes(32)]).encrypt(__import__('uuid').uuid4(), {'a': 'b'}); "
            "print(any(m == 'cryptography' or m.startswith('cryptography.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
