"""Supervise one Procfile process: restart it on crashes, health-check it, log its output, publish its state.

Usage (one line per Procfile entry)::

    python -m mcp.ops.supervisor --name mcp-figma --port ${FIGMA_PORT:-49280} --workers ${FIGMA_WORKERS:-1} \\
        -- python -m services.figma

``--workers N`` (or ``auto``, one per core; else ``<NAME>_WORKERS``, else 1) runs N copies of the child on the
one port, each restarted on its own; restarts and reloads replace them one at a time (``supervisor``).

The child runs in its own process group and never outlives the supervisor (``child``). Its stdout/stderr
lines are echoed (honcho shows them) and appended, timestamped, to ``<log-dir>/<name>-out.log`` and
``<log-dir>/<name>-error.log`` with size-based rotation (``logfile``, ``output``). The restart loop and the
health checks are in ``supervisor``; the state is published atomically as JSON in
``<run-dir>/state/<name>.json`` and written again within seconds if that file or its folder is removed
(``publish``); ``mcp.formation.state.read_states`` reads those files back for status tools. Options and
their environment variables are in ``config``.

Signals: SIGTERM/SIGINT stop; SIGUSR2 restarts the child (``scripts/restart``); SIGHUP reloads it without
downtime, a new child beside the old one (``scripts/reload``); see ``supervisor``.

Exit codes: 0 after SIGTERM/SIGINT, 1 when errored with ``--fail-fast``, 2 for a bad command line.
"""
