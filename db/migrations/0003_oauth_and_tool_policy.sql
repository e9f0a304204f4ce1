-- Accounts connected through OAuth, and a tool policy per instance.
--
-- An OAuth instance's credentials_enc holds only its secrets ({"access_token", "refresh_token"}); what is not
-- secret lives in plain columns so the API can find tokens that need refreshing without decrypting anything.
ALTER TABLE service_instances DROP CONSTRAINT service_instances_status_check;
ALTER TABLE service_instances ADD CONSTRAINT service_instances_status_check
    CHECK (status IN ('active', 'inactive', 'expired', 'pending', 'reauth_required'));
ALTER TABLE service_instances
    ADD COLUMN token_expires_at   timestamptz,  -- when the access token dies (null: it does not, or unknown)
    ADD COLUMN refresh_expires_at timestamptz,  -- when the refresh token dies (GitHub: 6 months)
    ADD COLUMN scopes             text,         -- as the provider granted them
    ADD COLUMN account            text,         -- who connected, as the provider names them ("@octocat")
    ADD COLUMN tool_policy        jsonb;        -- null: every tool; {"allow": [names]} or {"read_only": true}
CREATE INDEX service_instances_refresh_idx ON service_instances (refresh_expires_at)
    WHERE refresh_expires_at IS NOT NULL;

-- What a service process's resolution reads now includes the token's expiry and the tool policy.
DROP TRIGGER service_instances_changed ON service_instances;
CREATE TRIGGER service_instances_changed
    AFTER UPDATE OF id, service_name, status, expires_at, credentials_enc, token_expires_at, tool_policy
    OR DELETE ON service_instances
    FOR EACH ROW EXECUTE FUNCTION notify_instance_changed();

-- An authorization in progress. Only a hash of the state is kept: the state itself is the capability that
-- completes the connection, and it travels only in the user's browser. Single use: consuming deletes the row.
CREATE TABLE oauth_states (
    state_hash   bytea PRIMARY KEY,
    instance_id  uuid NOT NULL,
    service_name text NOT NULL,
    verifier_enc text,                          -- PKCE code_verifier, encrypted like a credential
    scopes       text NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);

-- What the API needs to know of each service without importing it: its tools (for tool policies) and its
-- OAuth provider (for connecting accounts). db/migrate.py writes both from the service package.
ALTER TABLE mcp_table
    ADD COLUMN tools jsonb NOT NULL DEFAULT '[]',  -- [{"name": ..., "read_only": bool}]
    ADD COLUMN oauth jsonb;                       -- OAuthProvider.to_json(), null: no OAuth
