"""Request decoding with gin ``ShouldBindJSON`` semantics and Go's error texts.

The ``*_FIELDS`` tables describe Ollama's Go request structs: the keys that are
bound (case-insensitively), the JSON kind each must have and the Go type its
error names.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from .errors import ApiError
from .wire import parse_go_duration


def _quote_char(char: str) -> str:
    # Go's encoding/json quoteChar: 'x', '\'' and '"' special cases.
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    escaped = json.dumps(char, ensure_ascii=False)[1:-1]
    return f"'{escaped}'"


def _innermost_container(text: str, position: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:position]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_syntax_error(text: str, error: json.JSONDecodeError) -> str:
    """Translate a Python JSON error into the message Go's decoder would give."""
    position = error.pos
    rest = text[position:].lstrip() if error.msg.startswith("Illegal trailing") else ""
    if error.msg.startswith("Unterminated string") or position >= len(text):
        return "unexpected EOF"
    char = text[position]
    if error.msg.startswith("Illegal trailing comma before end of object"):
        return (
            f"invalid character {_quote_char(rest[:1])} looking for beginning of object key string"
        )
    if error.msg.startswith("Illegal trailing comma before end of array"):
        return f"invalid character {_quote_char(rest[:1])} looking for beginning of value"
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {_quote_char(char)} looking for beginning of object key string"
    if error.msg.startswith("Expecting ':' delimiter"):
        return f"invalid character {_quote_char(char)} after object key"
    if error.msg.startswith("Expecting ',' delimiter"):
        where = (
            "object key:value pair"
            if _innermost_container(text, position) == "{"
            else "array element"
        )
        return f"invalid character {_quote_char(char)} after {where}"
    if error.msg.startswith("Invalid control character"):
        return f"invalid character {_quote_char(char)} in string literal"
    if error.msg.startswith("Invalid \\escape"):
        escape = _quote_char(text[position + 1 : position + 2])
        return f"invalid character {escape} in string escape code"
    return f"invalid character {_quote_char(char)} looking for beginning of value"


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError("Expecting value", name, 0)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_type_name(value: Any) -> str:
    """Go's ``%T`` of a decoded ``any`` value."""
    if value is None:
        return "<nil>"
    return {
        "bool": "bool",
        "number": "float64",
        "string": "string",
        "array": "[]interface {}",
        "object": "map[string]interface {}",
    }[_json_kind(value)]


# Field type codes: kind the JSON value must have, and the Go type named in errors.
_STRING = ("string", "string")
_BOOL = ("bool", "bool")
_INT = ("int", "int")
_FLOAT = ("float", "float64")
_OBJECT = ("object", "map[string]interface {}")
_ANY = ("any", "")


def _fields(**spec: tuple[str, str]) -> dict[str, tuple[str, str]]:
    return spec


GENERATE_FIELDS = _fields(
    model=_STRING,
    prompt=_STRING,
    suffix=_STRING,
    system=_STRING,
    template=_STRING,
    context=("array", "[]int"),
    stream=_BOOL,
    raw=_BOOL,
    format=_ANY,
    keep_alive=_ANY,
    images=("array", "[]api.ImageData"),
    options=_OBJECT,
    think=_ANY,
    truncate=_BOOL,
    shift=_BOOL,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
CHAT_FIELDS = _fields(
    model=_STRING,
    messages=("array", "[]api.Message"),
    tools=("array", "api.Tools"),
    stream=_BOOL,
    format=_ANY,
    keep_alive=_ANY,
    options=_OBJECT,
    think=_ANY,
    truncate=_BOOL,
    shift=_BOOL,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
MESSAGE_FIELDS = _fields(
    role=_STRING,
    content=_STRING,
    thinking=_STRING,
    images=("array", "[]api.ImageData"),
    tool_calls=("array", "[]api.ToolCall"),
    tool_name=_STRING,
    tool_call_id=_STRING,
)
EMBED_FIELDS = _fields(
    model=_STRING, input=_ANY, truncate=_BOOL, dimensions=_INT, keep_alive=_ANY, options=_OBJECT
)
EMBEDDINGS_FIELDS = _fields(model=_STRING, prompt=_STRING, keep_alive=_ANY, options=_OBJECT)
SHOW_FIELDS = _fields(model=_STRING, name=_STRING, system=_STRING, verbose=_BOOL, options=_OBJECT)
PULL_FIELDS = _fields(
    model=_STRING, name=_STRING, insecure=_BOOL, username=_STRING, password=_STRING, stream=_BOOL
)
OPENAI_CHAT_FIELDS = _fields(
    model=_STRING,
    messages=("array", "[]openai.Message"),
    stream=_BOOL,
    stream_options=("object", "openai.StreamOptions"),
    max_tokens=_INT,
    seed=_INT,
    stop=_ANY,
    temperature=_FLOAT,
    frequency_penalty=_FLOAT,
    presence_penalty=_FLOAT,
    top_p=_FLOAT,
    response_format=("object", "openai.ResponseFormat"),
    tools=("array", "[]api.Tool"),
    reasoning=("object", "openai.Reasoning"),
    reasoning_effort=_STRING,
    logprobs=_BOOL,
    top_logprobs=_INT,
)
OPENAI_COMPLETION_FIELDS = _fields(
    model=_STRING,
    prompt=_STRING,
    frequency_penalty=("float", "float32"),
    max_tokens=_INT,
    presence_penalty=("float", "float32"),
    seed=_INT,
    stop=_ANY,
    stream=_BOOL,
    stream_options=("object", "openai.StreamOptions"),
    temperature=("float", "float32"),
    top_p=("float", "float32"),
    suffix=_STRING,
    logprobs=_INT,
)
OPENAI_EMBED_FIELDS = _fields(input=_ANY, model=_STRING, dimensions=_INT, encoding_format=_STRING)


def type_error(value: Any, go_type: str, where: str) -> str:
    kind = _json_kind(value)
    if kind == "number":
        kind = f"number {json.dumps(value)}" if go_type in ("int", "[]int") else "number"
    return f"json: cannot unmarshal {kind} into Go struct field {where} of type {go_type}"


def _check_value(value: Any, code: tuple[str, str], where: str) -> None:
    expected, go_type = code
    if value is None or expected == "any":
        return
    kind = _json_kind(value)
    ok = {
        "string": kind == "string",
        "bool": kind == "bool",
        "int": kind == "number" and float(value).is_integer(),
        "float": kind == "number",
        "array": kind == "array",
        "object": kind == "object",
    }[expected]
    if not ok:
        raise ApiError(400, type_error(value, go_type, where))


def bind_fields(obj: dict[str, Any], spec: dict[str, tuple[str, str]], struct_name: str) -> dict:
    """Keep known keys (case-insensitively, last one wins) and type-check them."""
    lowered = {name.lower(): name for name in spec}
    bound: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in spec else lowered.get(key.lower())
        if name is None:
            continue
        _check_value(value, spec[name], f"{struct_name}.{name}")
        if value is not None:
            bound[name] = value
        else:
            bound.pop(name, None)
    return bound


def _without_lone_surrogates(value: Any) -> Any:
    """Go's decoder turns an escaped lone surrogate (`"\\ud800"`) into U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {key: _without_lone_surrogates(item) for key, item in value.items()}
    return value


def decode_body(
    raw: bytes,
    spec: dict[str, tuple[str, str]],
    go_type: str,
    *,
    eof_message: str = "missing request body",
) -> dict[str, Any]:
    """Decode a request body like gin's ``ShouldBindJSON`` into a dict.

    Reads only the first JSON value, ignores the request Content-Type and
    unknown keys, and raises :class:`ApiError` (400) with Go's messages.
    """
    text = raw.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise ApiError(400, eof_message)
    try:
        value, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as error:
        raise ApiError(400, _go_syntax_error(text, error)) from None
    if "\\ud" in text or "\\uD" in text:  # only then can a lone surrogate be in the value
        value = _without_lone_surrogates(value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(
            400, f"json: cannot unmarshal {_json_kind(value)} into Go value of type {go_type}"
        )
    return bind_fields(value, spec, go_type.rsplit(".", 1)[-1])


def decode_base64_image(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
        bad = next((i for i, c in enumerate(data) if c not in alphabet), len(data) - len(data) % 4)
        raise ApiError(400, f"illegal base64 data at input byte {bad}") from None


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep the model loaded (``math.inf`` = forever), None if absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"Unsupported type: '{go_type_name(value)}'")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
    else:
        seconds = float(value)
    return math.inf if seconds < 0 else seconds
