"""A scripted fake of the OpenAI API, for running the real ``codex`` (and other) CLIs offline.

Start a :class:`ScriptedOpenAI` with a list of replies, point the CLI at ``server.url``
(``http://127.0.0.1:PORT/v1``), and every model request that belongs to the conversation
consumes the next reply of the script::

    with ScriptedOpenAI([ToolCall("exec_command", {"cmd": "echo hi > hello.txt"}),
                         Text("Created hello.txt.")]) as server:
        subprocess.run(
            ["codex", "exec", "--json", *codex_args(server.url), "make hello.txt"],
            env={"PATH": os.environ["PATH"], **codex_env(codex_home)},
            stdin=subprocess.DEVNULL,
        )

Both wire protocols are served:

* ``POST /v1/responses`` - the Responses API (what codex uses, ``wire_api = "responses"``),
  as an SSE stream (``response.created``, ``response.output_item.added`` /
  ``response.output_text.delta`` / ``response.output_item.done``, ``response.completed`` with
  ``usage``) or, when the request has no ``"stream": true``, one JSON response object.
* ``POST /v1/chat/completions`` - Chat Completions (opencode, aider, ...), streaming (SSE
  chunks ending with ``data: [DONE]``, plus a usage chunk when
  ``stream_options.include_usage`` is set) and non-streaming, with ``tool_calls``.

Reply kinds:

* :class:`Text` - a final assistant answer.
* :class:`ToolCall` - an assistant turn that calls one tool; the CLI runs it and sends the
  result in its next request. ``arguments`` is a JSON object for function tools (codex 0.171:
  ``ToolCall("exec_command", {"cmd": "echo hi > a.txt"})``) or a string for freeform
  ("custom") tools, which the Responses API sends as a ``custom_tool_call`` item (codex 0.171:
  ``ToolCall("apply_patch", "*** Begin Patch\\n*** Add File: a.txt\\n+hi\\n*** End Patch\\n")``).
* :class:`Status` - an HTTP error response (see :func:`rate_limited`, :func:`unauthorized`).
* :class:`Hang` - accept the request, then send nothing for ``seconds`` and drop the connection.

When the script is exhausted, conversation requests get ``Text("done")``. Retries count: a CLI
that retries a 429 consumes one reply per attempt.

Background requests. A model request is "background" (answered with :data:`BACKGROUND_TEXT`
without consuming the script, and recorded in :attr:`ScriptedOpenAI.background`) when codex
labels it as such: its ``x-codex-turn-metadata`` header (JSON) has a ``request_kind`` other
than ``"turn"`` (codex 0.171 ``exec`` sends only ``"turn"`` requests in a plain run; other kinds
are compaction, memory, review side requests). Requests without that header (other CLIs)
belong to the conversation, unless the ``background_if`` predicate given to the server says
otherwise: ``ScriptedOpenAI(script, background_if=without_tools)`` answers requests that offer
no tools (opencode 1.18's session-title request, sent alongside the first turn) without
consuming the script. Any other endpoint (``GET /v1/models``, ...) gets a small
harmless JSON reply. Every request of any kind is logged in :attr:`ScriptedOpenAI.log` as
``(method, path, body or None)``.

Standard library only.
"""

from __future__ import annotations

import gzip
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeAlias

from pytest_shim.models._server import JSON, Hang, ScriptedServer, Status

__all__ = [
    "BACKGROUND_TEXT",
    "DEFAULT_MODEL",
    "PROVIDER_ID",
    "Hang",
    "Reply",
    "ScriptedOpenAI",
    "Status",
    "Text",
    "ToolCall",
    "codex_args",
    "codex_env",
    "is_background",
    "rate_limited",
    "unauthorized",
    "without_tools",
]

#: Model named in replies when the request names none (and listed by ``GET /v1/models``).
DEFAULT_MODEL = "gpt-5.5"
#: What background (non-conversation) requests are answered with.
BACKGROUND_TEXT = "ok"
#: Name of the codex ``model_providers`` entry that :func:`codex_args` defines.
PROVIDER_ID = "scripted"


@dataclass(frozen=True)
class Text:
    """A final assistant answer. Token counts default to an estimate from the sizes."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    """An assistant turn that calls one tool.

    ``arguments`` is a JSON object for a function tool, or a string for a freeform (custom)
    tool such as codex's ``apply_patch``. ``call_id`` defaults to a fresh ``call_...`` id.
    """

    name: str
    arguments: Mapping[str, Any] | str
    #: Optional text the assistant says before the call.
    text: str = ""
    call_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


Reply: TypeAlias = Text | ToolCall | Status | Hang

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


def _error_body(code: int, message: str | None = None) -> JSON:
    kind, err_code = _ERROR_TYPES.get(code, ("server_error", None))
    return {
        "error": {
            "message": message or f"Scripted error {code}",
            "type": kind,
            "param": None,
            "code": err_code,
        }
    }


def rate_limited(
    retry_after: float = 1,
    message: str = "Rate limit reached for requests. Please try again in 1s.",
) -> Status:
    """A 429 ``rate_limit_exceeded`` with ``retry-after`` and ``x-ratelimit-*`` headers."""
    return Status(
        429,
        {
            "error": {
                "message": message,
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
        {
            "retry-after": f"{retry_after:g}",
            "retry-after-ms": str(int(retry_after * 1000)),
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after:g}s",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": f"{retry_after:g}s",
        },
    )


def unauthorized(message: str = "Incorrect API key provided: sk-off***test.") -> Status:
    """A 401 ``invalid_api_key``."""
    return Status(401, _error_body(401, message))


def codex_args(
    base_url: str,
    *,
    model: str = DEFAULT_MODEL,
    request_max_retries: int | None = 0,
    stream_max_retries: int | None = 0,
    stream_idle_timeout_ms: int | None = 10_000,
) -> list[str]:
    """``codex`` command-line options that route every model request to ``base_url``.

    They define a ``model_providers.scripted`` entry (Responses wire API, key from
    ``OPENAI_API_KEY``), select it and the model, turn codex's own retries down, and switch
    off the update check, analytics and feedback uploads. Put them after ``exec`` (or
    ``exec resume``). ``None`` leaves a setting at codex's default.

    Retries in codex 0.171: ``request_max_retries`` (default 4) silently retries 5xx and
    connection errors; ``stream_max_retries`` (default 5) retries the whole turn request,
    printing ``{"type":"error","message":"Reconnecting... n/N (...)"}``, and is what retries a
    401, or a 429 that carries ``retry-after`` (a 429 without it is never retried).
    ``stream_idle_timeout_ms`` does not bound the wait for response headers (:class:`Hang`).
    """
    fields = [
        'name="scripted"',
        f'base_url="{base_url}"',
        'env_key="OPENAI_API_KEY"',
        'wire_api="responses"',
    ]
    tuning = {
        "request_max_retries": request_max_retries,
        "stream_max_retries": stream_max_retries,
        "stream_idle_timeout_ms": stream_idle_timeout_ms,
    }
    fields += [f"{key}={value}" for key, value in tuning.items() if value is not None]
    provider = "{" + ", ".join(fields) + "}"
    return [
        "-c", f"model_providers.{PROVIDER_ID}={provider}",
        "-c", f"model_provider={PROVIDER_ID}",
        "-m", model,
        "-c", "check_for_update_on_startup=false",
        "-c", "analytics.enabled=false",
        "-c", "feedback.enabled=false",
    ]  # fmt: skip


def codex_env(codex_home: str, *, api_key: str = "sk-offline-test") -> dict[str, str]:
    """Environment variables for an offline ``codex`` run.

    Merge them over a minimal environment (``PATH``). ``codex_home`` should be a fresh
    directory so nothing is read from or written to the real ``~/.codex`` (sessions land in
    ``codex_home/sessions/YYYY/MM/DD/rollout-*.jsonl``).
    """
    return {"CODEX_HOME": codex_home, "OPENAI_API_KEY": api_key, "NO_COLOR": "1"}


def is_background(headers: Mapping[str, str]) -> bool:
    """Whether a model request is a codex side request rather than a conversation turn."""
    raw = next((v for k, v in headers.items() if k.lower() == "x-codex-turn-metadata"), None)
    if raw is None:
        return False
    try:
        meta = json.loads(raw)
    except ValueError:
        return False
    kind = meta.get("request_kind") if isinstance(meta, dict) else None
    return kind is not None and kind != "turn"


def without_tools(body: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """A ``background_if`` predicate: the request offers the model no tools (a side request
    such as opencode's session title, not an agent turn)."""
    return not body.get("tools")


class ScriptedOpenAI(ScriptedServer[Reply]):
    """A loopback OpenAI API server (Responses + Chat Completions) that answers from a script.

    ``background_if(body, headers)`` marks further model requests as background (answered
    with :data:`BACKGROUND_TEXT`, not from the script), e.g. :func:`without_tools`.
    """

    def __init__(
        self,
        script: Sequence[Reply] = (),
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        background_if: Callable[[JSON, Mapping[str, str]], bool] | None = None,
    ) -> None:
        self._background_if = background_if
        self._headers: list[dict[str, str]] = []
        super().__init__(
            script, _make_handler, host=host, port=port, name="scripted-openai", id_format="024x"
        )

    @property
    def url(self) -> str:
        """Base URL including ``/v1``, e.g. ``http://127.0.0.1:41234/v1``."""
        return f"{self.address}/v1"

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """Headers (lower-case names) of conversation requests, parallel to :attr:`requests`."""
        with self._lock:
            return list(self._headers)

    def __enter__(self) -> ScriptedOpenAI:
        return self

    def _next_reply(self, body: JSON, headers: Mapping[str, str]) -> Reply | None:
        """The reply for a model request, or None for a background request."""
        with self._lock:
            if is_background(headers) or (
                self._background_if is not None and self._background_if(body, headers)
            ):
                self._background.append(body)
                return None
            self._headers.append({k.lower(): v for k, v in headers.items()})
            return self._take(body, None, Text("done"))


# -- token estimates -----------------------------------------------------------------------


def _estimate_tokens(data: object) -> int:
    """About four characters a token, like OpenAI's rule of thumb."""
    text = data if isinstance(data, str) else json.dumps(data)
    return max(1, len(text) // 4)


def _usage(reply: Text | ToolCall, body: JSON) -> tuple[int, int]:
    inp = reply.input_tokens
    if inp is None:
        inp = _estimate_tokens(body)
    out = reply.output_tokens
    if out is None:
        out = _estimate_tokens(reply.text) + (
            _estimate_tokens(_arguments_text(reply)) if isinstance(reply, ToolCall) else 0
        )
    return inp, out


def _arguments_text(call: ToolCall) -> str:
    return call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)


# -- Responses API -------------------------------------------------------------------------


def _response_items(server: ScriptedOpenAI, reply: Text | ToolCall) -> list[JSON]:
    items: list[JSON] = []
    if reply.text:
        items.append(
            {
                "type": "message",
                "id": server._new_id("msg"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    if isinstance(reply, ToolCall):
        call_id = reply.call_id or server._new_id("call")
        if isinstance(reply.arguments, str):
            items.append(
                {
                    "type": "custom_tool_call",
                    "id": server._new_id("ctc"),
                    "status": "completed",
                    "call_id": call_id,
                    "name": reply.name,
                    "input": reply.arguments,
                }
            )
        else:
            items.append(
                {
                    "type": "function_call",
                    "id": server._new_id("fc"),
                    "status": "completed",
                    "call_id": call_id,
                    "name": reply.name,
                    "arguments": json.dumps(reply.arguments),
                }
            )
    return items


def _response(server: ScriptedOpenAI, reply: Text | ToolCall, body: JSON) -> JSON:
    inp, out = _usage(reply, body)
    return {
        "id": server._new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": body.get("model") or DEFAULT_MODEL,
        "output": _response_items(server, reply),
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "tool_choice": body.get("tool_choice", "auto"),
        "usage": {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": inp + out,
        },
    }


def _sse(data: JSON | str, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def _response_events(response: JSON) -> Iterator[bytes]:
    """The SSE events of a streamed Responses API reply, as OpenAI sends them."""
    seq = itertools.count()

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    yield ev("response.created", response=started)
    yield ev("response.in_progress", response=started)
    for index, item in enumerate(response["output"]):
        kind = item["type"]
        if kind == "message":
            text = item["content"][0]["text"]
            yield ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            ids = {"item_id": item["id"], "output_index": index, "content_index": 0}
            yield ev("response.content_part.added", **ids, part=part)
            for chunk in _chunks(text):
                yield ev("response.output_text.delta", **ids, delta=chunk)
            yield ev("response.output_text.done", **ids, text=text)
            yield ev("response.content_part.done", **ids, part={**part, "text": text})
        elif kind == "function_call":
            yield ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            ids = {"item_id": item["id"], "output_index": index}
            yield ev("response.function_call_arguments.delta", **ids, delta=item["arguments"])
            yield ev("response.function_call_arguments.done", **ids, arguments=item["arguments"])
        else:  # custom_tool_call
            yield ev(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "input": ""},
            )
            ids = {"item_id": item["id"], "output_index": index}
            yield ev("response.custom_tool_call_input.delta", **ids, delta=item["input"])
            yield ev("response.custom_tool_call_input.done", **ids, input=item["input"])
        yield ev("response.output_item.done", output_index=index, item=item)
    yield ev("response.completed", response=response)


def _chunks(text: str, size: int = 16) -> Iterator[str]:
    if not text:
        yield ""
    for start in range(0, len(text), size):
        yield text[start : start + size]


# -- Chat Completions ----------------------------------------------------------------------


def _chat_completion(server: ScriptedOpenAI, reply: Text | ToolCall, body: JSON) -> JSON:
    inp, out = _usage(reply, body)
    message: JSON = {"role": "assistant", "content": reply.text or None, "refusal": None}
    finish = "stop"
    if isinstance(reply, ToolCall):
        finish = "tool_calls"
        message["tool_calls"] = [
            {
                "id": reply.call_id or server._new_id("call"),
                "type": "function",
                "function": {"name": reply.name, "arguments": _arguments_text(reply)},
            }
        ]
    return {
        "id": server._new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out},
        "system_fingerprint": "fp_scripted",
    }


def _chat_chunks(completion: JSON, include_usage: bool) -> Iterator[bytes]:
    """The SSE chunks of a streamed chat completion, ending with ``data: [DONE]``."""
    base = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: JSON, finish: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}  # fmt: skip
        return _sse(data)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    if message["content"]:
        for piece in _chunks(message["content"]):
            yield chunk({"content": piece})
    for index, call in enumerate(message.get("tool_calls", [])):
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}  # fmt: skip
        yield chunk({"tool_calls": [head]})
        args = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        yield chunk({"tool_calls": [args]})
    yield chunk({}, choice["finish_reason"])
    if include_usage:
        yield _sse({**base, "choices": [], "usage": completion["usage"]})
    yield _sse("[DONE]")


# -- HTTP ----------------------------------------------------------------------------------


def _make_handler(server: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _route(self) -> str:
            path = self.path.split("?", 1)[0].rstrip("/")
            return path.removeprefix("/v1")

        def _read_body(self) -> JSON | None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                raw = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    raw += self.rfile.read(size)
                    self.rfile.readline()
            else:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                raw = gzip.decompress(raw)
            if not raw:
                return None
            try:
                data = json.loads(raw)
            except ValueError:
                return {"_raw": raw.decode("utf-8", "replace")}
            return data if isinstance(data, dict) else {"_json": data}

        def _send_json(
            self, code: int, data: Mapping[str, Any], headers: Mapping[str, str] | None = None
        ) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-request-id", server._new_id("req"))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _send_stream(self, events: Iterator[bytes]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("x-request-id", server._new_id("req"))
            self.end_headers()
            try:
                for event in events:
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            server._record("GET", self.path, None)
            route = self._route()
            if route == "/models":
                models = [{"id": DEFAULT_MODEL, "object": "model", "created": 0,
                           "owned_by": "scripted"}]  # fmt: skip
                self._send_json(200, {"object": "list", "data": models})
            elif route.startswith("/models/"):
                name = route.removeprefix("/models/")
                self._send_json(200, {"id": name, "object": "model", "created": 0,
                                      "owned_by": "scripted"})  # fmt: skip
            else:
                self._send_json(200, {})

        def do_HEAD(self) -> None:
            server._record("HEAD", self.path, None)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self) -> None:
            server._record("DELETE", self.path, None)
            self._send_json(200, {"deleted": True})

        def do_POST(self) -> None:
            body = self._read_body()
            server._record("POST", self.path, body)
            route = self._route()
            if route not in ("/responses", "/chat/completions"):
                self._send_json(200, {})
                return
            body = body or {}
            reply = server._next_reply(body, dict(self.headers.items()))
            if reply is None:
                reply = Text(BACKGROUND_TEXT)
            if isinstance(reply, Hang):
                server._closed.wait(reply.seconds)
                self.close_connection = True
                return
            if isinstance(reply, Status):
                data = reply.body if reply.body is not None else _error_body(reply.code)
                self._send_json(reply.code, data, reply.headers)
                return
            stream = body.get("stream") is True
            if route == "/responses":
                response = _response(server, reply, body)
                if stream:
                    self._send_stream(_response_events(response))
                else:
                    self._send_json(200, response)
            else:
                completion = _chat_completion(server, reply, body)
                if stream:
                    options = body.get("stream_options") or {}
                    self._send_stream(_chat_chunks(completion, bool(options.get("include_usage"))))
                else:
                    self._send_json(200, completion)

    return Handler
