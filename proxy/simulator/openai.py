"""The OpenAI-compatible handlers (``/v1/*``): convert the request, reuse the native logic."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any

from aiohttp import web

from .catalogue import DEFAULT_NAMESPACE, ModelName, ModelSpec
from .decoding import (
    OPENAI_CHAT_FIELDS,
    OPENAI_COMPLETION_FIELDS,
    OPENAI_EMBED_FIELDS,
    decode_body,
    go_type_name,
    type_error,
)
from .errors import ApiError
from .generation import chat_job, embed, generate_job, run_inference, stop_words
from .knobs import Knobs
from .openai_output import (
    OpenAIChatOutput,
    OpenAICompletionOutput,
    openai_error,
    openai_json,
)
from .state import BODY_KEY, state_of
from .wire import go_float_list

_IMAGE_PREFIXES = (
    "data:;base64,",
    *(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp")),
)


def _openai_image(url: Any) -> str:
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise ApiError(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        raise ApiError(
            400, "image URLs are not currently supported, please use base64 encoded data instead"
        )
    for prefix in _IMAGE_PREFIXES:
        if url.startswith(prefix):
            data = url[len(prefix) :]
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "invalid message format") from None
            return data
    raise ApiError(400, "invalid image input")


def _openai_tool_call_args(calls: Any) -> list[dict[str, Any]]:
    converted = []
    for index, call in enumerate(calls if isinstance(calls, list) else []):
        function = call.get("function", {}) if isinstance(call, dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, ValueError):
            raise ApiError(400, "invalid tool call arguments") from None
        converted.append(
            {"function": {"index": index, "name": function.get("name", ""), "arguments": arguments}}
        )
    return converted


def _openai_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages → native messages (``FromChatRequest``)."""
    native: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ApiError(
                400, type_error(message, "openai.Message", "ChatCompletionRequest.messages")
            )
        role = message.get("role", "")
        content = message.get("content")
        extra: dict[str, Any] = {}
        if str(role).lower() == "tool" and (message.get("name") or message.get("tool_call_id")):
            extra["tool_name"] = message.get("name") or message.get("tool_call_id")
        if message.get("tool_calls"):
            extra["tool_calls"] = _openai_tool_call_args(message["tool_calls"])
        if isinstance(content, str):
            native.append({"role": role, "content": content, **extra})
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise ApiError(400, "invalid message format")
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    native.append({"role": role, "content": part["text"]})
                elif part.get("type") == "image_url":
                    native.append(
                        {
                            "role": role,
                            "content": "",
                            "images": [_openai_image(part.get("image_url"))],
                        }
                    )
                else:
                    raise ApiError(400, "invalid message format")
            if native and extra:
                native[-1].update(extra)
        elif message.get("tool_calls"):
            native.append({"role": role, "content": "", **extra})
        else:
            raise ApiError(400, f"invalid message content type: {go_type_name(content)}")
    return native


_EFFORTS = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}


def _openai_think(body: dict[str, Any]) -> Any:
    reasoning = body.get("reasoning") or {}
    effort = body.get("reasoning_effort") or (
        reasoning.get("effort") if isinstance(reasoning, dict) else None
    )
    if effort is None:
        return None
    if effort not in _EFFORTS:
        raise ApiError(400, f"invalid reasoning value: '{effort}'")
    return _EFFORTS[effort]


def _openai_format(response_format: Any) -> Any:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_object":
        return "json"
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if schema is not None else None
    return None


def _check_stop(value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise ApiError(400, f"invalid type for 'stop' field: {go_type_name(item)}")
        return
    raise ApiError(400, f"invalid type for 'stop' field: {go_type_name(value)}")


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return bool(options.get("include_usage"))


async def handle_openai_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(
            request[BODY_KEY], OPENAI_CHAT_FIELDS, "openai.ChatCompletionRequest", eof_message="EOF"
        )
        if not body.get("messages"):
            raise ApiError(400, "[] is too short - 'messages'")
        _check_stop(body.get("stop"))
        options: dict[str, Any] = {}
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        if body.get("stop") is not None:
            options["stop"] = stop_words(body["stop"])
        native = {
            "model": body.get("model", ""),
            "messages": _openai_messages(body["messages"]),
            "stream": bool(body.get("stream", False)),
            "options": options,
            "format": _openai_format(body.get("response_format")),
            "tools": body.get("tools") or [],
            "think": _openai_think(body),
        }
    except ApiError as error:
        return openai_error(error)
    output = OpenAIChatOutput(request, knobs, _include_usage(body))
    return await run_inference(request, output, lambda: chat_job(request, native, knobs))


async def handle_openai_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(
            request[BODY_KEY],
            OPENAI_COMPLETION_FIELDS,
            "openai.CompletionRequest",
            eof_message="EOF",
        )
        _check_stop(body.get("stop"))
        options: dict[str, Any] = {}
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        if body.get("stop") is not None:
            options["stop"] = stop_words(body["stop"])
        native = {
            "model": body.get("model", ""),
            "prompt": body.get("prompt", ""),
            "suffix": body.get("suffix", ""),
            "stream": bool(body.get("stream", False)),
            "options": options,
        }
    except ApiError as error:
        return openai_error(error)
    output = OpenAICompletionOutput(request, knobs, _include_usage(body))
    return await run_inference(request, output, lambda: generate_job(request, native, knobs))


async def handle_openai_embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings`` (``encoding_format`` float or base64)."""
    try:
        knobs = Knobs.from_request(request, state_of(request).config)
        body = decode_body(
            request[BODY_KEY], OPENAI_EMBED_FIELDS, "openai.EmbedRequest", eof_message="EOF"
        )
        encoding = body.get("encoding_format", "")
        if encoding and encoding.lower() not in ("float", "base64"):
            raise ApiError(
                400,
                f"Invalid value for 'encoding_format' = {encoding}. "
                "Supported values: ['float', 'base64'].",
            )
        value = body.get("input")
        if value == "":
            value = [""]
        if value is None or value == []:
            raise ApiError(400, "invalid input")
        native = {
            "model": body.get("model", ""),
            "input": value,
            "dimensions": body.get("dimensions"),
        }
        name, vectors, prompt_tokens, _ = await embed(request, native, knobs)
    except ApiError as error:
        return openai_error(error)
    data = []
    for index, vector in enumerate(vectors):
        if encoding.lower() == "base64":
            embedding: Any = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode(
                "ascii"
            )
        else:
            embedding = go_float_list(vector)
        data.append({"object": "embedding", "embedding": embedding, "index": index})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return openai_json({"object": "list", "data": data, "model": name, "usage": usage})


def _openai_model(model_id: str, spec: ModelSpec) -> dict[str, Any]:
    ref = ModelName.parse(model_id)
    owner = ref.namespace if ref else DEFAULT_NAMESPACE
    return {
        "id": model_id,
        "object": "model",
        "created": spec.modified_ns // 1_000_000_000,
        "owned_by": owner,
    }


async def handle_openai_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: ``data`` is null when nothing is installed."""
    specs = state_of(request).installed_newest_first()
    data = [_openai_model(spec.ref.short, spec) for spec in specs] or None
    return openai_json({"object": "list", "data": data})


async def handle_openai_model(request: web.Request) -> web.Response:
    """``GET /v1/models/{model}``."""
    model_id = request.path[len("/v1/models/") :]
    spec = state_of(request).find(model_id)
    if spec is None:
        return openai_error(ApiError(404, f"model '{model_id}' not found"))
    return openai_json(_openai_model(model_id, spec))
