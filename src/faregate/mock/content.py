"""Deterministic content: reply text and its tokens, tool calls, prompt counting, ids, embeddings.

A "token" is a word with its leading whitespace (`"Mock", " reply", " to:", ...`), so the
tokens of a reply concatenate back to the reply and token counts are easy to predict.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import struct
from functools import lru_cache
from typing import Any

import orjson

_TOKEN_RE = re.compile(r"\s*\S+")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
REPLY_PREFIX = "Mock reply to: "


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def rand_id(prefix: str, length: int = 24) -> str:
    """`prefix` + `length` random alphanumerics (not seeded: ids differ across workers)."""
    return prefix + "".join([_ALPHABET[b % 62] for b in os.urandom(length)])


# ---------------------------------------------------------------- prompt reading

def text_of(content: Any) -> str:
    """The text of a message content: a string, or the `text` of its parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return " ".join(parts)
    return ""


def content_words(content: Any) -> int:
    """Words in a message content: its text, tool results and tool-call arguments."""
    if isinstance(content, str):
        return len(content.split())
    n = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                n += len(part.split())
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    n += len(text.split())
                elif part.get("type") == "tool_result":
                    n += content_words(part.get("content"))
                elif part.get("type") == "tool_use":
                    n += len(orjson.dumps(part.get("input")).split())
    return n


def prompt_tokens(messages: Any, system: Any = None, tools: Any = None) -> int:
    """Words across all message text (and system) plus the tools' schema JSON, at least 1."""
    n = content_words(system)
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                n += content_words(msg.get("content"))
                calls = msg.get("tool_calls")
                if isinstance(calls, list):
                    for call in calls:
                        fn = call.get("function") if isinstance(call, dict) else None
                        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                            n += len(fn["arguments"].split())
    elif isinstance(messages, str):
        n += len(messages.split())
    if tools:
        n += len(orjson.dumps(tools).split())
    return max(n, 1)


def last_user_text(messages: list[Any]) -> str:
    """Text of the last user message that has any text (tool-result-only turns are skipped)."""
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            text = text_of(msg.get("content"))
            if text.strip():
                return text
    return ""


# ---------------------------------------------------------------- text generation

class Generated:
    """Tokens of one reply and why it ended: "stop", "length" or "stop_sequence"."""

    __slots__ = ("tokens", "finish", "stop_sequence")

    def __init__(self, tokens: list[str], finish: str, stop_sequence: str | None = None) -> None:
        self.tokens = tokens
        self.finish = finish
        self.stop_sequence = stop_sequence

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def reply_tokens(user_text: str, count: int | None = None) -> list[str]:
    """`Mock reply to: <text>` as tokens; with `count`, exactly that many (words repeated)."""
    base = tokenize(REPLY_PREFIX + user_text.strip())
    if count is None or count == len(base):
        return base
    if count < len(base):
        return base[:count]
    words = [" " + t.lstrip() for t in base]
    k = len(words)
    return base + [words[i % k] for i in range(len(base), count)]


def _stops(stop: Any) -> list[str]:
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def generate(user_text: str, *, tokens: int | None = None, max_tokens: Any = None, stop: Any = None,
             json_mode: bool = False) -> Generated:
    out = reply_tokens(user_text, tokens)
    if json_mode:  # `{"mock":"Mock`, ` reply`, ...: the same token count as the plain reply
        out = tokenize(orjson.dumps({"mock": "".join(out)}).decode())
    finish = "stop"
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and 0 <= max_tokens < len(out):
        out = out[:max_tokens]
        finish = "length"
    stops = _stops(stop)
    if stops:
        text = "".join(out)
        best, seq = -1, None
        for s in stops:
            i = text.find(s)
            if i != -1 and (best == -1 or i < best):
                best, seq = i, s
        if seq is not None:
            kept, pos = [], 0
            for tok in out:
                if pos + len(tok) <= best:
                    kept.append(tok)
                    pos += len(tok)
                else:
                    if best > pos:
                        kept.append(tok[: best - pos])
                    break
            return Generated(kept, "stop_sequence", seq)
    return Generated(out, finish)


# ---------------------------------------------------------------- tools

_PLACEHOLDERS = {"string": "mock", "integer": 1, "number": 1, "boolean": True}


def _placeholder(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return _PLACEHOLDERS.get(kind, "mock")


def tool_arguments(schema: Any) -> dict[str, Any]:
    """Each `required` property of a JSON schema, filled with a placeholder of its type."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    return {name: _placeholder(props.get(name)) for name in required if isinstance(name, str)}


def pick_tools(tools: list[tuple[str, Any]], forced: str | None, parallel: bool) -> list[tuple[str, Any]]:
    """The tools to call: the forced one, else the first (first two when parallel)."""
    if forced is not None:
        chosen = [t for t in tools if t[0] == forced]
        return chosen[:1] or tools[:1]
    return tools[:2] if parallel and len(tools) >= 2 else tools[:1]


def fragments(text: str) -> list[str]:
    """`text` in at least two pieces (for streaming tool arguments)."""
    pieces = max(2, min(8, len(text) // 8))
    size = max(1, math.ceil(len(text) / pieces))
    out = [text[i:i + size] for i in range(0, len(text), size)]
    while len(out) < 2:
        out.append("")
    return out


def tool_call_tokens(name: str, arguments: str) -> int:
    return len(tokenize(arguments)) + 1


# ---------------------------------------------------------------- logprobs

def logprob_entry(token: str, top: int) -> dict[str, Any]:
    raw = list(token.encode())
    alts = [{"token": token, "logprob": -0.1, "bytes": raw}] if top > 0 else []
    for i in range(1, top):
        alt = f"{token}{i}"
        alts.append({"token": alt, "logprob": -0.1 - i, "bytes": list(alt.encode())})
    return {"token": token, "logprob": -0.1, "bytes": raw, "top_logprobs": alts}


def top_count(value: Any) -> int:
    return min(value, 20) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# ---------------------------------------------------------------- embeddings

@lru_cache(maxsize=8192)
def embedding(key: str, dims: int) -> tuple[float, ...]:
    """A deterministic unit vector of `dims` floats derived from a hash of `key`."""
    raw = struct.unpack(f"<{dims}H", hashlib.shake_256(key.encode()).digest(dims * 2))
    vec = [v / 32767.5 - 1.0 for v in raw]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    # round-trip through float32 so the float and base64 encodings agree
    packed = struct.pack(f"<{dims}f", *[v / norm for v in vec])
    return struct.unpack(f"<{dims}f", packed)


def embedding_base64(vec: tuple[float, ...]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def embedding_inputs(value: Any) -> list[tuple[str, int]] | None:
    """`input` as (hash key, token count) pairs; None when it is not a valid input."""
    if isinstance(value, str):
        return [(value, max(len(value.split()), 1))]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):  # one token array
        return [("tokens:" + ",".join(map(str, value)), len(value))]
    out = []
    for item in value:
        if isinstance(item, str):
            out.append((item, max(len(item.split()), 1)))
        elif isinstance(item, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            out.append(("tokens:" + ",".join(map(str, item)), len(item)))
        else:
            return None
    return out
