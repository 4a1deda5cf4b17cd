"""Reading a request body: strict UTF-8, one JSON object, no duplicate keys, bounded nesting."""

from __future__ import annotations

import json
from typing import Any

from server.domain.errors import InvalidArgument


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(
                f"The JSON body repeats the key `{key[:64]}`.", param=key[:64], reason="INVALID_REQUEST"
            )
        result[key] = value
    return result


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or `InvalidArgument`."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_no_duplicates)
    except InvalidArgument:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: also integers over 4300 digits
        raise InvalidArgument(
            "We could not parse the JSON body of your request: it must be a UTF-8 JSON object.",
            param=None,
            reason="INVALID_JSON",
        ) from None
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object.", param=None, reason="INVALID_JSON")
    return body
