"""Durable state: SQLAlchemy 2 over SQLite (default, WAL) or PostgreSQL; audit log."""
