"""The analytics pages: the dashboard at /dashboard/ and its links into the admin.

The page is a shell; its figures, charts and table come from the analytics API
(/analytics/aggregations, /analytics/messages) with the same session and the same filter
parameters as in the page's URL, so a view can be shared by its address.
"""

import uuid
from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from pydantic import ValidationError

from proxy.models import Message, MessageRollup, UserRollup

from .auth import READ_CONTENT, READ_METADATA
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
FILTER_NAMES = ("search", "model", "user", "status", "category", "start_time", "end_time")


def _reader(view):
    """Logged in (else the admin's login page) and allowed to read messages (else 403)."""

    @wraps(view)
    def check(request, *args, **kwargs):
        if not request.user.has_perm(READ_METADATA):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return staff_member_required(check, login_url="admin:login")


@_reader
def dashboard(request):
    chosen = {name: request.GET.get(name, "").strip() for name in FILTER_NAMES}
    error = None
    try:
        MessageFilter(**{name: value for name, value in chosen.items() if value})
    except ValidationError as invalid:
        error = "; ".join(problem["msg"] for problem in invalid.errors())
    time_range = request.GET.get("range", "")
    if time_range not in dict(RANGES):
        time_range = "custom" if chosen["start_time"] or chosen["end_time"] else "24h"
    context = {
        "chosen": chosen,
        "error": error,
        "time_range": time_range,
        "ranges": RANGES,
        "models": MessageRollup.objects.values_seen("model"),
        "categories": MessageRollup.objects.values_seen("category"),
        "users": UserRollup.objects.values_seen("user"),
        "statuses": Message.Status.values,
        "content": request.user.has_perm(READ_CONTENT),
    }
    return render(request, "dashboard/index.html", context)


@_reader
def message(request, message_id: str):
    """A message of the dashboard's table (by its API id) in the admin's detail page."""
    try:
        request_id = uuid.UUID(message_id)
    except ValueError:
        raise Http404("No message has this id.") from None
    pk = get_object_or_404(Message.objects.values_list("pk", flat=True), request_id=request_id)
    return redirect(reverse("admin:proxy_message_change", args=[pk]))
