"""Stop sequences for token streams: emit text as soon as it cannot be part of a stop."""

from __future__ import annotations


class StopFilter:
    """Holds back text that may be the start of a stop sequence; finds the earliest stop."""

    __slots__ = ("stops", "buf")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.buf = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, stop sequence hit?)"""
        if not self.stops:
            return text, False
        self.buf += text
        hits = [i for i in (self.buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buf = self.buf[: min(hits)], ""
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.buf)), hold, -1):
                if self.buf.endswith(s[:k]):
                    hold = k
                    break
        cut = len(self.buf) - hold
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out
