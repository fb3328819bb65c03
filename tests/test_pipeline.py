"""The pipeline contract: order, short-circuit, after-steps in reverse, streams unwind at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from faregate.core.call import Call
from faregate.core.errors import GatewayError
from faregate.core.pipeline import Pipeline


class Recorder:
    def __init__(self, name: str, log: list[str], *, short: bool = False, fail: bool = False, stream: bool = False) -> None:
        self.name, self.log, self.short, self.fail, self.stream = name, log, short, fail, stream

    async def before(self, call: Call) -> bool:
        self.log.append(f"before:{self.name}")
        if self.fail:
            raise GatewayError(429, "no")
        if self.stream:
            call.stream = self._chunks()
            return True
        if self.short:
            call.response = {"from": self.name}
        return self.short

    async def _chunks(self) -> AsyncIterator[dict]:
        for i in range(2):
            self.log.append(f"chunk:{i}")
            yield {"i": i}

    async def after(self, call: Call) -> None:
        self.log.append(f"after:{self.name}:{'error' if call.error else 'ok'}")


def new_call() -> Call:
    return Call(request_id="r", endpoint="chat", body={"model": "m"}, headers={})


async def test_stages_run_in_order_and_unwind_in_reverse() -> None:
    log: list[str] = []
    call = new_call()
    await Pipeline([Recorder("a", log), Recorder("b", log), Recorder("c", log, short=True)]).run(call)
    assert log == ["before:a", "before:b", "before:c", "after:c:ok", "after:b:ok", "after:a:ok"]
    assert call.response == {"from": "c"}


async def test_short_circuit_skips_later_stages_and_their_after() -> None:
    log: list[str] = []
    await Pipeline([Recorder("a", log), Recorder("b", log, short=True), Recorder("c", log)]).run(new_call())
    assert log == ["before:a", "before:b", "after:b:ok", "after:a:ok"]


async def test_error_unwinds_stages_that_ran_and_propagates() -> None:
    log: list[str] = []
    call = new_call()
    with pytest.raises(GatewayError):
        await Pipeline([Recorder("a", log), Recorder("b", log, fail=True), Recorder("c", log)]).run(call)
    assert log == ["before:a", "before:b", "after:b:error", "after:a:error"]
    assert call.error is not None and call.finished_at is not None


async def test_stream_after_steps_run_when_stream_ends() -> None:
    log: list[str] = []
    call = new_call()
    await Pipeline([Recorder("a", log), Recorder("s", log, stream=True)]).run(call)
    assert log == ["before:a", "before:s"]  # nothing unwound yet: the stream has not been read
    assert [c async for c in call.stream] == [{"i": 0}, {"i": 1}]
    assert log[-2:] == ["after:s:ok", "after:a:ok"]


async def test_stream_closed_early_still_unwinds() -> None:
    log: list[str] = []
    call = new_call()
    await Pipeline([Recorder("s", log, stream=True)]).run(call)
    stream = call.stream
    assert await stream.__anext__() == {"i": 0}
    await stream.aclose()  # the client went away
    assert log[-1] == "after:s:error"  # the after-steps ran, and know the client left
    assert call.error is not None and call.error.code == "client_closed_request"
