"""What the complexity model reads of a chat request: hashed n-grams of the ask, and its shape.

One function, used alike to train the model (`scripts/train_router.py`) and to score a request at
run time, so the two cannot drift apart. The ask is the final user turn; a long one is read from its
head and its tail (the question sits at one end of a pasted document). It becomes sparse features in
a fixed number of hashed buckets:

- character 2- to 5-grams of the lower-cased ask (every script, no tokenizer);
- its words and word pairs;
- the words of the earlier turns, apart and lighter (a follow-up is read in context);
- the request's shape, one-hot by bucket (length, lines, code, digits, symbols, questions, turns,
  a system prompt, JSON asked for, tools, images, tool results), so the model learns what length
  means instead of being told.

All hashing is vectorised numpy arithmetic on code points (wrapping uint64), never Python's salted
`hash`: a request gets the same features in every process, and a 2,000-token prompt costs well
under a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from server.domain.chat.request import text_of

#: Buckets for hashed text features; the shape features sit after them.
TEXT_BUCKETS = 1 << 18
#: A long ask is read from this many characters at its head and at its tail.
HEAD, TAIL = 1000, 400
#: Earlier turns contribute at most this many characters, the most recent ones.
CONTEXT_CHARS = 1200
CHAR_ORDERS = (2, 3, 4, 5)
#: How much the earlier turns weigh against the ask.
CONTEXT_WEIGHT = 0.5
#: The ask's first and last this many characters are read again on their own, this heavily.
EDGE = 250
EDGE_WEIGHT = 1.0
CODE_MARKERS = ("```", ";\n", "{\n", "}\n", "def ", "class ", "import ", "function ", "select ", "</")

_MASK = (1 << 64) - 1
_R = 0x100000001B3
_R_INVERSE = pow(_R, -1, 1 << 64)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(1_000_003)
_BUCKET_MASK = np.uint64(TEXT_BUCKETS - 1)
#: Code points that separate words: ASCII other than letters, digits and `_`, and the common
#: Unicode punctuation blocks (general, CJK, full-width, Latin-1, Devanagari and Arabic marks).
_SEPARATOR_RANGES = (
    (0, 47),
    (58, 64),
    (91, 94),
    (96, 96),
    (123, 191),
    (0x2000, 0x206F),
    (0x3000, 0x303F),
    (0xFF00, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0x0964, 0x0965),
    (0x060C, 0x060C),
    (0x061B, 0x061F),
)
#: Per code point of the Basic Multilingual Plane (anything above reads as its last entry): bit 1
#: a word separator, bit 2 a digit, bit 4 a maths or code symbol.
_TABLE = np.zeros(0x10001, dtype=np.uint8)
for _low, _high in _SEPARATOR_RANGES:
    _TABLE[_low : _high + 1] |= 1
_TABLE[ord("0") : ord("9") + 1] |= 2
for _symbol in "=+-*/^<>≤≥∑∫√π%|&":
    _TABLE[ord(_symbol)] |= 4
_LONGEST = HEAD + TAIL + CONTEXT_CHARS + 2
_POWERS = np.concatenate([np.ones(1, dtype=np.uint64), np.cumprod(np.full(_LONGEST, _R, dtype=np.uint64))])
_INVERSES = np.concatenate(
    [np.ones(1, dtype=np.uint64), np.cumprod(np.full(_LONGEST, _R_INVERSE, dtype=np.uint64))]
)


#: Numeric shape features, one-hot by the bucket their value falls in.
SHAPE_EDGES: dict[str, tuple[float, ...]] = {
    "ask_chars": (20, 50, 120, 300, 700, 1500, 4000),
    "ask_words": (4, 10, 25, 60, 150),
    "ask_lines": (2, 4, 10, 40),
    "ask_questions": (1, 2, 4),
    "code_markers": (1, 3, 10, 40),
    "symbol_share": (0.005, 0.02, 0.05, 0.1),
    "digit_share": (0.005, 0.02, 0.05, 0.1),
    "user_turns": (2, 3, 5, 9),
    "context_chars": (1, 300, 1500, 6000),
    "tools": (1, 2, 4),
}
SHAPE_FLAGS = ("system", "json", "json_schema", "tool_choice_required", "images", "tool_results")


def _shape_names() -> tuple[str, ...]:
    names: list[str] = []
    for name, edges in SHAPE_EDGES.items():
        names += [f"{name}<{edge:g}" for edge in edges] + [f"{name}>={edges[-1]:g}"]
    return (*names, *SHAPE_FLAGS)


SHAPE_NAMES = _shape_names()
FEATURES = TEXT_BUCKETS + len(SHAPE_NAMES)
_SHAPE_INDEX = {name: TEXT_BUCKETS + i for i, name in enumerate(SHAPE_NAMES)}


@dataclass(frozen=True)
class Shape:
    """What the router knows of a request besides its messages."""

    tools: int = 0
    tool_choice_required: bool = False
    images: bool = False
    #: `response_format.type`: "", "text", "json_object" or "json_schema".
    response_format: str = ""

    @classmethod
    def of(cls, options: dict[str, Any], *, images: bool) -> Shape:
        """The shape of a request from its Chat Completions options (`tools`, `tool_choice`, ...)."""
        choice = options.get("tool_choice")
        return cls(
            tools=len(options.get("tools") or ()),
            tool_choice_required=choice == "required" or isinstance(choice, dict),
            images=images,
            response_format=str((options.get("response_format") or {}).get("type", "")),
        )


#: A request with no tools, images or response format.
PLAIN = Shape()


def _window(text: str) -> str:
    if len(text) <= HEAD + TAIL:
        return text
    return text[:HEAD] + "\n" + text[-TAIL:]


def _points(text: str) -> npt.NDArray[np.uint64]:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _finish(hashed: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.int64]:
    hashed = (hashed ^ np.uint64(salt)) * _MIX
    hashed ^= hashed >> np.uint64(31)
    return (hashed & _BUCKET_MASK).astype(np.int64)


def _char_grams(points: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    found = []
    h = points * _PRIME
    for order in range(2, CHAR_ORDERS[-1] + 1):
        count = len(points) - order + 1
        if count <= 0:
            break
        h = (h[:count] ^ np.uint64(order)) * _PRIME ^ points[order - 1 :]
        if order in CHAR_ORDERS:
            found.append(h)
    if not found:
        return np.zeros(0, dtype=np.int64)
    return _finish(np.concatenate(found), 0x51)


def _classes(points: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    return _TABLE[np.minimum(points, np.uint64(0x10000))]


def _words(points: npt.NDArray[np.uint64], classes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """One hash per word, from prefix sums of the code points (no Python loop)."""
    n = len(points)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    word = (classes & 1) == 0
    edges = np.diff(np.concatenate([[False], word, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges == 1)
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64)
    ends = np.flatnonzero(edges == -1)
    prefix = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum((points + np.uint64(1)) * _POWERS[:n])])
    hashed: npt.NDArray[np.uint64] = (prefix[ends] - prefix[starts]) * _INVERSES[starts]
    return hashed


def _word_grams(words: npt.NDArray[np.uint64], salt: int) -> npt.NDArray[np.int64]:
    """The words, then the word pairs, each hashed with its own salt."""
    pairs = words[:-1] * np.uint64(_R) + words[1:] if len(words) > 1 else np.zeros(0, dtype=np.uint64)
    return np.concatenate([_finish(words, salt), _finish(pairs, salt + 1)])


def _bucket(name: str, value: float) -> int:
    edges = SHAPE_EDGES[name]
    for edge in edges:
        if value < edge:
            return _SHAPE_INDEX[f"{name}<{edge:g}"]
    return _SHAPE_INDEX[f"{name}>={edges[-1]:g}"]


def featurize(
    messages: list[dict[str, Any]], shape: Shape | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The request as sparse features: bucket indices (repeats allowed, they add up) and values."""
    shape = shape or PLAIN
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), -1)
    text = text_of(messages[last].get("content")) if last >= 0 else ""
    ask = _window(text).lower()
    points = _points(ask)
    classes = _classes(points)
    words = _words(points, classes)
    grams = np.concatenate([_char_grams(points), _word_grams(words, 0x77)])
    parts = [grams]
    weights = [np.full(len(grams), 1 / np.sqrt(max(len(grams), 1)), dtype=np.float32)]
    if EDGE:
        # The ask's first and last words on their own: in a long turn, the question is there.
        for edge, salt in ((ask[:EDGE], 0x68), (ask[-EDGE:], 0x74)):
            edge_points = _points(edge)
            found = _word_grams(_words(edge_points, _classes(edge_points)), salt)
            parts.append(found)
            weights.append(np.full(len(found), EDGE_WEIGHT / np.sqrt(max(len(found), 1)), dtype=np.float32))

    earlier = [
        text_of(m.get("content")) for m in messages[: max(last, 0)] if m.get("role") in ("user", "assistant")
    ]
    context = " ".join(earlier)
    if context:
        earlier_points = _points(context[-CONTEXT_CHARS:].lower())
        context_words = _finish(_words(earlier_points, _classes(earlier_points)), 0x63)
        parts.append(context_words)
        weights.append(
            np.full(
                len(context_words), CONTEXT_WEIGHT / np.sqrt(max(len(context_words), 1)), dtype=np.float32
            )
        )

    system = " ".join(text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    scale = len(text) / max(len(ask), 1)
    numbers = {
        "ask_chars": len(text),
        "ask_words": len(words) * scale,
        "ask_lines": text.count("\n") + 1,
        "ask_questions": text.count("?") + text.count("\uff1f"),
        "code_markers": sum(ask.count(marker) for marker in CODE_MARKERS) * scale,
        "symbol_share": float(np.count_nonzero(classes & 4)) / max(len(points), 1),
        "digit_share": float(np.count_nonzero(classes & 2)) / max(len(points), 1),
        "user_turns": sum(1 for m in messages if m.get("role") == "user"),
        "context_chars": len(context),
        "tools": shape.tools,
    }
    flags = {
        "system": bool(system),
        "json": shape.response_format in ("json_object", "json_schema") or "json" in system.lower(),
        "json_schema": shape.response_format == "json_schema",
        "tool_choice_required": shape.tool_choice_required,
        "images": shape.images,
        "tool_results": any(m.get("role") == "tool" for m in messages),
    }
    shaped = [_bucket(name, value) for name, value in numbers.items()]
    shaped += [_SHAPE_INDEX[name] for name, on in flags.items() if on]
    parts.append(np.asarray(shaped, dtype=np.int64))
    weights.append(np.ones(len(shaped), dtype=np.float32))
    return np.concatenate(parts), np.concatenate(weights)
