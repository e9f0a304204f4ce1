"""scripts/install-systemd: the unit that brings the formation back after a reboot."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mcp.ops.systemd import main
from tests.support import ROOT


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of (key, value) pairs in order; keys may repeat (ExecStartPre, Environment)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        current.append((key, value))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


@pytest.fixture
def project(tmp_path):
    """A project folder whose .venv/bin holds the real python and honcho, so systemd can verify the unit."""
    root = tmp_path / "platform"
    (root / ".venv" / "bin").mkdir(parents=True)
    for tool in ("python", "honcho"):
        (root / ".venv" / "bin" / tool).symlink_to(Path(sys.executable).parent / tool)
    shutil.copy2(ROOT / "Procfile", root / "Procfile")
    (root / ".env").write_text("ADMIN_TOKEN=x\nCREDENTIALS_KEY=y\n")
    return root


def test_the_unit_runs_the_procfile_with_restarts_and_a_mixed_kill_mode(project, tmp_path, capsys):
    unit_path = tmp_path / "units" / "mcp-platform.service"
    assert main(["--root", str(project), "--output", str(unit_path)], {}) == 0
    printed = capsys.readouterr().out
    assert "systemctl daemon-reload && systemctl enable --now mcp-platform.service" in printed  # not run
    unit = parse_unit(unit_path.read_text())
    service, install = unit["Service"], unit["Install"]
    bin_ = project / ".venv" / "bin"
    assert values(service, "ExecStart") == [f"{bin_}/honcho -e /dev/null -f {project}/Procfile start"]
    assert values(service, "ExecStartPre") == [f"{bin_}/python -m db.embedded start", f"{bin_}/python -m db.migrate"]
    assert values(service, "ExecStopPost") == [f"{bin_}/python -m db.embedded stop"]
    expected = {"WorkingDirectory": str(project), "EnvironmentFile": f"{project}/.env", "Restart": "on-failure",
                "RestartSec": "5", "KillMode": "mixed", "KillSignal": "SIGTERM", "TimeoutStopSec": "15",
                "User": getpass.getuser()}
    assert {k: values(service, k) for k in expected} == {k: [v] for k, v in expected.items()}
    assert f"PATH={bin_}:/usr/local/bin:/usr/bin:/bin" in values(service, "Environment")
    assert f"MCP_PROJECT_ROOT={project}" in values(service, "Environment")
    assert values(unit["Unit"], "After") == ["network-online.target postgresql.service"]
    assert values(install, "WantedBy") == ["multi-user.target"]

    verify = shutil.which("systemd-analyze")
    if verify is None:
        pytest.skip("systemd-analyze is not installed; the unit's keys were checked, not systemd's verdict")
    done = subprocess.run([verify, "verify", str(unit_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_external_database_needs_no_embedded_one_and_print_writes_nothing(project, tmp_path, capsys):
    (project / ".env").write_text("ADMIN_TOKEN=x\nDATABASE_URL=postgresql://db.internal/mcp\n")
    assert main(["--root", str(project), "--print", "--user", "mcp", "--output", str(tmp_path / "x")], {}) == 0
    unit = parse_unit(capsys.readouterr().out)
    assert values(unit["Service"], "ExecStartPre") == [f"{project}/.venv/bin/python -m db.migrate"]
    assert values(unit["Service"], "ExecStopPost") == [] and values(unit["Service"], "User") == ["mcp"]
    assert not (tmp_path / "x").exists()


def test_the_script_warns_when_database_url_is_not_in_env_file(project, capsys):
    main(["--root", str(project), "--print"], {"DATABASE_URL": "postgresql://elsewhere/mcp"})
    assert "the unit reads only .env" in capsys.readouterr().err


def test_scripts_install_systemd_prints_help():
    done = subprocess.run([str(ROOT / "scripts" / "install-systemd"), "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ})
    assert done.returncode == 0 and "--enable" in done.stdout
