"""Which database: `database_url` in the config, else `FAREGATE_DATABASE_URL` (or LiteLLM's
`DATABASE_URL`), else SQLite under `server.data_dir`. Standard library only: the `serve`
supervisor uses it without loading SQLAlchemy."""

from __future__ import annotations

import os
from pathlib import Path

from faregate.config.schema import Config

URL_ENV = ("FAREGATE_DATABASE_URL", "DATABASE_URL")
REDIS_ENV = ("FAREGATE_REDIS_URL", "REDIS_URL")
HEAD_REVISION = "0005"  # the newest file in migrations/versions (a test keeps this true)


def sqlite_at_head(url: str) -> bool:
    """True when `url` is a SQLite file already migrated to HEAD_REVISION (stdlib only, ~ms):
    `faregate serve` then skips starting a migration process."""
    import sqlite3

    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return False
    path = Path(url[len(prefix):]).expanduser()
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return False
    return bool(row) and row[0] == HEAD_REVISION


def database_url(config: Config) -> str:
    url = config.database_url or next((os.environ[n] for n in URL_ENV if os.environ.get(n)), None)
    if url is None:
        return f"sqlite+aiosqlite:///{config.server.data_dir.expanduser() / 'faregate.db'}"
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    return url


def redis_url(config: Config) -> str | None:
    """`redis_url` in the config, else FAREGATE_REDIS_URL (or REDIS_URL); None: in-process state."""
    return config.redis_url or next((os.environ[n] for n in REDIS_ENV if os.environ.get(n)), None)
