"""Providers: translators between the canonical (OpenAI-shaped) schema and one wire protocol."""
