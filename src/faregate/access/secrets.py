"""Virtual key secrets: how they are made and how they are stored (only as a keyed hash).

A key is `sk-fg-` + 43 URL-safe characters (256 random bits). The table keeps
HMAC-SHA256(server secret, key): without the server secret a stolen table cannot even be
checked against a guess, and with 256-bit keys guessing is hopeless anyway. The server secret is
`general_settings.secret_key` / FAREGATE_SECRET_KEY, else derived from the master key (so
rotating the master key then invalidates every virtual key: set a secret key to avoid that).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from faregate.config.schema import Config

PREFIX = "sk-fg-"
SECRET_ENV = "FAREGATE_SECRET_KEY"


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hint(key: str) -> str:
    """What lists show of a key: its prefix and last four characters."""
    return f"{PREFIX}…{key[-4:]}"


class KeyHasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __call__(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def from_config(cls, config: Config) -> KeyHasher | None:
        """None when there is neither a secret key nor a master key (an open gateway)."""
        gs = config.general_settings
        if gs.secret_key is not None:
            return cls(gs.secret_key.get_secret_value().encode())
        if os.environ.get(SECRET_ENV):
            return cls(os.environ[SECRET_ENV].encode())
        if gs.master_key is not None:
            master = gs.master_key.get_secret_value().encode()
            return cls(hmac.new(master, b"faregate virtual key hashing", hashlib.sha256).digest())
        return None
