"""A scripted fake of the Anthropic Messages API, for running the real ``claude`` CLI offline.

Start a :class:`ScriptedAnthropic` with a list of replies, point the CLI at it with
``ANTHROPIC_BASE_URL=server.url`` (see :func:`claude_env`), and every ``POST /v1/messages``
request that belongs to the conversation consumes the next reply of the script::

    with ScriptedAnthropic([ToolUse("Write", {"file_path": "a.txt", "content": "hi\\n"}),
                            Text("Created a.txt.")]) as server:
        subprocess.run(["claude", "-p", "make a.txt", ...], env=claude_env(server.url, home))

Reply kinds:

* :class:`Text` - a final assistant answer (``stop_reason: end_turn``).
* :class:`ToolUse` - an assistant turn that calls one tool (``stop_reason: tool_use``); the CLI
  runs the tool and sends its result in the next request.
* :class:`Status` - an HTTP error response (429 with ``retry-after``, 401, 529, ...).
* :class:`Hang` - accept the request, then send nothing for ``seconds`` (idle-timeout tests).

When the script is exhausted, conversation requests get ``Text("done")``.

Background requests. Claude Code can send side requests that must not consume the script (a
``max_tokens: 1`` "quota" probe, session-title / topic requests to the small fast model). A
request is treated as background when it carries no ``tools`` (every conversation turn of the
agent carries its tool list) or when its ``max_tokens`` is 1. Background requests get
:data:`BACKGROUND_TEXT` (or a small JSON object when the system prompt mentions JSON) and are
recorded in :attr:`ScriptedAnthropic.background` instead of :attr:`ScriptedAnthropic.requests`.
Observed with claude 2.1.332 in ``-p`` mode under :func:`claude_env`: no background requests at
all, and no endpoint other than ``POST /v1/messages?beta=true`` (without
``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` it also sends ``HEAD /api/hello`` and looks up
``api.anthropic.com`` in DNS).

Other endpoints (``/v1/messages/count_tokens``, ``/v1/models``, anything else) get small
harmless JSON replies; every request of any kind is logged in :attr:`ScriptedAnthropic.log` as
``(method, path, body)``.

Standard library only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeAlias

from pytest_shim.models._server import JSON, Hang, ScriptedServer, Status

__all__ = [
    "BACKGROUND_TEXT",
    "DEFAULT_MODEL",
    "Hang",
    "Reply",
    "ScriptedAnthropic",
    "Status",
    "Text",
    "ToolUse",
    "claude_env",
    "rate_limited",
    "unauthorized",
]

#: Model named in replies when the request names none.
DEFAULT_MODEL = "claude-sonnet-4-5"
#: What background (non-conversation) requests are answered with.
BACKGROUND_TEXT = "ok"


@dataclass(frozen=True)
class Text:
    """A final assistant answer."""

    text: str
    input_tokens: int = 100
    output_tokens: int = 20


@dataclass(frozen=True)
class ToolUse:
    """An assistant turn that calls one tool, e.g. ``ToolUse("Bash", {"command": "ls"})``."""

    name: str
    input: Mapping[str, Any]
    #: Optional text the assistant says before the call.
    text: str = ""
    input_tokens: int = 100
    output_tokens: int = 30


Reply: TypeAlias = Text | ToolUse | Status | Hang

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def rate_limited(
    retry_after: int = 1, message: str = "Number of requests has exceeded your rate limit"
) -> Status:
    """A 429 with ``retry-after`` and ``anthropic-ratelimit-*`` headers."""
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + retry_after))
    return Status(
        429,
        {"type": "error", "error": {"type": "rate_limit_error", "message": message}},
        {
            "retry-after": str(retry_after),
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": reset,
            "anthropic-ratelimit-tokens-limit": "40000",
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": reset,
        },
    )


def unauthorized(message: str = "invalid x-api-key") -> Status:
    """A 401 ``authentication_error``."""
    return Status(
        401, {"type": "error", "error": {"type": "authentication_error", "message": message}}
    )


def claude_env(base_url: str, home: str, *, api_key: str = "sk-ant-offline-test") -> dict[str, str]:
    """Environment variables that make the ``claude`` CLI talk only to ``base_url``.

    Merge them over a minimal environment (``PATH``); ``home`` should be a fresh temporary
    directory so nothing is read from or written to the real ``~/.claude``. Useful additions:
    ``CLAUDE_CODE_MAX_RETRIES`` (default 10; 429, 401 and 5xx are retried with backoff, honouring
    ``retry-after``) and ``API_TIMEOUT_MS`` (request timeout; a :class:`Hang` ends the run with
    "Request timed out." after it).
    """
    return {
        "HOME": home,
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


class ScriptedAnthropic(ScriptedServer[Reply]):
    """A loopback Anthropic Messages API server that answers from a script.

    ``routes`` gives several conversations at once a script each: a request whose first user
    message contains a route's key takes its replies from that route (the first key found, in
    order), any other from ``script``. Agents running in parallel then get their own replies
    whatever order their requests arrive in."""

    def __init__(
        self,
        script: Sequence[Reply] = (),
        *,
        routes: Mapping[str, Sequence[Reply]] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self._routes: dict[str, list[Reply]] = {k: list(v) for k, v in (routes or {}).items()}
        super().__init__(
            script, _make_handler, host=host, port=port, name="scripted-anthropic", id_format="024d"
        )

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL``, e.g. ``http://127.0.0.1:41234``."""
        return self.address

    def __enter__(self) -> ScriptedAnthropic:
        return self

    def _next_reply(self, body: JSON) -> Reply | None:
        """The scripted reply for a ``/v1/messages`` body, or None for a background request."""
        with self._lock:
            if is_background(body):
                self._background.append(body)
                return None
            prompt = first_user_text(body)
            route = next((s for k, s in self._routes.items() if k in prompt), None)
            return self._take(body, route, Text("done"))


def first_user_text(body: Mapping[str, Any]) -> str:
    """The text of the first user message of a request (where an agent's prompt is)."""
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        return ""
    return ""


def is_background(body: Mapping[str, Any]) -> bool:
    """True for Claude Code side requests (quota probe, titles, topics) that carry no tools."""
    return not body.get("tools") or body.get("max_tokens") == 1


def _sse(event: str, data: JSON) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _blocks(reply: Text | ToolUse, tool_id: str) -> list[JSON]:
    if isinstance(reply, Text):
        return [{"type": "text", "text": reply.text}]
    blocks: list[JSON] = [{"type": "text", "text": reply.text}] if reply.text else []
    blocks.append(
        {"type": "tool_use", "id": tool_id, "name": reply.name, "input": dict(reply.input)}
    )
    return blocks


def _message(server: ScriptedAnthropic, reply: Text | ToolUse, model: str) -> JSON:
    return {
        "id": server._new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(reply, server._new_id("toolu")),
        "stop_reason": "end_turn" if isinstance(reply, Text) else "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stream_events(message: JSON) -> Iterator[bytes]:
    usage = message["usage"]
    start = dict(message, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
    yield _sse("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            yield _sse("ping", {"type": "ping"})
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": block["text"]},
                },
            )
        else:
            yield _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": dict(block, input={}),
                },
            )
            yield _sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(block["input"]),
                    },
                },
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def _background_reply(body: Mapping[str, Any]) -> Text:
    wants_json = "json" in json.dumps(body.get("system", "")).lower() or "output_format" in body
    return Text('{"title": "ok", "isNewTopic": false}' if wants_json else BACKGROUND_TEXT, 10, 5)


def _make_handler(server: ScriptedAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

        def _read_body(self) -> JSON | None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None

        def _send_json(
            self, code: int, data: Mapping[str, Any], headers: Mapping[str, str] | None = None
        ) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", server._new_id("req"))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server._record("GET", self.path, None)
            if path.rstrip("/") == "/v1/models":
                model = {
                    "type": "model",
                    "id": DEFAULT_MODEL,
                    "display_name": "Scripted",
                    "created_at": "2025-01-01T00:00:00Z",
                }
                self._send_json(
                    200,
                    {
                        "data": [model],
                        "has_more": False,
                        "first_id": DEFAULT_MODEL,
                        "last_id": DEFAULT_MODEL,
                    },
                )
            else:
                self._send_json(200, {})

        def do_HEAD(self) -> None:
            server._record("HEAD", self.path, None)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self._read_body()
            path = self.path.split("?", 1)[0]
            server._record("POST", self.path, body)
            if path.endswith("/v1/messages/count_tokens"):
                self._send_json(200, {"input_tokens": len(json.dumps(body)) // 4})
                return
            if not path.endswith("/v1/messages") or body is None:
                self._send_json(200, {})
                return
            reply = server._next_reply(body)
            if reply is None:
                reply = _background_reply(body)
            if isinstance(reply, Hang):
                server._closed.wait(reply.seconds)
                self.close_connection = True
                return
            if isinstance(reply, Status):
                error = reply.body or {
                    "type": "error",
                    "error": {
                        "type": _ERROR_TYPES.get(reply.code, "api_error"),
                        "message": f"HTTP {reply.code}",
                    },
                }
                self._send_json(reply.code, error, reply.headers)
                return
            message = _message(server, reply, str(body.get("model") or DEFAULT_MODEL))
            if not body.get("stream"):
                self._send_json(200, message)
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("request-id", server._new_id("req"))
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            for chunk in _stream_events(message):
                self.wfile.write(chunk)
                self.wfile.flush()

        def do_DELETE(self) -> None:
            server._record("DELETE", self.path, None)
            self._send_json(200, {})

    return Handler
