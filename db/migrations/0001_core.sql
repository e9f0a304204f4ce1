-- Core schema: the service catalog, users, their service instances, and usage.

CREATE TABLE mcp_table (
    id           serial PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,39}$'),
    display_name text NOT NULL,
    description  text NOT NULL DEFAULT '',
    icon         text NOT NULL DEFAULT '',
    port         integer NOT NULL UNIQUE CHECK (port BETWEEN 49160 AND 49999),
    auth_type    text NOT NULL CHECK (auth_type IN ('api_key', 'oauth', 'basic_auth')),
    -- Further auth types whose credentials the service also accepts (SERVICE_CONFIG.also_accepts).
    also_accepts text[] NOT NULL DEFAULT '{}'
                 CHECK (also_accepts <@ ARRAY['api_key', 'oauth', 'basic_auth']),
    version      text NOT NULL DEFAULT '0.1.0',
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL UNIQUE CHECK (email = lower(email)),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE service_instances (
    id              uuid PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service_name    text NOT NULL REFERENCES mcp_table (name) ON UPDATE CASCADE,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'expired')),
    expires_at      timestamptz,
    credentials_enc text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);
CREATE INDEX service_instances_user_idx ON service_instances (user_id);

-- Usage is history: no foreign key, so rows outlive a deleted instance and a buffered batch
-- never fails because its instance was deleted meanwhile.
CREATE TABLE usage (
    id           bigserial PRIMARY KEY,
    instance_id  uuid NOT NULL,
    service_name text NOT NULL,
    tool         text NOT NULL,
    outcome      text NOT NULL,
    latency_ms   real NOT NULL,
    called_at    timestamptz NOT NULL
);
CREATE INDEX usage_instance_idx ON usage (instance_id, called_at);
CREATE INDEX usage_service_idx ON usage (service_name, called_at);

-- Every change to what resolution reads is announced, so each service process drops its cached copy at
-- once (mcp/invalidation.py listens); the cache's short TTL is only the backstop. Only those columns:
-- the usage flusher touches last_used_at every second, and that must not empty every cache.
CREATE FUNCTION notify_instance_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mcp_instance_changed', OLD.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER service_instances_changed
    AFTER UPDATE OF id, service_name, status, expires_at, credentials_enc OR DELETE ON service_instances
    FOR EACH ROW EXECUTE FUNCTION notify_instance_changed();
