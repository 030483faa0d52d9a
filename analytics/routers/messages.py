"""/analytics/messages: lists with every filter, cursor or offset pages; one message in full."""

import uuid

from django.shortcuts import get_object_or_404
from ninja import Query, Router
from ninja.errors import HttpError

from proxy import conversations
from proxy.models import Message

from ..auth import can_read_content
from ..filters import MessageFilter, PageParams, encode_cursor
from ..schemas import MessageDetail, MessagePage

router = Router(tags=["messages"])

# Detail fields that can hold what a user wrote or a model answered.
DETAIL_CONTENT_FIELDS = ("thinking", "tool_calls", "messages")


@router.get("/messages", response=MessagePage, summary="Recorded messages, newest first")
def list_messages(request, filters: Query[MessageFilter], page: Query[PageParams]):
    """Every criterion must hold. Pages: follow `next_cursor` (constant time at any depth);
    `offset` still works but gets slower the deeper it goes. No total count (counting millions
    of rows per page is what makes such lists slow): see /analytics/aggregations."""
    messages, offset = page.position(filters.apply())
    rows, following = messages.json_page(
        page.limit, content=can_read_content(request), offset=offset
    )
    return {
        "messages": rows,
        "next_cursor": encode_cursor(following) if following else None,
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get("/messages/{message_id}", response=MessageDetail, summary="One message in full")
def message_detail(request, message_id: str):
    """By the id of a listed message, which is also the X-Request-Id header of the proxied
    response (hex, with or without dashes)."""
    try:
        request_id = uuid.UUID(message_id)
    except ValueError:
        raise HttpError(404, "No message has this id.") from None
    message = get_object_or_404(Message, request_id=request_id)
    content = can_read_content(request)
    # Stored once per conversation: each message keeps its new turns only.
    history, missing = conversations.history(message)
    detail = {
        **message.as_json(content=content),
        "method": message.method,
        "user_agent": message.user_agent,
        "thinking": message.thinking,
        "tool_calls": message.tool_calls,
        "messages": history,
        "conversation": message.conversation_id,
        "history_missing": missing,
        "options": message.options,
        "done_reason": message.done_reason,
        "truncated": message.truncated,
        "total_duration": message.total_duration_seconds,
        "load_duration": message.load_duration_seconds,
        "prompt_eval_duration": message.prompt_eval_duration_seconds,
        "eval_duration": message.eval_duration_seconds,
    }
    if not content:
        for name in DETAIL_CONTENT_FIELDS:
            detail[name] = None
    return detail
