"""``python -m mcp.ops.supervisor [options] -- command...``: parse, supervise until stopped, exit."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from mcp.ops.supervisor.config import PROG, SupervisorConfig, SupervisorConfigError
from mcp.ops.supervisor.logfile import LogFile, LogFileHandler
from mcp.ops.supervisor.supervisor import Supervisor

EXIT_USAGE = 2
# Every module of the package logs below this logger, so one set of handlers catches them all.
PACKAGE_LOGGER = "mcp.ops.supervisor"


def configure_logging(error_log: LogFile) -> None:
    """Send the supervisor's own messages to stderr (honcho shows them) and into the error log."""
    formatter = logging.Formatter("[supervisor] %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), LogFileHandler(error_log)]
    for handler in handlers:
        handler.setFormatter(formatter)
    log = logging.getLogger(PACKAGE_LOGGER)
    log.handlers[:] = handlers
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv: Sequence[str]) -> int:
    """Parse the command line, supervise until stopped, and return the exit code."""
    try:
        config = SupervisorConfig.from_argv(argv, os.environ)
    except SupervisorConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as e:  # argparse: --help or a usage error
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    supervisor = Supervisor(config)
    configure_logging(supervisor.error_log)
    try:
        return asyncio.run(supervisor.run())
    finally:
        supervisor.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
