"""Re-encrypt every stored credential with the current key: ``python -m db.rotate_keys``.

Rotation: put the new key in CREDENTIALS_KEY and the old one(s) in CREDENTIALS_OLD_KEYS, restart
the processes (they read both), run this command, then drop the old key. Rows are re-encrypted in
small transactions (FOR UPDATE SKIP LOCKED), so services keep serving throughout; each change is
announced like any instance change, so caches refresh. Rows no configured key can read are
reported by id and left alone (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import dict_row

from mcp.config import ConfigError, load_settings
from mcp.tenancy.credentials import CredentialCipher, DecryptionError
from mcp.tenancy.database import resolve_database_url


@dataclass
class RotationReport:
    rotated: int = 0
    unreadable: list[str] = field(default_factory=list)


def rotate(conninfo: str, cipher: CredentialCipher, batch: int = 200) -> RotationReport:
    """Re-encrypt, batch by batch, every row not yet written with the current key."""
    report = RotationReport()
    skip: list[str] = []
    with psycopg.connect(conninfo, row_factory=dict_row, autocommit=True) as conn:
        while True:
            with conn.transaction():
                rows = conn.execute(
                    "SELECT id, credentials_enc FROM service_instances WHERE NOT starts_with(credentials_enc, %s) "
                    "AND NOT (id::text = ANY(%s)) ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (cipher.current_prefix, skip, batch)).fetchall()
                if not rows:
                    return report
                for row in rows:
                    try:
                        plain = cipher.decrypt(row["id"], row["credentials_enc"])
                    except DecryptionError:
                        report.unreadable.append(str(row["id"]))
                        skip.append(str(row["id"]))
                        continue
                    conn.execute("UPDATE service_instances SET credentials_enc = %s, updated_at = now() "
                                 "WHERE id = %s", (cipher.encrypt(row["id"], plain), row["id"]))
                    report.rotated += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.rotate_keys", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        cipher = settings.cipher()
    except ConfigError as e:
        print(f"rotate_keys: {e}", file=sys.stderr)
        return 2
    conninfo = args.database_url or resolve_database_url(settings.database_url, settings.embedded_url_file)
    if not conninfo:
        print("rotate_keys: no database: set DATABASE_URL or start the embedded one", file=sys.stderr)
        return 2
    report = rotate(conninfo, cipher)
    print(f"rotate_keys: {report.rotated} credential(s) re-encrypted with key {cipher.current_key_id}")
    if report.unreadable:
        print(f"rotate_keys: {len(report.unreadable)} row(s) no configured key can read: "
              f"{', '.join(report.unreadable)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
