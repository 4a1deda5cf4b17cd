"""A chat request: the typed `Conversation`, and the Chat Completions body it is read from.

Kept for the router and NotDiamond, which read `ChatRequest` and `text_of`; the parsing itself is
`server.domain.wire.chat_completions`'s."""

from __future__ import annotations

from typing import Any

from server.domain.conversation import Conversation
from server.domain.wire.chat_completions import validate
from server.domain.wire.json_body import parse_body

ChatRequest = Conversation

__all__ = ["ChatRequest", "parse_body", "text_of", "validate"]


def text_of(content: Any) -> str:
    """The text of a message's JSON content: the string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""
