"""OpenTelemetry export: one span per model request, after the GenAI semantic conventions.

Off unless OTEL_ENABLED is set (it is on by itself when an OTLP endpoint is configured). The
recorder's writer thread calls `export` with each batch's complete rows; a span is made after
the fact from its row (start at the message's timestamp, end after its latency) and handed to
a BatchSpanProcessor, whose own thread sends it over OTLP/HTTP. Neither a stream nor the writer
waits on the collector; a collector that is away costs spans, never a message.

The exporter reads the standard variables (OTEL_EXPORTER_OTLP_ENDPOINT or ..._TRACES_ENDPOINT,
..._HEADERS, ..._TIMEOUT). Spans carry metadata only; prompt and response text are added with
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, and then as stored (masked, or dropped by
the record level), never from an exchange whose level keeps no message.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings

from . import ollama, privacy

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

# gen_ai.operation.name of each of Ollama's operations (proxy.ollama.MODEL_ROUTES).
OPERATIONS = {
    "chat": "chat",
    "generate": "text_completion",
    "embed": "embeddings",
    "embeddings": "embeddings",
}
PROVIDER = "ollama"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_lock = threading.Lock()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def start(exporter: SpanExporter | None = None) -> Tracer:
    """This process's tracer, sending through `exporter` (OTLP/HTTP by default).

    OpenTelemetry is imported here, on first use: importing it costs each worker ~0.15 s of
    start-up (measured here), which a proxy without OTEL_ENABLED should not pay.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    global _provider, _tracer
    with _lock:
        if _tracer is None:
            _provider = TracerProvider(
                resource=Resource.create({"service.name": settings.OTEL_SERVICE_NAME})
            )
            _provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
            _tracer = _provider.get_tracer("ollama_monitor.proxy")
        return _tracer


def flush(timeout_millis: int = 30_000) -> bool:
    """Send the spans still waiting in the batch processor."""
    return _provider.force_flush(timeout_millis) if _provider is not None else True


def shutdown() -> None:
    """Flush and stop; the next export starts a new provider (from the settings of then)."""
    global _provider, _tracer
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = _tracer = None


def export(rows: list[dict]) -> None:
    """One span per model request among a batch's rows; a no-op unless OTEL_ENABLED.

    Never raises: a span must never cost a record.
    """
    if not settings.OTEL_ENABLED:
        return
    try:
        _export(rows)
    except Exception:
        log.exception("otel: could not export a batch of %d", len(rows))


def _export(rows: list[dict]) -> None:
    tracer = _tracer or start()
    # The first Ollama; with several, `ollama_monitor.backend` names the one that answered.
    upstream = urlsplit(settings.OLLAMA_URL.split(",")[0])
    server = {
        "server.address": upstream.hostname,
        "server.port": upstream.port or (443 if upstream.scheme == "https" else 80),
    }
    for row in rows:
        operation = OPERATIONS.get(ollama.MODEL_ROUTES.get(row["endpoint"], ""))
        if operation is not None and row["method"] == "POST":
            _send(tracer, row, operation, server)


def _send(tracer: Tracer, row: dict, operation: str, server: dict) -> None:
    from opentelemetry.trace import SpanKind, Status, StatusCode  # loaded by start()

    model = row["model"]
    start_ns = (row["timestamp"] - _EPOCH) // timedelta(microseconds=1) * 1000
    span = tracer.start_span(
        f"{operation} {model}" if model else operation,
        kind=SpanKind.CLIENT,
        start_time=start_ns,
        attributes={**attributes(row, operation), **server},
    )
    if row["stream"] and row["ttft_seconds"] is not None:
        span.add_event(
            "gen_ai.response.first_chunk", timestamp=start_ns + int(row["ttft_seconds"] * 1e9)
        )
    if row["status"] == "error":
        # The error text only with the content: an upstream's error can quote the request.
        text = row["error"][:500] if _content_allowed(row) else None
        span.set_status(Status(StatusCode.ERROR, text))
    span.end(end_time=start_ns + int(row["latency_seconds"] * 1e9))


def attributes(row: dict, operation: str) -> dict:
    """A message's span attributes: GenAI conventions first, then this proxy's own."""
    found = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.system": PROVIDER,  # the name before gen_ai.provider.name, still read by many
        "gen_ai.request.model": row["model"],
        "gen_ai.request.stream": bool(row["stream"]),
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.response.time_to_first_chunk": row["ttft_seconds"],
        "http.response.status_code": row["http_status"],
        "url.path": row["endpoint"],
        "ollama_monitor.request_id": str(row["request_id"]),
        "ollama_monitor.status": row["status"],
        "ollama_monitor.backend": row.get("backend") or None,
    }
    if row["status"] == "success":
        # Ollama answers with the name it was asked for: it has no aliases.
        found["gen_ai.response.model"] = row["model"]
    if row["done_reason"]:
        found["gen_ai.response.finish_reasons"] = [row["done_reason"]]
    if row["status"] == "error":
        status = row["http_status"]
        found["error.type"] = str(status) if status and status >= 400 else "_OTHER"
    if _content_allowed(row):
        found.update(_content(row))
    return {name: value for name, value in found.items() if value is not None}


def _content_allowed(row: dict) -> bool:
    """Text goes into spans only when allowed, and never from a row whose record level keeps
    no message: such a row was neither masked nor meant to be kept anywhere."""
    return (
        settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
        and privacy.level_for(row["endpoint"], row["model"]) != privacy.NONE
    )


def _content(row: dict) -> dict:
    """The text as stored (JSON strings): the chat messages as kept, a prompt or a response in
    the conventions' shape of role and parts."""
    found = {}
    if row["messages"]:
        found["gen_ai.input.messages"] = json.dumps(row["messages"], ensure_ascii=False)
    elif row["prompt"]:
        message = {"role": "user", "parts": [{"type": "text", "content": row["prompt"]}]}
        found["gen_ai.input.messages"] = json.dumps([message], ensure_ascii=False)
    if row["response"]:
        message = {
            "role": "assistant",
            "parts": [{"type": "text", "content": row["response"]}],
            "finish_reason": row["done_reason"],
        }
        found["gen_ai.output.messages"] = json.dumps([message], ensure_ascii=False)
    return found
