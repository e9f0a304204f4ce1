-- Registers the Figma service in the catalog; applied (idempotently) by `python -m db.migrate`.
INSERT INTO mcp_table (name, display_name, description, icon, port, auth_type, also_accepts, version)
VALUES ('figma', 'Figma', 'Read Figma files, nodes, renders, versions and comments; post comments.',
        'figma', 49280, 'api_key', ARRAY['oauth'], '1.0.0')
ON CONFLICT (name) DO UPDATE SET
    display_name = EXCLUDED.display_name, description = EXCLUDED.description, icon = EXCLUDED.icon,
    port = EXCLUDED.port, auth_type = EXCLUDED.auth_type,
    also_accepts = EXCLUDED.also_accepts, version = EXCLUDED.version, updated_at = now();
