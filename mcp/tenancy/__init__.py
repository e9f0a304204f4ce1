"""Instances and what they carry: the database pool, credentials, resolution and its cache, usage."""
