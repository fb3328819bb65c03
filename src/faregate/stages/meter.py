"""meter (after-step): the call's token usage and exact cost, once invoke has finished — for a
stream, once it ended or the client left.

Usage is the upstream's. Only when it reported none (some self-hosted servers, a stream cut
short by the client) is it counted locally — the prompt with tiktoken, the output from the text
that was produced — and `usage_estimated` says so. Cost is the served deployment's price on that
usage, `Decimal`, to 1e-9 USD. No I/O here: admit settles on these figures, account records them.
"""

from __future__ import annotations

from faregate.accounting.pricing import PriceBook, Tokens
from faregate.accounting.tokens import TokenCounter, call_estimate
from faregate.core.call import Call


class Meter:
    name = "meter"

    def __init__(self, prices: PriceBook, counter: TokenCounter) -> None:
        self.prices = prices
        self.counter = counter

    async def before(self, call: Call) -> bool:
        return False

    async def after(self, call: Call) -> None:
        if not call.usage and call.deployment is not None and (call.response is not None or call.stream is not None):
            await self._estimate(call)
        tokens = call.tokens = Tokens.from_usage(call.usage)
        if call.deployment is not None and call.usage:
            call.cost = self.prices.cost(call.deployment.id, tokens)

    async def _estimate(self, call: Call) -> None:
        counter, model = self.counter, call.model
        prompt, _ = await call_estimate(counter, call, 0)  # admission's count when it made one
        if call.response is not None:
            output = counter.completion(call.endpoint, call.response, model)
        else:
            output = counter.text("".join(call.stream_text or ()), model)
        call.usage = counter.usage(prompt, output)
        call.usage_estimated = True
