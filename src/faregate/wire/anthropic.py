"""Anthropic Messages request schema (POST /v1/messages) and its validation.

Like `wire/openai.py`: `TypedDict`s validated by pydantic-core, so a valid body stays a plain
dict and an invalid one is a 400 whose `param` is the dotted path of the first bad field
(`messages[0].content[1].source.media_type`). Unknown fields are tolerated (`extra="allow"`) so
newer clients keep working; the translator forwards only the fields it knows.

Content blocks accepted: text, image (base64 / url source), document (base64 PDF, plain text or
inline content), tool_use, tool_result, thinking and redacted_thinking (dropped on translation).
Server-side tools' blocks (web search results, code execution…) and file-id sources are refused
here because no upstream behind the canonical schema can run them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Required

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from faregate.core.errors import GatewayError

_OPEN = ConfigDict(extra="allow", strict=True)  # JSON types as sent: no "5" for 5, no true for 1


class CacheControl(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[str]
    ttl: str


# --- sources -------------------------------------------------------------------------------

class Base64ImageSource(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["base64"]]
    media_type: Required[Literal["image/jpeg", "image/png", "image/gif", "image/webp"]]
    data: Required[str]


class URLSource(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["url"]]
    url: Required[str]


ImageSource = Annotated[Base64ImageSource | URLSource, Field(discriminator="type")]


class Base64PDFSource(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["base64"]]
    media_type: Required[Literal["application/pdf"]]
    data: Required[str]


class PlainTextSource(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["text"]]
    media_type: Literal["text/plain"]
    data: Required[str]


# --- content blocks ------------------------------------------------------------------------

class TextBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["text"]]
    text: Required[str]
    cache_control: CacheControl | None


class ImageBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["image"]]
    source: Required[ImageSource]
    cache_control: CacheControl | None


class InlineContentSource(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["content"]]
    content: Required[str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]]


DocumentSource = Annotated[Base64PDFSource | PlainTextSource | InlineContentSource, Field(discriminator="type")]


class DocumentBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["document"]]
    source: Required[DocumentSource]
    title: str | None
    context: str | None
    cache_control: CacheControl | None


class ToolUseBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["tool_use"]]
    id: Required[str]
    name: Required[str]
    input: Required[dict[str, Any]]
    cache_control: CacheControl | None


ToolResultContent = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["tool_result"]]
    tool_use_id: Required[str]
    content: str | list[ToolResultContent]
    is_error: bool
    cache_control: CacheControl | None


class ThinkingBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["thinking"]]
    thinking: str
    signature: str


class RedactedThinkingBlock(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["redacted_thinking"]]
    data: str


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    role: Required[Literal["user", "assistant"]]
    content: Required[str | list[ContentBlock]]


# --- tools ---------------------------------------------------------------------------------

class Tool(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: Required[Annotated[str, Field(min_length=1)]]
    type: str | None  # absent or "custom"; anything else is a server tool the translator refuses
    description: str
    input_schema: dict[str, Any]
    cache_control: CacheControl | None


class ToolChoiceAuto(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["auto"]]
    disable_parallel_tool_use: bool


class ToolChoiceAny(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["any"]]
    disable_parallel_tool_use: bool


class ToolChoiceTool(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["tool"]]
    name: Required[str]
    disable_parallel_tool_use: bool


class ToolChoiceNone(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    type: Required[Literal["none"]]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class Metadata(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    user_id: str | None


class MessagesRequest(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    model: Required[Annotated[str, Field(min_length=1)]]
    max_tokens: Required[Annotated[int, Field(ge=1)]]
    messages: Required[Annotated[list[Message], Field(min_length=1)]]
    system: str | list[TextBlock]
    stop_sequences: list[str]
    temperature: Annotated[float, Field(ge=0, le=1)]
    top_p: Annotated[float, Field(ge=0, le=1)]
    top_k: Annotated[int, Field(ge=0)]
    tools: list[Tool]
    tool_choice: ToolChoice
    metadata: Metadata
    stream: bool
    thinking: dict[str, Any]
    service_tier: str


MESSAGES_REQUEST: TypeAdapter[MessagesRequest] = TypeAdapter(MessagesRequest)


# --- errors --------------------------------------------------------------------------------

def _path(loc: tuple[Any, ...], body: Any, missing: bool) -> str:
    """Dotted path of an error location, walking the input to drop pydantic's union labels.

    A string part is a field name only when the object at that point has that key (or it is
    the last part of a `missing` error); otherwise it is a union branch / tag label.
    """
    out = ""
    node = body
    last = len(loc) - 1
    for i, part in enumerate(loc):
        if isinstance(part, int) and isinstance(node, list):
            out += f"[{part}]"
            node = node[part] if 0 <= part < len(node) else None
        elif isinstance(node, dict) and part in node:
            out += f".{part}" if out else str(part)
            node = node[part]
        elif i == last and missing:
            out += f".{part}" if out else str(part)
    return out


def _join(msgs: list[str]) -> str:
    prefix = "Input should be "
    if len(msgs) > 1 and all(m.startswith(prefix) for m in msgs):
        return prefix + " or ".join(m[len(prefix):] for m in msgs)
    return "; ".join(msgs)


def validation_error(exc: ValidationError, body: Any) -> GatewayError:
    """The 400 for the first bad top-level field, at its deepest error (the union branch the
    client meant: `messages[0].content[2].source.data` rather than "not a string")."""
    errors = exc.errors(include_url=False, include_context=False)
    head = errors[0]["loc"][:1]
    paths = [(_path(tuple(e["loc"]), body, e["type"] == "missing"), e) for e in errors if e["loc"][:1] == head]
    best = -1
    param, first = paths[0]
    for path, err in paths:
        depth = path.count(".") + path.count("[")
        if depth > best:
            best, param, first = depth, path, err
    if first["type"] in ("missing", "union_tag_not_found"):
        if first["type"] == "union_tag_not_found":
            param = f"{param}.type" if param else "type"
        return GatewayError(400, f"Missing required field '{param}'.", param=param, code="invalid_request")
    msgs: list[str] = []
    for path, err in paths:
        if path == param and err["type"] != "missing" and err["msg"] not in msgs:
            msgs.append(err["msg"])
    return GatewayError(400, f"Invalid value for '{param}': {_join(msgs)}.", param=param, code="invalid_request")


def validate_messages_request(obj: object) -> dict[str, Any]:
    """Return the validated request (a plain dict), or raise a 400 `GatewayError`."""
    if not isinstance(obj, dict):
        raise GatewayError(400, "The request body must be a JSON object.", code="invalid_request")
    try:
        return MESSAGES_REQUEST.validate_python(obj)  # type: ignore[return-value]
    except ValidationError as exc:
        raise validation_error(exc, obj) from None


__all__ = ["MESSAGES_REQUEST", "MessagesRequest", "validate_messages_request", "validation_error"]
