"""Simulated Ollama server for tests, demos and benchmarks.

A small aiohttp application that speaks the Ollama HTTP API byte-for-byte the
way real Ollama (Go + gin) does, without a model: answers are deterministic
text from a word list, timings come from a configurable pacing model.
The wire details follow ``/work/shared/reference/ollama-api.md`` (§0.2 encoding,
§0.4 stream defaults, §0.5 content types, §2 native endpoints, §3 errors,
§5 OpenAI-compatible endpoints, §9 checklist).

Only aiohttp and the standard library are used, so the package runs standalone::

    python -m proxy.simulator --port 11434 [--host 127.0.0.1] [--tokens-per-second 50]
        [--ttft 0.05] [--default-tokens 24] [--max-parallel N] [--max-queue N]
        [--ollama-version 0.33.0] [--models llama3.2,qwen3]

(``python manage.py simulate_ollama`` accepts the same options.)

Routes
------
Native: ``HEAD|GET /``, ``HEAD|GET /api/version``, ``HEAD|GET /api/tags``,
``GET /api/ps``, ``POST /api/show``, ``POST /api/generate``, ``POST /api/chat``,
``POST /api/embed``, ``POST /api/embeddings``, ``POST /api/pull``.
OpenAI-compatible: ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models``, ``GET /v1/models/{model}``.
``OPTIONS`` on any path answers 204 (Ollama's host middleware does the same).
Anything else: gin's ``404 page not found`` / ``405 method not allowed`` (+ ``Allow``).

Built-in models: ``llama3.2`` (completion, tools), ``qwen3`` (completion, tools,
thinking), ``llava`` (completion, vision), ``all-minilm`` (embedding only).
Names match case-insensitively with the ``:latest`` default tag.

Generation model
----------------
* Content tokens come from :data:`PASSAGE` (see :func:`simulated_text`), so a
  test can compute the expected answer: ``simulated_text(n)``.
* Token count: ``X-Sim-Tokens`` header, else ``options.num_predict`` /
  ``max_tokens`` (done_reason ``length``), else ``default_tokens``
  (done_reason ``stop``). ``num_predict`` smaller than a fixed answer
  (``X-Sim-Tokens``/``X-Sim-Text``/``format``) cuts it with ``length``.
* Thinking models (``qwen3``) emit :data:`THINKING_PASSAGE` tokens as
  ``thinking`` chunks first when ``think`` is true or absent; they count in
  ``eval_count`` but not against the token budget.
* Chat with a non-empty ``tools`` list answers with one tool call for the first
  tool (arguments sampled from its JSON schema) unless the last message is a
  ``tool`` result, in which case it answers with text.
* ``format`` (``"json"`` or a schema) makes the content a JSON document.
* ``options.stop`` / OpenAI ``stop`` strings end the answer early (``stop``).
* ``prompt_eval_count`` is :func:`estimate_tokens` of the prompt (whitespace
  words) plus a fixed template overhead (+576 per image on vision models).
* Pacing: the first token is written ``ttft`` seconds after the request (the
  HTTP headers go out with it, like Ollama), then one token every
  ``1 / tokens_per_second`` seconds; ``tokens_per_second = 0`` disables all
  pacing (benchmarks). ``load_duration`` ~ queue wait + ttft,
  ``eval_duration`` ~ tokens / tps, ``total_duration`` = wall time.
* Concurrency: ``max_parallel`` requests hold a generation slot at once
  (0 = unlimited); up to ``max_queue`` more wait; beyond that Ollama's 503
  ``server busy, please try again.  maximum pending requests exceeded``.

Per-request knobs (request headers; the proxy forwards them)
------------------------------------------------------------
``X-Sim-Tokens: N``
    Answer with exactly N content tokens (done_reason ``stop``).
``X-Sim-TPS: float``
    Tokens per second for this request (0 = no pacing).
``X-Sim-TTFT: seconds``
    Delay before the first byte (model load time) for this request. On the
    other routes (``/api/show``, ``/api/tags``…) it delays the answer too.
``X-Sim-Fail: midstream``
    After two chunks, write ``{"error":"an error was encountered while running
    the model: unexpected EOF"}`` as the last NDJSON line of the 200 stream
    (non-streaming requests get that message as a 500).
``X-Sim-Fail: 500``
    500 ``{"error":"llama runner process has terminated: exit status 2"}``
    after the load delay (scheduler error, ``application/json; charset=utf-8``).
``X-Sim-Fail: <other status>``
    Runner error before the first byte, e.g. 429 ``rate limit exceeded`` or
    503 ``model is overloaded``; a streaming request gets it with
    ``Content-Type: application/json`` like Ollama's ``streamResponse``.
``X-Sim-Fail: drop``
    After two chunks the server aborts the connection without finishing the
    chunked stream (a crashing Ollama); counted as ``dropped``, not as a client
    disconnect. Non-streaming requests get the ``midstream`` 500 instead.
``X-Sim-Split-UTF8: 1``
    The answer is :data:`SPLIT_UTF8_TOKENS` ("héllo wörld 日本語 🌍" …) and every
    stream line/frame is written in two writes split inside a multi-byte UTF-8
    character, ~5 ms apart, so they arrive as separate chunks/TCP segments.
``X-Sim-Text: <url-encoded text>``
    Answer with exactly this text, tokenised into whitespace-led words.

Observability (not part of Ollama)
----------------------------------
``GET /_sim/stats``
    Counters ``requests``, ``completed``, ``disconnects``, ``dropped``
    (``X-Sim-Fail: drop``), ``rejected`` (503), ``generated_tokens``; gauges
    ``in_flight``, ``active`` (holding a generation slot), ``queued``; plus
    ``last_request`` = ``{"method","path","query"(raw, still %-encoded),
    "headers"(lower-cased),"body","body_encoding","body_length"}`` (body as
    text ``utf-8`` or ``base64``, kept up to 4 MiB), ``last_response`` (the
    exact body bytes written, as text or base64 with ``last_response_encoding``;
    :meth:`RunningSimulator.stats` gives ``bytes``) and ``last_response_status``.
``GET /_sim/requests``
    The last 100 recorded requests, oldest first.
``POST /_sim/reset``
    Zero the counters, forget recorded requests, loaded (``/api/ps``) and
    pulled models. Gauges (``in_flight``, ``active``, ``queued``) stay live.
``GET /_sim/wait?disconnects=1&timeout=5``
    Long-poll until every given counter is reached (gauges must be equal,
    the other counters at least the value): 200 + stats, or 408 + stats.

A disconnect is a client that goes away before the response is complete
(including while it waits for ttft or in the queue); generation stops at once.
Detecting it relies on aiohttp's ``handler_cancellation=True`` (set by
:class:`RunningSimulator` and :func:`serve`; pass it yourself when serving
:func:`build_app` another way).

Python API
----------
``SimulatorConfig``
    Dataclass: host, port, tokens_per_second, ttft, default_tokens,
    max_parallel, max_queue, version, models (None = all built-ins),
    openai_only (a hosted OpenAI-compatible API: ``/v1/*`` only, other paths
    404), api_key (non-empty: ``/v1/*`` answers OpenAI's 401
    ``invalid_api_key`` error unless ``Authorization: Bearer <api_key>``).
``build_app(config) -> aiohttp.web.Application``
``RunningSimulator(config=None, **overrides)``
    Context manager serving from a background thread with its own loop; a
    free port unless ``port`` says otherwise. ``url``, ``port``, ``config``,
    ``stats()``, ``reset()``, ``wait_for(*, timeout=5.0, **counters)`` (returns
    the stats or raises ``TimeoutError``) and ``await wait_for_async(...)``.
``serve(config)``, ``main(argv=None)``, ``add_arguments(parser)``,
``config_from_options(options)``
    The CLI and ``manage.py simulate_ollama`` building blocks.
``SimState.builtin(name)``
    The built-in model called ``name`` (ValueError if unknown), to check
    ``--models`` before serving.
``simulated_text(n)``, ``simulated_tokens(n)``, ``estimate_tokens(text)``,
``go_json(obj)``, ``go_float(value, bits)``
    For computing expected answers and bytes in tests.

Layout
------
``wire``            Go-identical JSON, float, time and duration encoding
``decoding``        gin request binding, the Go request structs, Go's error texts
``errors``          Ollama's error messages and the exceptions carrying them
``config``          :class:`SimulatorConfig`
``catalogue``       model names, the built-in models, tags/show/ps/pull payloads
``content``         deterministic answer text, tool calls, JSON answers, embeddings
``knobs``           the ``X-Sim-*`` request headers
``state``           counters, recorded traffic, loaded models, generation slots;
                    the ``/_sim/*`` endpoints
``output``          native response writing (NDJSON streams, ``c.JSON`` bodies)
``openai_output``   the ``/v1`` response formats (SSE, OpenAI JSON)
``generation``      jobs, pacing and the inference engine
``native``          the ``/`` and ``/api/*`` handlers
``openai``          the ``/v1/*`` handlers
``app``             routing and :func:`build_app`
``server``          :class:`RunningSimulator`, :func:`serve` and the CLI
"""

from .app import build_app
from .catalogue import BUILTIN_MODELS
from .config import SimulatorConfig
from .content import (
    PASSAGE,
    SPLIT_UTF8_TOKENS,
    THINKING_PASSAGE,
    estimate_tokens,
    simulated_text,
    simulated_tokens,
)
from .errors import BUSY_MESSAGE, MIDSTREAM_MESSAGE, RUNNER_CRASH_MESSAGE
from .server import RunningSimulator, add_arguments, config_from_options, main, serve
from .state import SimState
from .wire import go_float, go_json

__all__ = [
    "BUILTIN_MODELS",
    "BUSY_MESSAGE",
    "MIDSTREAM_MESSAGE",
    "PASSAGE",
    "RUNNER_CRASH_MESSAGE",
    "SPLIT_UTF8_TOKENS",
    "THINKING_PASSAGE",
    "RunningSimulator",
    "SimState",
    "SimulatorConfig",
    "add_arguments",
    "build_app",
    "config_from_options",
    "estimate_tokens",
    "go_float",
    "go_json",
    "main",
    "serve",
    "simulated_text",
    "simulated_tokens",
]
