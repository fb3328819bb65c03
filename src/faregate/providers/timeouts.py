"""Per-attempt time limits of an upstream call."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Timeouts:
    total: float
    connect: float
    idle: float  # longest wait between stream chunks (and, without first_byte, for the first)
    first_byte: float | None = None  # longest wait for the response headers / a stream's first chunk

    def capped(self, seconds: float) -> Timeouts:
        """These limits, none longer than `seconds` (a client's x-faregate-timeout)."""
        if seconds >= self.total:
            return self
        fb = self.first_byte
        return Timeouts(total=seconds, connect=min(self.connect, seconds), idle=min(self.idle, seconds),
                        first_byte=None if fb is None else min(fb, seconds))
