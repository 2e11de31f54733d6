"""Saga stores: in memory, SQLite (the embedded default) and PostgreSQL (many nodes)."""
