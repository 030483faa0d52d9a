"""What a message may keep: the record level of its route or model, and PII masking.

Applied by the recorder's writer to a row's fields before it is stored or spooled (DESIGN.md
§3: never on the bytes to the client), by `import_messages` to restored rows, and by
`remask_messages` to stored ones.

- Record levels (`RECORD_LEVELS`): `full` keeps everything, `metadata` drops the text (prompt,
  response, thinking, tool calls, chat messages), `none` stores no message at all (the exchange
  is still counted in the metrics).
- Masking: the built-in PII kinds of `PII_MASK` plus the enabled `MaskingRule`s (proxy.masking).
  Rules are read at most every `RELOAD_SECONDS` per process; a change in this process applies
  at once. When the rules cannot be read (the database is away at start), the built-in kinds
  still apply.
- Text no database can store (NUL characters, lone surrogates from JSON escapes) is replaced by
  U+FFFD, so one odd request never fails a whole batch.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading

import orjson
from django.conf import settings

from .masking import Masker
from .models import MaskingRule
from .ollama import readable_turns
from .tablecache import TableCache

log = logging.getLogger(__name__)

RELOAD_SECONDS = 30.0
_UNREAD = object()
FULL, METADATA, NONE = "full", "metadata", "none"
_STRICTNESS = {FULL: 0, METADATA: 1, NONE: 2}

# Fields that hold what a user wrote or a model answered. Not the error: Ollama's and the
# proxy's own texts (an upstream address, a model name), which masking would only blur.
TEXT_FIELDS = ("prompt", "response", "thinking")
JSON_FIELDS = ("messages", "tool_calls")
# What `metadata` keeps out (the error stays: it says what went wrong).
DROPPED_BY_METADATA = {
    "prompt": "",
    "response": "",
    "thinking": "",
    "messages": None,
    "tool_calls": None,
}

# PostgreSQL refuses NUL in text and JSON; no UTF-8 encoder takes a lone surrogate.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def level_for(endpoint: str, model: str) -> str:
    """The record level of a message: the strictest entry matching its route (`/api/embed`,
    `/v1/*`) or its model (`llama3.2`, `qwen*`), else the `*` entry, else full."""
    default, found = FULL, []
    for pattern, level in settings.RECORD_LEVELS:
        if pattern == "*":
            default = level
        elif (
            fnmatch.fnmatchcase(endpoint, pattern)
            if pattern.startswith("/")
            else _model_matches(pattern, model)
        ):
            found.append(level)
    return max(found, key=_STRICTNESS.__getitem__) if found else default


def _model_matches(pattern: str, model: str) -> bool:
    if not model:
        return False
    model = model.lower()
    pattern = pattern.lower()
    if fnmatch.fnmatchcase(model, pattern):
        return True
    # `llama3.2` means every tag of it, as Ollama reads `llama3.2` as `llama3.2:latest`.
    return ":" not in pattern and fnmatch.fnmatchcase(model, f"{pattern}:*")


def storable(value):
    """`value` with what no database stores replaced by U+FFFD (keys of JSON objects too)."""
    if isinstance(value, list | dict) and _storable_as_json(value):
        return value
    return _replace_unstorable(value)


def _storable_as_json(value: list | dict) -> bool:
    """True when no string inside holds a NUL or a lone surrogate: orjson refuses the surrogates
    and writes NUL as `\\u0000`, in C, many times faster than walking the value in Python. False
    also for what orjson cannot write (a non-string key...): then the walk decides."""
    try:
        return b"\\u0000" not in orjson.dumps(value)
    except TypeError:
        return False


def _replace_unstorable(value):
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, list):
        return [_replace_unstorable(item) for item in value]
    if isinstance(value, dict):
        return {_replace_unstorable(key): _replace_unstorable(item) for key, item in value.items()}
    return value


def prepare(row: dict, *, read_rules: bool = True) -> bool:
    """Apply the record level and the masking to a message's fields, in place.

    Returns False when the level is `none`: the row is then counted but not stored. Without
    `read_rules`, the rules already in memory apply (no query: the caller is on the event loop).
    A masking failure keeps the metadata and drops the text, never the other way round.
    """
    level = level_for(row.get("endpoint", ""), row.get("model", ""))
    if level == NONE:
        return False
    texts = {name: value for name, value in row.items() if isinstance(value, str | list | dict)}
    if not _storable_as_json(texts):  # one check for the whole row: nearly every row passes
        row.update((name, storable(value)) for name, value in texts.items())
    if level == METADATA:
        row.update(DROPPED_BY_METADATA)
    try:
        mask_row(row, current() if read_rules else in_memory())
    except Exception:
        log.exception("privacy: could not mask %s; keeping its metadata only", row["request_id"])
        row.update(DROPPED_BY_METADATA)
    return True


def mask_row(row: dict, masker: Masker | None) -> bool:
    """Mask a row's text and JSON fields in place; True when anything changed."""
    if masker is None:
        return False
    masked = dict.fromkeys(TEXT_FIELDS + JSON_FIELDS)
    turns = row.get("messages")
    if _is_text_of(row.get("prompt"), turns):
        # A chat's prompt is its messages' text: mask the messages once, and join them again.
        turns = masker.by_kinds.mask_value(turns)
        masked["prompt"] = readable_turns(turns)
        if masker.by_rules is not None:
            masked["prompt"] = masker.by_rules.mask(masked["prompt"])
            turns = masker.by_rules.mask_value(turns)
        masked["messages"] = turns
    changed = False
    for name in masked:
        value = row.get(name)
        if not value:
            continue
        if masked[name] is None:
            masked[name] = (
                masker.mask(value) if isinstance(value, str) else masker.mask_value(value)
            )
        if masked[name] != value:
            row[name] = masked[name]
            changed = True
    return changed


def _is_text_of(prompt, turns) -> bool:
    """Whether the prompt is `readable_turns` of these chat messages (as `to_fields` makes it
    from a chat, unless it cut the prompt short), their roles and contents all strings."""
    if not prompt or not isinstance(turns, list) or not turns:
        return False
    for turn in turns:
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("role", ""), str)
            and isinstance(turn.get("content", ""), str)
            and isinstance(turn.get("images") or 0, int)
        ):
            return False
    return prompt == readable_turns(turns)


def build_masker(rules) -> Masker | None:
    """The masker of `PII_MASK` and these rules; None when there is nothing to mask."""
    extra = []
    for rule in rules:
        if not rule.enabled:
            continue
        try:
            re.compile(rule.pattern)
        except re.error:
            log.warning("masking rule %r is not a valid regular expression; skipped", rule.name)
            continue
        extra.append((rule.name, rule.pattern))
    if not settings.PII_MASK and not extra:
        return None
    return Masker(kinds=settings.PII_MASK, extra=extra)


def _read_masker() -> Masker | None:
    return build_masker(list(MaskingRule.objects.all()))


MASKERS = TableCache(MaskingRule, _read_masker, RELOAD_SECONDS)
_warned = threading.Event()


def current() -> Masker | None:
    """The masker of the moment, rules read again when older than RELOAD_SECONDS. When the
    rules cannot be read (the database is away at start), the built-in kinds apply."""
    try:
        return MASKERS.current()
    except Exception as error:
        if not _warned.is_set():
            _warned.set()
            log.warning("privacy: masking rules unreadable (%s); built-in kinds", error)
        return _builtin()


def in_memory() -> Masker | None:
    """The masker as last read, or the built-in kinds alone before the first read."""
    masker = MASKERS.last(_UNREAD)
    return _builtin() if masker is _UNREAD else masker


def _builtin() -> Masker | None:
    return build_masker([])


# Read the rules and settings again on next use (a change made in this process).
forget = MASKERS.forget
