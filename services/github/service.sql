-- Registers the GitHub service in the catalog; applied (idempotently) by `python -m db.migrate`.
INSERT INTO mcp_table (name, display_name, description, icon, port, auth_type, also_accepts, version)
VALUES ('github', 'GitHub',
        'Search repositories, read files, list and create issues and pull requests, comment.',
        'github', 49281, 'api_key', ARRAY['oauth'], '1.0.0')
ON CONFLICT (name) DO UPDATE SET
    display_name = EXCLUDED.display_name, description = EXCLUDED.description, icon = EXCLUDED.icon,
    port = EXCLUDED.port, auth_type = EXCLUDED.auth_type,
    also_accepts = EXCLUDED.also_accepts, version = EXCLUDED.version, updated_at = now();
