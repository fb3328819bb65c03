"""The spans of one call, by the GenAI semantic conventions (see telemetry/tracing.py, which
imports this module only when tracing is on: it imports OpenTelemetry).

`Spans` makes the root span (`start`, `end`), wraps stages (`wrap`: `faregate.stage.<name>`
and `….after`) and times upstream attempts (`attempt`: a CLIENT span each; a stream's ends with
the stream). Attribute names are the semconv package's constants wherever one exists; the
`faregate.*` ones are this gateway's own. Tracing never fails a request: an error in here is
logged once and the request goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace as trace_api
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as GenAI
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_RESPONSE_STATUS_CODE as HTTP_STATUS,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from faregate.accounting.pricing import Tokens
from faregate.core.errors import client_closed
from faregate.telemetry.content import input_messages, output_messages

if TYPE_CHECKING:
    from faregate.core.call import Call
    from faregate.routing.deployment import Deployment

log = logging.getLogger("faregate.tracing")


class Spans:
    """Makes every span of every call, for one tracer."""

    def __init__(self, tracer: Any, *, capture_content: bool, redact: Callable[[str], str],
                 stage_spans_min_ms: float | None) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        self.redact = redact
        self.stage_spans_min_ms = stage_spans_min_ms
        self._propagator = TraceContextTextMapPropagator()
        self._in_context = trace_api.set_span_in_context
        self._server, self._client = trace_api.SpanKind.SERVER, trace_api.SpanKind.CLIENT
        self._error = trace_api.StatusCode.ERROR
        self._peers: dict[str, tuple[str, dict[str, Any]]] = {}  # deployment id -> its attributes
        self._warned: set[str] = set()
        ops = GenAI.GenAiOperationNameValues
        self._operations = {"chat": ops.CHAT.value, "completions": ops.TEXT_COMPLETION.value,
                            "embeddings": ops.EMBEDDINGS.value}
        self._params = (("max_tokens", GenAI.GEN_AI_REQUEST_MAX_TOKENS),
                        ("max_completion_tokens", GenAI.GEN_AI_REQUEST_MAX_TOKENS),
                        ("temperature", GenAI.GEN_AI_REQUEST_TEMPERATURE),
                        ("top_p", GenAI.GEN_AI_REQUEST_TOP_P),
                        ("seed", GenAI.GEN_AI_REQUEST_SEED),
                        ("frequency_penalty", GenAI.GEN_AI_REQUEST_FREQUENCY_PENALTY),
                        ("presence_penalty", GenAI.GEN_AI_REQUEST_PRESENCE_PENALTY))

    def start(self, call: Call) -> None:
        """The root span, backdated to the request's arrival; `call.trace` holds it."""
        try:
            headers = call.headers
            parent = None
            if headers and "traceparent" in headers:  # a client's W3C trace context: continue it
                parent = self._propagator.extract(headers)
            op = self._operations.get(call.endpoint, call.endpoint)
            body = call.body
            attrs: dict[str, Any] = {GenAI.GEN_AI_OPERATION_NAME: op,
                                     GenAI.GEN_AI_REQUEST_MODEL: call.model,
                                     "faregate.request_id": call.request_id}
            for key, attr in self._params:
                value = body.get(key)
                if value is not None:
                    attrs[attr] = value
            if call.streaming:
                attrs[GenAI.GEN_AI_REQUEST_STREAM] = True
            if call.principal is not None:
                attrs["faregate.key_id"] = call.principal.id  # "master", "anonymous", a key id
            if call.client_request_id:
                attrs["faregate.client_request_id"] = call.client_request_id
            if self.capture_content and (messages := input_messages(call, self.redact)):
                attrs[GenAI.GEN_AI_INPUT_MESSAGES] = messages
            started = time.time_ns() - int((time.perf_counter() - call.started) * 1e9)
            root = self.tracer.start_span(f"{op} {call.model}", context=parent, kind=self._server,
                                          attributes=attrs, start_time=started)
            if root.is_recording():  # not sampled: no child spans either
                call.trace = CallTrace(root, self._in_context(root))
        except Exception as exc:  # tracing never fails a request
            self._warn("start", exc)

    def wrap(self, stage: Any) -> Any:
        """The stage run inside spans (Pipeline calls this once per stage when tracing is on)."""
        if self.stage_spans_min_ms is None:
            return stage
        return TracedStage(self, stage, int(self.stage_spans_min_ms * 1e6))

    def attempt(self, call: Call, dep: Deployment) -> Attempt:
        """Context manager around one upstream attempt: its CLIENT span."""
        return Attempt(self, call, dep)

    def end(self, call: Call) -> None:
        """Close the call's spans with its outcome (after every after-step ran)."""
        t, call.trace = call.trace, None
        if t is None:
            return
        try:
            self._end_attempt(call, t, call.error)  # a stream's, if the stream never ran
            attrs: dict[str, Any] = {}
            dep = call.deployment
            if dep is not None:
                attrs[GenAI.GEN_AI_PROVIDER_NAME] = self._peer(dep)[0]
                attrs["faregate.deployment"] = dep.id
                attrs["faregate.attempts"] = call.attempts
            response = call.response
            if response is not None:
                t.response_id, t.response_model = response.get("id"), response.get("model")
                t.finish = [c["finish_reason"] for c in response.get("choices") or ()
                            if c.get("finish_reason")]
            if t.response_id:
                attrs[GenAI.GEN_AI_RESPONSE_ID] = t.response_id
            if t.response_model:
                attrs[GenAI.GEN_AI_RESPONSE_MODEL] = t.response_model
            if t.finish:
                attrs[GenAI.GEN_AI_RESPONSE_FINISH_REASONS] = t.finish
            if call.usage:  # the upstream's, or counted locally by meter
                self._usage(call, attrs)
            first = call.first_token_at
            if first is not None and call.streaming:
                attrs[GenAI.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first - call.started
                at = time.time_ns() - int((time.perf_counter() - first) * 1e9)
                t.root.add_event("faregate.first_chunk", timestamp=at)
            if self.capture_content and (out := output_messages(call, t.finish, self.redact)):
                attrs[GenAI.GEN_AI_OUTPUT_MESSAGES] = out
            if call.cache:
                attrs["faregate.cache"] = call.cache
            if call.cost is not None and call.cost.priced:
                attrs["faregate.cost_usd"] = float(call.cost.total_usd)
            if call.saved_nusd:
                attrs["faregate.saved_usd"] = call.saved_nusd / 1e9
            attrs["faregate.overhead_ms"] = round(call.overhead_seconds(call.finished_at) * 1000, 3)
            err = call.error
            attrs[HTTP_STATUS] = call.status
            t.root.set_attributes(attrs)
            set_error(t.root, err, self._error, self.redact)
            t.root.end()
        except Exception as exc:
            self._warn("end", exc)

    @staticmethod
    def _usage(call: Call, attrs: dict[str, Any]) -> None:
        """Usage goes on the root span only: backends that sum usage over a trace's spans
        (Langfuse) count each call once, and a cache hit (no attempt) has it too."""
        tokens = call.tokens or Tokens.from_usage(call.usage)
        attrs[GenAI.GEN_AI_USAGE_INPUT_TOKENS] = tokens.input
        if call.endpoint != "embeddings":
            attrs[GenAI.GEN_AI_USAGE_OUTPUT_TOKENS] = tokens.output
        if tokens.cached_input:
            attrs[GenAI.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = tokens.cached_input
        if call.usage_estimated:
            attrs["faregate.usage_estimated"] = True

    def _peer(self, dep: Deployment) -> tuple[str, dict[str, Any]]:
        """(gen_ai.provider.name, attempt attributes) of a deployment, computed once."""
        peer = self._peers.get(dep.id)
        if peer is None:
            names = GenAI.GenAiProviderNameValues
            known = {"openai": names.OPENAI, "azure": names.AZURE_AI_OPENAI,
                     "anthropic": names.ANTHROPIC, "groq": names.GROQ, "deepseek": names.DEEPSEEK,
                     "mistral": names.MISTRAL_AI, "xai": names.X_AI,
                     "perplexity": names.PERPLEXITY, "cohere": names.COHERE}
            # An OpenAI-compatible server keeps its LiteLLM prefix: "hosted_vllm", "ollama"…
            prefix = dep.litellm_provider or dep.provider
            name = known[prefix].value if prefix in known else prefix
            attrs: dict[str, Any] = {GenAI.GEN_AI_PROVIDER_NAME: name,
                                     GenAI.GEN_AI_REQUEST_MODEL: dep.upstream_model,
                                     "faregate.deployment": dep.id}
            url = urlsplit(dep.api_base) if dep.api_base else None
            if url is not None and url.hostname:  # host and port only: never credentials or path
                attrs[SERVER_ADDRESS] = url.hostname
                attrs[SERVER_PORT] = url.port or (443 if url.scheme == "https" else 80)
            peer = self._peers[dep.id] = (name, attrs)
        return peer

    async def _watch(self, call: Call, t: CallTrace,
                     stream: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Pass a stream on, noting its response id, model and finish reasons; its attempt's
        span ends with it (with the error that ended it, or the client leaving)."""
        err: BaseException | None = None
        try:
            async with aclosing(stream):  # type: ignore[type-var]
                async for chunk in stream:
                    if t.response_id is None:
                        t.response_id, t.response_model = chunk.get("id"), chunk.get("model")
                    for choice in chunk.get("choices") or ():
                        reason = choice.get("finish_reason")
                        if reason:
                            t.finish.append(reason)
                    yield chunk
        except BaseException as exc:
            err = exc
            raise
        finally:
            self._end_attempt(call, t, cause(call, err))

    def _end_attempt(self, call: Call, t: CallTrace, err: Any) -> None:
        span, t.attempt = t.attempt, None
        if span is not None:
            try:
                if call.first_token_at is not None:
                    span.set_attribute(GenAI.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                                       call.first_token_at - t.attempt_started)
                set_error(span, err, self._error, self.redact)
            except Exception as exc:
                self._warn("attempt", exc)
            span.end()

    def _warn(self, where: str, exc: Exception) -> None:
        if where not in self._warned:
            self._warned.add(where)
            log.warning("tracing: %s failed (%s: %s); the request went on", where,
                        type(exc).__name__, exc)


class CallTrace:
    """One call's tracing state (`Call.trace`)."""

    __slots__ = ("root", "ctx", "stage", "attempt", "attempt_started", "response_id",
                 "response_model", "finish")

    def __init__(self, root: Any, ctx: Any) -> None:
        self.root, self.ctx = root, ctx
        self.stage: Any = None  # the span of the stage running now: parent of attempt spans
        self.attempt: Any = None  # a stream's served attempt, open until the stream ends
        self.attempt_started = 0.0
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish: list[str] = []


def cause(call: Call, exc: BaseException | None) -> Any:
    """What a span records for an exception: a cancellation or a closed generator is the client
    leaving (or the shutdown), as the call itself records it."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return call.error or client_closed()
    return exc


def set_error(span: Any, err: Any, code: Any, redact: Callable[[str], str] | None = None) -> None:
    if err is None:
        return
    if isinstance(err, BaseException) and not hasattr(err, "status"):  # cancelled, or a bug
        etype, message = type(err).__name__, ""
    else:
        etype, message = err.code or err.type, err.message[:300]
    span.set_attribute(ERROR_TYPE, etype)
    span.set_status(Status(code, redact(message) if redact and message else message or None))


async def _returns_false(self: Any, call: Any) -> bool:
    return False


def _trivial(method: Any) -> bool:
    """An after-only stage's `before` (`return False`): it gets no span of its own."""
    code, ref = getattr(method, "__code__", None), _returns_false.__code__
    return (code is not None and code.co_code == ref.co_code
            and code.co_consts[1:] == ref.co_consts[1:])


class TracedStage:
    """A stage whose `before` runs in span `faregate.stage.<name>` and `after` in `….after`.
    With a `stage_spans_min_ms` threshold, a step's span is made after it ran, only if it took
    that long or failed (attempt spans then hang from the root)."""

    def __init__(self, tracing: Spans, stage: Any, min_ns: int) -> None:
        self.name, self.stage, self._min_ns = stage.name, stage, min_ns
        self._tracer = tracing.tracer
        self._names = (f"faregate.stage.{stage.name}", f"faregate.stage.{stage.name}.after")
        self._error, self._redact = tracing._error, tracing.redact
        self.before = stage.before if _trivial(type(stage).before) else self._before

    async def _before(self, call: Call) -> bool:
        return await self._run(call, self.stage.before, 0)

    async def after(self, call: Call) -> None:
        await self._run(call, self.stage.after, 1)

    async def _run(self, call: Call, step: Any, after: int) -> Any:
        t = call.trace
        if t is None:
            return await step(call)
        if not self._min_ns:  # the span is open while the step runs: attempts nest in invoke's
            span = self._tracer.start_span(self._names[after], context=t.ctx)
            if not after:
                t.stage = span
            try:
                return await step(call)
            except BaseException as exc:
                set_error(span, cause(call, exc), self._error, self._redact)
                raise
            finally:
                span.end()
        start, err = time.time_ns(), None
        try:
            return await step(call)
        except BaseException as exc:
            err = exc
            raise
        finally:
            end = time.time_ns()
            if err is not None or end - start >= self._min_ns:
                span = self._tracer.start_span(self._names[after], context=t.ctx, start_time=start)
                set_error(span, cause(call, err), self._error, self._redact)
                span.end(end_time=end)


class Attempt:
    """One upstream attempt's CLIENT span: `chat <upstream model>`, provider, server, attempt
    number, error.type on failure (usage and the response are on the root span). A stream's
    span stays open until the stream ends (Spans._watch)."""

    __slots__ = ("tracing", "call", "dep", "span")

    def __init__(self, tracing: Spans, call: Call, dep: Deployment) -> None:
        self.tracing, self.call, self.dep, self.span = tracing, call, dep, None

    def __enter__(self) -> Attempt:
        call, tr = self.call, self.tracing
        t = call.trace
        if t is not None:
            attrs = dict(tr._peer(self.dep)[1])
            op = tr._operations.get(call.endpoint, call.endpoint)
            attrs[GenAI.GEN_AI_OPERATION_NAME] = op
            attrs["faregate.attempt"] = call.attempts + 1
            parent = tr._in_context(t.stage) if t.stage is not None else t.ctx
            self.span = tr.tracer.start_span(f"{op} {self.dep.upstream_model}", context=parent,
                                             kind=tr._client, attributes=attrs)
            t.attempt_started = time.perf_counter()
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span, call, tr = self.span, self.call, self.tracing
        if span is None:
            return
        t = call.trace
        try:
            if exc is not None:
                set_error(span, cause(call, exc), tr._error, tr.redact)
            elif call.stream is not None and t is not None:
                t.attempt = span
                call.stream = tr._watch(call, t, call.stream)
                return
        except Exception as err:
            tr._warn("attempt", err)
        span.end()
