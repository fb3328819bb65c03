"""Between streams and whole responses: a finished stream's chunks assembled into the response
the cache stores, and a stored response replayed as a stream of the same chunk shapes
(`chat.completion.chunk` / `text_completion`: a role chunk, content pieces, tool calls, the
finish reason, and the usage chunk when the client asked for one)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

_PIECE = re.compile(r"\S+\s*|\s+")  # words with their trailing space
WORDS_PER_CHUNK = 4


def assemble(endpoint: str, chunks: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The whole response a complete stream amounts to; None unless every choice finished."""
    if not chunks:
        return None
    first = chunks[0]
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for c in chunk.get("choices") or ():
            i = c.get("index", 0)
            acc = choices.setdefault(i, {"text": [], "tools": {}, "finish": None, "role": "assistant"})
            if c.get("finish_reason"):
                acc["finish"] = c["finish_reason"]
            delta = c.get("delta")
            if delta is None:  # a text completion
                if c.get("text"):
                    acc["text"].append(c["text"])
                continue
            if delta.get("content"):
                acc["text"].append(delta["content"])
            for tc in delta.get("tool_calls") or ():
                slot = acc["tools"].setdefault(tc.get("index", 0), {"id": None, "type": "function",
                                                                      "function": {"name": "", "arguments": ""}})
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
    if not choices or any(acc["finish"] is None for acc in choices.values()):
        return None
    out: dict[str, Any] = {"id": first.get("id"), "created": first.get("created"), "model": first.get("model")}
    if endpoint == "chat":
        out["object"] = "chat.completion"
        out["choices"] = [_chat_choice(i, acc) for i, acc in sorted(choices.items())]
    else:
        out["object"] = "text_completion"
        out["choices"] = [{"index": i, "text": "".join(acc["text"]), "finish_reason": acc["finish"], "logprobs": None}
                          for i, acc in sorted(choices.items())]
    if usage:
        out["usage"] = usage
    return out


def _chat_choice(i: int, acc: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(acc["text"]) or None}
    if acc["tools"]:
        message["tool_calls"] = [acc["tools"][k] for k in sorted(acc["tools"])]
    return {"index": i, "message": message, "finish_reason": acc["finish"], "logprobs": None}


async def replay(endpoint: str, response: dict[str, Any], with_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """A stored response as the stream the client asked for."""
    chat = endpoint == "chat"
    head = {"id": response.get("id"), "object": "chat.completion.chunk" if chat else "text_completion",
            "created": response.get("created"), "model": response.get("model")}

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {**head, "choices": [choice]}

    for choice in response.get("choices") or ():
        i = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            yield chunk({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            for piece in _pieces(message.get("content") or ""):
                yield chunk({"index": i, "delta": {"content": piece}, "finish_reason": None})
            for n, tc in enumerate(message.get("tool_calls") or ()):
                yield chunk({"index": i, "delta": {"tool_calls": [{"index": n, **tc}]}, "finish_reason": None})
            yield chunk({"index": i, "delta": {}, "finish_reason": choice.get("finish_reason")})
        else:
            for piece in _pieces(choice.get("text") or ""):
                yield chunk({"index": i, "text": piece, "finish_reason": None})
            yield chunk({"index": i, "text": "", "finish_reason": choice.get("finish_reason")})
    if with_usage and response.get("usage"):
        yield {**head, "choices": [], "usage": response["usage"]}


def _pieces(text: str) -> list[str]:
    words = _PIECE.findall(text)
    return ["".join(words[i:i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]
