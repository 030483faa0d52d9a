"""Reading conversations: which match a filter, and one as a thread of turns. Shared by the
API (/analytics/conversations), the dashboard pages and the admin."""

from __future__ import annotations

from proxy.models import Conversation, Message

from .filters import MessageFilter

# Turns shown of one conversation (a thread view, not an export).
MAX_TURNS = 1000


def matching(filters: MessageFilter, offset: int, limit: int) -> list[Conversation]:
    """A page of the conversations with at least one message that matches every criterion
    (search words, model, user, status, time range, ...), latest activity first. No
    criterion: all of them.

    Read from the matching messages' side: the full-text search is raw SQL on the messages
    table, which a subquery would rename."""
    if not filters.model_dump(exclude_none=True):
        return list(Conversation.objects.order_by("-last_at", "-id")[offset : offset + limit])
    keys = (
        filters.apply(whole=True)
        .filter(conversation__isnull=False)
        .values_list("conversation_id", "conversation__last_at")
        .distinct()
        .order_by("-conversation__last_at", "-conversation_id")[offset : offset + limit]
    )
    ids = [pk for pk, _ in keys]
    found = Conversation.objects.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def turns(conversation: Conversation, *, content: bool) -> list[dict]:
    """The conversation's messages in order, each in the API's message shape plus what it
    added to the history (`new_turns`, its text only with `content`) and how many turns it
    continued (`history_turns`)."""
    messages = Message.objects.filter(conversation=conversation).order_by("timestamp", "id")
    rows = []
    for message in messages[:MAX_TURNS]:
        row = message.as_json(content=content)
        row["history_turns"] = message.history_turns or 0
        row["new_turns"] = message.messages if content else None
        rows.append(row)
    return rows
