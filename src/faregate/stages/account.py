"""account (after-step): the exact cost of the call, from the served deployment's price and
the usage the upstream reported. Runs after invoke on the way back — for a stream, when it
ended — so it sees the final usage. (The ledger row and budget settlement join here.)"""

from __future__ import annotations

from faregate.accounting.pricing import PriceBook, Tokens
from faregate.core.call import Call


class Account:
    name = "account"

    def __init__(self, prices: PriceBook) -> None:
        self.prices = prices

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        if call.deployment is not None and call.usage:
            call.cost = self.prices.cost(call.deployment.id, Tokens.from_usage(call.usage))
