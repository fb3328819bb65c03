"""route: resolve the requested model group (404 if unknown) before anything is spent on it."""

from __future__ import annotations

from faregate.core.call import Call
from faregate.core.errors import model_not_found
from faregate.core.pipeline import NoAfter
from faregate.routing.router import Router


class Route(NoAfter):
    name = "route"

    def __init__(self, router: Router) -> None:
        self.router = router

    async def before(self, call: Call) -> bool:
        if not self.router.has(call.model):
            raise model_not_found(call.model)
        return False
