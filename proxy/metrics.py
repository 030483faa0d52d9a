"""Prometheus metrics: what went through the proxy, and how the recorder is doing.

Requests are observed in one place, the recorder's writer thread, from the same field dicts that
become `Message` rows (`ExchangeMetrics.observe`), so metrics and stored messages agree. Routes
that are not stored as messages (`/api/tags`, `/api/pull`, ...) reach the writer too, flagged as
not stored, and are counted the same way. The hot path only moves the in-flight gauge and counts
upstream failures by kind.

Label values stay bounded whatever clients send: a model name becomes a label value only after a
request for it succeeded (so Ollama knows the model), and at most `METRICS_MAX_MODELS` names per
process; every other name is `other`. Unknown paths are `other` too. No user, key or prompt text
is ever a label.

With several worker processes, prometheus_client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`
set before start) sums the workers' files into one scrape; the gauges say how to combine.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import hmac
import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, connection
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder, gzip_accepted

from . import ollama

log = logging.getLogger(__name__)

OTHER = "other"

# LLM-sized: a short embedding takes milliseconds, a long generation or a cold model minutes.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300)
# First token includes loading the model, which can take minutes on a cold start.
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
TOKENS_PER_SECOND_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
COST_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)  # the seed's, in USD per request

# The OpenTelemetry GenAI semantic conventions' advised bucket boundaries.
GENAI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
GENAI_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
GENAI_TOKEN_BUCKETS = tuple(4**power for power in range(14))  # 1, 4, 16, ... 67108864
# Our route's operation (proxy.ollama.MODEL_ROUTES) as GenAI's `gen_ai.operation.name`.
GENAI_OPERATIONS = {
    "chat": "chat",
    "generate": "text_completion",
    "embed": "embeddings",
    "embeddings": "embeddings",
}

# --- The metric set (names from DESIGN.md §2, Prometheus base units) ------------------------

# `backend` names the upstream that answered (proxy.backends): configured names only, so
# bounded; empty when none was reached or the proxy answered itself.
REQUESTS = Counter(
    "ollama_requests", "Requests through the proxy.", ["model", "endpoint", "status", "backend"]
)
REQUEST_DURATION = Histogram(
    "ollama_request_duration_seconds",
    "Time from the request to the last byte of the reply, measured at the proxy.",
    ["model", "endpoint", "backend"],
    buckets=DURATION_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "ollama_time_to_first_token_seconds",
    "Time from the request to the first byte of a successful model reply.",
    ["model", "endpoint", "backend"],
    buckets=TTFT_BUCKETS,
)
TOKENS = Counter("ollama_tokens", "Tokens read (input) and generated (output).", ["model", "type"])
TOKENS_PER_SECOND = Histogram(
    "ollama_tokens_per_second",
    "Generation speed of a reply, output tokens per second.",
    ["model"],
    buckets=TOKENS_PER_SECOND_BUCKETS,
)
REQUESTS_IN_FLIGHT = Gauge(
    "ollama_requests_in_flight",
    "Requests being relayed to Ollama right now.",
    multiprocess_mode="livesum",
)
MODEL_LOAD_DURATION = Histogram(
    "ollama_model_load_duration_seconds",
    "Time Ollama spent loading the model for a request (its load_duration).",
    ["model"],
    buckets=LOAD_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "ollama_upstream_errors",
    "Failures to reach Ollama or to read its reply: connect, timeout, connection.",
    ["kind"],
)
MODEL_COSTS = Histogram(
    "ollama_model_costs", "Cost of a request in USD.", ["model"], buckets=COST_BUCKETS
)
BACKEND_UP = Gauge(
    "ollama_backend_up",
    "1 while a backend passes its health checks, 0 while it is taken out of routing.",
    ["backend"],
    multiprocess_mode="livemax",
)

RECORDS_WRITTEN = Counter("ollama_recorder_records_written", "Messages inserted into the database.")
RECORDS_SPOOLED = Counter(
    "ollama_recorder_records_spooled",
    "Messages written to the spool because the database was unavailable or the queue full.",
)
RECORDS_DROPPED = Counter(
    "ollama_recorder_records_dropped", "Messages that could not be recorded at all."
)
RECORDS_REPLAYED = Counter(
    "ollama_recorder_records_replayed", "Spooled messages inserted into the database later."
)
QUEUE_DEPTH = Gauge(
    "ollama_recorder_queue_depth",
    "Exchanges waiting for the recorder's writer, as the writer last saw it.",
    multiprocess_mode="livesum",
)
DATABASE_SIZE = Gauge(
    "ollama_recorder_database_size_bytes",
    "Size of the database holding the messages (SQLite file and WAL, or PostgreSQL database).",
    multiprocess_mode="livemax",
)

GENAI_LABELS = ["gen_ai_operation_name", "gen_ai_request_model"]
GENAI_OPERATION_DURATION = Histogram(
    "gen_ai_client_operation_duration_seconds",
    "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration).",
    [*GENAI_LABELS, "error_type"],
    buckets=GENAI_DURATION_BUCKETS,
)
GENAI_TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens used per operation (OpenTelemetry gen_ai.client.token.usage).",
    [*GENAI_LABELS, "gen_ai_token_type"],
    buckets=GENAI_TOKEN_BUCKETS,
)
GENAI_TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time to the first token (OpenTelemetry gen_ai.server.time_to_first_token).",
    GENAI_LABELS,
    buckets=GENAI_TTFT_BUCKETS,
)

# --- Label values --------------------------------------------------------------------------

# Ollama's routes (its server/routes.go), kept as label values as they are.
KNOWN_ENDPOINTS = frozenset(ollama.MODEL_ROUTES) | {
    "/",
    "/api/version",
    "/api/status",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/me",
    "/api/signout",
    "/v1/models",
    "/v1/responses",
    "/v1/messages",
    "/v1/audio/transcriptions",
}
# Routes with a parameter in the path: the parameter is dropped.
PARAMETER_ENDPOINTS = (("/api/blobs/", "/api/blobs/:digest"), ("/v1/models/", "/v1/models/:model"))


def endpoint_label(path: str) -> str:
    if path in KNOWN_ENDPOINTS:
        return path
    for prefix, label in PARAMETER_ENDPOINTS:
        if path.startswith(prefix):
            return label
    return OTHER


class ModelLabels:
    """Which model names may be label values in this process.

    A name is admitted by a successful request (Ollama knew it), while fewer than `limit` names
    are admitted; anything else folds into `other`. An admitted name keeps its label for its
    failures too. Requests without a model (`/api/tags`) have an empty label, which Prometheus
    treats as no label at all.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.admitted: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, model: str, succeeded: bool) -> str:
        if not model or model in self.admitted:
            return model
        if not succeeded:
            return OTHER
        with self.lock:  # the writer and a full queue's spill can both get here
            if len(self.admitted) < self.limit:
                self.admitted.add(model)
                return model
        return OTHER


# --- Observing exchanges (in the recorder's writer) ----------------------------------------


class ExchangeMetrics:
    """Observes each exchange's Message fields; one per recorder, settings read at its start."""

    def __init__(self):
        self.model_label = ModelLabels(settings.METRICS_MAX_MODELS)
        self.genai = settings.METRICS_GENAI
        self.size_every = settings.METRICS_DATABASE_SIZE_SECONDS
        self.size_due = 0.0
        # The labelled series per label combination: `.labels()` costs ~1 us a call, twelve
        # calls a message; the combinations are few (models are capped).
        self.children: dict[tuple, _Children] = {}

    def observe(self, row: dict) -> None:
        """Count one request from the fields that make (or would make) its Message."""
        status = row["status"]
        succeeded = status == "success"
        model = self.model_label(row["model"], succeeded)
        endpoint = endpoint_label(row["endpoint"])
        backend = row.get("backend", "")
        operation = ollama.MODEL_ROUTES.get(row["endpoint"])
        error_type = "" if succeeded or operation is None else _error_type(row)
        key = (model, endpoint, status, backend, operation, error_type)
        children = self.children.get(key)
        if children is None:  # a label combination's first request: look its series up once
            children = self.children[key] = _Children(key)
        children.requests.inc()
        children.duration.observe(row["latency_seconds"])
        if operation is None:
            return  # not a model: no tokens, no first token worth the name
        ttft = row["ttft_seconds"]
        if succeeded and ttft is not None:
            children.ttft.observe(ttft)
        input_tokens, output_tokens = row["input_tokens"], row["output_tokens"]
        if input_tokens:
            children.input_tokens.inc(input_tokens)
        if output_tokens:
            children.output_tokens.inc(output_tokens)
        if row["tokens_per_second"] is not None:
            children.tokens_per_second.observe(row["tokens_per_second"])
        if row["load_duration_seconds"] is not None:
            children.load_duration.observe(row["load_duration_seconds"])
        cost = row.get("cost_usd")
        if cost is not None:
            children.cost.observe(float(cost))
        if self.genai:
            children.genai_duration.observe(row["latency_seconds"])
            if input_tokens is not None:
                children.genai_input.observe(input_tokens)
            if output_tokens is not None:
                children.genai_output.observe(output_tokens)
            if succeeded and ttft is not None:
                children.genai_ttft.observe(ttft)

    def refresh_database_size(self, *, force: bool = False) -> None:
        """Measure the database, at most every METRICS_DATABASE_SIZE_SECONDS (writer thread)."""
        now = time.monotonic()
        if not force and now < self.size_due:
            return
        self.size_due = now + self.size_every
        try:
            size = database_size_bytes()
        except DatabaseError as error:
            log.debug("metrics: could not measure the database: %s", error)
            return
        if size is not None:
            DATABASE_SIZE.set(size)


# Per series: its labelled child from (model, endpoint, status, backend, operation, error type).
_SERIES = {
    "requests": lambda m, e, s, b, o, t: REQUESTS.labels(m, e, s, b),
    "duration": lambda m, e, s, b, o, t: REQUEST_DURATION.labels(m, e, b),
    "ttft": lambda m, e, s, b, o, t: TIME_TO_FIRST_TOKEN.labels(m, e, b),
    "input_tokens": lambda m, e, s, b, o, t: TOKENS.labels(m, "input"),
    "output_tokens": lambda m, e, s, b, o, t: TOKENS.labels(m, "output"),
    "tokens_per_second": lambda m, e, s, b, o, t: TOKENS_PER_SECOND.labels(m),
    "load_duration": lambda m, e, s, b, o, t: MODEL_LOAD_DURATION.labels(m),
    "cost": lambda m, e, s, b, o, t: MODEL_COSTS.labels(m),
    "genai_duration": lambda m, e, s, b, o, t: GENAI_OPERATION_DURATION.labels(
        GENAI_OPERATIONS[o], m, t
    ),
    "genai_input": lambda m, e, s, b, o, t: GENAI_TOKEN_USAGE.labels(
        GENAI_OPERATIONS[o], m, "input"
    ),
    "genai_output": lambda m, e, s, b, o, t: GENAI_TOKEN_USAGE.labels(
        GENAI_OPERATIONS[o], m, "output"
    ),
    "genai_ttft": lambda m, e, s, b, o, t: GENAI_TIME_TO_FIRST_TOKEN.labels(GENAI_OPERATIONS[o], m),
}


class _Children:
    """The series one label combination of an exchange updates, each looked up on first use
    (a series appears on /metrics once it has something to count, as with `.labels()`)."""

    __slots__ = ("key", *_SERIES)

    def __init__(self, key: tuple):
        self.key = key

    def __getattr__(self, name: str):  # only for a slot not set yet
        factory = _SERIES.get(name)
        if factory is None:
            raise AttributeError(name)
        child = factory(*self.key)
        setattr(self, name, child)
        return child


def _error_type(row: dict) -> str:
    """GenAI's `error.type`, low-cardinality: the HTTP status, or what happened instead."""
    if row["status"] == "cancelled":
        return "cancelled"
    http_status = row["http_status"]
    return str(http_status) if http_status and http_status >= 400 else "error"


def database_size_bytes() -> int | None:
    """Bytes used by the messages' database, on the calling thread's connection."""
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        try:
            size = os.path.getsize(name)
        except OSError:
            return None  # an in-memory database
        with contextlib.suppress(OSError):  # no WAL file between checkpoints
            size += os.path.getsize(f"{name}-wal")
        return size
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return cursor.fetchone()[0]
    return None


def process_stopped() -> None:
    """Forget this worker's live gauges when it stops (multiprocess mode only)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


# --- The /metrics endpoint -----------------------------------------------------------------


def _registry():
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render(accept: str, accept_encoding: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The exposition in the format the scraper asked for, gzipped when it accepts that."""
    encoder, content_type = choose_encoder(accept)
    output = encoder(_registry())
    headers = [(b"content-type", content_type.encode())]
    if gzip_accepted(accept_encoding):
        output = gzip.compress(output, compresslevel=1)
        headers.append((b"content-encoding", b"gzip"))
    return output, headers


def authorized(header: str) -> bool:
    """Open unless METRICS_BEARER_TOKEN or METRICS_BASIC_AUTH is set; then either one opens."""
    token, basic = settings.METRICS_BEARER_TOKEN, settings.METRICS_BASIC_AUTH
    if not token and not basic:
        return True
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if token and scheme == "bearer":
        return hmac.compare_digest(credentials.strip().encode(), token.encode())
    if basic and scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded, basic.encode())
    return False


async def serve(scope, receive, send) -> None:
    """ASGI app for `GET /metrics` (see ollama_monitor/asgi.py for why it bypasses Django)."""
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    if scope["method"] not in {"GET", "HEAD"}:
        await _respond(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        return
    if not authorized(headers.get("authorization", "")):
        challenge = b'Basic realm="metrics"' if settings.METRICS_BASIC_AUTH else b"Bearer"
        await _respond(send, 401, b"unauthorized\n", [(b"www-authenticate", challenge)])
        return
    # Rendering reads every metric (every worker's file in multiprocess mode): off the loop.
    body, reply_headers = await asyncio.to_thread(
        render, headers.get("accept", ""), headers.get("accept-encoding", "")
    )
    await _respond(send, 200, b"" if scope["method"] == "HEAD" else body, reply_headers)


async def _respond(send, status: int, body: bytes, headers: list) -> None:
    if not any(name == b"content-type" for name, _ in headers):
        headers = [*headers, (b"content-type", b"text/plain; charset=utf-8")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
