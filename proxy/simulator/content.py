"""Deterministic content: answer tokens, tool-call arguments, JSON answers, embeddings.

Everything here depends only on its inputs, so tests can compute what the
simulator will answer (``simulated_text(n)``).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import zlib
from typing import Any

from .wire import go_json, to_float32

PASSAGE = (
    "The sky appears blue because air molecules scatter the short blue wavelengths of "
    "sunlight far more strongly than the longer red ones, an effect physicists call "
    "Rayleigh scattering."
)
THINKING_PASSAGE = (
    "Okay, the user asked a question. Let me think it through step by step before answering."
)
SPLIT_UTF8_TOKENS = ("héllo", " wörld", " 日本語", " 🌍")

_PASSAGE_WORDS = PASSAGE.split()
_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_JSON_TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])")


def simulated_tokens(count: int) -> list[str]:
    """The first ``count`` content tokens the simulator generates by default."""
    words = _PASSAGE_WORDS
    return [("" if i == 0 else " ") + words[i % len(words)] for i in range(max(0, count))]


def simulated_text(count: int) -> str:
    """The default answer text for ``count`` tokens."""
    return "".join(simulated_tokens(count))


def tokenize_text(text: str) -> list[str]:
    """Split text into whitespace-led tokens that join back to the same text."""
    return _TOKEN_RE.findall(text)


def estimate_tokens(text: str) -> int:
    """Deterministic prompt token estimate: the number of whitespace words."""
    return len(text.split())


def cycle_tokens(tokens: tuple[str, ...], count: int) -> list[str]:
    return [tokens[i % len(tokens)] for i in range(count)]


def _sample_value(schema: Any, name: str) -> Any:
    """A deterministic value satisfying a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return "example"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        required = schema.get("required") or list(properties)
        return {key: _sample_value(properties[key], key) for key in properties if key in required}
    if kind == "array":
        return [_sample_value(schema.get("items") or {"type": "string"}, name)]
    if kind == "integer":
        return 3
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    lowered = name.lower()
    if lowered in ("city", "location", "place"):
        return "Paris"
    if lowered in ("unit", "units", "format"):
        return "celsius"
    return f"example {name}" if name else "example"


def tool_call(tools: list[Any]) -> dict[str, Any]:
    first = next((t for t in tools if isinstance(t, dict)), {})
    function = first.get("function") if isinstance(first.get("function"), dict) else {}
    name = function.get("name") or "tool"
    arguments = _sample_value(function.get("parameters") or {"type": "object"}, "")
    if not isinstance(arguments, dict):
        arguments = {}
    digest = hashlib.sha256(go_json([name, arguments])).hexdigest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    call_id = "call_" + "".join(alphabet[int(digest[i : i + 2], 16) % 36] for i in range(0, 16, 2))
    return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}


def _format_answer(fmt: Any) -> str:
    value = _sample_value(fmt, "") if isinstance(fmt, dict) else {"answer": simulated_text(4)}
    return go_json(value).decode("utf-8")


def format_answer_tokens(fmt: Any) -> list[str]:
    """The tokens of the JSON document answering a ``format`` request."""
    return _JSON_TOKEN_RE.findall(_format_answer(fmt))


def embedding_vector(text: str, size: int, dimensions: int | None) -> list[float]:
    """An L2-normalised float32 vector derived only from the text."""
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(size)]
    if dimensions and 0 < dimensions < size:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [to_float32(x / norm) for x in vector]


def context_ids(seed: str, count: int) -> list[int]:
    base = zlib.crc32(seed.encode("utf-8"))
    return [128000 if i == 0 else (base + i * 7919) % 128000 for i in range(count)]
