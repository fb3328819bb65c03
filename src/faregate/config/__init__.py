"""Configuration: the YAML schema (LiteLLM-compatible plus faregate's own keys) and its loader."""

from faregate.config.loader import ConfigError, load_config, parse_config
from faregate.config.schema import Config, ModelEntry

__all__ = ["Config", "ConfigError", "ModelEntry", "load_config", "parse_config"]
