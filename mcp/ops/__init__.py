"""Operators' tools, never imported by a serving process: supervisor, commands, nginx, systemd, log pipe."""
