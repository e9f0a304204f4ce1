"""``scripts/bench``: the cost of a tool call, full path against its limits, side by side in one run.

Everything it needs it starts itself on free ports (an embedded PostgreSQL in a temporary folder,
the upstream simulator, the service processes, a bare Tornado baseline, the peers) and stops
again. ``python -m bench --help`` lists the options; BENCHMARKS.md explains the figures.

Modules: ``options`` (the command line), ``run`` (one run, start to finish), ``measure`` (rows,
rounds, RSS), ``procs`` (processes, ports, CPU pinning), ``cpu`` (other processes' CPU during a
run), ``database`` (embedded PostgreSQL, seeding), ``lookup`` (uncached instance lookups),
``upstream_sim`` / ``baseline`` (the servers besides the service), ``workers`` (the service with
several workers, and under its supervisor), ``sdk_peer_server`` / ``fastmcp_peer_server`` /
``ts_peer/server.mjs`` with ``peer_upstream`` (the peers), ``peer_env`` (the peers' own environments),
``loadspec`` / ``load`` / ``wrk`` (the load generators), ``jsonrpc`` (MCP from the client side),
``profile`` (py-spy), ``report`` (targets, table).
"""
