"""Content: OpenAI message parts ⇄ Anthropic content blocks.

Anthropic → OpenAI: text → text part; image (base64 → `data:` URL, url → URL) → image_url part;
document (base64 PDF) → file part with a `data:` URL, (plain text / inline content) → text parts.
OpenAI → Anthropic: the reverse, plus refusal parts → text. Audio parts and file ids have no
Anthropic equivalent and are a 400 naming the part. Anthropic `cache_control` markers are not
put into canonical requests (OpenAI upstreams would reject the unknown key), but a LiteLLM-style
`cache_control` on a canonical content part is passed on to Anthropic.
"""

from __future__ import annotations

from typing import Any

from faregate.core.errors import GatewayError

_MEDIA_ALIASES = {"image/jpg": "image/jpeg"}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, param=param, code="invalid_request")


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 `data:` URL, else None."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    media = head[5:-7].split(";", 1)[0].strip().lower()
    return _MEDIA_ALIASES.get(media, media), data


def join_text(content: Any, sep: str = "\n") -> str:
    """The text of OpenAI content (a string or parts) or of Anthropic blocks; other parts skipped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, dict):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str):
                texts.append(text)
    return sep.join(texts)


# --- Anthropic blocks -> OpenAI parts (front end) --------------------------------------------

def image_part(block: dict[str, Any]) -> dict[str, Any]:
    source = block["source"]
    if source.get("type") == "base64":
        url = data_url(source["media_type"], source["data"])
    else:
        url = source["url"]
    return {"type": "image_url", "image_url": {"url": url}}


def document_parts(block: dict[str, Any], param: str) -> list[dict[str, Any]]:
    source = block["source"]
    kind = source.get("type")
    if kind == "base64":
        file: dict[str, Any] = {"file_data": data_url(source["media_type"], source["data"])}
        if block.get("title"):
            file["filename"] = block["title"]
        return [{"type": "file", "file": file}]
    if kind == "text":
        return [{"type": "text", "text": source["data"]}]
    if kind == "content":
        inner = source["content"]
        if isinstance(inner, str):
            return [{"type": "text", "text": inner}]
        return [p for b in inner for p in block_to_parts(b, param)]
    raise _bad(f"'{param}.source.type' {kind!r} is not supported by this gateway.", f"{param}.source.type")


def block_to_parts(block: dict[str, Any], param: str) -> list[dict[str, Any]]:
    """OpenAI user-content parts for one Anthropic user block (text, image or document)."""
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": block["text"]}]
    if kind == "image":
        return [image_part(block)]
    if kind == "document":
        return document_parts(block, param)
    if kind in ("thinking", "redacted_thinking"):
        return []
    raise _bad(f"'{param}': a {kind} block is not valid in a user message.", param)


def tool_result_content(block: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text for the OpenAI tool message, image parts it cannot carry).

    OpenAI tool messages hold text only; images a tool returned are attached by the caller to
    the user message that follows. An error result is marked with an "Error: " prefix, the
    only way to tell an OpenAI model the tool failed.
    """
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        images = [image_part(b) for b in content if b.get("type") == "image"]
        text = join_text(content)
    else:
        text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return text, images


# --- OpenAI parts -> Anthropic blocks (upstream) ---------------------------------------------

def image_block(url: Any, param: str) -> dict[str, Any]:
    if not isinstance(url, str):
        raise _bad(f"'{param}.image_url.url' must be a string.", f"{param}.image_url.url")
    if url.startswith("data:"):
        parsed = parse_data_url(url)
        if parsed is None:
            raise _bad(f"'{param}.image_url.url': only base64 data URLs (data:<type>;base64,…) are supported.",
                       f"{param}.image_url.url")
        media, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad(f"'{param}.image_url.url' must be an http(s) URL or a base64 data URL.", f"{param}.image_url.url")


def file_block(file: Any, param: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = parse_data_url(data) if isinstance(data, str) and data.startswith("data:") else None
    if parsed is None:
        raise _bad(f"'{param}.file': Anthropic upstreams take files only as base64 data URLs in 'file_data' "
                   "(file ids are not supported).", f"{param}.file")
    media, payload = parsed
    block: dict[str, Any] = {"type": "document", "source": {"type": "base64", "media_type": media, "data": payload}}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def part_to_block(part: Any, param: str) -> dict[str, Any] | None:
    """The Anthropic block for one OpenAI content part; None for an empty text part (Anthropic
    refuses empty text blocks). A LiteLLM-style `cache_control` on the part is kept."""
    if not isinstance(part, dict):
        raise _bad(f"'{param}' must be a content part object.", param)
    block = _part_to_block(part, param)
    if block is not None and isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _part_to_block(part: dict[str, Any], param: str) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "refusal":
        text = part.get("refusal")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image_url":
        image = part.get("image_url")
        return image_block(image.get("url") if isinstance(image, dict) else image, param)
    if kind == "file":
        return file_block(part.get("file"), param)
    raise _bad(f"'{param}.type' {kind!r} is not supported by Anthropic upstreams.", f"{param}.type")


def content_to_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """Anthropic blocks for OpenAI message content (string, parts or None)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or a list of content parts.", param)
    blocks = []
    for i, part in enumerate(content):
        block = part_to_block(part, f"{param}[{i}]")
        if block is not None:
            blocks.append(block)
    return blocks
