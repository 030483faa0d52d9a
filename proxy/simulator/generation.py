"""The inference engine shared by generate, chat, embed and their ``/v1`` twins.

Validated requests become a :class:`Job` (what to answer); the engine
schedules it, paces its tokens and writes it through an
:class:`~.output.Output` (how to answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .catalogue import ModelName, ModelSpec
from .config import SimulatorConfig
from .content import (
    SPLIT_UTF8_TOKENS,
    THINKING_PASSAGE,
    context_ids,
    cycle_tokens,
    embedding_vector,
    estimate_tokens,
    format_answer_tokens,
    simulated_tokens,
    tokenize_text,
    tool_call,
)
from .decoding import (
    MESSAGE_FIELDS,
    bind_fields,
    decode_base64_image,
    parse_keep_alive,
    type_error,
)
from .errors import MIDSTREAM_MESSAGE, ApiError
from .knobs import Knobs
from .output import Output
from .state import START_KEY, SimState, state_of
from .wire import go_json, go_time

# --------------------------------------------------------------------------
# Jobs and the engine that runs them
# --------------------------------------------------------------------------


@dataclass
class Job:
    """A validated inference request, independent of the wire format."""

    kind: str  # "generate" or "chat"
    model: str  # the request's model string, echoed verbatim
    spec: ModelSpec
    stream: bool
    prompt_tokens: int
    keep_alive: float | None
    knobs: Knobs
    thinking: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    done_reason: str = "stop"
    offered_tools: bool = False
    raw: bool = False
    context_seed: str = ""

    def pieces(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = [("thinking", t) for t in self.thinking]
        if self.tool_calls:
            out.append(("tool_calls", self.tool_calls))
        out.extend(("content", c) for c in self.content)
        return out

    @staticmethod
    def piece_tokens(kind: str, value: Any) -> int:
        if kind == "tool_calls":
            return sum(len(go_json(call["function"]["arguments"])) // 4 + 5 for call in value)
        return 1

    def chunk(self, kind: str, value: Any) -> dict[str, Any]:
        """A native ``done:false`` chunk for one piece of output."""
        if self.kind == "generate":
            obj: dict[str, Any] = {
                "model": self.model,
                "created_at": go_time(),
                "response": value if kind == "content" else "",
            }
            if kind == "thinking":
                obj["thinking"] = value
            obj["done"] = False
            return obj
        message: dict[str, Any] = {
            "role": "assistant",
            "content": value if kind == "content" else "",
        }
        if kind == "thinking":
            message["thinking"] = value
        if kind == "tool_calls":
            message["tool_calls"] = value
        return {"model": self.model, "created_at": go_time(), "message": message, "done": False}

    def final(
        self,
        metrics: dict[str, int],
        *,
        content: str = "",
        thinking: str = "",
        calls: list | None = None,
    ) -> dict[str, Any]:
        """The native ``done:true`` object (stream end, or the whole non-stream reply)."""
        if self.kind == "generate":
            obj: dict[str, Any] = {
                "model": self.model,
                "created_at": go_time(),
                "response": content,
            }
            if thinking:
                obj["thinking"] = thinking
            obj["done"] = True
            obj["done_reason"] = self.done_reason
            if not self.raw:
                total = self.prompt_tokens + metrics.get("eval_count", 0)
                obj["context"] = context_ids(self.context_seed, total)
            obj.update(metrics)
            return obj
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        obj = {"model": self.model, "created_at": go_time(), "message": message, "done": True}
        obj["done_reason"] = self.done_reason
        obj.update(metrics)
        return obj


class Timer:
    """Wall-clock marks that become Ollama's duration metrics (ns)."""

    def __init__(self, start_ns: int) -> None:
        self.start = start_ns
        self.loaded = start_ns
        self.first: int | None = None

    def metrics(self, prompt_tokens: int, eval_count: int) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first if self.first is not None else end
        values = {
            "total_duration": end - self.start,
            "load_duration": self.loaded - self.start,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": first - self.loaded,
            "eval_count": eval_count,
            "eval_duration": end - first,
        }
        # Go's omitempty drops zero metrics.
        return {key: value for key, value in values.items() if value}


async def paced(
    pieces: list[tuple[str, Any]], tps: float, timer: Timer
) -> AsyncIterator[tuple[str, Any]]:
    """Yield pieces on a fixed schedule: one every 1/tps seconds after the first."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / tps if tps > 0 else 0.0
    start = loop.time()
    timer.first = time.perf_counter_ns()
    for index, piece in enumerate(pieces):
        if interval:
            delay = start + index * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        yield piece
    if interval and pieces:
        delay = start + len(pieces) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _load_reply(job: Job, reason: str) -> dict[str, Any]:
    if job.kind == "generate":
        return {
            "model": job.model,
            "created_at": go_time(),
            "response": "",
            "done": True,
            "done_reason": reason,
        }
    return {
        "model": job.model,
        "created_at": go_time(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
    }


async def run_load(request: web.Request, job: Job, output: Output) -> web.StreamResponse:
    """Empty prompt/messages: load (or with keep_alive 0 unload) the model."""
    state = state_of(request)
    if job.keep_alive == 0:
        state.unload(job.spec)
        return await output.load_reply(_load_reply(job, "unload"), job.stream)
    async with state.slot():
        await job.knobs.load_delay()
    state.mark_loaded(job.spec, job.keep_alive)
    return await output.load_reply(_load_reply(job, "load"), job.stream)


async def run_job(request: web.Request, job: Job, output: Output) -> web.StreamResponse:
    """Schedule, wait for the simulated load, then stream or collect the answer."""
    state = state_of(request)
    timer = Timer(request[START_KEY])
    async with state.slot():
        await job.knobs.load_delay()
        timer.loaded = time.perf_counter_ns()
        state.mark_loaded(job.spec, job.keep_alive)
        failure = job.knobs.failure_before_output(streaming=job.stream)
        if failure is not None:
            raise failure
        if job.stream:
            response = await _stream(job, output, timer, state)
        else:
            response = await _collect(job, output, timer, state)
    if job.keep_alive == 0:
        state.unload(job.spec)
    return response


async def _stream(job: Job, output: Output, timer: Timer, state: SimState) -> web.StreamResponse:
    failing = job.knobs.fail in ("midstream", "drop")
    pieces = job.pieces()
    fail_after = min(2, len(pieces))
    eval_count = 0
    async for sent, (kind, value) in _aenumerate(paced(pieces, job.knobs.tps, timer)):
        if failing and sent == fail_after:
            break
        await output.chunk(job.chunk(kind, value))
        tokens = job.piece_tokens(kind, value)
        eval_count += tokens
        state.bump("generated_tokens", tokens)
    if failing:
        if job.knobs.fail == "drop":
            raise output.drop()
        return await output.stream_error(MIDSTREAM_MESSAGE)
    await output.chunk(job.final(timer.metrics(job.prompt_tokens, eval_count)))
    return await output.finish()


async def _collect(job: Job, output: Output, timer: Timer, state: SimState) -> web.Response:
    parts: dict[str, list[Any]] = {"content": [], "thinking": [], "tool_calls": []}
    pieces = job.pieces()
    fail_after = min(2, len(pieces)) if job.knobs.fail in ("midstream", "drop") else None
    eval_count = 0
    async for sent, (kind, value) in _aenumerate(paced(pieces, job.knobs.tps, timer)):
        if sent == fail_after:
            break
        parts[kind].extend(value if kind == "tool_calls" else [value])
        tokens = job.piece_tokens(kind, value)
        eval_count += tokens
        state.bump("generated_tokens", tokens)
    if fail_after is not None:
        raise ApiError(500, MIDSTREAM_MESSAGE)
    final = job.final(
        timer.metrics(job.prompt_tokens, eval_count),
        content="".join(parts["content"]),
        thinking="".join(parts["thinking"]),
        calls=parts["tool_calls"] if job.offered_tools else None,
    )
    return output.single(final)


async def _aenumerate(items: AsyncIterator[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1


# --------------------------------------------------------------------------
# Planning the answer: token budget, stop words, thinking
# --------------------------------------------------------------------------


def _plan_content(
    job: Job, config: SimulatorConfig, num_predict: int | None, fmt: Any, stop: list[str]
) -> None:
    """Fill ``job.content`` and ``job.done_reason`` from knobs, budget and stop words."""
    knobs = job.knobs
    natural: list[str] | None = None
    if knobs.text is not None:
        natural = tokenize_text(knobs.text)
    elif knobs.split_utf8:
        natural = cycle_tokens(
            SPLIT_UTF8_TOKENS, knobs.tokens if knobs.tokens is not None else config.default_tokens
        )
    elif fmt not in (None, ""):
        natural = format_answer_tokens(fmt)
    elif knobs.tokens is not None:
        natural = simulated_tokens(knobs.tokens)

    if natural is None:
        if num_predict is not None:
            tokens, reason = simulated_tokens(num_predict), "length"
        else:
            tokens, reason = simulated_tokens(config.default_tokens), "stop"
    elif num_predict is not None and num_predict < len(natural):
        tokens, reason = natural[:num_predict], "length"
    else:
        tokens, reason = natural, "stop"

    if stop:
        text = ""
        for index, token in enumerate(tokens):
            text += token
            if any(word and word in text for word in stop):
                tokens, reason = tokens[:index], "stop"
                break
    job.content = tokens
    job.done_reason = reason


def _num_predict(options: dict[str, Any]) -> int | None:
    value = options.get("num_predict")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not float(value).is_integer()
    ):
        raise ApiError(500, 'option "num_predict" must be of type integer')
    return int(value) if value >= 0 else None


def stop_words(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _resolve_think(value: Any, spec: ModelSpec, model: str) -> bool:
    """Ollama's think rules: default on for thinking models; levels count as on."""
    if value is None:
        return spec.has("thinking")
    if isinstance(value, str):
        if value not in ("low", "medium", "high", "max"):
            raise ApiError(400, f'invalid think value: "{value}"')
        enabled = True
    elif isinstance(value, bool):
        enabled = value
    else:
        raise ApiError(400, "invalid think value")
    if enabled and not spec.has("thinking"):
        raise ApiError(400, f'"{model}" does not support thinking')
    return enabled


# --------------------------------------------------------------------------
# Native requests to jobs (the /v1 handlers convert to native first)
# --------------------------------------------------------------------------


def generate_job(request: web.Request, body: dict[str, Any], knobs: Knobs) -> tuple[Job, bool]:
    """Validate a native generate request; returns the job and whether it only loads."""
    state = state_of(request)
    top = body.get("top_logprobs", 0)
    if top < 0 or top > 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise ApiError(400, "raw mode does not support template, system, or context")
    name = body.get("model", "")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    if not spec.has("completion"):
        raise ApiError(400, f'"{name}" does not support generate')
    if body.get("suffix") and not spec.has("insert"):
        raise ApiError(400, f"{spec.ref.full} does not support insert")
    think = _resolve_think(body.get("think"), spec, name)
    images = body.get("images") or []
    for image in images:
        if not isinstance(image, str):
            raise ApiError(400, type_error(image, "[]uint8", "GenerateRequest.images"))
        decode_base64_image(image)
    options = body.get("options") or {}
    prompt = body.get("prompt", "")
    prompt_tokens = estimate_tokens(
        body.get("system", "") + " " + prompt + " " + body.get("suffix", "")
    )
    prompt_tokens += (0 if body.get("raw") else 10) + (
        576 * len(images) if spec.has("vision") else 0
    )
    job = Job(
        kind="generate",
        model=name,
        spec=spec,
        stream=body.get("stream", True),
        prompt_tokens=prompt_tokens,
        keep_alive=parse_keep_alive(body.get("keep_alive")),
        knobs=knobs,
        raw=bool(body.get("raw")),
        context_seed=prompt,
    )
    if think:
        job.thinking = tokenize_text(THINKING_PASSAGE)
    _plan_content(
        job,
        state.config,
        _num_predict(options),
        body.get("format"),
        stop_words(options.get("stop")),
    )
    return job, not prompt and not images


def _message_text(message: dict[str, Any]) -> str:
    return str(message.get("content") or "")


def _validate_messages(messages: list[Any]) -> list[dict[str, Any]]:
    checked = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(400, type_error(message, "api.Message", "ChatRequest.messages"))
        bound = bind_fields(message, MESSAGE_FIELDS, "ChatRequest.messages")
        for image in bound.get("images") or []:
            if not isinstance(image, str):
                raise ApiError(400, type_error(image, "[]uint8", "ChatRequest.messages.images"))
            decode_base64_image(image)
        checked.append(bound)
    return checked


def chat_job(request: web.Request, body: dict[str, Any], knobs: Knobs) -> tuple[Job, bool]:
    """Validate a native chat request; returns the job and whether it only loads."""
    state = state_of(request)
    top = body.get("top_logprobs", 0)
    if top < 0 or top > 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    name = body.get("model", "")
    if ModelName.parse(name) is None:
        raise ApiError(400, "model is required")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    if not spec.has("completion"):
        raise ApiError(400, f'"{name}" does not support chat')
    tools = body.get("tools") or []
    if tools and not spec.has("tools"):
        raise ApiError(400, f"{spec.ref.full} does not support tools")
    think = _resolve_think(body.get("think"), spec, name)
    messages = _validate_messages(body.get("messages") or [])
    options = body.get("options") or {}
    images = sum(len(m.get("images") or []) for m in messages)
    prompt_tokens = 10 + sum(estimate_tokens(_message_text(m)) + 4 for m in messages)
    prompt_tokens += 30 * len(tools) + (576 * images if spec.has("vision") else 0)
    job = Job(
        kind="chat",
        model=name,
        spec=spec,
        stream=body.get("stream", True),
        prompt_tokens=prompt_tokens,
        keep_alive=parse_keep_alive(body.get("keep_alive")),
        knobs=knobs,
        offered_tools=bool(tools),
    )
    if think:
        job.thinking = tokenize_text(THINKING_PASSAGE)
    answered_tool = bool(messages) and str(messages[-1].get("role", "")).lower() == "tool"
    if tools and not answered_tool and knobs.text is None:
        job.tool_calls = [tool_call(tools)]
    else:
        stop = stop_words(options.get("stop"))
        _plan_content(job, state.config, _num_predict(options), body.get("format"), stop)
    return job, not messages


async def run_inference(
    request: web.Request,
    output: Output,
    build: Callable[[], tuple[Job, bool]],
) -> web.StreamResponse:
    """Run a validated job through an output, mapping errors to its format."""
    try:
        job, load_only = build()
        if load_only:
            return await run_load(request, job, output)
        return await run_job(request, job, output)
    except ApiError as error:
        if output.started:
            # The status line is gone already; report inside the stream.
            return await output.stream_error(error.message)
        return output.error(error)


# --------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------


def _embed_inputs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ApiError(400, "invalid input type")


async def embed(
    request: web.Request, body: dict[str, Any], knobs: Knobs
) -> tuple[str, list[list[float]], int, Timer]:
    """Shared ``/api/embed`` logic: returns model, vectors, prompt tokens, timer."""
    state = state_of(request)
    inputs = _embed_inputs(body.get("input"))
    name = body.get("model", "")
    if not name:
        raise ApiError(404, "model '' not found")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    timer = Timer(request[START_KEY])
    async with state.slot():
        await knobs.load_delay()
        timer.loaded = time.perf_counter_ns()
        state.mark_loaded(spec, parse_keep_alive(body.get("keep_alive")))
        failure = knobs.failure_before_output(streaming=False)
        if failure is not None:
            raise failure
        truncate = body.get("truncate", True)
        counts = []
        for text in inputs:
            count = estimate_tokens(text) + 2
            if count > spec.context_length:
                if not truncate:
                    raise ApiError(400, "the input length exceeds the context length")
                count = spec.context_length
            counts.append(count)
        timer.first = time.perf_counter_ns()
        dimensions = int(body.get("dimensions") or 0)
        vectors = [embedding_vector(text, spec.embedding_length, dimensions) for text in inputs]
    return name, vectors, sum(counts), timer
