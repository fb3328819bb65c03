"""account (after-step, outermost but authenticate): the call's ledger row, handed to the
batching sink — no I/O here. It runs last on the way back, so the row sees the final usage, cost
and outcome, including calls that admit refused (429) or the model route did not find (404)."""

from __future__ import annotations

from faregate.accounting.ledger import ledger_row
from faregate.core.call import Call
from faregate.sinks.batch import BatchSink


class Account:
    name = "account"

    def __init__(self, ledger: BatchSink) -> None:
        self.ledger = ledger

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        self.ledger.put(ledger_row(call))
