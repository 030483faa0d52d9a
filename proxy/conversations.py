"""Conversations: chat requests that continue one history, grouped, and their history stored once.

A chat client sends the whole history with every turn. The writer recognises the history a
request continues by keyed hashes of its prefixes: each stored chat keeps the hash of the
history it sent (`request_hash`) and of that history followed by its reply (`history_hash`),
and the next turn's history starts with one of them. The request joins that message's
conversation and only its new turns are stored, with a reference to the message
(`previous_request_id`) and the number of turns taken from it (`history_turns`). `history()`
puts the whole history back together for reading. The longest known prefix wins, so an edited
or regenerated turn continues from where it branched; a request is never matched whole, so two
chats that open with the same words stay two conversations. A turn whose history is not found
keeps that history's hash (`parent_hash`); when the message it continues is written after it
(by another worker, or replayed from the spool late), that message adopts it.

A client may name its conversation (`CONVERSATION_ID_HEADERS`, e.g. `X-Conversation-Id`): the
id, per user, decides the conversation; the history still decides what is stored.

Hashes are BLAKE2b keyed with the SECRET_KEY (a stored hash tells nothing about the words it
was made from, also on metadata-only routes), chained over the turns so every prefix of a
history costs one pass over it, and they include the user: two users who send the same words
are never in one conversation.

All of it runs in the writer thread: `fingerprint` before masking (the hashes see what the
client sent), `link` in the insert's transaction (rows replayed from the spool too; `unlink`
puts a row back as it was when the insert fails, so it is spooled whole). Lookups are
batched per insert: an in-process LRU of recent anchors spares the hash lookup for the usual
next turn, leaving one check by request id that its message is still there and one for
orphans on a small partial index; the database stays the truth every worker process shares.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import orjson
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q

from . import inserts, ollama
from .models import Conversation, Message

log = logging.getLogger(__name__)

# The row key that carries the hashes and the client's conversation id from `fingerprint` to
# `link`; removed before the row is inserted.
HINTS = "conversation_hints"
# Anchors (hash -> message) of recent chats kept per process: a few MB.
ANCHORS_KEPT = 50_000
# Hashes per lookup query.
QUERY_CHUNK = 500
# Conversations per upsert of their totals: 12 parameters each, under the 999 parameters of
# SQLite's oldest builds.
UPSERT_ROWS = 80

_anchors: OrderedDict[int, tuple[str, int | None]] = OrderedDict()
_anchors_lock = threading.Lock()
_undo = threading.local()


def _hash_key() -> bytes:
    return hashlib.blake2b(
        settings.SECRET_KEY.encode(), digest_size=32, person=b"conversation"
    ).digest()


def chain(user: str, turns: list[dict]) -> list[int]:
    """The hashes of every prefix of `turns` (the first turn alone, the first two, ...) as
    signed 64-bit integers, for one user."""
    key = _hash_key()
    state = hashlib.blake2b(user.encode(), key=key, digest_size=16).digest()
    hashes = []
    for turn in turns:
        identity = orjson.dumps(ollama.turn_identity(turn), option=orjson.OPT_SORT_KEYS)
        state = hashlib.blake2b(state + identity, key=key, digest_size=16).digest()
        hashes.append(int.from_bytes(state[:8], "big", signed=True))
    return hashes


def fingerprint(row: dict, headers: dict[str, str] | None) -> None:
    """Note a new row's history hashes and the client's conversation id, before masking."""
    try:
        hints = _hints(row, headers)
    except Exception:  # grouping must never cost a record
        log.exception("conversations: could not read the history of %s", row.get("request_id"))
        return
    if hints:
        row[HINTS] = hints


def _hints(row: dict, headers: dict[str, str] | None) -> dict:
    hints = {}
    named = next(
        (
            headers[name]
            for name in settings.CONVERSATION_ID_HEADERS
            if headers and headers.get(name)
        ),
        "",
    )
    if named.strip():
        hints["id"] = named.strip()[:255]
    turns = row.get("messages")
    if ollama.is_chat(row.get("endpoint", "")) and isinstance(turns, list) and turns:
        reply = ollama.reply_turn(row.get("response") or "", row.get("tool_calls"))
        hashes = chain(row.get("user", ""), [*turns, reply])
        row["request_hash"], row["history_hash"] = hashes[-2], hashes[-1]
        hints["prefixes"] = hashes[:-2]  # the proper prefixes a request may continue
    return hints


# --- Linking rows in the writer's transaction -------------------------------------------------


@dataclass(eq=False)
class _Thread:
    """A conversation as a batch sees it: an existing row or one to create."""

    pk: int | None = None
    user: str = ""
    rows: list = field(default_factory=list)


@dataclass
class _Anchor:
    """A stored message whose history a request may continue."""

    request_id: str  # hex
    conversation: _Thread | int | None


def link(rows: list[dict], *, replay: bool = False) -> None:
    """Give the chats among `rows` their conversation and store only their new turns; call in
    the transaction that inserts them, before the insert. Every row loses its hints; a replay
    leaves alone the rows an interrupted replay already wrote."""
    _undo.batch, _undo.rows, _undo.anchors = rows, [], []
    hinted = []
    for row in rows:
        hints = row.pop(HINTS, None)
        if hints is not None:
            _undo.rows.append((row, {HINTS: hints}))
            hinted.append((row, hints))
    if replay:
        hinted = _not_written(hinted)
    if not hinted:
        return
    try:
        _link(hinted)
    except DatabaseError:
        raise
    except Exception:  # grouping must never cost a record: these are stored ungrouped
        log.exception("conversations: could not link a batch of %d", len(hinted))
        _restore(keep_hints=False)


def _link(batch: list[tuple[dict, dict]]) -> None:
    known, waiting = _known_anchors(batch)
    named = _named_threads(batch)
    threads: dict[int, _Thread] = {}
    adoptions = []
    for row, hints in batch:
        length, anchor = _longest(hints.get("prefixes", ()), known)
        thread = named.get((row.get("user", ""), hints.get("id")))
        if thread is None and anchor is not None:
            thread = _thread_of(anchor.conversation, threads)
        orphans = waiting.get(row.get("history_hash"), [])
        if thread is None and orphans:
            thread = _thread_of(orphans[0].conversation_id, threads)
        if thread is None:
            thread = _Thread(user=row.get("user", ""))
        thread.rows.append(row)
        _note(row, anchor, length, thread, hints)
        adoptions.extend((orphan, row, len(hints.get("prefixes", ())) + 2) for orphan in orphans)
        for hash_ in (row.get("request_hash"), row.get("history_hash")):
            if hash_ is not None:  # the next rows of the batch may continue this one
                known[hash_] = _Anchor(_hex(row["request_id"]), thread)
    _save(batch)
    for orphan, row, turns in adoptions:
        _adopt(orphan, row, turns)


def _orphans(found: list) -> dict[int, list[Message]]:
    """The stored turns that found no history to continue (`parent_hash` set), by that hash,
    read whole (a few rows: written before the turn they continue by another worker, or
    replayed out of order)."""
    waiting: dict[int, list[Message]] = {}
    if found:
        orphans = Message.objects.filter(pk__in=found).order_by()
        for orphan in orphans.only("conversation_id", "parent_hash", "messages"):
            waiting.setdefault(orphan.parent_hash, []).append(orphan)
    return waiting


def _adopt(orphan: Message, row: dict, turns: int) -> None:
    """Make a stored orphan continue `row` (its first `turns` turns are row's history and
    reply): it keeps only its new turns, and its conversation joins row's."""
    stored = orphan.messages[turns:] if isinstance(orphan.messages, list) else orphan.messages
    changes = {"previous_request_id": _hex(row["request_id"]), "history_turns": turns}
    if isinstance(stored, list):
        changes["messages"] = stored
        changes["prompt"] = ollama.readable_turns(stored)[: settings.RECORDER_MAX_TEXT_CHARS]
    Message.objects.filter(pk=orphan.pk).update(parent_hash=None, **changes)
    if orphan.conversation_id not in (None, row["conversation_id"]):
        _merge(orphan.conversation_id, row["conversation_id"])


def _merge(source: int, target: int) -> None:
    """Move a conversation's messages and totals into another, unless a client named it."""
    moved = Conversation.objects.filter(pk=source, external_id="").first()
    if moved is None:
        return
    Message.objects.filter(conversation_id=source).update(conversation_id=target)
    _add({target: (moved.user, {name: getattr(moved, name) for name in TOTALS})})
    moved.delete()


def _not_written(hinted: list) -> list:
    """The rows of a replay not yet in the database."""
    ids = [row["request_id"] for row, _ in hinted]
    written = set()
    for start in range(0, len(ids), QUERY_CHUNK):
        written.update(
            Message.objects.filter(request_id__in=ids[start : start + QUERY_CHUNK]).values_list(
                "request_id", flat=True
            )
        )
    return [(row, hints) for row, hints in hinted if row["request_id"] not in written]


def unlink(rows: list[dict]) -> None:
    """Put rows back as they were before `link` (the insert failed; they go to the spool)."""
    if getattr(_undo, "batch", None) is rows:
        _restore(keep_hints=True)


# What `link` adds to a row (the rest it changes is saved in `_undo`).
KEYS_SET = ("conversation_id", "previous_request_id", "history_turns", "parent_hash", "thread")


def _restore(*, keep_hints: bool) -> None:
    for row, original in reversed(_undo.rows):
        for name in KEYS_SET:
            row.pop(name, None)
        row.update(original)
        if not keep_hints:
            row.pop(HINTS, None)
    with _anchors_lock:
        for hash_ in _undo.anchors:
            _anchors.pop(hash_, None)
    _undo.batch, _undo.rows, _undo.anchors = None, [], []


def _known_anchors(batch) -> tuple[dict[int, _Anchor], dict[int, list[Message]]]:
    """The stored anchors of the batch's prefixes, and the orphans that continue the batch's
    rows (`_orphans`). Anchors this process remembers are checked in the same query as the
    orphans are looked for (another worker or the retention may have pruned their message
    since); the database is asked, in batched queries, for those longer than the longest
    remembered."""
    batch_hashes = {
        hash_
        for row, _ in batch
        for hash_ in (row.get("request_hash"), row.get("history_hash"))
        if hash_ is not None
    }
    remembered, wanted = {}, set()
    with _anchors_lock:
        for _, hints in batch:
            prefixes = hints.get("prefixes", ())
            longest = 0
            for length in range(len(prefixes), 0, -1):
                hash_ = prefixes[length - 1]
                if hash_ in batch_hashes or hash_ in _anchors:
                    longest = length
                    break
            if longest and prefixes[longest - 1] in _anchors:
                remembered[prefixes[longest - 1]] = _anchors[prefixes[longest - 1]]
            wanted.update(prefixes[longest:])
    known, orphans = _still_stored(remembered, batch)
    ordered = sorted(wanted - batch_hashes)
    for start in range(0, len(ordered), QUERY_CHUNK):
        chunk = ordered[start : start + QUERY_CHUNK]
        matches = (
            Message.objects.filter(Q(request_hash__in=chunk) | Q(history_hash__in=chunk))
            .order_by("id")  # the newest message of an anchor wins
            .values_list("request_id", "conversation_id", "request_hash", "history_hash")
        )
        for request_id, conversation, *hashes in matches:
            for hash_ in hashes:
                if hash_ in wanted:
                    known[hash_] = _Anchor(request_id.hex, conversation)
    return known, orphans


def _still_stored(remembered: dict, batch) -> tuple[dict[int, _Anchor], dict]:
    """The remembered anchors whose message is still there (with its conversation as stored),
    and the orphans waiting for one of the batch's rows: one query per `QUERY_CHUNK`."""
    ids = sorted({request_id for request_id, _ in remembered.values()})
    histories = sorted({row["history_hash"] for row, _ in batch if row.get("history_hash")})
    stored, orphans, waited = {}, [], set(histories)
    for start in range(0, max(len(ids), len(histories)), QUERY_CHUNK):
        found = (
            Message.objects.filter(
                Q(request_id__in=ids[start : start + QUERY_CHUNK])
                | Q(parent_hash__in=histories[start : start + QUERY_CHUNK])
            )
            .order_by()
            .values_list("pk", "request_id", "conversation_id", "parent_hash")
        )
        for pk, request_id, conversation, parent_hash in found:
            stored[request_id.hex] = conversation
            if parent_hash in waited:
                orphans.append(pk)
    known = {
        hash_: _Anchor(request_id, stored[request_id])
        for hash_, (request_id, _) in remembered.items()
        if request_id in stored
    }
    return known, _orphans(orphans)


def _hex(request_id) -> str:
    """A request id as anchors keep it (a row has a UUID; a replayed one too)."""
    return request_id.hex if isinstance(request_id, uuid.UUID) else uuid.UUID(request_id).hex


def _longest(prefixes, known: dict) -> tuple[int, _Anchor | None]:
    """The longest prefix with a stored anchor: its length in turns, and the anchor."""
    for length in range(len(prefixes), 0, -1):
        anchor = known.get(prefixes[length - 1])
        if anchor is not None:
            return length, anchor
    return 0, None


def _thread_of(conversation, threads: dict) -> _Thread | None:
    if isinstance(conversation, _Thread) or conversation is None:
        return conversation
    if conversation not in threads:
        threads[conversation] = _Thread(pk=conversation)
    return threads[conversation]


def _named_threads(batch) -> dict[tuple[str, str], _Thread]:
    """The conversations the clients named, per (user, id): found, or created."""
    started = {}
    for row, hints in batch:
        if hints.get("id"):
            started.setdefault((row.get("user", ""), hints["id"]), row["timestamp"])
    if not started:
        return {}
    existing = _named(started)
    missing = [
        Conversation(user=user, external_id=name, started_at=moment, last_at=moment)
        for (user, name), moment in started.items()
        if (user, name) not in existing
    ]
    if missing:
        # Another worker may create the same one meanwhile: the unique key keeps one.
        Conversation.objects.bulk_create(missing, ignore_conflicts=True)
        existing = _named(started)
    return {key: _Thread(pk=pk, user=key[0]) for key, pk in existing.items()}


def _named(wanted) -> dict[tuple[str, str], int]:
    names = {name for _, name in wanted}
    rows = Conversation.objects.filter(external_id__in=names).values_list(
        "user", "external_id", "id"
    )
    return {(user, name): pk for user, name, pk in rows if (user, name) in wanted}


def _note(row: dict, anchor: _Anchor | None, length: int, thread: _Thread, hints: dict) -> None:
    """Set what the row continues and keep only its new turns (saving what is changed). A
    continuation whose history is not found keeps the hash of it (`parent_hash`), so that
    history's message, written later, adopts it."""
    _undo.rows.append((row, {"messages": row.get("messages"), "prompt": row.get("prompt")}))
    row["thread"] = thread
    if anchor is None:
        if hints.get("prefixes"):
            row["parent_hash"] = hints["prefixes"][-1]
        return
    row["previous_request_id"] = anchor.request_id
    row["history_turns"] = length
    turns = row.get("messages")
    if isinstance(turns, list):
        row["messages"] = turns[length:]
        row["prompt"] = ollama.readable_turns(row["messages"])[: settings.RECORDER_MAX_TEXT_CHARS]


def _save(batch) -> None:
    """Create the new conversations, add the batch to the totals, and set the rows' ids."""
    threads = list({id(row["thread"]): row["thread"] for row, _ in batch}.values())
    new = [thread for thread in threads if thread.pk is None]
    _create(new)
    _add(
        {thread.pk: (thread.user, _totals(thread.rows)) for thread in threads if thread not in new}
    )
    for row, _ in batch:
        thread = row.pop("thread")
        row["conversation_id"] = thread.pk
        for hash_ in (row.get("request_hash"), row.get("history_hash")):
            if hash_ is not None:
                _remember(hash_, _hex(row["request_id"]), thread.pk)


def _create(threads: list[_Thread]) -> None:
    """Insert the batch's new conversations in one statement (`bulk_create` compiled every
    value through the ORM: a quarter of the writer's time on a stream of one-turn chats) and
    give each thread its id. A statement's ids ascend in the order of its rows (SQLite holds
    the write lock, PostgreSQL draws them from the sequence row by row), so sorted they pair
    with the threads even when another worker inserts at the same time."""
    if not threads:
        return
    adapt = connection.ops.adapt_datetimefield_value
    values = []
    for thread in threads:
        sums = _totals(thread.rows)
        totals = (adapt(sums[name]) if name.endswith("_at") else sums[name] for name in TOTALS)
        values.append([thread.user, "", *totals])
    tail = f" RETURNING {connection.ops.quote_name('id')}"
    columns = ("user", "external_id", *TOTALS)
    with connection.cursor() as cursor:
        for chunk, (sql, params) in inserts.statements(
            Conversation._meta.db_table, columns, values, threads, tail=tail
        ):
            cursor.execute(sql, params)
            ids = sorted(pk for (pk,) in cursor.fetchall())
            for thread, pk in zip(chunk, ids, strict=True):
                thread.pk = pk


def _totals(rows: list[dict]) -> dict:
    last = max(rows, key=lambda row: row["timestamp"])
    return {
        "model": last.get("model", ""),
        "started_at": min(row["timestamp"] for row in rows),
        "last_at": last["timestamp"],
        "turns": len(rows),
        "errors": sum(1 for row in rows if row.get("status") != Message.Status.SUCCESS),
        "input_tokens": sum(row.get("input_tokens") or 0 for row in rows),
        "output_tokens": sum(row.get("output_tokens") or 0 for row in rows),
        "cost_usd": sum(row.get("cost_usd") or 0.0 for row in rows),
        "latency_seconds": sum(row.get("latency_seconds") or 0.0 for row in rows),
    }


TOTALS = (
    "model",
    "started_at",
    "last_at",
    "turns",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_seconds",
)
SUMS = TOTALS[3:]


def _add(totals: dict[int, tuple[str, dict]]) -> None:
    """Add batch totals (user, `_totals`) to their conversations, in one statement per few
    hundred (an ORM update per conversation cost ~3 ms of the writer's time each). A
    conversation that is gone (deleted in the admin) is made again from them: its turns
    still name it."""
    if not totals:
        return
    columns = ("id", "user", "external_id", *TOTALS)
    adapt = connection.ops.adapt_datetimefield_value
    params = [
        value
        for pk, (user, sums) in totals.items()
        for value in (
            pk,
            user,
            "",
            *(adapt(sums[name]) if name.endswith("_at") else sums[name] for name in TOTALS),
        )
    ]
    width = len(columns)
    statement = _upsert(columns)
    one = f"({', '.join(['%s'] * width)})"
    start = 0
    with connection.cursor() as cursor:
        # Row counts from a fixed few, so that the statements sqlite3 keeps prepared stay few.
        for rows in inserts.row_counts(len(totals), UPSERT_ROWS):
            cursor.execute(
                statement % ", ".join([one] * rows),
                params[start * width : (start + rows) * width],
            )
            start += rows


def _upsert(columns: tuple) -> str:
    """`INSERT ... ON CONFLICT (id) DO UPDATE`: sums added, the time span widened, the model
    of the latest turn; `%s` stands for the VALUES rows."""
    quote = connection.ops.quote_name
    table = quote(Conversation._meta.db_table)
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("MIN", "MAX")
    changes = [f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}" for name in SUMS]
    changes += [
        f"{quote('model')} = CASE WHEN excluded.{quote('last_at')} >= {table}.{quote('last_at')} "
        f"THEN excluded.{quote('model')} ELSE {table}.{quote('model')} END",
        f"{quote('started_at')} = {least}({table}.{quote('started_at')}, "
        f"excluded.{quote('started_at')})",
        f"{quote('last_at')} = {greatest}({table}.{quote('last_at')}, excluded.{quote('last_at')})",
    ]
    return (
        f"INSERT INTO {table} ({', '.join(quote(name) for name in columns)}) VALUES %s "
        f"ON CONFLICT ({quote('id')}) DO UPDATE SET {', '.join(changes)}"
    )


def _remember(hash_: int, request_id: str, conversation: int) -> None:
    with _anchors_lock:
        _anchors[hash_] = (request_id, conversation)
        _anchors.move_to_end(hash_)
        while len(_anchors) > ANCHORS_KEPT:
            _anchors.popitem(last=False)
    _undo.anchors.append(hash_)


def forget() -> None:
    """Drop what this process remembers of recent chats (tests, after a database flush)."""
    with _anchors_lock:
        _anchors.clear()


# --- Reading ----------------------------------------------------------------------------------


def history(message: Message) -> tuple[list | None, int]:
    """The whole chat history a message sent, and how many of its first turns are no longer
    stored (the message they came from was pruned). None when its text was not recorded."""
    if not message.previous_request_id or not message.history_turns:
        return message.messages, 0
    stored = _conversation_turns(message)
    line = [message]  # newest first, back to the first message or the first one missing
    while line[-1].previous_request_id and line[-1].history_turns:
        previous = stored.get(line[-1].previous_request_id)
        if previous is None:
            previous = (
                Message.objects.filter(request_id=line[-1].previous_request_id)
                .only(*TURN_FIELDS)
                .first()
            )
        if previous is None:
            break
        line.append(previous)
    first = line[-1]
    missing = first.history_turns if first.previous_request_id else 0
    turns = first.messages
    for earlier, later in zip(line[::-1], line[-2::-1], strict=False):
        if turns is None or later.messages is None:
            return None, missing
        # `turns` is the history of `earlier` without its first `missing` turns.
        base = [*turns, ollama.reply_turn(earlier.response, earlier.tool_calls)]
        if later.history_turns <= missing:
            missing, base = later.history_turns, []
        turns = base[: later.history_turns - missing] + later.messages
    return turns, missing


TURN_FIELDS = (
    "request_id",
    "previous_request_id",
    "history_turns",
    "messages",
    "response",
    "tool_calls",
)


def _conversation_turns(message: Message) -> dict:
    """The messages of this message's conversation up to it, by request id: one query for the
    usual chain, which stays within a conversation."""
    if message.conversation_id is None:
        return {}
    earlier = Message.objects.filter(
        conversation_id=message.conversation_id, timestamp__lte=message.timestamp
    ).only(*TURN_FIELDS)
    return {row.request_id: row for row in earlier}


def keep_history(request_ids: list, cutoff) -> int:
    """Before the messages `request_ids` are pruned: the kept turns (from `cutoff` on) that
    continue one of them store their whole history instead of the reference. Returns how many
    were rewritten."""
    rewritten = 0
    for start in range(0, len(request_ids), QUERY_CHUNK):
        continuing = Message.objects.filter(
            previous_request_id__in=request_ids[start : start + QUERY_CHUNK],
            timestamp__gte=cutoff,
        )
        for message in continuing:
            turns, _ = history(message)
            message.messages = turns
            if turns is not None:
                message.prompt = ollama.readable_turns(turns)[: settings.RECORDER_MAX_TEXT_CHARS]
            message.previous_request_id = message.history_turns = None
            message.save(
                update_fields=["messages", "prompt", "previous_request_id", "history_turns"]
            )
            rewritten += 1
    return rewritten
