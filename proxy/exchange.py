"""One request through the proxy, as the hot path notes it, and how it becomes a Message.

The hot path only appends bytes and takes timestamps; reading the bytes (JSON parsing, token
accounting) happens later in the recorder's writer thread, off the stream.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from time import perf_counter
from urllib.parse import unquote

from django.conf import settings

from . import ids, ollama
from .models import Message

# A reply's bytes are kept whole up to this size; beyond it only the head and the tail are kept.
# The tail still holds Ollama's final stats line and OpenAI's usage (both come last).
KEEP_HEAD_BYTES = 4 * 1024 * 1024
KEEP_TAIL_BYTES = 64 * 1024


class Exchange:
    """Everything the writer needs to make a Message, collected cheaply during the exchange."""

    __slots__ = (
        "backend",
        "cancelled",
        "client_ip",
        "content_type",
        "error",
        "finished",
        "first_byte",
        "head",
        "head_size",
        "headers",
        "http_status",
        "method",
        "path",
        "rate_key",
        "request_body",
        "request_id",
        "started",
        "started_at",
        "tail",
        "tail_size",
        "user",
        "user_agent",
    )

    def __init__(self, method: str, path: str, client_ip: str | None, headers: dict[str, str]):
        self.request_id = ids.uuid7()
        self.started = perf_counter()
        self.started_at = datetime.now(UTC)
        self.method = method
        self.path = path
        self.client_ip = client_ip
        self.user_agent = headers.get("user-agent", "")
        # For category rules on a request header (e.g. X-Category), read by the writer; the
        # headers themselves are never stored.
        self.headers = headers
        self.user = next(
            (_unquoted(headers[name]) for name in settings.PROXY_USER_HEADERS if headers.get(name)),
            client_ip or "",
        )
        self.request_body = b""
        # The rate-limit identity whose token count this exchange adds to (proxy.ratelimit).
        self.rate_key: str | None = None
        # The name of the backend that answered, or was tried last (proxy.backends).
        self.backend = ""
        self.http_status: int | None = None
        self.content_type = ""
        self.first_byte: float | None = None
        self.finished: float | None = None
        self.cancelled = False
        self.error = ""
        self.head: list[bytes] = []
        self.head_size = 0
        self.tail: deque[bytes] | None = None
        self.tail_size = 0

    def keep(self, chunk: bytes) -> None:
        """Keep a copy of a relayed chunk, bounded: the head whole, then a rolling tail."""
        if self.first_byte is None:
            self.first_byte = perf_counter()
        if self.head_size < KEEP_HEAD_BYTES:
            self.head.append(chunk)
            self.head_size += len(chunk)
            return
        if self.tail is None:
            self.tail = deque()
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size - len(self.tail[0]) >= KEEP_TAIL_BYTES:
            self.tail_size -= len(self.tail.popleft())

    def to_fields(self) -> dict:
        """The Message fields, read from the kept bytes. Runs in the writer, never on a stream."""
        request = ollama.parse_request(self.path, self.request_body)
        body = b"".join(self.head)
        truncated = self.tail is not None
        if truncated:
            # A line cut at the seam is skipped by the parser; the final stats are in the tail.
            body += b"\n" + b"".join(self.tail)
        reply = ollama.parse_response(self.path, self.content_type, body)

        error = self.error or reply.error
        if not error and self.http_status and self.http_status >= 400:
            error = body[:2000].decode("utf-8", "replace").strip()
        finished = self.finished or perf_counter()
        latency = finished - self.started
        ttft = self.first_byte - self.started if self.first_byte is not None else None

        max_chars = settings.RECORDER_MAX_TEXT_CHARS
        texts = {"prompt": request.prompt, "response": reply.text, "thinking": reply.thinking}
        for name, text in texts.items():
            if len(text) > max_chars:
                texts[name] = text[:max_chars]
                truncated = True

        return {
            "request_id": self.request_id,
            "timestamp": self.started_at,
            "endpoint": self.path,
            "method": self.method,
            "model": request.model[:255],
            "stream": request.stream,
            "status": Message.status_for(
                # A client that hangs up once the reply is complete (the OpenAI SDK stops at
                # `data: [DONE]`, before the chunked body's end) got its whole answer.
                cancelled=self.cancelled and not reply.done,
                http_status=self.http_status,
                error=error,
            ),
            "http_status": self.http_status,
            "user": self.user[:255],
            "client_ip": self.client_ip,
            "user_agent": self.user_agent[:512],
            "prompt": texts["prompt"],
            "messages": request.messages,
            "options": request.options,
            "response": texts["response"],
            "thinking": texts["thinking"],
            "tool_calls": reply.tool_calls or None,
            "truncated": truncated,
            "done_reason": reply.done_reason[:32],
            "error": error,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "latency_seconds": latency,
            "ttft_seconds": ttft,
            "tokens_per_second": _tokens_per_second(reply, latency, ttft),
            "total_duration_seconds": reply.total_duration_seconds,
            "load_duration_seconds": reply.load_duration_seconds,
            "prompt_eval_duration_seconds": reply.prompt_eval_duration_seconds,
            "eval_duration_seconds": reply.eval_duration_seconds,
            "backend": self.backend,
        }


def _unquoted(value: str) -> str:
    """A user header's value as the user is named: Open WebUI percent-encodes its name header
    (`quote(name, safe=" ")`) so that any name fits in a header."""
    return unquote(value) if "%" in value else value


def _tokens_per_second(reply: ollama.ResponseInfo, latency: float, ttft: float | None):
    """Ollama's own rate when it reports one; else output tokens over the streaming time seen."""
    if not reply.output_tokens:
        return None
    if reply.eval_duration_seconds:
        return reply.output_tokens / reply.eval_duration_seconds
    generating = latency - (ttft or 0.0)
    if reply.chunks > 1 and generating > 0:
        return reply.output_tokens / generating
    return None
