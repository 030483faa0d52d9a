"""OpenTelemetry export: one span per model request through the real proxy, with the GenAI
semantic conventions' attributes taken from the stored message, and sent for real over
OTLP/HTTP to a collector on loopback."""

import gzip
import os
import queue
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import ollama
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy import otel
from proxy.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "Why is the sky blue? Write to jane.doe@example.com"}]
CONTENT_NAMES = {"gen_ai.input.messages", "gen_ai.output.messages"}


@pytest.fixture
def exporter(proxy_settings):
    proxy_settings.OTEL_ENABLED = True
    otel.shutdown()
    exporter = InMemorySpanExporter()
    otel.start(exporter)
    yield exporter
    otel.shutdown()


def spans_of(proxy, exporter) -> dict:
    """The spans of everything sent so far, by request id, once written and flushed."""
    proxy.flush()
    assert otel.flush()
    return {
        span.attributes["ollama_monitor.request_id"]: span for span in exporter.get_finished_spans()
    }


def nanoseconds(moment: datetime) -> int:
    return round((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6) * 1000


def assert_matches_the_message(span, message: Message, simulator) -> None:
    """The attributes every span has, checked against the message the proxy stored."""
    attributes = span.attributes
    assert span.kind is SpanKind.CLIENT
    assert span.name == f"{attributes['gen_ai.operation.name']} {message.model}"
    assert attributes["gen_ai.provider.name"] == "ollama"
    assert attributes["gen_ai.system"] == "ollama"
    assert attributes["gen_ai.request.model"] == message.model
    assert attributes["url.path"] == message.endpoint
    assert attributes["http.response.status_code"] == message.http_status
    assert attributes["ollama_monitor.status"] == message.status
    upstream = urlsplit(simulator.url)
    assert attributes["server.address"] == upstream.hostname
    assert attributes["server.port"] == upstream.port
    assert span.start_time == nanoseconds(message.timestamp)
    assert span.end_time - span.start_time == pytest.approx(message.latency_seconds * 1e9, abs=1000)
    assert not CONTENT_NAMES & set(attributes)
    if message.input_tokens is not None:
        assert attributes["gen_ai.usage.input_tokens"] == message.input_tokens
    if message.output_tokens is not None:
        assert attributes["gen_ai.usage.output_tokens"] == message.output_tokens


def test_a_chat_is_one_client_span_with_the_genai_attributes(exporter, proxy, simulator):
    reply = ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION, stream=False)

    (span,) = spans_of(proxy, exporter).values()
    message = Message.objects.get()
    assert_matches_the_message(span, message, simulator)
    attributes = span.attributes
    assert span.name == "chat llama3.2"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.response.model"] == "llama3.2"
    assert attributes["gen_ai.response.finish_reasons"] == (reply.done_reason,) == ("stop",)
    assert attributes["gen_ai.usage.output_tokens"] == reply.eval_count > 0
    assert attributes["gen_ai.usage.input_tokens"] == reply.prompt_eval_count > 0
    assert attributes["gen_ai.request.stream"] is False
    assert attributes["gen_ai.response.time_to_first_chunk"] == message.ttft_seconds
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes
    assert not span.events  # no first chunk of a reply that came whole
    # Metadata only: neither the question, its e-mail address nor the answer.
    values = " ".join(str(value) for value in attributes.values())
    assert "sky" not in values and "jane.doe" not in values
    assert reply.message.content[:20] not in values


def test_a_streamed_chat_marks_its_first_chunk(exporter, proxy, simulator):
    streamed = ollama.Client(host=proxy.url, headers={"X-Sim-TPS": "1000"})
    chunks = list(streamed.chat(model="qwen3", messages=QUESTION, stream=True))

    (span,) = spans_of(proxy, exporter).values()
    message = Message.objects.get()
    assert_matches_the_message(span, message, simulator)
    assert span.name == "chat qwen3"
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.output_tokens"] == chunks[-1].eval_count
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    (first,) = span.events
    assert first.name == "gen_ai.response.first_chunk"
    assert first.timestamp - span.start_time == pytest.approx(message.ttft_seconds * 1e9, abs=1000)
    assert span.start_time < first.timestamp < span.end_time


def test_generate_and_embed_are_text_completion_and_embeddings_spans(exporter, proxy, simulator):
    client = ollama.Client(host=proxy.url)
    client.generate(model="llama3.2", prompt="Hi", stream=False)
    client.embed(model="all-minilm", input=["Hi", "there"])
    client.list()  # not a model request: no span

    spans = spans_of(proxy, exporter)
    assert len(spans) == 2
    for message in Message.objects.all():
        span = spans[str(message.request_id)]
        assert_matches_the_message(span, message, simulator)
    generate = spans[str(Message.objects.get(endpoint="/api/generate").request_id)]
    assert generate.name == "text_completion llama3.2"
    assert generate.attributes["gen_ai.operation.name"] == "text_completion"
    embed = spans[str(Message.objects.get(endpoint="/api/embed").request_id)]
    assert embed.name == "embeddings all-minilm"
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    assert embed.attributes["gen_ai.usage.input_tokens"] > 0


def test_a_failed_request_has_an_error_type_and_status(exporter, proxy, simulator):
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url).generate(model="no-such-model", prompt="Hi")
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url, headers={"X-Sim-Fail": "500"}).chat(
            model="llama3.2", messages=QUESTION
        )

    spans = spans_of(proxy, exporter)
    by_status = {}
    for message in Message.objects.all():
        span = spans[str(message.request_id)]
        assert_matches_the_message(span, message, simulator)
        assert span.status.status_code is StatusCode.ERROR
        assert message.error and span.status.description is None  # text only with content
        assert "gen_ai.response.model" not in span.attributes
        by_status[message.http_status] = span.attributes["error.type"]
    assert by_status == {404: "404", 500: "500"}


def test_content_goes_into_spans_only_when_allowed_and_then_masked(exporter, proxy_settings, proxy):
    proxy_settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = True
    proxy_settings.RECORD_LEVELS = [("all-minilm", "none")]
    client = ollama.Client(host=proxy.url)
    client.chat(model="llama3.2", messages=QUESTION, stream=False)
    client.embed(model="all-minilm", input="jane.doe@example.com")

    spans = spans_of(proxy, exporter)
    message = Message.objects.get()  # the embedding is not stored (level none)
    chat = spans.pop(str(message.request_id))
    assert "[email]" in message.prompt and "jane.doe" not in message.prompt
    assert "[email]" in chat.attributes["gen_ai.input.messages"]
    assert "jane.doe" not in chat.attributes["gen_ai.input.messages"]
    assert "Why is the sky blue?" in chat.attributes["gen_ai.input.messages"]
    assert message.response in chat.attributes["gen_ai.output.messages"]
    (embed,) = spans.values()  # still a span, but with no text at all
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    assert not CONTENT_NAMES & set(embed.attributes)


def test_a_failed_span_quotes_its_error_only_with_the_content(exporter, proxy_settings, proxy):
    proxy_settings.OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = True
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url).generate(model="no-such-model", prompt="Hi")

    (span,) = spans_of(proxy, exporter).values()
    message = Message.objects.get()
    assert "no-such-model" in message.error
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == message.error
    assert span.attributes["error.type"] == "404"


class Collector:
    """An OTLP/HTTP trace receiver on loopback: it decodes each protobuf export it is sent."""

    def __init__(self):
        received = self.received = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.put((self.path, self.headers["Content-Type"], request))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector(monkeypatch):
    collector = Collector()
    # Read by the OTLP exporter itself, as in production.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    otel.shutdown()
    yield collector
    otel.shutdown()
    collector.stop()


def test_spans_are_sent_over_otlp_http_to_the_configured_endpoint(collector, proxy_settings, proxy):
    proxy_settings.OTEL_ENABLED = True
    proxy_settings.OTEL_SERVICE_NAME = "ollama-monitor-test"
    ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION, stream=False)
    proxy.flush()
    assert otel.flush()

    path, content_type, request = collector.received.get(timeout=30)
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    (resource_spans,) = request.resource_spans
    resource = {item.key: item.value.string_value for item in resource_spans.resource.attributes}
    assert resource["service.name"] == "ollama-monitor-test"
    ((span,),) = [scope.spans for scope in resource_spans.scope_spans]
    message = Message.objects.get()
    assert span.name == "chat llama3.2"
    assert span.kind == span.SPAN_KIND_CLIENT
    assert span.start_time_unix_nano == nanoseconds(message.timestamp)
    attributes = {item.key: item.value for item in span.attributes}
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.request.model"].string_value == "llama3.2"
    assert attributes["gen_ai.usage.input_tokens"].int_value == message.input_tokens
    assert attributes["gen_ai.usage.output_tokens"].int_value == message.output_tokens
    assert attributes["ollama_monitor.request_id"].string_value == str(message.request_id)
    reasons = attributes["gen_ai.response.finish_reasons"].array_value.values
    assert [value.string_value for value in reasons] == ["stop"]


def test_nothing_is_exported_unless_enabled(collector, proxy_settings, proxy):
    proxy_settings.OTEL_ENABLED = False
    ollama.Client(host=proxy.url).chat(model="llama3.2", messages=QUESTION, stream=False)
    proxy.flush()
    assert otel.flush()  # nothing started, nothing waiting

    assert Message.objects.count() == 1
    assert collector.received.empty()
    assert httpx.post(f"{collector.url}/v1/traces", content=b"").status_code == 200
    assert collector.received.get(timeout=30)[2].resource_spans == []  # only our own post


@pytest.mark.parametrize(
    ("variables", "enabled"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_ENABLED": "0"}, False),
    ],
)
def test_export_is_off_by_default_and_on_once_an_endpoint_is_set(variables, enabled, tmp_path):
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OTEL_") and name != "DATABASE_URL"
    }
    environment.update(DATA_DIR=str(tmp_path), **variables)
    shown = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.OTEL_ENABLED)",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[-1] == str(enabled)
