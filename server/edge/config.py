"""Rendering `envoy/envoy.yaml.tmpl`, and the JSON shapes of Envoy's own error replies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from server.domain.wire import chat_completions, messages
from server.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
ENVOY_DIR = PROJECT_ROOT / "envoy"
TEMPLATE = ENVOY_DIR / "envoy.yaml.tmpl"
LUA_SCRIPT = ENVOY_DIR / "gateway.lua"
DESCRIPTOR_SET = PROJECT_ROOT / "generated" / "crosscompute.binpb"
#: The dashboard: plain files Envoy serves itself (`index.html` at `/`, the rest under `/dashboard/`).
WEB_DIR = PROJECT_ROOT / "web"
STATIC_PREFIX = "/dashboard/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
#: How deep the generated routes sit in envoy.yaml.tmpl's `routes:` list.
_ROUTE_INDENT = " " * 14

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
            {
                "header_filter": {
                    "header": {
                        "name": ":path",
                        "string_match": {"prefix": "/crosscompute.v1.ResponsesService/"},
                    }
                }
            },
        ]
    }
}


#: Requests whose errors take Anthropic's shape: the Messages API, before and after transcoding.
_ANTHROPIC_ROUTES = {
    "or_filter": {
        "filters": [
            {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/v1/messages"}}}},
            {
                "header_filter": {
                    "header": {"name": "x-envoy-original-path", "string_match": {"prefix": "/v1/messages"}}
                }
            },
            {
                "header_filter": {
                    "header": {
                        "name": ":path",
                        "string_match": {"prefix": "/crosscompute.v1.MessagesService/"},
                    }
                }
            },
        ]
    }
}
#: Anthropic's error type for each of Envoy's own replies.
ANTHROPIC_TYPES = {
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
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
    """`local_reply_config` mappers: each of Envoy's own error statuses, in each API's JSON shape."""
    mappers: list[dict[str, Any]] = []
    for status, (error_type, code, message) in sorted(LOCAL_REPLIES.items()):
        text = message or "%LOCAL_REPLY_BODY%"
        openai = chat_completions.error_object(text, error_type, code, None)
        api = {"ok": False, "error": {"code": code.upper(), "message": text}}
        anthropic_type = ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [_status_filter(status), _ANTHROPIC_ROUTES]}},
                "body_format_override": _json_format(messages.error_object(anthropic_type, text)),
            }
        )
        mappers.append(
            {
                "filter": {"and_filter": {"filters": [_status_filter(status), _OPENAI_ROUTES]}},
                "body_format_override": _json_format(openai),
            }
        )
        mappers.append({"filter": _status_filter(status), "body_format_override": _json_format(api)})
    return mappers


@dataclass(frozen=True)
class StaticFile:
    """One file of the dashboard and the path it is served at."""

    url_path: str
    file: Path
    content_type: str


def static_files(web_dir: Path = WEB_DIR) -> list[StaticFile]:
    """Every servable file under `web_dir`: `index.html` at `/`, the others under `/dashboard/`."""
    files: list[StaticFile] = []
    for path in sorted(web_dir.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        relative = path.relative_to(web_dir).as_posix()
        url_path = "/" if relative == "index.html" else STATIC_PREFIX + relative
        files.append(StaticFile(url_path, path, content_type))
    if not any(item.url_path == "/" for item in files):
        raise FileNotFoundError(f"the dashboard has no index.html in {web_dir}")
    return files


def content_security_policy(supabase_url: str) -> str:
    """The page may talk to this origin and the configured Supabase project, and nothing else."""
    connect = " ".join(["'self'", *([supabase_url.rstrip("/")] if supabase_url else [])])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def static_routes(files: list[StaticFile], supabase_url: str) -> str:
    """Envoy routes answering each file from memory (`direct_response`), GET and HEAD only.

    The transcoder is switched off on them: with `reject_unknown_method` it would answer 404 to
    any path that is not an RPC's. The Lua filter lets them through (they are not gRPC paths).
    """
    headers = {
        "cache-control": "no-cache",
        "content-security-policy": content_security_policy(supabase_url),
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
    }
    lines = []
    for item in files:
        route = {
            "match": {
                "path": item.url_path,
                "headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}],
            },
            "direct_response": {"status": 200, "body": {"filename": str(item.file)}},
            "response_headers_to_add": [
                {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
                for key, value in {"content-type": item.content_type, **headers}.items()
            ],
            "typed_per_filter_config": {
                "envoy.filters.http.grpc_json_transcoder": {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": True,
                }
            },
        }
        lines.append(f"{_ROUTE_INDENT}- {json.dumps(route)}")
    return "\n".join(lines)


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
    #: The Supabase project the dashboard may talk to (its only allowed outside origin).
    supabase_url: str = ""
    #: Where the dashboard's files are.
    web_dir: Path = WEB_DIR

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
            supabase_url=settings.supabase_url if settings.supabase_configured else "",
        )


def render(config: EdgeConfig) -> str:
    """Envoy's YAML for `config` (JSON inside YAML where it is generated)."""
    template = Template(TEMPLATE.read_text())
    files = static_files(config.web_dir)
    largest = max(item.file.stat().st_size for item in files)
    return template.substitute(
        STATIC_ROUTES=static_routes(files, config.supabase_url),
        MAX_STATIC_BYTES=max(4096, largest),
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
