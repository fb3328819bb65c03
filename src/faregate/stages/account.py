"""account (after-step): the exact cost of the call, from the served deployment's price and
the usage the upstream reported, and its ledger row handed to the batching sink (no I/O here).
Runs after invoke on the way back — for a stream, when it ended — so it sees the final usage
and any mid-stream error."""

from __future__ import annotations

from faregate.accounting.ledger import ledger_row
from faregate.accounting.pricing import PriceBook, Tokens
from faregate.core.call import Call
from faregate.sinks.batch import BatchSink


class Account:
    name = "account"

    def __init__(self, prices: PriceBook, ledger: BatchSink) -> None:
        self.prices = prices
        self.ledger = ledger

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        tokens = Tokens.from_usage(call.usage)
        if call.deployment is not None and call.usage:
            call.cost = self.prices.cost(call.deployment.id, tokens)
        self.ledger.put(ledger_row(call, tokens))
