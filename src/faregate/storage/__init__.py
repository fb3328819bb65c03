"""Durable storage: SQLAlchemy 2 async over SQLite (embedded default) or PostgreSQL, with
Alembic migrations. Nothing here runs on the request path: writers are the async sinks."""
