-- Every usage record carries a key its process gave it, unique across processes, so a record replayed from a
-- spool file after its process died (mcp/usage_spool.py) is inserted once: the insert skips keys already
-- stored. Rows written before this migration have no key.
ALTER TABLE usage ADD COLUMN record_key uuid;
CREATE UNIQUE INDEX usage_record_key_idx ON usage (record_key);
