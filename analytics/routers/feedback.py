"""/analytics/messages/{id}/feedback: rate a message's answer (thumbs or stars), read its
ratings. One rating per message and source; sending again replaces it."""

import uuid

from ninja import Router, Status
from ninja.errors import HttpError

from proxy.models import Message

from ..auth import can_read_content, feedback_senders
from ..models import Feedback
from ..schemas import FeedbackIn, FeedbackOut, MessageFeedback

router = Router(tags=["feedback"])

# What a rating needs of its message (the model and time are copied into it).
FOUND_BY = ("id", "request_id", "model", "timestamp")
# A database id is a 64-bit integer (at most 19 digits); a request id has 32 hex digits.
LONGEST_PK, LARGEST_PK = 19, 2**63 - 1


def find_message(message_id: str) -> Message:
    """The message with this request id (the API's `id`, the X-Request-Id header; hex, with
    or without dashes) or this database id (the admin's), else a 404."""
    text = message_id.strip()
    try:
        if text.isdigit() and len(text) <= LONGEST_PK and int(text) <= LARGEST_PK:
            return Message.objects.only(*FOUND_BY).get(pk=int(text))
        return Message.objects.only(*FOUND_BY).get(request_id=uuid.UUID(text))
    except (ValueError, Message.DoesNotExist):
        raise HttpError(404, "No message has this id.") from None


@router.post(
    "/messages/{message_id}/feedback",
    auth=feedback_senders(),
    response={200: FeedbackOut, 201: FeedbackOut},
    summary="Rate a message (thumbs up/down or 1 to 5 stars)",
)
def give_feedback(request, message_id: str, payload: FeedbackIn):
    """201 for a source's first rating of the message, 200 when it replaces the earlier one
    (sending the same again changes nothing). Needs the permission `analytics.send_feedback`;
    the id is the message's `id`, which is also the proxied response's X-Request-Id header."""
    message = find_message(message_id)
    source = payload.source or request.auth.get_username()[: Feedback.SOURCE_CHARS]
    feedback, created = Feedback.give(
        message, source, payload.rating, comment=payload.comment, user=request.auth
    )
    return Status(201 if created else 200, feedback.as_json(content=True))


@router.get(
    "/messages/{message_id}/feedback",
    response=MessageFeedback,
    summary="The ratings of a message",
)
def message_feedback(request, message_id: str):
    message = find_message(message_id)
    given = message.feedback.select_related("user").order_by("-updated_at", "-id")
    content = can_read_content(request)
    rows = [feedback.as_json(content=content) for feedback in given]
    return {
        "message": message.request_id.hex,
        "count": len(rows),
        "average_score": sum(row["score"] for row in rows) / len(rows) if rows else None,
        "feedback": rows,
    }
