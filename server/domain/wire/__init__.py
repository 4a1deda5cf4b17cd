"""The wire formats, one module each, translating to and from `server.domain.conversation`.

Inbound (what callers speak): `chat_completions`, `messages` (Anthropic), `responses` (OpenAI
Responses). Outbound (what providers speak): `openai_upstream`, `anthropic_upstream`. `sse` frames
Server-Sent Events for all of them, `json_body` reads a request body strictly.

They are pure translation: no storage, no gRPC, no network (an import-linter contract in
`make lint` keeps them so).
"""
