"""AES-256-GCM from the OpenSSL the interpreter has already loaded, else from ``cryptography``.

Python's ``ssl`` module (which asyncio, Tornado and aiohttp import anyway) links OpenSSL's
libcrypto. Calling its EVP AES-GCM functions through ctypes costs no new library; importing
``cryptography`` for the same primitive costs every process about 6.6 MB of resident memory (its
own statically linked OpenSSL), which is most of the headroom a service process has under its
60 MB budget. Where that libcrypto cannot be found (not Linux, an unusual build) ``cryptography``
is used instead; both produce the same bytes (``tests/test_aesgcm.py`` checks one against the
other).

Only what credentials need: 32-byte keys, 12-byte nonces, 16-byte tags appended to the
ciphertext (the layout ``cryptography``'s AESGCM uses).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
from pathlib import Path
from typing import Protocol

_EVP_CTRL_GCM_SET_IVLEN = 0x9
_EVP_CTRL_GCM_GET_TAG = 0x10
_EVP_CTRL_GCM_SET_TAG = 0x11
_TAG = 16
_NONCE = 12


class AuthenticationFailed(ValueError):
    """The ciphertext, its tag, the nonce, the key or the associated data do not match."""


class Aead(Protocol):
    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes: ...

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes: ...


def _loaded_libcrypto() -> str | None:
    """The libcrypto this process already has mapped (through ssl), by path; None if not known."""
    assert ssl.OPENSSL_VERSION  # the import is what maps it
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.rsplit(" ", 1)[-1]
            if "/libcrypto" in path and ".so" in path:
                return path
    except OSError:
        pass
    return None


def _bind(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    vp, cp, ip, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int
    signatures = {
        "EVP_CIPHER_CTX_new": (vp, []),
        "EVP_CIPHER_CTX_free": (None, [vp]),
        "EVP_aes_256_gcm": (vp, []),
        "EVP_EncryptInit_ex": (i, [vp, vp, vp, cp, cp]),
        "EVP_DecryptInit_ex": (i, [vp, vp, vp, cp, cp]),
        "EVP_EncryptUpdate": (i, [vp, vp, ip, cp, i]),
        "EVP_DecryptUpdate": (i, [vp, vp, ip, cp, i]),
        "EVP_EncryptFinal_ex": (i, [vp, vp, ip]),
        "EVP_DecryptFinal_ex": (i, [vp, vp, ip]),
        "EVP_CIPHER_CTX_ctrl": (i, [vp, i, i, vp]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)  # AttributeError: not an OpenSSL 1.1+/3.x libcrypto
        fn.restype, fn.argtypes = restype, argtypes
    return lib


class LibcryptoAesGcm:
    """AES-256-GCM with one key, through OpenSSL's EVP interface. Every return code is checked."""

    def __init__(self, lib: ctypes.CDLL, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256-GCM needs a 32-byte key")
        self._lib = lib
        self._key = key

    def _run(self, encrypt: bool, nonce: bytes, data: bytes, aad: bytes, tag: bytes | None) -> bytes:
        if len(nonce) != _NONCE:
            raise ValueError("the nonce must be 12 bytes")
        lib = self._lib
        ctx = lib.EVP_CIPHER_CTX_new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        init, update = ((lib.EVP_EncryptInit_ex, lib.EVP_EncryptUpdate) if encrypt
                        else (lib.EVP_DecryptInit_ex, lib.EVP_DecryptUpdate))
        final = lib.EVP_EncryptFinal_ex if encrypt else lib.EVP_DecryptFinal_ex
        try:
            n = ctypes.c_int(0)
            out = ctypes.create_string_buffer(len(data) + _TAG)
            ok = (init(ctx, lib.EVP_aes_256_gcm(), None, None, None) == 1
                  and lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_IVLEN, _NONCE, None) == 1
                  and init(ctx, None, None, self._key, nonce) == 1
                  and (not aad or update(ctx, None, ctypes.byref(n), aad, len(aad)) == 1)
                  and update(ctx, out, ctypes.byref(n), data, len(data)) == 1)
            if not ok:
                raise RuntimeError("OpenSSL refused an AES-GCM step")
            written = n.value
            if encrypt:
                if final(ctx, ctypes.byref(out, written), ctypes.byref(n)) != 1:
                    raise RuntimeError("OpenSSL refused to finish AES-GCM encryption")
                written += n.value
                tag_out = ctypes.create_string_buffer(_TAG)
                if lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_GET_TAG, _TAG, tag_out) != 1:
                    raise RuntimeError("OpenSSL refused to give the GCM tag")
                return out.raw[:written] + tag_out.raw
            assert tag is not None
            tag_in = ctypes.create_string_buffer(tag, _TAG)
            if lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_GCM_SET_TAG, _TAG, tag_in) != 1:
                raise RuntimeError("OpenSSL refused the GCM tag")
            # The tag is verified here: anything but 1 means the message is not authentic.
            if final(ctx, ctypes.byref(out, written), ctypes.byref(n)) != 1:
                raise AuthenticationFailed("authentication failed")
            return out.raw[:written + n.value]
        finally:
            lib.EVP_CIPHER_CTX_free(ctx)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._run(True, nonce, plaintext, aad, None)

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < _TAG:
            raise AuthenticationFailed("the ciphertext is shorter than its tag")
        return self._run(False, nonce, sealed[:-_TAG], aad, sealed[-_TAG:])


class CryptographyAesGcm:
    """The same through ``cryptography`` (imported only when this is used)."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise AuthenticationFailed("authentication failed") from None


def _libcrypto() -> ctypes.CDLL | None:
    for path in (_loaded_libcrypto(), ctypes.util.find_library("crypto")):
        if path:
            try:
                return _bind(path)
            except (OSError, AttributeError):
                continue
    return None


class AesGcmFactory:
    """Makes AES-256-GCM objects, from libcrypto when it is usable (decided once, when created)."""

    def __init__(self, prefer_libcrypto: bool = True) -> None:
        self._lib = _libcrypto() if prefer_libcrypto else None

    @property
    def backend(self) -> str:
        return "libcrypto" if self._lib is not None else "cryptography"

    def __call__(self, key: bytes) -> Aead:
        if self._lib is not None:
            return LibcryptoAesGcm(self._lib, key)
        return CryptographyAesGcm(key)
