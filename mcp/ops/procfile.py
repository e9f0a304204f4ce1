"""The Procfile's processes, read with honcho's own parser: name, module, port and health URL of each.

The port is the supervisor's ``--port`` word of the line, expanded as the shell honcho runs would expand
it (``${FIGMA_PORT:-49280}``: ``mcp.ports.expand_port``), so the scripts check exactly the port the
supervisor health-checks, and no service code is imported to find it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from honcho.environ import parse_procfile

from mcp.ports import expand_port


@dataclass(frozen=True)
class Process:
    name: str
    module: str
    port: int

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


def command_words(command: str) -> list[str]:
    """A Procfile command split as the shell would, without expanding anything; [] if it cannot be split."""
    try:
        return shlex.split(command)
    except ValueError:
        return []


def supervised_module(words: list[str]) -> str | None:
    """``services.figma`` for a line whose supervised command (after ``--``) runs ``python -m services.figma``,
    also when it is quoted for watchfiles (Procfile.dev)."""
    after = words[words.index("--") + 1:] if "--" in words else words
    for i, word in enumerate(after):
        inner = command_words(word) if " " in word else [word]
        for j, part in enumerate(inner):
            if part == "-m":
                following = inner[j + 1] if j + 1 < len(inner) else (after[i + 1] if i + 1 < len(after) else "")
                if following.startswith("services."):
                    return following
    return None


def port_word(words: list[str]) -> str | None:
    """The supervisor's ``--port`` value (before ``--``), unexpanded."""
    options = words[:words.index("--")] if "--" in words else words
    for i, word in enumerate(options):
        if word == "--port" and i + 1 < len(options):
            return options[i + 1]
        if word.startswith("--port="):
            return word.split("=", 1)[1]
    return None


def procfile_processes(procfile: Path, environ: Mapping[str, str] | None = None) -> list[Process]:
    """Every line that runs a ``services.*`` module under the supervisor with a ``--port``, in order."""
    env = os.environ if environ is None else environ
    out = []
    for name, command in parse_procfile(procfile.read_text()).processes.items():
        words = command_words(command)
        module, word = supervised_module(words), port_word(words)
        port = expand_port(word, env) if word is not None else None
        if module is not None and port is not None:
            out.append(Process(name, module, port))
    return out
