"""The `request_log:` config section: which requests keep their bodies, how they are redacted
and how long log rows live. Standard library and pydantic only, so config loading never
imports Presidio (~1 s and ~100 MB): that happens only when `mode: full` and `redact: true`."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# What the redactor recognises (Presidio's entity names, plus API_KEY: faregate's own pattern
# recognizer for provider keys, bearer tokens, AWS keys and long tokens after "key"/"token").
Entity = Literal["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
                 "US_SSN", "API_KEY"]
DEFAULT_ENTITIES: tuple[Entity, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
                                        "IP_ADDRESS", "US_SSN", "API_KEY")


class RequestLogSettings(BaseModel):
    """Per request a log row (trace id, sizes, who, what, outcome) beside the ledger row and,
    by policy, the request and response bodies with PII replaced by `<ENTITY>` placeholders."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["off", "metadata", "full"] = Field(
        default="off",
        description="off (default: the ledger row is the only record; measured, a log row costs "
                    "~50 µs of writer-thread CPU per request); metadata: a row per request (trace "
                    "id, sizes, outcome), no bodies; full: also the request and response bodies, "
                    "redacted.")
    sample_rate: float = Field(
        default=1.0, ge=0, le=1,
        description="In full mode, the share of requests whose bodies are kept (failed requests "
                    "always keep theirs).")
    max_body_chars: int = Field(
        default=20_000, ge=256, le=10_000_000,
        description="Characters of text kept per body (prompts, outputs); the rest is cut and the "
                    "row marked truncated. Long number arrays (embeddings) are summarised.")
    retention_days: float = Field(
        default=30, gt=0,
        description="Log rows older than this are deleted in the background. Ledger rows "
                    "(money) are never deleted by this.")
    retention_interval_seconds: float = Field(
        default=3600, ge=1, description="How often the retention task runs.")
    redact: bool = Field(
        default=True,
        description="Replace PII found by Presidio (regex recognizers only, no NLP model) before "
                    "bodies are stored. Gateway secrets are always removed, even when false.")
    entities: list[Entity] = Field(
        default_factory=lambda: list(DEFAULT_ENTITIES), description="What the redactor looks for.")
    min_score: float = Field(
        default=0.3, ge=0, le=1,
        description="Findings scored below this are kept as text (Presidio's scores: e.g. a bare "
                    "9-digit number is a 0.05 SSN guess, a dashed one 0.5).")

    @model_validator(mode="after")
    def _presidio_installed(self) -> RequestLogSettings:
        """Redacting bodies needs Presidio: say so at config check, not at the first request
        (`find_spec` looks for the package without importing it)."""
        if self.needs_presidio and importlib.util.find_spec("presidio_analyzer") is None:
            raise ValueError("mode 'full' with redact: true needs presidio-analyzer: "
                             "pip install 'faregate[pii]' (or set redact: false)")
        return self

    @property
    def bodies(self) -> bool:
        return self.mode == "full"

    @property
    def needs_presidio(self) -> bool:
        return self.mode == "full" and self.redact and bool(self.entities)
