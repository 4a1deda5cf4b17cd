"""Rendering `envoy/envoy.yaml.tmpl`, and the JSON shapes of Envoy's own error replies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from server.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ENVOY_DIR = PROJECT_ROOT / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.tmpl"
LUA_SCRIPT = ENVOY_DIR / "gateway.lua"
DESCRIPTOR_SET = PROJECT_ROOT / "generated" / "crosscompute.binpb"

#: Envoy's own replies (status → OpenAI error type, code, message). `None` keeps Envoy's text,
#: which says what was wrong (for example where a JSON body fails to parse).
LOCAL_REPLIES: dict[int, tuple[str, str, str | None]] = {
    400: ("invalid_request_error", "invalid_request", None),
    404: ("invalid_request_error", "not_found", "Unknown route."),
    405: ("invalid_request_error", "method_not_allowed", "Method not allowed on this route."),
    408: ("invalid_request_error", "request_timeout", "The request took too long to arrive."),
    413: ("invalid_request_error", "request_too_large", "The request body is too large."),
    415: ("invalid_request_error", "unsupported_media_type", "Unsupported content type."),
    429: ("rate_limit_error", "rate_limited", "Too many requests."),
    431: ("invalid_request_error", "headers_too_large", "The request headers are too large."),
    502: ("api_error", "bad_gateway", "The gateway's server answered badly."),
    503: ("api_error", "unavailable", "The service is temporarily unavailable."),
    504: ("api_error", "timeout", "The gateway's server did not answer in time."),
}

#: Requests whose errors take OpenAI's shape: the /v1 paths, before and after transcoding.
_OPENAI_ROUTES = {
    "or_filter": {
        "filters": [
            {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/v1/"}}}},
            {"header_filter": {"header": {"name": ":path", "string_match": {"exact": "/v1"}}}},
            {
                "header_filter": {
                    "header": {"name": "x-envoy-original-path", "string_match": {"prefix": "/v1/"}}
                }
            },
            {
                "header_filter": {
                    "header": {
                        "name": ":path",
                        "string_match": {"prefix": "/crosscompute.v1.InferenceService/"},
                    }
                }
            },
        ]
    }
}


def _status_filter(status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": status, "runtime_key": f"local_reply_{status}"},
            }
        }
    }


def _json_format(body: dict[str, Any]) -> dict[str, Any]:
    return {"json_format": body, "content_type": "application/json"}


def local_reply_mappers() -> list[dict[str, Any]]:
    """`local_reply_config` mappers: each of Envoy's own error statuses, in both JSON shapes."""
    mappers: list[dict[str, Any]] = []
    for status, (error_type, code, message) in sorted(LOCAL_REPLIES.items()):
        text = message or "%LOCAL_REPLY_BODY%"
        openai = {"error": {"message": text, "type": error_type, "code": code, "param": None}}
        api = {"ok": False, "error": {"code": code.upper(), "message": text}}
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [_status_filter(status), _OPENAI_ROUTES]}},
                "body_format_override": _json_format(openai),
            }
        )
        mappers.append({"filter": _status_filter(status), "body_format_override": _json_format(api)})
    return mappers


@dataclass(frozen=True)
class EdgeConfig:
    """What varies between Envoy deployments."""

    listen_address: str
    listen_port: int
    admin_address: str
    admin_port: int
    grpc_address: str
    grpc_port: int
    max_body_bytes: int
    stream_idle_timeout_seconds: int
    #: More replicas behind the same Envoy: (address, port) pairs besides the first.
    more_endpoints: tuple[tuple[str, int], ...] = ()

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        grpc_port: int,
        *,
        listen_port: int | None = None,
        admin_port: int | None = None,
    ) -> EdgeConfig:
        """Envoy in front of a server on `grpc_port`, as `settings` configure it (ports may be overridden)."""
        wildcard = settings.grpc_host in {"0.0.0.0", "::", ""}  # noqa: S104 - a bind address, read not bound
        return cls(
            listen_address=settings.http_host,
            listen_port=settings.http_port if listen_port is None else listen_port,
            admin_address="127.0.0.1",
            admin_port=settings.envoy_admin_port if admin_port is None else admin_port,
            grpc_address="127.0.0.1" if wildcard else settings.grpc_host,
            grpc_port=grpc_port,
            max_body_bytes=settings.max_body_bytes,
            stream_idle_timeout_seconds=settings.stream_idle_timeout_seconds,
        )


def render(config: EdgeConfig) -> str:
    """Envoy's YAML for `config` (JSON inside YAML where it is generated)."""
    template = Template(TEMPLATE.read_text())
    return template.substitute(
        LISTEN_ADDRESS=config.listen_address,
        LISTEN_PORT=config.listen_port,
        ADMIN_ADDRESS=config.admin_address,
        ADMIN_PORT=config.admin_port,
        GRPC_ENDPOINTS=json.dumps(
            [
                {"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}}
                for address, port in ((config.grpc_address, config.grpc_port), *config.more_endpoints)
            ]
        ),
        MAX_BODY_BYTES=config.max_body_bytes,
        STREAM_IDLE_TIMEOUT=f"{config.stream_idle_timeout_seconds}s",
        DESCRIPTOR_PATH=str(DESCRIPTOR_SET),
        LUA_PATH=str(LUA_SCRIPT),
        LOCAL_REPLY_MAPPERS=json.dumps(local_reply_mappers()),
    )
