"""Message content for spans, only when content capture is opted in: the GenAI semantic
conventions' `gen_ai.input.messages` / `gen_ai.output.messages` shapes, every text through a
`redact(text) -> str` hook. `mask_sensitive` is the default hook — a regex floor for API keys,
e-mail addresses, card numbers and phone numbers; a PII detector (Presidio) can replace it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from faregate.core.call import Call


# ------------------------------------------------------------------------------ redaction

_KEYS = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{8,}"
                   r"|\b(?:ghp|gho|ghs|github_pat)_[A-Za-z0-9_]{20,}|\bAKIA[0-9A-Z]{16}\b"
                   r"|\bAIza[0-9A-Za-z_-]{35}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
                    r"\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}$|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[card]" if _luhn(digits) else m.group()


def _phone(m: re.Match[str]) -> str:
    text = m.group()
    n = sum(c.isdigit() for c in text)
    separated = text.startswith(("+", "(")) or any(c in text for c in " .-")
    if 7 <= n <= 15 and (separated or n >= 10) and not _DATE.match(text):
        return "[phone]"
    return text


def mask_sensitive(text: str) -> str:
    """The default `redact`: masks API keys and bearer tokens, e-mail addresses, card numbers
    (Luhn-checked) and phone numbers. A regex floor, not a PII detector: pass a better
    `redact` (e.g. Presidio) to `Tracing` for that."""
    text = _KEYS.sub("[api-key]", text)
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(_phone, text)


# ------------------------------------------------------------------------------- content

def _text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def _parts(message: dict[str, Any], text: Any,
           redact: Callable[[str], str]) -> list[dict[str, Any]]:
    """A message's text parts and tool calls (arguments redacted like any text)."""
    parts = [_text(redact(x)) for x in _texts(text)]
    for tc in message.get("tool_calls") or ():
        fn = tc.get("function") or {}
        parts.append({"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"),
                      "arguments": redact(fn.get("arguments") or "")})
    return parts


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content
                if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def input_messages(call: Call, redact: Callable[[str], str]) -> str | None:
    """gen_ai.input.messages: [{role, parts: [{type: text, content}, …]}], every text redacted."""
    body = call.body
    out: list[dict[str, Any]] = []
    if call.endpoint == "chat":
        for m in body.get("messages") or ():
            role = m.get("role")
            if role == "tool":
                parts = [{"type": "tool_call_response", "id": m.get("tool_call_id"),
                          "response": redact(" ".join(_texts(m.get("content"))))}]
            else:
                parts = _parts(m, m.get("content"), redact)
            out.append({"role": role, "parts": parts})
    elif call.endpoint == "completions":
        prompt = body.get("prompt")
        texts = [prompt] if isinstance(prompt, str) else [p for p in prompt or ()
                                                          if isinstance(p, str)]
        out.append({"role": "user", "parts": [_text(redact(p)) for p in texts]})
    else:
        return None
    return orjson.dumps(out).decode()


def output_messages(call: Call, finish: list[str], redact: Callable[[str], str]) -> str | None:
    """gen_ai.output.messages: the answer's choices (a stream: its text), redacted."""
    out: list[dict[str, Any]] = []
    response = call.response
    if response is not None and call.endpoint != "embeddings":
        for c in response.get("choices") or ():
            msg = c.get("message") or {}
            parts = _parts(msg, msg.get("content") if "message" in c else c.get("text"), redact)
            out.append({"role": "assistant", "parts": parts,
                        "finish_reason": c.get("finish_reason")})
    elif call.stream_text is not None:
        out.append({"role": "assistant", "parts": [_text(redact("".join(call.stream_text)))],
                    "finish_reason": finish[-1] if finish else None})
    return orjson.dumps(out).decode() if out else None
