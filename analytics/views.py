"""The analytics pages: the dashboard at /dashboard/, the model comparison at
/dashboard/compare/, and their links into the admin.

The pages are shells; their figures, charts and tables come from the analytics API
(/analytics/aggregations, /analytics/messages, /analytics/compare) with the same session and
the same filter parameters as in the page's URL, so a view can be shared by its address.
"""

import uuid
from datetime import datetime, timedelta
from functools import wraps
from urllib.parse import urlencode

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from pydantic import ValidationError

from proxy.models import Conversation, Message, MessageRollup, UserRollup

from . import conversations as threads
from .auth import READ_CONTENT, READ_METADATA
from .comparison import MAX_MODELS
from .filters import MessageFilter

# The time ranges the picker offers; the page's script turns one into start_time/end_time.
RANGES = (
    ("1h", "Last hour"),
    ("6h", "Last 6 hours"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("all", "All time"),
    ("custom", "Custom…"),
)
RANGE_SECONDS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
FILTER_NAMES = (
    "search",
    "model",
    "user",
    "status",
    "category",
    "start_time",
    "end_time",
    "has_feedback",
    "min_score",
)


def reader_required(view):
    """Logged in (else the admin's login page) and allowed to read messages (else 403)."""

    @wraps(view)
    def check(request, *args, **kwargs):
        if not request.user.has_perm(READ_METADATA):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return staff_member_required(check, login_url="admin:login")


def _chosen(request) -> dict:
    """The filters of the page's URL for its form: their values, what is wrong with them (the
    API would answer 422) and the time range picked."""
    chosen = {name: request.GET.get(name, "").strip() for name in FILTER_NAMES}
    error = None
    try:
        MessageFilter(**{name: value for name, value in chosen.items() if value})
    except ValidationError as invalid:
        error = "; ".join(problem["msg"] for problem in invalid.errors())
    time_range = request.GET.get("range", "")
    if time_range not in dict(RANGES):
        time_range = "custom" if chosen["start_time"] or chosen["end_time"] else "24h"
    return {"chosen": chosen, "error": error, "time_range": time_range, "ranges": RANGES}


@reader_required
def dashboard(request):
    context = {
        **_chosen(request),
        "models": MessageRollup.objects.values_seen("model"),
        "categories": MessageRollup.objects.values_seen("category"),
        "users": UserRollup.objects.values_seen("user"),
        "statuses": Message.Status.values,
        "content": request.user.has_perm(READ_CONTENT),
    }
    return render(request, "dashboard/index.html", context)


@reader_required
def compare(request):
    """Models side by side: the page is a shell filled from /analytics/compare."""
    context = {
        **_chosen(request),
        "models": MessageRollup.objects.values_seen("model"),
        "compared": request.GET.getlist("models"),
        "most": MAX_MODELS,
        "categories": MessageRollup.objects.values_seen("category"),
        "users": UserRollup.objects.values_seen("user"),
    }
    return render(request, "dashboard/compare.html", context)


@reader_required
def message(request, message_id: str):
    """A message of the dashboard's table (by its API id) in the admin's detail page."""
    try:
        request_id = uuid.UUID(message_id)
    except ValueError:
        raise Http404("No message has this id.") from None
    pk = get_object_or_404(Message.objects.values_list("pk", flat=True), request_id=request_id)
    return redirect(reverse("admin:proxy_message_change", args=[pk]))


CONVERSATIONS_PER_PAGE = 50


@reader_required
def conversations(request):
    """Conversations matching the dashboard's filters, latest activity first (a page of them)."""
    picked = _chosen(request)
    chosen, time_range = picked["chosen"], picked["time_range"]
    criteria = {name: value for name, value in chosen.items() if value}
    if time_range != "custom":  # a relative range ends now, as the dashboard's script reads it
        criteria.pop("start_time", None)
        criteria.pop("end_time", None)
        if time_range in RANGE_SECONDS:
            since = timezone.now() - timedelta(seconds=RANGE_SECONDS[time_range])
            criteria["start_time"] = since.isoformat()
    try:
        filters = MessageFilter(**criteria)
    except ValidationError as invalid:
        filters, error = None, "; ".join(problem["msg"] for problem in invalid.errors())
    else:
        error = None
    try:
        page = max(int(request.GET.get("page", "1")), 1)
    except ValueError:
        page = 1
    start = (page - 1) * CONVERSATIONS_PER_PAGE
    found = (
        threads.matching(filters, start, CONVERSATIONS_PER_PAGE + 1) if filters is not None else []
    )
    query = {name: value for name, value in chosen.items() if value}
    if time_range != "custom":
        query.pop("start_time", None)
        query.pop("end_time", None)
        if request.GET.get("range"):
            query = {"range": time_range, **query}
    context = {
        **picked,
        "chosen": chosen,
        "error": error,
        "conversations": found[:CONVERSATIONS_PER_PAGE],
        "page": page,
        "newer": urlencode({**query, "page": page - 1}) if page > 1 else None,
        "older": urlencode({**query, "page": page + 1})
        if len(found) > CONVERSATIONS_PER_PAGE
        else None,
        "filter_query": urlencode(query),
        "models": MessageRollup.objects.values_seen("model"),
        "statuses": Message.Status.values,
    }
    return render(request, "dashboard/conversations.html", context)


@reader_required
def conversation(request, conversation_id: int):
    """One conversation as a thread: its turns in order with their figures, and the totals."""
    found = get_object_or_404(Conversation, pk=conversation_id)
    content = request.user.has_perm(READ_CONTENT)
    turns = threads.turns(found, content=content)
    for turn in turns:  # shown in the site's time zone, as the list shows them
        turn["at"] = datetime.fromisoformat(turn["timestamp"])
    context = {
        "conversation": found,
        "turns": turns,
        "content": content,
        "max_turns": threads.MAX_TURNS,
    }
    return render(request, "dashboard/conversation.html", context)
