"""Credentials at rest: what the old ctypes binding of OpenSSL stored (tests/fixtures/ciphertexts.json) still
decrypts, byte for byte the same is written, and every stored value that is not authentic is refused with
DecryptionError and nothing else."""

from __future__ import annotations

import ast
import base64
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.rotate_keys import rotate
from mcp.config import load_settings
from mcp.tenancy.credentials import CredentialCipher, CredentialKeyError, DecryptionError, key_id, parse_key
from tests.support import ROOT, http

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "ciphertexts.json").read_text(encoding="utf-8"))
KEYS = {name: parse_key(text) for name, text in FIXTURES["keys"].items()}
CASES = {case["name"]: case for case in FIXTURES["cases"]}
ALL_KEYS = CredentialCipher([KEYS["current"], KEYS["old"], KEYS["older"]])


def unpack(stored: str) -> tuple[str, str, bytes]:
    version, kid, blob = stored.split(":", 2)
    return version, kid, base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))


def pack(version: str, kid: str, raw: bytes) -> str:
    return f"{version}:{kid}:{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


def test_the_fixtures_cover_every_key_and_the_layout_they_claim():
    assert {c["key"] for c in CASES.values()} == {"current", "old", "older"} and len(CASES) >= 10
    for case in CASES.values():
        version, kid, raw = unpack(case["stored"])
        assert version == "v1" and kid == case["key_id"] == key_id(KEYS[case["key"]])
        assert raw[:12].hex() == case["nonce_hex"]
        assert len(raw) == 12 + len(json.dumps(case["plaintext"], separators=(",", ":")).encode()) + 16


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_credential_the_old_binding_stored_decrypts(name):
    case = CASES[name]
    instance = uuid.UUID(case["instance_id"])
    assert ALL_KEYS.decrypt(instance, case["stored"]) == case["plaintext"]
    assert CredentialCipher([KEYS[case["key"]]]).decrypt(instance, case["stored"]) == case["plaintext"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_same_nonce_writes_the_same_bytes_as_the_old_binding(name):
    case = CASES[name]
    nonce = bytes.fromhex(case["nonce_hex"])
    cipher = CredentialCipher([KEYS[case["key"]]], nonces=lambda n: nonce[:n])
    assert cipher.encrypt(uuid.UUID(case["instance_id"]), case["plaintext"]) == case["stored"]


def test_old_keys_from_the_environment_read_what_they_wrote_and_only_the_current_key_writes():
    settings_ = load_settings({"CREDENTIALS_KEY": FIXTURES["keys"]["current"],
                               "CREDENTIALS_OLD_KEYS": f"{FIXTURES['keys']['old']},{FIXTURES['keys']['older']}"})
    cipher = settings_.cipher()
    for case in CASES.values():
        assert cipher.decrypt(uuid.UUID(case["instance_id"]), case["stored"]) == case["plaintext"]
    instance = uuid.uuid4()
    rewritten = cipher.encrypt(instance, CASES["old key, figma token"]["plaintext"])
    assert rewritten.startswith(cipher.current_prefix) and cipher.current_prefix == f"v1:{key_id(KEYS['current'])}:"
    # Once the old key is dropped, what it wrote is refused, naming the key id that is missing.
    only_current = CredentialCipher([KEYS["current"]])
    old = CASES["old key, unicode"]
    with pytest.raises(DecryptionError, match=f"key {old['key_id']}"):
        only_current.decrypt(uuid.UUID(old["instance_id"]), old["stored"])
    assert only_current.decrypt(instance, rewritten) == CASES["old key, figma token"]["plaintext"]


credentials = st.dictionaries(st.text(max_size=40), st.text(max_size=300), max_size=6)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(plaintext=credentials, instance=st.uuids())
def test_round_trip_with_fresh_nonces(plaintext, instance):
    a, b = ALL_KEYS.encrypt(instance, plaintext), ALL_KEYS.encrypt(instance, plaintext)
    assert a != b  # a fresh nonce each time
    assert ALL_KEYS.decrypt(instance, a) == plaintext == ALL_KEYS.decrypt(instance, b)


def _flip(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1:]


def tampered(how: str) -> tuple[uuid.UUID, str]:
    """The 'unicode' fixture spoilt one way; every one of these must be refused."""
    case = CASES["unicode"]
    instance, stored = uuid.UUID(case["instance_id"]), case["stored"]
    version, kid, raw = unpack(stored)
    old_kid = CASES["old key, figma token"]["key_id"]
    return {
        "nonce": (instance, pack(version, kid, _flip(raw, 0))),
        "nonce, last byte": (instance, pack(version, kid, _flip(raw, 11))),
        "ciphertext": (instance, pack(version, kid, _flip(raw, 12))),
        "ciphertext, last byte": (instance, pack(version, kid, _flip(raw, len(raw) - 17))),
        "tag": (instance, pack(version, kid, _flip(raw, len(raw) - 16))),
        "tag, last byte": (instance, pack(version, kid, _flip(raw, len(raw) - 1))),
        "tag dropped": (instance, pack(version, kid, raw[:-16])),
        "truncated by one": (instance, pack(version, kid, raw[:-1])),
        "one byte more": (instance, pack(version, kid, raw + b"\x00")),
        "nonce only": (instance, pack(version, kid, raw[:12])),
        "nonce and tag only": (instance, pack(version, kid, raw[:12] + raw[-16:])),
        "short nonce": (instance, pack(version, kid, raw[:7])),
        "empty blob": (instance, f"{version}:{kid}:"),
        "another instance": (uuid.uuid4(), stored),
        "another configured key": (instance, pack(version, old_kid, raw)),
        "unknown key": (instance, pack(version, "00000000", raw)),
        "wrong version": (instance, pack("v2", kid, raw)),
        "no version": (instance, f"{kid}:{stored.split(':', 2)[2]}"),
        "empty": (instance, ""),
        "not base64": (instance, f"{version}:{kid}:@@@@"),
        "bad padding": (instance, f"{version}:{kid}:A"),
        "non-ascii": (instance, f"{version}:{kid}:{stored.split(':', 2)[2][:-1]}é"),
    }[how]


TAMPERINGS = ["nonce", "nonce, last byte", "ciphertext", "ciphertext, last byte", "tag", "tag, last byte",
              "tag dropped", "truncated by one", "one byte more", "nonce only", "nonce and tag only", "short nonce",
              "empty blob", "another instance", "another configured key", "unknown key", "wrong version",
              "no version", "empty", "not base64", "bad padding", "non-ascii"]


@pytest.mark.parametrize("how", TAMPERINGS)
def test_anything_not_authentic_is_a_decryption_error(how):
    instance, stored = tampered(how)
    with pytest.raises(DecryptionError) as raised:  # exactly ours: not InvalidTag, ValueError or RuntimeError
        ALL_KEYS.decrypt(instance, stored)
    assert type(raised.value) is DecryptionError


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_any_single_bit_flipped_anywhere_is_refused(data):
    case = CASES[data.draw(st.sampled_from(sorted(CASES)))]
    version, kid, raw = unpack(case["stored"])
    index = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    spoilt = raw[:index] + bytes([raw[index] ^ (1 << bit)]) + raw[index + 1:]
    with pytest.raises(DecryptionError):
        ALL_KEYS.decrypt(uuid.UUID(case["instance_id"]), pack(version, kid, spoilt))


@pytest.mark.parametrize("stored", ["figd_PLANTED_plaintext_token", "ghp_PLANTED:secret:part",
                                    "v1:figd_PLANTED_in_the_key_id:AAAA", "PLANTED:61a06560:AAAA"])
def test_an_error_never_repeats_what_was_stored(stored):
    """Errors are logged; a value that is not ours (a token pasted into the column) must not reach the log."""
    with pytest.raises(DecryptionError) as raised:
        ALL_KEYS.decrypt(uuid.uuid4(), stored)
    assert "PLANTED" not in str(raised.value)


def test_authentic_values_that_are_not_a_json_object_are_a_decryption_error():
    instance = uuid.uuid4()
    cipher = CredentialCipher([KEYS["current"]])
    for not_an_object in (["a", "b"], "text", 7):
        stored = cipher.encrypt(instance, not_an_object)  # type: ignore[arg-type]
        with pytest.raises(DecryptionError):
            cipher.decrypt(instance, stored)


def test_keys_and_nonces_of_the_wrong_size_are_refused():
    with pytest.raises(CredentialKeyError):
        CredentialCipher([bytes(16)])
    with pytest.raises(CredentialKeyError):
        CredentialCipher([])
    with pytest.raises(ValueError):
        CredentialCipher([bytes(32)], nonces=lambda n: bytes(8)).encrypt(uuid.uuid4(), {})


# Nothing here may load a C library by hand: credential encryption is cryptography's, not a binding of ours,
# and the supervisor's prctl(PR_SET_PDEATHSIG) is made by util-linux's setpriv.
FFI_MODULES = {"ctypes", "cffi", "_ctypes"}
ALLOWED_FFI: set[str] = set()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute))
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in {"__import__", "import_module"}
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_no_module_of_the_project_binds_a_c_library_by_hand():
    sources = [p for d in ("mcp", "services", "db") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(sources) > 20
    binders = {p.relative_to(ROOT).as_posix() for p in sources if _imports(p) & FFI_MODULES}
    assert binders <= ALLOWED_FFI, f"modules binding C libraries by hand: {sorted(binders - ALLOWED_FFI)}"
    mentions = [p.relative_to(ROOT).as_posix() for p in sources
                if any(word in p.read_text(encoding="utf-8") for word in ("libcrypto", "EVP_"))]
    assert mentions == []


def test_a_service_serves_credentials_the_old_binding_stored_under_the_current_and_an_old_key(
        spawn, figma, database_url):
    current, old = CASES["figma token"], CASES["old key, figma token"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('fixtures@example.com')")
        for case in (current, old):
            conn.execute("INSERT INTO service_instances (id, user_id, service_name, credentials_enc) "
                         "SELECT %s, id, 'figma', %s FROM users WHERE email = 'fixtures@example.com'",
                         (case["instance_id"], case["stored"]))
    keys = {"CREDENTIALS_KEY": FIXTURES["keys"]["current"], "CREDENTIALS_OLD_KEYS": FIXTURES["keys"]["old"]}
    service = spawn("services.figma", "FIGMA_PORT", keys)
    for case in (current, old):
        result = http("POST", f"{service.url}/{case['instance_id']}/mcp/call", {"name": "get_me"})
        assert result.status == 200 and result.json["isError"] is False, result.body
    tokens = [current["plaintext"]["api_key"], old["plaintext"]["api_key"]]
    assert [r.header("X-Figma-Token") for r in figma.recorded("/v1/me")] == tokens
    # Rotation rewrites only the row the old key wrote, with the current key.
    report = rotate(database_url, load_settings(keys).cipher())
    assert report.rotated == 1 and report.unreadable == []
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT id::text, credentials_enc FROM service_instances").fetchall())
    assert rows[current["instance_id"]] == current["stored"]
    assert rows[old["instance_id"]].startswith(CASES["figma token"]["stored"][:12])
    assert CredentialCipher([KEYS["current"]]).decrypt(uuid.UUID(old["instance_id"]), rows[old["instance_id"]]) \
        == old["plaintext"]
