-- Registers the Slack service in the catalog; applied (idempotently) by `python -m db.migrate`.
INSERT INTO mcp_table (name, display_name, description, icon, port, auth_type, also_accepts, version)
VALUES ('slack', 'Slack', 'Read Slack channels, history, threads, users and profiles; post messages, replies and '
        'reactions; search messages (user tokens).', 'slack', 49282, 'oauth', ARRAY[]::text[], '1.0.0')
ON CONFLICT (name) DO UPDATE SET
    display_name = EXCLUDED.display_name, description = EXCLUDED.description, icon = EXCLUDED.icon,
    port = EXCLUDED.port, auth_type = EXCLUDED.auth_type,
    also_accepts = EXCLUDED.also_accepts, version = EXCLUDED.version, updated_at = now();
