"""Ollama's native API in front of an OpenAI-compatible backend: requests out, replies back.

An Ollama-native client (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`) asking
for a model that only a hosted OpenAI-compatible API serves gets its request rewritten for
`/v1/chat/completions` or `/v1/embeddings`, and the reply (one JSON body, or an SSE stream)
rewritten into Ollama's NDJSON lines or JSON body, ending with Ollama's stats from `usage`.
This is the one place besides `ollama.py` that speaks both vocabularies; the recorder still
reads the translated bytes through `ollama.parse_response`, like any Ollama reply.

Durations are measured here, in nanoseconds, because a hosted API reports none:
`total_duration` runs from the translator's creation (when the request goes upstream) to
`finish()`; on streams `prompt_eval_duration` runs from creation to the first token and
`eval_duration` from the first token to `finish()`. A hosted model has no load the proxy can
see, and a non-streamed reply arrives all at once, so those durations are 0 and, as Ollama
does with zero metrics, left out.
"""

from __future__ import annotations

import base64
import binascii
import time
from functools import lru_cache
from time import perf_counter_ns
from typing import Any

import orjson

NATIVE_ROUTES = {"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"}
CHAT_COMPLETIONS = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
NDJSON = "application/x-ndjson"
JSON_UTF8 = "application/json; charset=utf-8"

# Options that mean the same under the same name in OpenAI's chat API. The rest (num_ctx,
# top_k, min_p, repeat_penalty, mirostat...) are dropped: hosted APIs reject unknown arguments.
_SAME_OPTIONS = ("temperature", "top_p", "frequency_penalty", "presence_penalty")
# Ollama's thinking levels; "max" has no OpenAI name, and "high" is what every reasoning API
# accepts. `think: true/false` sends nothing: the hosted model's default is its own choice.
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
# Ollama has no tool_calls reason: a turn that ends in tool calls ends with "stop".
_DONE_REASONS = {"tool_calls": "stop", "function_call": "stop"}
# The first bytes of each image type OpenAI accepts, for the data URL's media type.
_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "image/webp"),
)


class TranslationError(ValueError):
    """A native request the OpenAI-compatible API cannot express; the message is for the client."""


# --- Requests -------------------------------------------------------------------------------


def translate_request(path: str, body: bytes, model: str | None = None) -> tuple[str, bytes]:
    """An Ollama-native request as the OpenAI-compatible path and JSON body that ask the same.

    `model`: the API's own id for the requested model, when it differs (an Ollama client asks
    for `gpt-4o-mini:latest`, the name the merged `/api/tags` lists, the API knows `gpt-4o-mini`).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise TranslationError(f"request body is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise TranslationError("request body is not a JSON object")
    if not data.get("model") or not isinstance(data["model"], str):
        raise TranslationError("model is required")
    if model:
        data["model"] = model
    if path == "/api/chat":
        request = _chat_request(data, _chat_messages(data.get("messages")))
    elif path == "/api/generate":
        request = _chat_request(data, _generate_messages(data))
    elif path == "/api/embed":
        return EMBEDDINGS, orjson.dumps(_embed_request(data, _embed_input(data.get("input"))))
    elif path == "/api/embeddings":
        prompt = data.get("prompt")
        if not prompt or not isinstance(prompt, str):
            raise TranslationError("prompt is required")
        return EMBEDDINGS, orjson.dumps(_embed_request(data, prompt))
    else:
        raise TranslationError(f"{path} has no OpenAI-compatible counterpart")
    return CHAT_COMPLETIONS, orjson.dumps(request)


def _chat_request(data: dict, messages: list) -> dict:
    stream = data.get("stream")
    stream = stream if isinstance(stream, bool) else True  # native chat and generate stream
    request: dict[str, Any] = {"model": data["model"], "messages": messages, "stream": stream}
    if stream:  # without it a stream carries no token counts at all
        request["stream_options"] = {"include_usage": True}
    request.update(_options(data.get("options")))
    response_format = _response_format(data.get("format"))
    if response_format:
        request["response_format"] = response_format
    tools = data.get("tools")
    if tools:  # OpenAI refuses an empty list, which the ollama client always sends
        request["tools"] = [_tool(tool) for tool in tools]
    think = data.get("think")
    if isinstance(think, str):
        if think not in _EFFORTS:
            raise TranslationError(f"invalid think value: {think!r}")
        request["reasoning_effort"] = _EFFORTS[think]
    if data.get("logprobs"):
        request["logprobs"] = True
        if data.get("top_logprobs"):
            request["top_logprobs"] = data["top_logprobs"]
    return request


def _options(options: Any) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    translated = {key: options[key] for key in _SAME_OPTIONS if options.get(key) is not None}
    seed = options.get("seed")
    if isinstance(seed, int) and seed >= 0:  # Ollama's -1 means a random seed
        translated["seed"] = seed
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict > 0:  # -1 and -2 mean no limit
        translated["max_tokens"] = num_predict
    stop = options.get("stop")
    if stop:
        translated["stop"] = [stop] if isinstance(stop, str) else stop
    return translated


def _response_format(fmt: Any) -> dict | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}
    raise TranslationError(f"invalid format: {fmt!r}")


def _tool(tool: Any) -> dict:
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        raise TranslationError("a tool must be an object with a function")
    return {"type": tool.get("type") or "function", "function": tool["function"]}


def _chat_messages(messages: Any) -> list:
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages are required: a hosted model has nothing to load")
    translated = []
    unanswered: list[tuple[str, str]] = []  # (id, name) of the tool calls awaiting a result
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise TranslationError(f"message {position} is not an object")
        role = str(message.get("role") or "").lower()
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TranslationError(f"the content of message {position} is not a string")
        entry: dict[str, Any] = {"role": role, "content": _content(content, message.get("images"))}
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                _openai_tool_call(call, position, index)
                for index, call in enumerate(message["tool_calls"])
            ]
            entry["tool_calls"] = calls
            unanswered = [(call["id"], call["function"]["name"]) for call in calls]
        elif role == "tool":
            call_id = _answered(unanswered, message)
            if call_id:
                entry["tool_call_id"] = call_id
        translated.append(entry)
    return translated


def _openai_tool_call(call: Any, position: int, index: int) -> dict:
    """A native tool call, with an id: OpenAI links each tool result to its call by id."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise TranslationError(f"tool call {index} of message {position} has no function name")
    arguments = function.get("arguments") or {}
    return {
        "id": call.get("id") or f"call_{position}_{index}",
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments
            if isinstance(arguments, str)
            else orjson.dumps(arguments).decode(),
        },
    }


def _answered(unanswered: list[tuple[str, str]], message: dict) -> str | None:
    """The id of the call a tool result answers. Native clients name the tool rather than the
    call: the first unanswered call of that name, else the first unanswered call."""
    call_id = message.get("tool_call_id")
    name = message.get("tool_name") or message.get("name")
    for position, (pending_id, pending_name) in enumerate(unanswered):
        if pending_id == call_id or (not call_id and pending_name == name):
            return unanswered.pop(position)[0]
    if call_id or not unanswered:
        return call_id
    return unanswered.pop(0)[0]


def _content(text: str, images: Any) -> str | list:
    if not images:
        return text
    if not isinstance(images, list):
        raise TranslationError("images must be a list of base64 strings")
    parts: list[dict] = [{"type": "text", "text": text}] if text else []
    for image in images:
        parts.append({"type": "image_url", "image_url": {"url": _data_url(image)}})
    return parts


def _data_url(image: Any) -> str:
    if not isinstance(image, str):
        raise TranslationError("images must be base64 strings")
    try:
        head = base64.b64decode(
            image[:16], validate=True
        )  # 12 bytes tell every accepted type apart
    except (binascii.Error, ValueError):
        raise TranslationError("an image is not valid base64") from None
    for magic, media_type in _IMAGE_TYPES:
        if head.startswith(magic) and (magic != b"RIFF" or head[8:12] == b"WEBP"):
            return f"data:{media_type};base64,{image}"
    raise TranslationError("hosted models take PNG, JPEG, GIF or WebP images only")


def _generate_messages(data: dict) -> list:
    if data.get("suffix"):
        raise TranslationError("suffix (fill-in-the-middle) has no OpenAI chat equivalent")
    prompt, system, images = data.get("prompt") or "", data.get("system"), data.get("images")
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise TranslationError("prompt and system must be strings")
    if not prompt and not images:
        raise TranslationError("prompt is required: a hosted model has nothing to load")
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _content(prompt, images)})
    return messages


def _embed_input(value: Any) -> str | list:
    if isinstance(value, list) and not all(isinstance(item, str) for item in value):
        raise TranslationError("invalid input type")
    if not isinstance(value, str | list):
        raise TranslationError("invalid input type")
    if not value:
        raise TranslationError("input is required")
    return value


def _embed_request(data: dict, value: str | list) -> dict:
    request = {"model": data["model"], "input": value, "encoding_format": "float"}
    if isinstance(data.get("dimensions"), int):
        request["dimensions"] = data["dimensions"]
    return request


# --- Replies --------------------------------------------------------------------------------


class ResponseTranslator:
    """One upstream reply, translated as its bytes arrive. Create it when the request goes
    upstream: the durations count from then."""

    def __init__(self, path: str, stream: bool, model: str):
        self.started = perf_counter_ns()
        self.path = path
        self.model = model
        self.chat = path == "/api/chat"
        self.streaming = stream and path in {"/api/chat", "/api/generate"}
        self.content_type = NDJSON if self.streaming else JSON_UTF8
        self.pending = b""  # stream: the last, unfinished line
        self.chunks: list[bytes] = []  # otherwise: the whole body so far
        self.data: list[bytes] = []  # the data lines of the SSE event being read
        self.first_token: int | None = None
        self.done_reason = ""
        self.usage: dict = {}
        self.calls: dict[int, dict] = {}  # streamed tool calls by index, until complete
        self.failed = False  # an error line went out: nothing may follow it

    def feed(self, chunk: bytes) -> bytes:
        """Ollama bytes for the upstream bytes so far (split anywhere: lines are cut at `\\n`,
        which never occurs inside a UTF-8 character)."""
        if not self.streaming:
            self.chunks.append(chunk)
            return b""
        if self.failed:
            return b""
        lines = (self.pending + chunk if self.pending else chunk).split(b"\n")
        self.pending = lines.pop()
        out: list[bytes] = []
        for line in lines:
            self._line(line, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """The rest, at the upstream's end: the final `done` line with the stats, or the whole
        reply when it was not streamed."""
        if not self.streaming:
            return self._whole(b"".join(self.chunks))
        out: list[bytes] = []
        if not self.failed:
            self._line(self.pending, out)
            self._line(b"", out)  # a last event without its blank line
            self._flush_calls(out)
        if not self.failed:
            out.append(_line(self._final(self._message("", "", None), None)))
        return b"".join(out)

    # --- streams

    def _line(self, line: bytes, out: list[bytes]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"data:"):
            self.data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif not line and self.data:  # a blank line ends an event
            payload = self.data[0] if len(self.data) == 1 else b"\n".join(self.data)
            self.data = []
            self._event(payload, out)
        # Comments, `event:`, `id:` and `retry:` lines carry nothing to translate.

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        if self.failed or payload.startswith(b"[DONE]"):
            return
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._fail(f"unreadable event from the backend: {payload[:200]!r}", out)
            return
        if not isinstance(event, dict):
            return
        if event.get("error"):
            self._fail(_message_of(event["error"]), out)
            return
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        choices = event.get("choices")
        if choices and isinstance(choices[0], dict):
            self._choice(choices[0], out)

    def _choice(self, choice: dict, out: list[bytes]) -> None:
        delta = choice.get("delta") or {}
        content, thinking = _texts(delta)
        calls = delta.get("tool_calls")
        if self.first_token is None and (content or thinking or calls):
            self.first_token = perf_counter_ns()
        logprobs = _logprobs(choice)
        if content or thinking or logprobs:
            line = {**self._head(), **self._message(content, thinking, None)}
            if logprobs:  # after `done` in both chat and generate lines
                line["logprobs"] = logprobs
            out.append(_line(line))
        for call in calls or ():
            if isinstance(call, dict):
                self._merge_call(call)
        if choice.get("finish_reason"):
            self.done_reason = _DONE_REASONS.get(choice["finish_reason"], choice["finish_reason"])
            self._flush_calls(out)

    def _merge_call(self, fragment: dict) -> None:
        """OpenAI streams a tool call in fragments by index: id and name first, then the
        arguments' JSON text in pieces; Ollama sends each call whole."""
        call = self.calls.setdefault(
            fragment.get("index", len(self.calls)), {"id": "", "name": "", "arguments": []}
        )
        call["id"] = call["id"] or fragment.get("id") or ""
        function = fragment.get("function") or {}
        call["name"] = call["name"] or function.get("name") or ""
        arguments = function.get("arguments")
        if arguments:
            call["arguments"].append(
                arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
            )

    def _flush_calls(self, out: list[bytes]) -> None:
        """The finished tool calls in one `done: false` line, as Ollama's tool parser sends
        them, before the final line."""
        if not self.calls or self.failed:
            return
        calls = [
            (call["id"], call["name"], "".join(call["arguments"]))
            for _index, call in sorted(self.calls.items())
        ]
        self.calls = {}
        try:
            message = self._message("", "", _native_calls(calls))
        except ValueError as error:
            self._fail(str(error), out)
        else:
            out.append(_line({**self._head(), **message}))

    def _fail(self, message: str, out: list[bytes]) -> None:
        """Ollama's mid-stream error: one `{"error": ...}` line, then the stream ends."""
        out.append(_line({"error": message}))
        self.failed = True

    # --- shapes

    def _head(self) -> dict:
        return {"model": self.model, "created_at": _timestamp()}

    def _message(self, content: str, thinking: str, calls: list | None) -> dict:
        """The answer part of an Ollama object, with `done: false` (the final one overrides it):
        chat's `message` or generate's `response`."""
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            return {"message": message, "done": False}
        answer: dict[str, Any] = {"response": content}
        if thinking:
            answer["thinking"] = thinking
        return {**answer, "done": False}

    def _final(self, answer: dict, logprobs: list | None) -> dict:
        """Ollama's final object: `done_reason` and the stats, zeros left out as Ollama does
        (and `logprobs` before the stats in chat, after them in generate, as Ollama orders)."""
        ended = perf_counter_ns()
        final = {**self._head(), **answer, "done": True}
        if self.done_reason:
            final["done_reason"] = self.done_reason
        if logprobs and self.chat:
            final["logprobs"] = logprobs
        final["total_duration"] = ended - self.started
        first = self.first_token
        stats = (
            ("prompt_eval_count", self.usage.get("prompt_tokens")),
            ("prompt_eval_duration", first - self.started if first is not None else 0),
            ("eval_count", self.usage.get("completion_tokens")),
            ("eval_duration", ended - first if first is not None else 0),
        )
        final.update((key, value) for key, value in stats if value)
        if logprobs and not self.chat:
            final["logprobs"] = logprobs
        return final

    # --- whole replies

    def _whole(self, body: bytes) -> bytes:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error_body(f"unreadable reply from the backend: {body[:200]!r}")
        if not isinstance(reply, dict):
            return _error_body("the backend's reply is not a JSON object")
        if reply.get("error"):
            return _error_body(_message_of(reply["error"]))
        if isinstance(reply.get("usage"), dict):
            self.usage = reply["usage"]
        if self.path in {"/api/embed", "/api/embeddings"}:
            return self._embeddings(reply)
        choices = reply.get("choices")
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        calls = [
            (
                call.get("id") or "",
                call["function"].get("name") or "",
                call["function"].get("arguments") or "",
            )
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        ]
        content, thinking = _texts(message)
        reason = choice.get("finish_reason") or ""
        self.done_reason = _DONE_REASONS.get(reason, reason)
        try:
            answer = self._message(content, thinking, _native_calls(calls))
        except ValueError as error:
            return _error_body(str(error))
        return orjson.dumps(self._final(answer, _logprobs(choice)))

    def _embeddings(self, reply: dict) -> bytes:
        items = sorted(
            (item for item in reply.get("data") or () if isinstance(item, dict)),
            key=lambda item: item.get("index", 0),
        )
        vectors = [item.get("embedding") for item in items]
        if not all(isinstance(vector, list) for vector in vectors):
            return _error_body("the backend sent embeddings that are not lists of floats")
        if self.path == "/api/embeddings":
            return orjson.dumps({"embedding": vectors[0] if vectors else []})
        embedded: dict[str, Any] = {
            "model": self.model,
            "embeddings": vectors,
            "total_duration": perf_counter_ns() - self.started,
        }
        if self.usage.get("prompt_tokens"):
            embedded["prompt_eval_count"] = self.usage["prompt_tokens"]
        return orjson.dumps(embedded)


def _texts(message: dict) -> tuple[str, str]:
    """Content and thinking of an OpenAI message or delta; backends name the thinking
    `reasoning_content` (DeepSeek, vLLM) or `reasoning` (Ollama, OpenRouter)."""
    content = message.get("content")
    thinking = message.get("reasoning_content") or message.get("reasoning")
    return (
        content if isinstance(content, str) else "",
        thinking if isinstance(thinking, str) else "",
    )


def _native_calls(calls: list[tuple[str, str, Any]]) -> list[dict]:
    """OpenAI tool calls (arguments as JSON text) as Ollama's (arguments as an object)."""
    native = []
    for index, (call_id, name, arguments) in enumerate(calls):
        if isinstance(arguments, str):
            try:
                arguments = orjson.loads(arguments) if arguments.strip() else {}
            except orjson.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            raise ValueError(f"the backend sent tool call arguments that are not an object: {name}")
        call: dict[str, Any] = {"id": call_id} if call_id else {}
        call["function"] = {"index": index, "name": name, "arguments": arguments}
        native.append(call)
    return native


def _logprobs(choice: dict) -> list | None:
    """OpenAI's per-token log-probs: the same entries (token, logprob, bytes, top_logprobs) that
    Ollama lists under `logprobs`."""
    logprobs = choice.get("logprobs")
    return logprobs.get("content") if isinstance(logprobs, dict) else None


def translate_error(status: int, body: bytes) -> bytes:
    """An upstream error reply (OpenAI's `{"error": {"message": ...}}`, or anything) as Ollama's
    `{"error": "..."}`; the caller keeps the upstream's status."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        found = data.get("error") or data.get("detail") or data.get("message")
        if found and isinstance(found, str | dict):
            return _error_body(_message_of(found))
    text = body.decode("utf-8", "replace").strip()[:500]
    return _error_body(f"the backend answered HTTP {status}" + (f": {text}" if text else ""))


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) and message else orjson.dumps(error).decode()
    return str(error)


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _line(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def _timestamp() -> str:
    """Now as Go writes `time.Now().UTC()`: RFC 3339, nanoseconds without trailing zeros."""
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    fraction = f".{nanoseconds:09d}".rstrip("0") if nanoseconds else ""
    return _second(seconds) + fraction + "Z"


@lru_cache(maxsize=1)
def _second(seconds: int) -> str:
    """The date and time to the second, formatted once per second (strftime is most of the
    cost of a timestamp: 3.3 µs a line uncached, on the 2-core box)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
