"""Redaction of request-log text: PII found by Presidio, and the gateway's own secrets.

PII: Presidio's `AnalyzerEngine` with regex recognizers only and an NLP engine that does no
NLP (no spaCy model is loaded or downloaded): e-mail, phone, credit card, IBAN, IP address, US
SSN and faregate's `API_KEY` (`logs/presidio.py` says how and why each is set up). Presidio is
imported only by `load()` (~1 s, ~100 MB), which the request log calls in a worker thread:
never on the event loop, never at import time, never when no body is redacted.

Independently of Presidio, secrets are always replaced: the master key, upstream API keys and
the key that made the request (exact matches, `<SECRET>`), and anything shaped like a faregate
virtual key (`<API_KEY>`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from faregate.logs.settings import DEFAULT_ENTITIES

SECRET = "SECRET"
_VIRTUAL_KEY = re.compile(r"sk-fg-[A-Za-z0-9_\-]{16,}")
_MIN_SECRET = 6  # shorter "secrets" would replace ordinary words ("sk-1234", LiteLLM's example, is 7)


class Span(NamedTuple):
    start: int
    end: int
    entity: str
    score: float


class Redactor:
    """`redact(text)` → (text with each finding replaced by `<ENTITY>`, number of findings).

    Thread-safe; meant to run in worker threads. With `presidio=False` (or no entities) only
    the secrets are replaced and Presidio is never imported."""

    def __init__(self, entities: Sequence[str] = DEFAULT_ENTITIES, *, min_score: float = 0.3,
                 secrets: Iterable[str | None] = (), presidio: bool = True) -> None:
        self.entities = list(entities)
        self.min_score = min_score
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True))
        self.presidio = presidio and bool(self.entities)
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None or not self.presidio

    def load(self) -> None:
        """Import Presidio and build the analyzer (once; ~1 s). Call it in a thread."""
        if self.loaded:
            return
        with self._lock:
            if self._engine is None:
                from faregate.logs.presidio import analyzer

                self._engine = analyzer(self.entities)

    def spans(self, text: str, secrets: Iterable[str | None] = ()) -> list[Span]:
        """Every finding in `text`, overlaps merged, in order."""
        found: list[Span] = []
        for secret in (*self.secrets, *(s for s in secrets if s and len(s) >= _MIN_SECRET)):
            at = text.find(secret)
            while at >= 0:
                found.append(Span(at, at + len(secret), SECRET, 2.0))
                at = text.find(secret, at + len(secret))
        found += [Span(m.start(), m.end(), "API_KEY", 1.5) for m in _VIRTUAL_KEY.finditer(text)]
        if self.presidio and text:
            self.load()
            results = self._engine.analyze(text, language="en", entities=self.entities,
                                           score_threshold=self.min_score)
            found += [Span(r.start, r.end, r.entity_type, r.score) for r in results]
        return merge(found)

    def redact(self, text: str, secrets: Iterable[str | None] = (), limit: int | None = None) -> tuple[str, int]:
        """`text` redacted, cut at `limit` characters of the original (a finding that starts
        before the cut is replaced whole: nothing of it survives the cut)."""
        spans = self.spans(text, secrets)
        return apply(text, spans, limit), sum(1 for s in spans if limit is None or s.start < limit)

    def __call__(self, text: str) -> str:
        """The `redact(text) -> str` hook shape (telemetry/content.py takes one too)."""
        return self.redact(text)[0]


def merge(spans: list[Span]) -> list[Span]:
    """Sorted, with overlapping findings joined (the placeholder of the surest one wins): the
    same digits can be both a phone number and an SSN."""
    out: list[Span] = []
    for s in sorted(spans):
        if out and s.start < out[-1].end:
            last = out[-1]
            entity = last.entity if last.score >= s.score else s.entity
            out[-1] = Span(last.start, max(last.end, s.end), entity, max(last.score, s.score))
        else:
            out.append(s)
    return out


def apply(text: str, spans: list[Span], limit: int | None = None) -> str:
    end = len(text) if limit is None else min(limit, len(text))
    if not spans:
        return text if end == len(text) else text[:end]
    parts: list[str] = []
    at = 0
    for s in spans:
        if s.start >= end:
            break
        parts.append(text[at:s.start])
        parts.append(f"<{s.entity}>")
        at = s.end
    if at < end:
        parts.append(text[at:end])
    return "".join(parts)
