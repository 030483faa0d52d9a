"""The native Ollama handlers (``/``, ``/api/*``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .catalogue import BUILTIN_BY_KEY, ModelName, ps_entry, pull_lines, show_payload, tags_entry
from .content import embedding_vector
from .decoding import (
    CHAT_FIELDS,
    EMBED_FIELDS,
    EMBEDDINGS_FIELDS,
    GENERATE_FIELDS,
    PULL_FIELDS,
    SHOW_FIELDS,
    decode_body,
    parse_keep_alive,
)
from .errors import ApiError
from .generation import Timer, chat_job, embed, generate_job, paced, run_inference
from .knobs import Knobs
from .output import PLAIN_JSON, Output, native_error, native_json
from .state import BODY_KEY, START_KEY, state_of
from .wire import go_float_list


async def handle_root(request: web.Request) -> web.Response:
    """``GET|HEAD /``: the liveness probe."""
    return web.Response(
        body=b"Ollama is running", headers={"Content-Type": "text/plain; charset=utf-8"}
    )


async def handle_version(request: web.Request) -> web.Response:
    """``GET|HEAD /api/version``."""
    return native_json({"version": state_of(request).config.version})


async def handle_tags(request: web.Request) -> web.Response:
    """``GET|HEAD /api/tags``: installed models, newest first, ``[]`` when none."""
    specs = state_of(request).installed_newest_first()
    return native_json({"models": [tags_entry(spec) for spec in specs]})


async def handle_ps(request: web.Request) -> web.Response:
    """``GET /api/ps``: models used recently, longest remaining keep-alive first."""
    running = state_of(request).running_longest_first()
    return native_json({"models": [ps_entry(spec, expires) for spec, expires in running]})


async def handle_show(request: web.Request) -> web.Response:
    """``POST /api/show``."""
    try:
        body = decode_body(request[BODY_KEY], SHOW_FIELDS, "api.ShowRequest")
        name = body.get("model") or body.get("name") or ""
        if not name:
            raise ApiError(400, "model is required")
        spec = state_of(request).find(name)
        if spec is None:
            raise ApiError(404, f"model '{name}' not found")
    except ApiError as error:
        return native_error(error)
    return native_json(show_payload(spec, bool(body.get("verbose"))))


async def handle_generate(request: web.Request) -> web.StreamResponse:
    """``POST /api/generate``."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(request[BODY_KEY], GENERATE_FIELDS, "api.GenerateRequest")
    except ApiError as error:
        return native_error(error)
    return await run_inference(
        request, Output(request, knobs), lambda: generate_job(request, body, knobs)
    )


async def handle_chat(request: web.Request) -> web.StreamResponse:
    """``POST /api/chat``."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(request[BODY_KEY], CHAT_FIELDS, "api.ChatRequest")
    except ApiError as error:
        return native_error(error)
    return await run_inference(
        request, Output(request, knobs), lambda: chat_job(request, body, knobs)
    )


async def handle_embed(request: web.Request) -> web.Response:
    """``POST /api/embed``: L2-normalised float32 vectors."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(request[BODY_KEY], EMBED_FIELDS, "api.EmbedRequest")
        name, vectors, prompt_tokens, timer = await embed(request, body, knobs)
    except ApiError as error:
        return native_error(error)
    reply: dict[str, Any] = {"model": name, "embeddings": [go_float_list(v) for v in vectors]}
    if vectors:
        metrics = timer.metrics(prompt_tokens, 0)
        for key in ("total_duration", "load_duration", "prompt_eval_count"):
            if key in metrics:
                reply[key] = metrics[key]
    return native_json(reply)


async def handle_embeddings(request: web.Request) -> web.Response:
    """``POST /api/embeddings`` (legacy): one float64 vector, not normalised."""
    state = state_of(request)
    try:
        knobs = Knobs.from_request(request, state.config)
        body = decode_body(request[BODY_KEY], EMBEDDINGS_FIELDS, "api.EmbeddingRequest")
        name = body.get("model", "")
        if not name:
            raise ApiError(400, "model is required")
        spec = state.find(name)
        if spec is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        async with state.slot():
            await knobs.load_delay()
            state.mark_loaded(spec, parse_keep_alive(body.get("keep_alive")))
            failure = knobs.failure_before_output(streaming=False)
            if failure is not None:
                raise failure
    except ApiError as error:
        return native_error(error)
    prompt = body.get("prompt", "")
    vector = (
        [x * 4.2 for x in embedding_vector(prompt, spec.embedding_length, None)] if prompt else []
    )
    return native_json({"embedding": go_float_list(vector, 64)})


async def handle_pull(request: web.Request) -> web.StreamResponse:
    """``POST /api/pull``: progress lines; unknown models fail after the manifest line."""
    state = state_of(request)
    try:
        knobs = Knobs.from_request(request, state.config)
        body = decode_body(request[BODY_KEY], PULL_FIELDS, "api.PullRequest")
        ref = ModelName.parse(body.get("model") or body.get("name") or "")
        if ref is None:
            raise ApiError(400, "invalid model name")
    except ApiError as error:
        return native_error(error)
    spec = BUILTIN_BY_KEY.get(ref.key)
    missing = "pull model manifest: file does not exist"
    if not body.get("stream", True):
        if spec is None:
            return native_json({"error": missing}, 500, PLAIN_JSON)
        state.install(spec)
        return native_json({"status": "success"}, 200, PLAIN_JSON)
    output = Output(request, knobs)
    lines = [{"status": "pulling manifest"}] if spec is None else pull_lines(spec)
    async for _, line in paced(
        [("line", line) for line in lines], knobs.tps, Timer(request[START_KEY])
    ):
        await output.chunk(line)
    if spec is None:
        return await output.stream_error(missing)
    state.install(spec)
    return await output.finish()
