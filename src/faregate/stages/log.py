"""log (after-step only, right after account): the call's request-log entry, handed to its
batching sink — no I/O, no copying, no redaction here (logs/entry.py: references to the body,
response or stream text, and whether to keep them; logs/writer.py does the rest in a thread).
Like account, it sees every call that got past authentication, refused ones included, with the
final usage, outcome and error."""

from __future__ import annotations

from faregate.core.call import Call
from faregate.logs.entry import log_entry
from faregate.sinks.batch import BatchSink


class Log:
    name = "log"

    def __init__(self, sink: BatchSink, *, bodies: bool, sample_rate: float) -> None:
        self.sink = sink
        self.bodies = bodies
        self.sample_rate = sample_rate

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        self.sink.put(log_entry(call, bodies=self.bodies, sample_rate=self.sample_rate))
