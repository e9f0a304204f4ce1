"""The port a process of the formation runs on: one answer for the services, the API, the supervisor's
Procfile line, the start and stop scripts and the nginx configuration.

A process listens on ``<NAME>_PORT`` when that variable is set and not empty (tests and side-by-side runs
use it), else on its default: the service's ``SERVICE_CONFIG.port``, or 5000 for the main API. A Procfile
line spells the same rule for the shell as ``${FIGMA_PORT:-49280}`` (``procfile_port``), and
``expand_port`` reads that spelling back, so what honcho hands the supervisor and what the scripts check
is the port the process itself picks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

API_PORT = 5000
API_PORT_ENV = "API_PORT"

# ${NAME:-default} (shell: the default when NAME is unset or empty), $NAME, ${NAME}, or a number.
_WORD = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[0-9]+))?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
                   r"|(?P<number>[0-9]+)")


def port_env(name: str) -> str:
    """The variable that overrides a service's port: ``figma`` -> ``FIGMA_PORT``."""
    return f"{name.upper().replace('-', '_')}_PORT"


def resolve_port(env_var: str, default: int, environ: Mapping[str, str]) -> int:
    """``environ[env_var]`` when set and not empty, else ``default``; ValueError naming the variable if bad."""
    raw = environ.get(env_var, "")
    if raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"{env_var} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{env_var} must be between 1 and 65535, got {port}")
    return port


def service_port(name: str, default: int, environ: Mapping[str, str]) -> int:
    """The port of the service called ``name`` whose SERVICE_CONFIG.port is ``default``."""
    return resolve_port(port_env(name), default, environ)


def api_port(environ: Mapping[str, str]) -> int:
    """The main API's port: API_PORT, else 5000."""
    return resolve_port(API_PORT_ENV, API_PORT, environ)


def procfile_port(env_var: str, default: int) -> str:
    """The Procfile spelling of ``resolve_port(env_var, default, ...)``: ``${FIGMA_PORT:-49280}``."""
    return f"${{{env_var}:-{default}}}"


def expand_port(word: str, environ: Mapping[str, str]) -> int | None:
    """The port a Procfile's ``--port`` word stands for in ``environ``; None if it is not a port spelling."""
    m = _WORD.fullmatch(word)
    if m is None:
        return None
    if m["number"] is not None:
        return int(m["number"])
    var = m["var"] or m["bare"]
    if m["default"] is None:
        raw = environ.get(var, "")
        return int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else None
    return resolve_port(var, int(m["default"]), environ)
