"""The ``/v1`` response formats: SSE chunks, ``chat.completion`` and ``text_completion``.

Handlers always produce native chunks; these outputs convert them the way
Ollama's ``middleware/openai.go`` does.
"""

from __future__ import annotations

import random
import time
from typing import Any

from aiohttp import web

from .errors import ApiError
from .knobs import Knobs
from .output import EVENT_STREAM, PLAIN_JSON, Output
from .wire import go_json


def openai_json(obj: Any, status: int = 200) -> web.Response:
    """``json.NewEncoder(w).Encode``: compact with a trailing newline."""
    return web.Response(
        status=status, body=go_json(obj) + b"\n", headers={"Content-Type": PLAIN_JSON}
    )


def openai_error(error: ApiError) -> web.Response:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(error.status, "api_error")
    body = {"error": {"message": error.message, "type": kind, "param": None, "code": None}}
    return openai_json(body, error.status)


class OpenAIOutput(Output):
    """Base for ``/v1`` outputs: SSE streams and OpenAI-shaped errors."""

    stream_content_type = EVENT_STREAM

    async def frame(self, obj: Any) -> None:
        await self.write(b"data: " + go_json(obj) + b"\n\n")

    async def load_reply(self, obj: dict[str, Any], stream: bool) -> web.StreamResponse:
        # The middleware converts whatever the handler wrote, so a streaming
        # request turns the single load reply into SSE frames.
        if not stream:
            return self.single(obj)
        await self.chunk(obj)
        return await self.finish()

    def error(self, error: ApiError) -> web.Response:
        return openai_error(error)


def _finish_reason(reason: str | None, tool_calls: bool) -> str | None:
    if not reason:
        return None
    if tool_calls and reason != "length":
        return "tool_calls"
    return reason


def _openai_tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id", ""),
            "index": call["function"].get("index", 0),
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": go_json(call["function"].get("arguments", {})).decode("utf-8"),
            },
        }
        for call in calls
    ]


def _usage(obj: dict[str, Any]) -> dict[str, int]:
    prompt = obj.get("prompt_eval_count", 0)
    completion = obj.get("eval_count", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class OpenAIChatOutput(OpenAIOutput):
    """``/v1/chat/completions``: SSE chunks or one ``chat.completion``."""

    def __init__(self, request: web.Request, knobs: Knobs, include_usage: bool) -> None:
        super().__init__(request, knobs)
        self.include_usage = include_usage
        self.id = f"chatcmpl-{random.randrange(999)}"
        # Every chunk carries the timestamp of the first one.
        self.created = int(time.time())
        self.role_sent = False
        self.tool_call_sent = False

    def _envelope(
        self, model: str, choices: list[Any], usage: dict | None = None
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": choices,
        }
        if usage is not None:
            frame["usage"] = usage
        return frame

    async def _delta(self, model: str, delta: dict[str, Any], finish: str | None = None) -> None:
        if not self.role_sent:
            # Only the very first delta names the role.
            delta = {"role": "assistant", **delta}
            self.role_sent = True
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        await self.frame(self._envelope(model, [choice]))

    async def _content(self, model: str, message: dict[str, Any]) -> None:
        delta: dict[str, Any] = {"content": message.get("content", "")}
        if message.get("tool_calls"):
            delta["tool_calls"] = _openai_tool_calls(message["tool_calls"])
            self.tool_call_sent = True
        await self._delta(model, delta)

    async def chunk(self, obj: dict[str, Any]) -> None:
        model = obj.get("model", "")
        message = obj.get("message", {})
        thinking = message.get("thinking")
        has_content = bool(message.get("content") or message.get("tool_calls"))
        if thinking:
            await self._delta(model, {"reasoning": thinking})
        if not obj.get("done"):
            if has_content or not thinking:
                await self._content(model, message)
            return
        # The native metrics-only final chunk becomes a dedicated finish chunk.
        if has_content or not self.role_sent:
            await self._content(model, message)
        finish = _finish_reason(obj.get("done_reason"), self.tool_call_sent)
        await self._delta(model, {}, finish)
        if self.include_usage:
            await self.frame(self._envelope(model, [], _usage(obj)))
        await self.write(b"data: [DONE]\n\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        # Ollama's middleware decodes the error line as an empty chat response:
        # one empty chunk, then the stream ends without a finish chunk or [DONE].
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": None}
        await self.frame(self._envelope("", [choice]))
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        message = obj.get("message", {})
        calls = _openai_tool_calls(message.get("tool_calls") or [])
        reply: dict[str, Any] = {"role": "assistant", "content": message.get("content", "")}
        if message.get("thinking"):
            reply["reasoning"] = message["thinking"]
        if calls:
            reply["tool_calls"] = calls
        choice = {
            "index": 0,
            "message": reply,
            "finish_reason": _finish_reason(obj.get("done_reason"), bool(calls)),
        }
        return openai_json(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": obj.get("model", ""),
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(obj),
            }
        )


class OpenAICompletionOutput(OpenAIOutput):
    """``/v1/completions``: note the ``choices``-before-``model`` chunk order."""

    def __init__(self, request: web.Request, knobs: Knobs, include_usage: bool) -> None:
        super().__init__(request, knobs)
        self.include_usage = include_usage
        self.id = f"cmpl-{random.randrange(999)}"

    def _chunk(
        self, model: str, choices: list[Any], usage: dict[str, int] | None
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": choices,
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        if usage is not None:
            frame["usage"] = usage
        return frame

    async def chunk(self, obj: dict[str, Any]) -> None:
        # With include_usage every chunk carries zero usage, real usage comes last.
        usage = (
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            if self.include_usage
            else None
        )
        choice = {
            "text": obj.get("response", ""),
            "index": 0,
            "finish_reason": obj.get("done_reason") or None,
        }
        model = obj.get("model", "")
        await self.frame(self._chunk(model, [choice], usage))
        if not obj.get("done"):
            return
        if self.include_usage:
            await self.frame(self._chunk(model, [], _usage(obj)))
        await self.write(b"data: [DONE]\n\n")

    async def stream_error(self, message: str) -> web.StreamResponse:
        await self.chunk({"model": "", "response": ""})
        return await self.finish()

    def single(self, obj: dict[str, Any]) -> web.Response:
        choice = {
            "text": obj.get("response", ""),
            "index": 0,
            "finish_reason": obj.get("done_reason") or None,
        }
        return openai_json(
            {
                "id": self.id,
                "object": "text_completion",
                "created": int(time.time()),
                "model": obj.get("model", ""),
                "system_fingerprint": "fp_ollama",
                "choices": [choice],
                "usage": _usage(obj),
            }
        )
