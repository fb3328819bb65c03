"""Per-attempt time limits of an upstream call."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Timeouts:
    total: float
    connect: float
    idle: float  # longest wait for the first byte / between stream chunks
