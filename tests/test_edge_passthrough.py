"""What Envoy must pass through untouched: model ids with slashes, raw chat bodies, and streams
flushed chunk by chunk. Stand-in servicers echo what arrived, behind the real Envoy."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from crosscompute.v1 import inference_service_pb2 as pb
from crosscompute.v1 import inference_service_pb2_grpc as pb_grpc
from google.api import httpbody_pb2

from tests.support.standin import stand_in_behind_envoy

#: Set by the test once it has read the first chunk; the stand-in holds the rest of the stream until then.
first_chunk_read = threading.Event()


class EchoInference(pb_grpc.InferenceServiceServicer):
    async def ListModels(self, request: Any, context: Any) -> Any:
        return pb.ListModelsResponse(
            object="list", data=[pb.Model(id="auto", object="model", owned_by="crosscompute")]
        )

    async def GetModel(self, request: Any, context: Any) -> Any:
        return pb.Model(id=request.model_id, object="model", created=1_700_000_000, owned_by="echo")

    async def CreateChatCompletion(self, request: Any, context: Any) -> AsyncIterator[Any]:
        body = json.loads(request.body.data)
        if not body.get("stream"):
            echo = {"received": request.body.data.decode(), "content_type": request.body.content_type}
            yield pb.CreateChatCompletionResponse(
                body=httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(echo).encode())
            )
            return
        first = b'data: {"n": 1}\n\n'
        yield pb.CreateChatCompletionResponse(
            body=httpbody_pb2.HttpBody(content_type="text/event-stream", data=first)
        )
        # The client must see the first chunk while the stream is still open.

        await asyncio.to_thread(first_chunk_read.wait, 10)
        for chunk in (b'data: {"n": 2}\n\n', b"data: [DONE]\n\n"):
            yield pb.CreateChatCompletionResponse(body=httpbody_pb2.HttpBody(data=chunk))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    def register(server: grpc.aio.Server) -> None:
        pb_grpc.add_InferenceServiceServicer_to_server(EchoInference(), server)

    with stand_in_behind_envoy(register) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "model_id"),
    [
        ("openai/gpt-5-mini", "openai/gpt-5-mini"),
        ("openai%2Fgpt-5-mini", "openai/gpt-5-mini"),
        ("accounts/fireworks/models/llama-v3", "accounts/fireworks/models/llama-v3"),
        ("a%2F..%2Fb", "a/../b"),
        ("deepseek-chat", "deepseek-chat"),
    ],
)
def test_model_ids_with_slashes_arrive_whole_and_opaque(base_url: str, path: str, model_id: str) -> None:
    response = httpx.get(f"{base_url}/v1/models/{path}")
    assert response.status_code == 200
    assert response.json() == {
        "id": model_id,
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "echo",
        "name": "",
        "context_length": 0,
    }


def test_openai_fields_are_snake_case_and_numbers_are_numbers(base_url: str) -> None:
    body = httpx.get(f"{base_url}/v1/models").json()
    assert body["object"] == "list"
    assert body["data"][0]["owned_by"] == "crosscompute"
    assert body["data"][0]["created"] == 0


def test_the_chat_body_arrives_byte_exact(base_url: str) -> None:
    raw = '{"model": "auto", "messages": [{"role": "user", "content": "h\\u00e9"}], "n": 1e0, "top_p": 0.10}'
    response = httpx.post(
        f"{base_url}/v1/chat/completions", content=raw.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    echo = response.json()
    assert echo["received"] == raw
    assert echo["content_type"] == "application/json"


def test_streams_are_flushed_chunk_by_chunk(base_url: str) -> None:
    first_chunk_read.clear()
    payload = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=payload, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.iter_raw()
        assert next(chunks) == b'data: {"n": 1}\n\n'
        first_chunk_read.set()
        rest = b"".join(chunks)
    assert rest == b'data: {"n": 2}\n\ndata: [DONE]\n\n'
