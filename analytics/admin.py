"""The admin's reading side: recorded messages (a read-only microscope), their feedback and
API tokens."""

import json
import uuid
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models.functions import Substr
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from proxy import conversations
from proxy.backends import env_name
from proxy.models import (
    Backend,
    Conversation,
    Message,
    MessageRollup,
    UserRollup,
    search_words,
)

from .auth import READ_CONTENT
from .export import export_response
from .filters import MessageFilter
from .models import ApiToken, Feedback


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "name",
        "user",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "active",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("user", "name", "expires_at")
        return ("user", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + (("user",) if obj else ())

    @admin.display(boolean=True)
    def active(self, token):
        return token.is_active

    def save_model(self, request, obj, form, change):
        secret = None if change else obj.new_secret()
        super().save_model(request, obj, form, change)
        if secret:
            self.message_user(
                request,
                f"The new token is {secret} — copy it now: it is not stored and will not be "
                "shown again.",
                messages.WARNING,
            )

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            token.revoke()


class DimensionFilter(admin.SimpleListFilter):
    """One value of a column, chosen among those the rollups have seen (a few hundred day rows)
    rather than by a DISTINCT over every message. The parameter has the analytics filter's
    name (`model`, `user`, ...), so an admin link and a dashboard link read the same."""

    rollup = MessageRollup

    def lookups(self, request, model_admin):
        return [(value, value) for value in self.rollup.objects.values_seen(self.parameter_name)]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(**{self.parameter_name: value})


class ModelFilter(DimensionFilter):
    title = "model"
    parameter_name = "model"


class EndpointFilter(DimensionFilter):
    title = "endpoint"
    parameter_name = "endpoint"


class CategoryFilter(DimensionFilter):
    title = "category"
    parameter_name = "category"


class BackendFilter(admin.SimpleListFilter):
    """The backend that answered, among those configured (OLLAMA_URL's and the admin's): a
    short list known without reading the messages."""

    title = "backend"
    parameter_name = "backend"

    def lookups(self, request, model_admin):
        names = [env_name(url) for url in settings.OLLAMA_URL.split(",")]
        names += Backend.objects.values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        value = self.value()
        return queryset if value is None else queryset.filter(backend=value)


class UserFilter(DimensionFilter):
    title = "user"
    parameter_name = "user"
    rollup = UserRollup


class RangeFilter(admin.SimpleListFilter):
    """Bands of a measure; `low-high` in the URL, the high bound excluded, open when empty."""

    column: str
    bands: tuple[tuple[str, str], ...]

    def lookups(self, request, model_admin):
        return self.bands

    def queryset(self, request, queryset):
        if self.value() not in dict(self.bands):
            return queryset
        low, high = self.value().split("-")
        if low:
            queryset = queryset.filter(**{f"{self.column}__gte": float(low)})
        if high:
            queryset = queryset.filter(**{f"{self.column}__lt": float(high)})
        return queryset


class LatencyFilter(RangeFilter):
    title = "latency"
    parameter_name = "latency"
    column = "latency_seconds"
    bands = (
        ("-1", "under 1 s"),
        ("1-5", "1 to 5 s"),
        ("5-30", "5 to 30 s"),
        ("30-", "30 s or more"),
    )


class TtftFilter(RangeFilter):
    title = "time to first token"
    parameter_name = "ttft"
    column = "ttft_seconds"
    bands = (("-0.5", "under 0.5 s"), ("0.5-2", "0.5 to 2 s"), ("2-", "2 s or more"))


class InputTokensFilter(RangeFilter):
    title = "input tokens"
    parameter_name = "input_tokens"
    column = "input_tokens"
    bands = (
        ("-100", "under 100"),
        ("100-1000", "100 to 1,000"),
        ("1000-10000", "1,000 to 10,000"),
        ("10000-", "10,000 or more"),
    )


class OutputTokensFilter(InputTokensFilter):
    title = "output tokens"
    parameter_name = "output_tokens"
    column = "output_tokens"


class FeedbackFilter(admin.SimpleListFilter):
    """Rated or not, or rated well on average: the API's `has_feedback` and `min_score`."""

    title = "feedback"
    parameter_name = "feedback"
    CRITERIA = {
        "rated": {"has_feedback": True},
        "unrated": {"has_feedback": False},
        "good": {"min_score": 0.75},
        "fair": {"min_score": 0.5},
    }

    def lookups(self, request, model_admin):
        return (
            ("rated", "rated"),
            ("unrated", "not rated"),
            ("good", "average score 0.75 or more"),
            ("fair", "average score 0.5 or more"),
        )

    def queryset(self, request, queryset):
        criteria = self.CRITERIA.get(self.value())
        if criteria is None:
            return queryset
        return MessageFilter(**criteria).apply(queryset, times=False)


class BoundedCountPaginator(Paginator):
    """Counts at most `COUNT_LIMIT` rows: a count of every matching message on each page is
    what makes a changelist slow at millions of rows (DESIGN.md §4). Deeper than that, the
    dashboard's cursor-paged table goes on."""

    COUNT_LIMIT = 10_000

    @cached_property
    def count(self):
        return self.object_list[: self.COUNT_LIMIT + 1].count()

    @property
    def bounded(self) -> bool:
        return self.count > self.COUNT_LIMIT


# Columns never read by the changelist: the text, besides a prompt excerpt, can be megabytes.
WIDE_FIELDS = (
    "prompt",
    "messages",
    "options",
    "response",
    "thinking",
    "tool_calls",
    "error",
    "user_agent",
)
EXCERPT_CHARS = 80


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Recorded messages: search, filter, read one in full, export; never edited."""

    date_hierarchy = "timestamp"
    list_display = (
        "timestamp",
        "model",
        "user",
        "status",
        "tokens",
        "latency",
        "ttft",
        "cost",
        "category",
        "prompt_excerpt",
    )
    list_display_links = ("timestamp",)
    list_filter = (
        "status",
        ModelFilter,
        EndpointFilter,
        UserFilter,
        CategoryFilter,
        BackendFilter,
        ("timestamp", admin.DateFieldListFilter),
        InputTokensFilter,
        OutputTokensFilter,
        LatencyFilter,
        TtftFilter,
        FeedbackFilter,
    )
    # The search box searches through the full-text index (get_search_results), never LIKE.
    search_fields = ("prompt",)
    search_help_text = (
        "Words in the prompt or the response (all of them, any order), or a request id."
    )
    # Sorting by anything but time would sort millions of rows without an index.
    ordering = ("-timestamp", "-id")
    sortable_by = ("timestamp",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = BoundedCountPaginator
    list_per_page = 50
    actions = ("export_csv", "export_jsonl")
    change_form_template = "admin/proxy/message/detail.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        queryset = super().get_queryset(request).defer(*WIDE_FIELDS)
        if can_read_content(request.user):
            queryset = queryset.annotate(prompt_head=Substr("prompt", 1, EXCERPT_CHARS + 1))
        return queryset

    def get_object(self, request, object_id, from_field=None):
        """The whole message (the changelist's queryset leaves the text out)."""
        try:
            return Message.objects.get(pk=int(object_id))
        except (ValueError, Message.DoesNotExist):
            return None

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(request_id=uuid.UUID(term)), False
        except ValueError:
            pass
        if not search_words(term):
            return queryset.none(), False
        return queryset.search(term), False

    # --- columns ----------------------------------------------------------------------------

    @admin.display(description="tokens in → out")
    def tokens(self, message):
        return f"{_number(message.input_tokens)} → {_number(message.output_tokens)}"

    @admin.display(description="latency")
    def latency(self, message):
        return _seconds(message.latency_seconds)

    @admin.display(description="ttft")
    def ttft(self, message):
        return _seconds(message.ttft_seconds)

    @admin.display(description="cost")
    def cost(self, message):
        return "—" if message.cost_usd is None else f"${message.cost_usd:.4f}"

    @admin.display(description="prompt")
    def prompt_excerpt(self, message):
        head = getattr(message, "prompt_head", None)
        if head is None:
            return format_html('<span class="masked">{}</span>', MASKED)
        head = " ".join(head.split())
        return head[:EXCERPT_CHARS] + ("…" if len(head) > EXCERPT_CHARS else "")

    # --- the detail page --------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, object_id)
        if message is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, message):
            raise PermissionDenied
        content = can_read_content(request.user)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": str(message),
            "subtitle": None,
            "original": message,
            "message": message,
            "content": content,
            "masked": MASKED,
            "conversation": conversation(message) if content else None,
            "tool_calls_json": _pretty(message.tool_calls) if content else None,
            "options_json": _pretty(message.options),
            "timings": timings(message),
            "same_user": _links(self.opts, "user", message.user),
            "same_model": _links(self.opts, "model", message.model),
            "feedback": message.feedback.select_related("user"),
            "feedback_admin": _feedback_link(message) if can_read_feedback(request.user) else None,
            "has_delete_permission": self.has_delete_permission(request, message),
            "preserved_filters": self.get_preserved_filters(request),
            "is_popup": False,
            "to_field": None,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_form_template, context)

    # --- actions ----------------------------------------------------------------------------

    @admin.action(description="Export the selected messages as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        return export_response(queryset, "csv", content=can_read_content(request.user))

    @admin.action(description="Export the selected messages as JSON lines", permissions=["view"])
    def export_jsonl(self, request, queryset):
        return export_response(queryset, "jsonl", content=can_read_content(request.user))


MASKED = "hidden: needs the permission to view message content"


def can_read_content(user) -> bool:
    return user.has_perm(READ_CONTENT)


def _number(value) -> str:
    return "—" if value is None else f"{value:,}"


def _seconds(value) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _pretty(value) -> str | None:
    return None if value in (None, [], {}) else json.dumps(value, indent=2, ensure_ascii=False)


def _links(opts, name: str, value: str) -> dict | None:
    """Where the messages sharing this value are: the admin list and the dashboard."""
    if not value:
        return None
    query = urlencode({name: value})
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return {"value": value, "admin": f"{changelist}?{query}", "dashboard": f"/dashboard/?{query}"}


def conversation(message: Message) -> list[dict]:
    """The prompt as turns of a conversation: the chat history sent when there is one (system
    prompt, images noted, tool calls; rebuilt, as each message stores its new turns only),
    else the prompt as one user turn."""
    history, _ = conversations.history(message)
    if history:
        turns = []
        for entry in history:
            if not isinstance(entry, dict):
                continue
            turns.append(
                {
                    "role": str(entry.get("role") or "?"),
                    "content": str(entry.get("content") or ""),
                    "images": entry.get("images") or 0,
                    "thinking": entry.get("thinking") or "",
                    "tool_calls": _pretty(entry.get("tool_calls")),
                    "tool_name": entry.get("tool_name") or entry.get("name") or "",
                }
            )
        return turns
    return [{"role": "prompt", "content": message.prompt, "images": 0}]


def timings(message: Message) -> dict:
    """Where the time went: Ollama's load, prompt evaluation and generation, and the rest of
    what the proxy measured (queueing, network, the proxy itself); widths in % of the total."""
    total = message.latency_seconds or 0.0
    parts = [
        ("load", "model load", message.load_duration_seconds),
        ("prompt", "prompt evaluation", message.prompt_eval_duration_seconds),
        ("generation", "generation", message.eval_duration_seconds),
    ]
    known = sum(seconds for _, _, seconds in parts if seconds)
    if total and known <= total:
        parts.append(("other", "other (queue, network, proxy)", total - known))
    scale = max(total, known) or 1.0
    return {
        "parts": [
            {
                "key": key,
                "label": label,
                "text": _seconds(seconds),
                "percent": round(100 * seconds / scale, 1),
            }
            for key, label, seconds in parts
            if seconds is not None
        ],
        "total": _seconds(message.latency_seconds),
        "ollama_total": _seconds(message.total_duration_seconds),
        "ttft": _seconds(message.ttft_seconds),
        "tokens_per_second": (
            "—" if message.tokens_per_second is None else f"{message.tokens_per_second:.1f}"
        ),
    }


def can_read_feedback(user) -> bool:
    return user.has_perm("analytics.view_feedback")


def _feedback_link(message: Message) -> str:
    changelist = reverse("admin:analytics_feedback_changelist")
    return f"{changelist}?{urlencode({'message__id__exact': message.pk})}"


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    """Ratings of messages as sent through the API: read, filtered, deleted; never written
    here (a rating is someone's, sent with their account). Comments, free text that can quote
    the answer, need the content permission."""

    date_hierarchy = "updated_at"
    list_display = (
        "updated_at",
        "message_link",
        "model",
        "source",
        "shown_rating",
        "score",
        "user",
        "comment_excerpt",
    )
    list_filter = ("scale", "value", ModelFilter, ("updated_at", admin.DateFieldListFilter))
    list_select_related = ("message", "user")
    search_fields = ("source",)
    search_help_text = "A source, exactly as sent (e.g. open-webui)."
    ordering = ("-updated_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fields = (
        "message_link",
        "model",
        "source",
        "shown_rating",
        "score",
        "comment",
        "user",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The message's text is never shown here, and can be megabytes.
        wide = [f"message__{name}" for name in WIDE_FIELDS]
        return super().get_queryset(request).defer(*wide)

    def get_list_display(self, request):
        shown = self.list_display
        return shown if can_read_content(request.user) else shown[:-1]

    def get_fields(self, request, obj=None):
        if can_read_content(request.user):
            return self.fields
        return tuple(name for name in self.fields if name != "comment")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        return (queryset.filter(source=term), False) if term else (queryset, False)

    @admin.display(description="message")
    def message_link(self, feedback):
        url = reverse("admin:proxy_message_change", args=[feedback.message_id])
        return format_html('<a href="{}">{}</a>', url, feedback.message.request_id.hex[:12])

    @admin.display(description="rating")
    def shown_rating(self, feedback):
        return feedback.describe()

    @admin.display(description="comment")
    def comment_excerpt(self, feedback):
        text = " ".join(feedback.comment.split())
        return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


class ConversationMessages(admin.TabularInline):
    """A conversation's turns in order, read-only, each linking to its message."""

    model = Message
    fields = ("timestamp", "model", "status", "input_tokens", "output_tokens", "latency", "turn")
    readonly_fields = fields
    ordering = ("timestamp", "id")
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).defer(*WIDE_FIELDS)

    @admin.display(description="continues")
    def turn(self, message):
        return f"{message.history_turns} turns" if message.history_turns else "—"

    @admin.display(description="latency")
    def latency(self, message):
        return _seconds(message.latency_seconds)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Chats grouped by the history they continue (proxy.conversations); read-only."""

    date_hierarchy = "last_at"
    list_display = (
        "last_at",
        "started_at",
        "user",
        "model",
        "turns",
        "errors",
        "tokens",
        "cost",
        "external_id",
        "thread",
    )
    list_filter = (ModelFilter, UserFilter)
    search_fields = ("=external_id", "=user")
    ordering = ("-last_at", "-id")
    sortable_by = ("last_at", "turns")
    show_full_result_count = False
    paginator = BoundedCountPaginator
    readonly_fields = ("external_id", "user", *conversations.TOTALS, "thread")
    fields = readonly_fields
    inlines = (ConversationMessages,)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="tokens in → out")
    def tokens(self, conversation):
        return f"{_number(conversation.input_tokens)} → {_number(conversation.output_tokens)}"

    @admin.display(description="cost")
    def cost(self, conversation):
        return f"${conversation.cost_usd:.4f}"

    @admin.display(description="thread")
    def thread(self, conversation):
        return format_html(
            '<a href="/dashboard/conversations/{}/">on the dashboard</a>', conversation.pk
        )
