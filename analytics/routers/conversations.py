"""/analytics/conversations: chats grouped by the history they continue, and one as a thread."""

from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema
from pydantic import Field, NonNegativeInt

from proxy.models import Conversation

from ..auth import can_read_content
from ..conversations import matching, turns
from ..filters import MessageFilter
from ..schemas import ConversationDetail, ConversationPage

router = Router(tags=["conversations"])


class Page(Schema):
    limit: int = Field(50, ge=1, le=500, description="Conversations per page, at most 500.")
    offset: NonNegativeInt = 0


@router.get(
    "/conversations", response=ConversationPage, summary="Conversations, latest activity first"
)
def list_conversations(request, filters: Query[MessageFilter], page: Query[Page]):
    """Those with at least one message matching every criterion (the messages' filters).
    Totals are of the whole conversation."""
    found = matching(filters, page.offset, page.limit)
    return {
        "conversations": [conversation.as_json() for conversation in found],
        "limit": page.limit,
        "offset": page.offset,
    }


@router.get(
    "/conversations/{conversation_id}",
    response=ConversationDetail,
    summary="One conversation, its turns in order",
)
def conversation_detail(request, conversation_id: int):
    """Each turn is a message (the message shape) with the turns it added to the history
    (`new_turns`); the whole history a turn sent is at /analytics/messages/{id}."""
    conversation = get_object_or_404(Conversation, pk=conversation_id)
    return {
        **conversation.as_json(),
        "thread": turns(conversation, content=can_read_content(request)),
    }
