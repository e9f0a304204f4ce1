"""The supervised child: started in its own process group, tied to the supervisor's life, signalled as a group.

The child must not outlive its supervisor (a SIGKILLed supervisor cannot stop it, and honcho would
start a second copy next time). Linux does this with prctl(PR_SET_PDEATHSIG), which must be called in
the child between fork and exec. util-linux's ``setpriv --pdeathsig KILL`` makes exactly that call and
then execs the command, so the child keeps its pid and command line; it ships with every mainstream
Linux distribution (util-linux 2.33 or later). Without it (another system, a minimal image) the child
runs unbound, the supervisor says so once, and ``scripts/stop-services`` still finds leftovers by their
MCP_PROJECT_ROOT marker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The exit status a service uses for "address already in use" (mcp.server.serve.EXIT_PORT_IN_USE), spelled
# out so the supervisor does not load Tornado or service code.
EXIT_PORT_IN_USE = 98


@dataclass(frozen=True)
class RunResult:
    """How one run of the child ended: ``exited`` by itself, ``stopped`` on request, or killed as ``hung``."""

    ending: str
    returncode: int
    uptime: float


def parent_death_prefix() -> list[str]:
    """The words that make the command SIGKILLed when the supervisor dies; empty where that is not possible."""
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def executable(command: Sequence[str], path: str | None = None) -> str:
    """The program ``command`` runs; FileNotFoundError/PermissionError when it cannot be run.

    Checked here because ``setpriv`` would otherwise report a missing program as an ordinary exit,
    which the restart loop would retry.
    """
    program = command[0]
    if os.sep in program:
        if not os.path.isfile(program):
            raise FileNotFoundError(2, "No such file or directory", program)
        if not os.access(program, os.X_OK):
            raise PermissionError(13, "Permission denied", program)
        return program
    found = shutil.which(program, path=path)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", program)
    return found


def child_environment(environ: Mapping[str, str], interpreter: str = sys.executable) -> dict[str, str]:
    """Our environment with our interpreter's folder first on PATH.

    A Procfile's ``python`` (and ``watchfiles``, and the ``python`` watchfiles runs) then means the
    interpreter the supervisor runs on, the one with the project installed, however honcho was started:
    ``.venv/bin/honcho start`` without an activated virtualenv has the system's python first on PATH.
    """
    env = dict(environ)
    folder = os.path.dirname(interpreter)
    if folder:
        rest = [entry for entry in env.get("PATH", os.defpath).split(os.pathsep) if entry and entry != folder]
        env["PATH"] = os.pathsep.join([folder, *rest])
    return env


async def spawn_child(command: Sequence[str], extra_env: Mapping[str, str] | None = None
                      ) -> asyncio.subprocess.Process:
    """Start ``command`` in its own session with piped output, bound to our lifetime (see the module doc);
    ``extra_env`` is added to its environment.

    Must be called from the main thread: PDEATHSIG fires when the *thread* that forked exits.
    """
    env = child_environment(os.environ) | dict(extra_env or {})
    executable(command, env.get("PATH"))
    return await asyncio.create_subprocess_exec(
        *parent_death_prefix(), *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError as e:
        log.warning("cannot send %s to process group %d: %s", sig.name, pgid, e)
        return False
    return True


def describe_exit(returncode: int) -> tuple[int | None, str | None, str]:
    """(exit code, signal name, phrase) for a subprocess return code; negative means killed by a signal."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return None, name, f"killed by {name}"
    return returncode, None, f"exited with code {returncode}"
