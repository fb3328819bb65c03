"""Where a config comes from: a file, or the embedded default; plus master-key environment.

Kept free of server imports: the supervisor process that validates a config before starting
workers should not pay for FastAPI or aiohttp.
"""

from __future__ import annotations

import os

from pydantic import SecretStr

from faregate.config.loader import load_config, parse_config
from faregate.config.schema import Config, embedded_default

CONFIG_ENV = "FAREGATE_CONFIG"  # how the CLI tells server workers which config to load
EMBEDDED = "embedded"
MASTER_KEY_ENV = ("FAREGATE_MASTER_KEY", "LITELLM_MASTER_KEY")


def load(source: str | None) -> Config:
    """A config path, or the embedded default for None / 'embedded'.

    A master key in the environment (FAREGATE_MASTER_KEY, or LiteLLM's LITELLM_MASTER_KEY)
    applies when the config sets none.
    """
    if source in (None, "", EMBEDDED):
        config = parse_config(embedded_default(), source="embedded default")
    else:
        config = load_config(source)
    if config.general_settings.master_key is None:
        for name in MASTER_KEY_ENV:
            if os.environ.get(name):
                config.general_settings.master_key = SecretStr(os.environ[name])
                break
    return config
