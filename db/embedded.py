"""The embedded PostgreSQL (pgserver: real binaries from PyPI) under the project's .data/ folder.

``python -m db.embedded start`` starts it if needed, records its address in
``.data/embedded-db.url`` (read by every process when DATABASE_URL is unset) and prints it;
``stop`` stops it; ``url`` prints the address if it is running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mcp.paths import PROJECT_ROOT

log = logging.getLogger(__name__)


def data_dir(root: Path = PROJECT_ROOT) -> Path:
    return root / ".data" / "pg"


def url_file(root: Path = PROJECT_ROOT) -> Path:
    return root / ".data" / "embedded-db.url"


def start(pgdata: Path) -> str:
    """Start (or find running) the server in ``pgdata``; return its connection URL."""
    import pgserver  # imported here: heavy, and only this command needs it

    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this command; stop() ends it.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def stop(pgdata: Path) -> bool:
    """Stop the server in ``pgdata`` if it runs; True if one was stopped."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)
    except Exception as e:  # a stale pid file: nothing was running
        log.warning("pg_ctl stop: %s", e)
        return False
    return True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.embedded", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "url"])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: .data/pg in the project")
    args = parser.parse_args(argv)
    pgdata = (args.data_dir or data_dir()).resolve()
    record = url_file() if args.data_dir is None else pgdata.parent / "embedded-db.url"
    if args.command == "start":
        url = start(pgdata)
        record.write_text(url + "\n")
        print(url)
        return 0
    if args.command == "stop":
        stopped = stop(pgdata)
        record.unlink(missing_ok=True)
        print("stopped" if stopped else "not running")
        return 0
    if (pgdata / "postmaster.pid").exists() and record.exists():
        print(record.read_text().strip())
        return 0
    print("the embedded database is not running", file=sys.stderr)
    return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(sys.argv[1:]))
