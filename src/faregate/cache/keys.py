"""What makes two requests the same (the exact key) or comparable (the semantic partition).

Both hash the canonical request (OpenAI's JSON shape, whatever protocol the client spoke) with
the fields that cannot change the output left out: `stream`, `stream_options`, `user`,
`metadata` and the like. Everything else — messages, temperature, top_p, tools, tool_choice,
response_format, seed, max_tokens, stop, n, … — is part of the key, and so are the tenant scope
and the model group. An unknown new parameter is therefore part of the key too: a new knob can
cost a hit, never serve a wrong answer.

The semantic partition is the same hash over everything but the last user turn; that turn's
text is what gets compared by meaning. So a semantic match needs the same system prompt, the
same parameters and, in a multi-turn chat, exactly the same earlier turns.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from faregate.access.records import Principal

# Fields that do not change what the model answers.
NOT_OUTPUT = frozenset({"stream", "stream_options", "user", "metadata", "store", "service_tier",
                        "prompt_cache_key", "safety_identifier"})
SEP = "\x1f"  # between scope, model group and hash in an entry key (never in a name)


def scope_of(principal: Principal | None, scope: str) -> str:
    """The tenant whose entries this request may read and write."""
    if scope == "global":
        return "global"
    if principal is None:
        return "key:anonymous"
    if scope == "team" and principal.team_id:
        return f"team:{principal.team_id}"
    return f"key:{principal.id}"


def _digest(value: Any) -> str:
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(raw).hexdigest()


def exact_key(scope: str, endpoint: str, body: dict[str, Any]) -> str:
    group = body.get("model", "")
    canonical = {k: v for k, v in body.items() if k not in NOT_OUTPUT}
    return f"{scope}{SEP}{group}{SEP}{_digest([endpoint, canonical])}"


def split_key(key: str) -> tuple[str, str]:
    """(scope, model group) of an entry key."""
    scope, group, _ = key.split(SEP, 2)
    return scope, group


def semantic_parts(scope: str, body: dict[str, Any]) -> tuple[str, str] | None:
    """(partition key, last user turn's text) of a chat request, or None when it cannot be
    compared by meaning (no messages, the last turn is not the user's, or is not plain text)."""
    messages = body.get("messages")
    if not messages or not isinstance(messages, list):
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    text = _text(last.get("content"))
    if text is None or not text.strip():
        return None
    group = body.get("model", "")
    rest = {k: v for k, v in body.items() if k not in NOT_OUTPUT and k != "messages"}
    other = {k: v for k, v in last.items() if k != "content"}  # e.g. a `name`
    return f"{scope}{SEP}{group}{SEP}{_digest([rest, messages[:-1], other])}", text


def _text(content: Any) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only (an image changes the question)
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        return "\n".join(parts)
    return None


def deterministic(body: dict[str, Any]) -> bool:
    """Temperature 0 or a seed: the request asks for a repeatable answer."""
    return body.get("temperature") == 0 or body.get("seed") is not None
