"""Write the systemd unit that runs the Procfile formation at boot and brings it back when it fails.

``python -m mcp.ops.systemd`` (``scripts/install-systemd``) writes ``/etc/systemd/system/mcp-platform.service``:
honcho runs the Procfile (every process under its supervisor) from the project root with the
environment of ``<root>/.env``; migrations run before each start, and the embedded PostgreSQL is
started first (and stopped after) when DATABASE_URL is not set. ``KillMode=mixed``: SIGTERM goes to
honcho alone, which stops every process group itself within its 5 s, then systemd SIGKILLs whatever
is left of the unit, so a stop or restart never leaves a process holding a port.
"""

from __future__ import annotations

import argparse
import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp.ops.envfile import read_env_file
from mcp.paths import PROJECT_ROOT

DEFAULT_UNIT_PATH = Path("/etc/systemd/system/mcp-platform.service")


@dataclass(frozen=True)
class UnitOptions:
    """What the unit depends on: where the project is, who runs it, which database it uses."""

    root: Path
    user: str
    embedded_database: bool

    @property
    def venv_bin(self) -> Path:
        return self.root / ".venv" / "bin"


def render_unit(o: UnitOptions) -> str:
    """The unit file's text."""
    python = o.venv_bin / "python"
    pre = [f"ExecStartPre={python} -m db.embedded start"] if o.embedded_database else []
    post = [f"ExecStopPost={python} -m db.embedded stop"] if o.embedded_database else []
    return "\n".join([
        "# Written by scripts/install-systemd; regenerate rather than edit (see scripts/install-systemd --help).",
        "[Unit]",
        "Description=MCP platform: the main API and every MCP service, under honcho and the supervisor",
        f"Documentation=file://{o.root}/README.md",
        "Wants=network-online.target",
        "After=network-online.target postgresql.service",
        "",
        "[Service]",
        "Type=simple",
        f"User={o.user}",
        f"WorkingDirectory={o.root}",
        f"EnvironmentFile={o.root}/.env",
        f"Environment=PATH={o.venv_bin}:/usr/local/bin:/usr/bin:/bin",
        f"Environment=MCP_PROJECT_ROOT={o.root}",
        "Environment=PYTHONUNBUFFERED=1",
        *pre,
        f"ExecStartPre={python} -m db.migrate",
        # -e /dev/null: the environment comes from EnvironmentFile above, exactly as the scripts load it.
        f"ExecStart={o.venv_bin}/honcho -e /dev/null -f {o.root}/Procfile start",
        *post,
        "Restart=on-failure",
        "RestartSec=5",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        # honcho SIGKILLs its processes 5 s after SIGTERM; this is the backstop beyond that.
        "TimeoutStopSec=15",
        "SyslogIdentifier=mcp-platform",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def enable_commands(unit_path: Path) -> list[list[str]]:
    """What makes systemd load the unit now and start it at every boot."""
    return [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", unit_path.name]]


def current_user() -> str:
    """The account running this command: the default for ``User=``."""
    return pwd.getpwuid(os.geteuid()).pw_name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/install-systemd",
        description="Write a systemd unit that runs the Procfile formation at boot and restarts it on failure.",
        epilog="Without --enable, the systemctl commands that load and start the unit are printed, not run. "
               "The unit reads its environment from <root>/.env only: put DATABASE_URL there if you use one.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_UNIT_PATH, help=f"default {DEFAULT_UNIT_PATH}")
    parser.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    parser.add_argument("--user", help="the account the services run as (default: the current user)")
    parser.add_argument("--root", type=Path, help="the project directory (default: this checkout)")
    parser.add_argument("--enable", action="store_true",
                        help="also run systemctl daemon-reload and systemctl enable --now")
    return parser


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """``scripts/install-systemd``: write (or print) the unit, then enable it or say how."""
    env = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    root = (args.root or Path(env.get("MCP_PROJECT_ROOT") or PROJECT_ROOT)).resolve()
    from_file = read_env_file(root / ".env")
    options = UnitOptions(root=root, user=args.user or current_user(),
                          embedded_database=not from_file.get("DATABASE_URL"))
    if env.get("DATABASE_URL") and not from_file.get("DATABASE_URL"):
        print("warning: DATABASE_URL is set here but not in .env, and the unit reads only .env; "
              "it will use the embedded database", file=sys.stderr)
    text = render_unit(options)
    if args.print:
        sys.stdout.write(text)
        return 0
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    except PermissionError:
        print(f"scripts/install-systemd: cannot write {args.output}: run it with sudo, or use --print or --output",
              file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    commands = enable_commands(args.output)
    if not args.enable:
        print("load it and start it now and at every boot with:")
        print("  " + " && ".join(" ".join(c) for c in commands))
        return 0
    for command in commands:
        print("+ " + " ".join(command))
        if subprocess.run(command).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
