"""What the proxy records: one Message per request to a model route, and what the writer keeps
beside it: rollups for the dashboards, the price table and the category rules."""

import hashlib
import math
import re
import secrets
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import connections, models
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

from .ids import uuid7
from .sealed import SealedCharField

# Search covers at most this many characters of a prompt and of a response: the head and the
# tail when longer (a chat's newest turn is at the end). The bound keeps PostgreSQL's tsvector
# under its 1 MB limit whatever the text; without it one odd message would fail a whole batch.
# The migration that builds the search index (0003) uses the same numbers on both databases.
SEARCH_HEAD_CHARS = 25_000
SEARCH_TAIL_CHARS = 25_000

# What a word is, for search: letters and digits, as FTS5's unicode61 tokenizer and PostgreSQL's
# parser (after the migration's non-alphanumeric to space rewrite) both see it.
SEARCH_WORD = re.compile(r"[^\W_]+")

# Histogram bounds (seconds) of the rollups' latency and time-to-first-token buckets, the last
# bucket open-ended. Fixed for good: rollup rows store counts per bucket position. Steps of at
# most x1.5 above 0.1 s bound a percentile's relative error by the bucket's width.
HISTOGRAM_BOUNDS = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5,
    2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
HISTOGRAM_SIZE = len(HISTOGRAM_BOUNDS) + 1
LATENCY_BUCKETS = tuple(f"latency_bucket_{index:02d}" for index in range(HISTOGRAM_SIZE))
TTFT_BUCKETS = tuple(f"ttft_bucket_{index:02d}" for index in range(HISTOGRAM_SIZE))

# The sums a rollup row keeps, in the order of its columns; the same names are computed from
# messages when a filter forces a scan, so both sources merge into one summary.
ROLLUP_SUMS = (
    "messages",
    "input_tokens",
    "input_token_messages",
    "output_tokens",
    "output_token_messages",
    "cost_usd",
    "latency_seconds",
    "ttft_messages",
    "ttft_seconds",
    "generated_tokens",
    "generation_seconds",
    *LATENCY_BUCKETS,
    *TTFT_BUCKETS,
)
USER_ROLLUP_SUMS = ("messages", "input_tokens", "output_tokens", "cost_usd")


def search_words(text: str) -> list[str]:
    """The words a search looks for, lowercased: every one must be in a message."""
    return [word.lower() for word in SEARCH_WORD.findall(text)]


def json_time(moment: datetime) -> str:
    """A time as the API writes it: ISO 8601 in UTC with a Z, e.g. 2026-03-02T12:00:00.5Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def histogram_index(seconds: float) -> int:
    """The position of the rollup bucket that holds a duration."""
    for index, bound in enumerate(HISTOGRAM_BOUNDS):
        if seconds <= bound:
            return index
    return len(HISTOGRAM_BOUNDS)


class JsonTime(models.Func):
    """A datetime column as the API writes times (`json_time`), formatted by the database."""

    output_field = models.TextField()

    def as_sqlite(self, compiler, connection, **extra):
        # Stored as "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC.
        return self.as_sql(
            compiler, connection, template="(replace(%(expressions)s, ' ', 'T') || 'Z')"
        )

    def as_postgresql(self, compiler, connection, **extra):
        template = (
            "(replace(to_char(%(expressions)s AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.US'), '.000000', '') || 'Z')"
        )
        return self.as_sql(compiler, connection, template=template)


class JsonId(models.Func):
    """A UUID column as 32 hex digits (as in X-Request-Id), formatted by the database."""

    output_field = models.TextField()

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="%(expressions)s")  # stored so

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, template="replace(CAST(%(expressions)s AS text), '-', '')"
        )


class MessageQuerySet(models.QuerySet):
    def for_model(self, model: str):
        return self.filter(model=model)

    def with_status(self, status: str):
        return self.filter(status=status)

    def search(self, text: str, *, whole: bool = False):
        """Messages whose prompt or response holds every word of `text` (any order, any case).

        Through the database's own full-text index: PostgreSQL's `search_vector` (tsvector,
        GIN) or SQLite's FTS5 table `proxy_message_fts`, both built by migration 0003.
        `whole`: the caller reads every match (an aggregation), not a newest-first page.
        """
        words = search_words(text)
        if not words:
            return self
        if connections[self.db].vendor == "postgresql":
            condition = RawSQL(
                "proxy_message.search_vector @@ plainto_tsquery('simple', %s)",
                [" ".join(words)],
                output_field=BooleanField(),
            )
            return self.filter(condition)
        # Quoted, so a word is always a word and never an FTS5 operator; juxtaposed is AND.
        match = " ".join(f'"{word}"' for word in words)
        if whole or self._sqlite_matches_are_few(match):
            # Read the matches, then their messages: cost grows with the matches.
            sql = (
                "proxy_message.id IN (SELECT rowid FROM proxy_message_fts "
                "WHERE proxy_message_fts MATCH %s)"
            )
        else:
            # Walk the newest-first order and check each message: cost grows with the rows
            # walked until a page is full, few when the words are common.
            sql = (
                "EXISTS (SELECT 1 FROM proxy_message_fts WHERE proxy_message_fts MATCH %s "
                "AND proxy_message_fts.rowid = proxy_message.id)"
            )
        return self.filter(RawSQL(sql, [match], output_field=BooleanField()))

    def _sqlite_matches_are_few(self, match: str) -> bool:
        """Whether reading every match beats checking rows in list order (SQLite has no
        statistics to choose). Measured at 1M messages: ~6 us per match read, ~13 us per row
        checked, and a page of 50 checks about 50 / (matches / rows) rows; the two cost the
        same at about 12 x sqrt(rows) matches (bench/analytics.py)."""
        with connections[self.db].cursor() as cursor:
            cursor.execute("SELECT max(id) FROM proxy_message")
            rows = cursor.fetchone()[0] or 0
            few = max(1000, int(12 * math.sqrt(rows)))
            cursor.execute(
                "SELECT count(*) FROM (SELECT 1 FROM proxy_message_fts "
                "WHERE proxy_message_fts MATCH %s LIMIT %s)",
                [match, few],
            )
            return cursor.fetchone()[0] < few

    def between(self, start: datetime | None = None, end: datetime | None = None):
        """Messages from `start` to `end`, both included; either may be open."""
        queryset = self
        if start is not None:
            queryset = queryset.filter(timestamp__gte=start)
        if end is not None:
            queryset = queryset.filter(timestamp__lte=end)
        return queryset

    def in_range(self, field: str, low=None, high=None):
        """Messages whose `field` is within [low, high]; either bound may be open."""
        queryset = self
        if low is not None:
            queryset = queryset.filter(**{f"{field}__gte": low})
        if high is not None:
            queryset = queryset.filter(**{f"{field}__lte": high})
        return queryset

    def in_batches(self, *fields: str, size: int):
        """Lists of up to `size` rows (`id` and `fields`), walked by id: no cursor stays open
        between two lists, so the caller may write (update, rebuild) in between."""
        names = tuple(dict.fromkeys(("id", *fields)))
        ordered = self.order_by("id")
        after = 0
        while rows := list(ordered.filter(id__gt=after).values(*names)[:size]):
            yield rows
            after = rows[-1]["id"]

    def newest_first(self):
        """The order of every list and export; served by `message_recent_idx`."""
        return self.order_by("-timestamp", "-id")

    def older_than(self, timestamp: datetime, pk: int):
        """The keyset step of a newest-first list: rows after (timestamp, pk) in that order."""
        return self.filter(Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=pk)).filter(
            timestamp__lte=timestamp
        )

    def json_page(self, limit: int, *, content: bool, offset: int = 0):
        """Up to `limit` messages newest first, in the API's JSON shape (`Message.JSON_FIELDS`).

        Returns the rows and the keyset (timestamp, pk) to continue after them, None at the end.
        Without `content`, the fields that may hold prompt or response text are None (and are
        not read). The database formats ids and times, and values skip Django's per-value
        converters and model instances: a page takes a third of the time that way (measured
        with bench/analytics.py), which is what bounds an export's rows per second.
        """
        hidden = () if content else Message.CONTENT_FIELDS
        columns = ["id" if name in hidden else column for name, column in Message.JSON_COLUMNS]
        columns[:2] = ["json_id", "json_timestamp"]
        page = (
            self.newest_first()
            .annotate(json_id=JsonId("request_id"), json_timestamp=JsonTime("timestamp"))
            .values_list(*columns, "id")[offset : offset + limit + 1]
        )
        connection = connections[self.db]
        try:
            sql, params = page.query.get_compiler(self.db).as_sql()
        except EmptyResultSet:
            return [], None
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            fetched = cursor.fetchall()
        following = None
        if len(fetched) > limit:
            fetched = fetched[:limit]
            following = datetime.fromisoformat(fetched[-1][1]), fetched[-1][-1]
        names = Message.JSON_FIELDS
        sqlite = connection.vendor == "sqlite"
        rows = []
        for values in fetched:
            row = dict(zip(names, values, strict=False))
            if sqlite:
                row["stream"] = bool(row["stream"])  # stored as 0/1
            for name in hidden:
                row[name] = None
            rows.append(row)
        return rows, following


class Message(models.Model):
    """One exchange with a model, as the proxy saw it.

    Times are measured at the proxy (`latency_seconds`, `ttft_seconds`); Ollama's own durations
    come from its final `done:true` object and are kept beside them.
    """

    class Status(models.TextChoices):
        SUCCESS = "success"
        ERROR = "error"
        CANCELLED = "cancelled"

    # Time-ordered (proxy/ids.py): inserts go to the unique index's right edge.
    request_id = models.UUIDField(default=uuid7, unique=True, editable=False)
    timestamp = models.DateTimeField()
    endpoint = models.CharField(max_length=64)
    method = models.CharField(max_length=8, default="POST")
    model = models.CharField(max_length=255, blank=True)
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status)
    http_status = models.PositiveSmallIntegerField(null=True)

    user = models.CharField(max_length=255, blank=True)
    client_ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)

    prompt = models.TextField(blank=True)
    messages = models.JSONField(null=True, blank=True)
    options = models.JSONField(null=True, blank=True)
    response = models.TextField(blank=True)
    thinking = models.TextField(blank=True)
    tool_calls = models.JSONField(null=True, blank=True)
    truncated = models.BooleanField(default=False)
    done_reason = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)

    input_tokens = models.PositiveIntegerField(null=True)
    output_tokens = models.PositiveIntegerField(null=True)
    latency_seconds = models.FloatField()
    ttft_seconds = models.FloatField(null=True)
    tokens_per_second = models.FloatField(null=True)
    total_duration_seconds = models.FloatField(null=True)
    load_duration_seconds = models.FloatField(null=True)
    prompt_eval_duration_seconds = models.FloatField(null=True)
    eval_duration_seconds = models.FloatField(null=True)

    # Set by the writer from the price table and the category rules (proxy.costs, categories).
    cost_usd = models.FloatField(null=True)
    category = models.CharField(max_length=64, blank=True)
    # Which upstream answered (proxy.backends): its name, empty when none was reached.
    backend = models.CharField(max_length=64, blank=True)

    # A chat continues a conversation (proxy.conversations): `messages` and `prompt` hold only
    # the turns that are new in this request; the first `history_turns` turns of its history
    # are those of the message `previous_request_id` (its history, then its reply).
    conversation = models.ForeignKey(
        "Conversation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,  # message_conversation_idx
        db_constraint=False,  # a pruned or restored message never fails a batch
    )
    previous_request_id = models.UUIDField(null=True, blank=True)
    # Null with the reference; nullable also so that adding the column leaves SQLite's table
    # (and its search triggers) in place.
    history_turns = models.PositiveIntegerField(null=True, blank=True)
    # Keyed hashes of the history sent and of that history with the reply (chats only), looked
    # up by the next turn of the conversation.
    request_hash = models.BigIntegerField(null=True, blank=True)
    history_hash = models.BigIntegerField(null=True, blank=True)
    # Set while a continued chat's history is not found: the hash its history's message has.
    parent_hash = models.BigIntegerField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        permissions = [
            ("view_message_content", "Can view message prompts, responses and errors"),
        ]
        indexes = [
            # The newest-first list every page and the admin changelist open with.
            models.Index(fields=["-timestamp", "-id"], name="message_recent_idx"),
            # Filtering one model's messages over a time range.
            models.Index(fields=["model", "-timestamp"], name="message_model_time_idx"),
            # Filtering one user's messages over a time range.
            models.Index(fields=["user", "-timestamp"], name="message_user_time_idx"),
            # The newest errors (or cancellations): rare statuses, which the recent index would
            # find only by walking past every success.
            models.Index(fields=["status", "-timestamp"], name="message_status_time_idx"),
            # One category's messages over a time range (and `recategorize` by category).
            models.Index(fields=["category", "-timestamp"], name="message_category_time_idx"),
            # A conversation's turns in order (the thread view, its totals).
            models.Index(fields=["conversation", "timestamp"], name="message_conversation_idx"),
            # The writer's lookup of the history a chat continues (proxy.conversations).
            models.Index(
                fields=["request_hash"],
                name="message_request_hash_idx",
                condition=Q(request_hash__isnull=False),
            ),
            models.Index(
                fields=["history_hash"],
                name="message_history_hash_idx",
                condition=Q(history_hash__isnull=False),
            ),
            # Turns whose history is not found yet, looked up when that history is written.
            models.Index(
                fields=["parent_hash"],
                name="message_parent_hash_idx",
                condition=Q(parent_hash__isnull=False),
            ),
            # The turns that continue a message the retention prunes (they keep its history).
            models.Index(
                fields=["previous_request_id"],
                name="message_previous_idx",
                condition=Q(previous_request_id__isnull=False),
            ),
        ]

    # The API's JSON names (DESIGN.md §2) and the columns they come from, in output order.
    # One shape for the analytics API, the export and the live feed.
    JSON_COLUMNS = (
        ("id", "request_id"),
        ("timestamp", "timestamp"),
        ("endpoint", "endpoint"),
        ("model", "model"),
        ("status", "status"),
        ("http_status", "http_status"),
        ("user", "user"),
        ("client_ip", "client_ip"),
        ("prompt", "prompt"),
        ("response", "response"),
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("latency", "latency_seconds"),
        ("ttft", "ttft_seconds"),
        ("tokens_per_second", "tokens_per_second"),
        ("cost", "cost_usd"),
        ("category", "category"),
        ("error", "error"),
        ("stream", "stream"),
        ("backend", "backend"),
    )
    JSON_FIELDS = tuple(name for name, _ in JSON_COLUMNS)
    # Fields that can hold what a user wrote or a model answered: shown only with the
    # `proxy.view_message_content` permission. An upstream error can quote the request.
    CONTENT_FIELDS = ("prompt", "response", "error")

    def __str__(self):
        when = f"{self.timestamp:%Y-%m-%d %H:%M:%S}"
        return f"{self.endpoint} {self.model or '?'} {self.status} at {when}"

    @classmethod
    def status_for(cls, *, cancelled: bool, http_status: int | None, error: str) -> str:
        """What happened: cancelled by the client, failed anywhere, or answered in full."""
        if cancelled:
            return cls.Status.CANCELLED
        if error or http_status is None or http_status >= 400:
            return cls.Status.ERROR
        return cls.Status.SUCCESS

    def as_json(self, *, content: bool) -> dict:
        """This message in the API's JSON shape; see `MessageQuerySet.json_rows`."""
        row = {name: getattr(self, column) for name, column in self.JSON_COLUMNS}
        row["id"] = self.request_id.hex
        row["timestamp"] = json_time(self.timestamp)
        if not content:
            for name in self.CONTENT_FIELDS:
                row[name] = None
        return row


class Conversation(models.Model):
    """Chat messages that continue one history, or that a client named by a conversation id
    header (proxy.conversations); with their running totals, kept by the writer."""

    external_id = models.CharField(
        max_length=255, blank=True, help_text="The id the client sent, if it sent one."
    )
    user = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True, help_text="The model of the last turn.")
    started_at = models.DateTimeField()
    last_at = models.DateTimeField()
    turns = models.PositiveIntegerField(default=0, help_text="Messages in the conversation.")
    errors = models.PositiveIntegerField(default=0, help_text="Of them, not successful.")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    latency_seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-last_at", "-id"]
        constraints = [
            # A client's own conversation ids are its own: another user's "1" is another one.
            models.UniqueConstraint(
                fields=["user", "external_id"],
                condition=~Q(external_id=""),
                name="conversation_external_id",
            ),
        ]
        indexes = [
            # The list, latest activity first.
            models.Index(fields=["-last_at", "-id"], name="conversation_recent_idx"),
        ]

    def __str__(self):
        return f"{self.user or '?'} {self.model or '?'} {self.turns} turns"

    def as_json(self) -> dict:
        """The analytics API's shape of a conversation (no text: it needs no content right)."""
        return {
            "id": self.pk,
            "external_id": self.external_id,
            "user": self.user,
            "model": self.model,
            "started_at": json_time(self.started_at),
            "last_at": json_time(self.last_at),
            "turns": self.turns,
            "errors": self.errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost_usd,
            "latency": self.latency_seconds,
        }


class RollupQuerySet(models.QuerySet):
    def values_seen(self, column: str, most: int = 100) -> list[str]:
        """The distinct non-empty values of `column` (model, user, ...) in the day rows, in
        order, at most `most`: the choices of a filter, without a DISTINCT over messages."""
        return list(
            self.filter(bucket_seconds=86400)
            .exclude(**{column: ""})
            .order_by(column)
            .values_list(column, flat=True)
            .distinct()[:most]
        )

    def time_span(self):
        """First and last bucket start (epoch seconds) recorded, or (None, None).

        Two queries: SQLite reads MIN or MAX alone from an index end, both at once by a scan.
        """
        starts = self.order_by().values_list("bucket_start", flat=True)
        return starts.order_by("bucket_start").first(), starts.order_by("-bucket_start").first()


def _counter(**options):
    return models.BigIntegerField(default=0, **options)


class MessageRollup(models.Model):
    """Sums of the messages of one time bucket, model, status, category, endpoint.

    Kept by the writer in the transaction that inserts the messages, at three resolutions
    (minute, hour, day) so an aggregation reads a few hundred rows whatever the range. Times
    are epoch seconds (UTC), so bucketing is integer arithmetic on both databases. The
    latency and time-to-first-token histograms count messages per `HISTOGRAM_BOUNDS` bucket.
    """

    RESOLUTIONS = (60, 3600, 86400)

    bucket_seconds = models.PositiveIntegerField()
    bucket_start = models.BigIntegerField()
    model = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16)
    category = models.CharField(max_length=64, blank=True)
    endpoint = models.CharField(max_length=64)

    messages = _counter()
    input_tokens = _counter()
    input_token_messages = _counter()
    output_tokens = _counter()
    output_token_messages = _counter()
    cost_usd = models.FloatField(default=0.0)
    latency_seconds = models.FloatField(default=0.0)
    ttft_messages = _counter()
    ttft_seconds = models.FloatField(default=0.0)
    # Output tokens and generation time of the messages with a rate: tokens per second
    # weighted by tokens, not an average of averages.
    generated_tokens = _counter()
    generation_seconds = models.FloatField(default=0.0)

    objects = RollupQuerySet.as_manager()

    class Meta:
        constraints = [
            # The writer's upsert target, and the (resolution, time range) scan of every read.
            models.UniqueConstraint(
                fields=[
                    "bucket_seconds",
                    "bucket_start",
                    "model",
                    "status",
                    "category",
                    "endpoint",
                ],
                name="message_rollup_key",
            ),
        ]
        indexes = [
            # The `messages_by_time` series, read from this index alone (no wide rows): a 1h
            # series over 30 days went from 158 to 47 ms at 1M messages on SQLite.
            models.Index(
                fields=[
                    "bucket_seconds",
                    "bucket_start",
                    "status",
                    "model",
                    "category",
                    "endpoint",
                    "messages",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                ],
                name="message_rollup_series_idx",
            ),
        ]

    def __str__(self):
        return f"{self.bucket_seconds}s at {self.bucket_start} {self.model} {self.status}"


for _name in LATENCY_BUCKETS + TTFT_BUCKETS:
    MessageRollup.add_to_class(_name, _counter())


class BucketTotals(models.Model):
    """A time bucket's message count, token sums and cost: what every narrow rollup keeps
    (`UserRollup`, `SeriesRollup`, `UserTotalRollup`), each under its own key."""

    bucket_seconds = models.PositiveIntegerField()
    bucket_start = models.BigIntegerField()
    messages = _counter()
    input_tokens = _counter()
    output_tokens = _counter()
    cost_usd = models.FloatField(default=0.0)

    objects = RollupQuerySet.as_manager()

    class Meta:
        abstract = True


class UserRollup(BucketTotals):
    """Sums of the messages of one user, model and status per hour and per day (unique and
    top users).

    No minute resolution: a user rollup row per minute would be nearly a row per message. The
    minutes at the edges of a range come from the messages themselves.
    """

    RESOLUTIONS = (3600, 86400)

    user = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, default="")

    class Meta:
        constraints = [
            # The writer's upsert target, and the (resolution, time range) scan of every read.
            models.UniqueConstraint(
                fields=["bucket_seconds", "bucket_start", "user", "model", "status"],
                name="user_rollup_key",
            ),
        ]
        indexes = [
            # Unique and top users, grouped by user from this index alone (no table rows):
            # 56 to 13 ms over 30 days at 1M messages on SQLite.
            models.Index(
                fields=[
                    "bucket_seconds",
                    "user",
                    "bucket_start",
                    "model",
                    "status",
                    "messages",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                ],
                name="user_rollup_users_idx",
            ),
            # The same over a bounded range (whole days or hours of a range), read from this
            # index alone: 75 to 22 ms for 6 days at 1M messages on SQLite.
            models.Index(
                fields=[
                    "bucket_seconds",
                    "bucket_start",
                    "user",
                    "model",
                    "status",
                    "messages",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                ],
                name="user_rollup_range_idx",
            ),
        ]

    def __str__(self):
        return f"{self.user} {self.model} {self.bucket_seconds}s at {self.bucket_start}"


class SeriesRollup(BucketTotals):
    """Sums of the messages of one time bucket and status: the `messages_by_time` series of a
    filter that names no model, category or endpoint (DESIGN.md §4).

    The series needs only time and status (errors are a status): 30 days of hours are ~2k
    rows here against ~78k rows of `MessageRollup` at 1M messages. Kept by the writer beside
    it, at the same resolutions, with the sums the series shows.
    """

    RESOLUTIONS = MessageRollup.RESOLUTIONS

    status = models.CharField(max_length=16)

    class Meta:
        constraints = [
            # The writer's upsert target, and the (resolution, time range) scan of every read.
            models.UniqueConstraint(
                fields=["bucket_seconds", "bucket_start", "status"], name="series_rollup_key"
            ),
        ]

    def __str__(self):
        return f"{self.status} {self.bucket_seconds}s at {self.bucket_start}"


class UserTotalRollup(BucketTotals):
    """Sums of the messages of one user per hour and per day, over every model and status:
    unique and top users of a filter that names none of them (~15k day rows for 30 days at
    1M messages against ~100k of `UserRollup`)."""

    RESOLUTIONS = UserRollup.RESOLUTIONS

    user = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            # The writer's upsert target, and the (resolution, time range) scan of every read.
            models.UniqueConstraint(
                fields=["bucket_seconds", "bucket_start", "user"], name="user_total_rollup_key"
            ),
        ]

    def __str__(self):
        return f"{self.user} {self.bucket_seconds}s at {self.bucket_start}"


class ModelPrice(models.Model):
    """What a model's messages cost: per million tokens (hosted models) and/or per second of
    compute (local GPUs, where tokens cost time and power). The first enabled price whose
    pattern matches the model applies, by priority, then the longer pattern."""

    model_pattern = models.CharField(
        max_length=255,
        help_text="Glob on the model name, e.g. `llama3.2*`, `gpt-4o*` or `*` for every model.",
    )
    input_usd_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="USD per million input tokens."
    )
    output_usd_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="USD per million output tokens."
    )
    usd_per_second = models.DecimalField(
        max_digits=12,
        decimal_places=8,
        default=0,
        help_text="USD per second of compute: Ollama's total duration, else the latency.",
    )
    backend = models.CharField(
        max_length=64,
        blank=True,
        help_text="Only for messages this backend served (its name, as on messages); "
        "empty for any backend. A price naming the backend wins over one that does not.",
    )
    priority = models.IntegerField(default=100, help_text="Lower is tried first.")
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["priority", "model_pattern"]

    def __str__(self):
        return self.model_pattern


class CategoryRule(models.Model):
    """A rule that puts a message in a category; the first enabled match by priority wins.

    Keywords match whole words, case-insensitively; a regex with a named group
    `(?P<category>…)` takes the category from the matched text (e.g. an `X-Category` header).
    """

    class Field(models.TextChoices):
        PROMPT = "prompt"
        MODEL = "model"
        ENDPOINT = "endpoint"
        USER = "user"
        HEADER = "header"

    class Match(models.TextChoices):
        KEYWORDS = "keywords", "any of these comma-separated keywords"
        REGEX = "regex", "regular expression (search, case-insensitive)"

    # Never read by a rule: they carry credentials, which must not decide anything visible.
    SECRET_HEADERS = frozenset(
        {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
    )

    category = models.CharField(
        max_length=64,
        blank=True,
        help_text="The category to set; empty when the regex names it with (?P<category>…).",
    )
    field = models.CharField(max_length=16, choices=Field, default=Field.PROMPT)
    header = models.CharField(
        max_length=64, blank=True, help_text="The request header to read, e.g. X-Category."
    )
    match = models.CharField(max_length=16, choices=Match, default=Match.KEYWORDS)
    pattern = models.TextField()
    priority = models.IntegerField(default=100, help_text="Lower is tried first.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self):
        target = f"header {self.header}" if self.field == self.Field.HEADER else self.field
        return f"{self.category or '(from match)'} if {target} {self.match} {self.pattern[:40]}"

    def clean(self):
        if self.field == self.Field.HEADER:
            if not self.header:
                raise ValidationError({"header": "Name the header this rule reads."})
            if self.header.lower() in self.SECRET_HEADERS:
                raise ValidationError({"header": "Credential headers cannot decide a category."})
        try:
            compiled = self.compiled()
        except re.error as error:
            raise ValidationError({"pattern": f"Not a valid regular expression: {error}"}) from None
        if compiled is None:
            raise ValidationError({"pattern": "Give at least one keyword."})
        if not self.category and "category" not in compiled.groupindex:
            raise ValidationError(
                {"category": "Give a category, or a regex with a (?P<category>…) group."}
            )

    def compiled(self) -> re.Pattern | None:
        """The pattern as one case-insensitive regex; None for an empty keyword list."""
        if self.match == self.Match.REGEX:
            return re.compile(self.pattern, re.IGNORECASE)
        keywords = [word.strip() for word in self.pattern.split(",") if word.strip()]
        if not keywords:
            return None
        alternatives = "|".join(re.escape(word) for word in keywords)
        return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class ProxyKey(models.Model):
    """A key for the proxy routes (`Authorization: Bearer omp_…`), belonging to a user.

    A valid key attributes its requests to its owner; with `PROXY_REQUIRE_KEY` nothing passes
    without one. Only the SHA-256 of the key is kept (it is 256 random bits, so a fast hash
    suffices) and the key is shown once, when issued; the prefix tells keys apart. Workers
    read the keys every few seconds (proxy.keys), never per request.
    """

    SCHEME = "omp_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="proxy_keys"
    )
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. Open WebUI.")
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_admin = models.BooleanField(
        default=False,
        help_text="May use the model management routes (pull, push, create, copy, delete, "
        "blobs) when PROXY_ALLOW_MANAGEMENT is admin-keys.",
    )
    revoked = models.BooleanField(default=False, help_text="A revoked key opens nothing.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        verbose_name = "proxy key"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def issue(cls, user, name: str, *, is_admin: bool = False) -> tuple["ProxyKey", str]:
        """A new key for `user`: the saved row and the key itself (not kept anywhere)."""
        key = cls(user=user, name=name, is_admin=is_admin)
        secret = key.new_secret()
        key.save()
        return key, secret

    def new_secret(self) -> str:
        """Give this (unsaved) key a fresh secret; returns it, the only time it is seen."""
        secret = self.SCHEME + secrets.token_urlsafe(32)
        self.prefix = secret[:12]
        self.key_hash = key_digest(secret)
        return secret


def key_digest(secret: str) -> str:
    """What is stored of a proxy key."""
    return hashlib.sha256(secret.encode("latin-1", "replace")).hexdigest()


class MaskingRule(models.Model):
    """An admin-defined pattern masked in recorded text, besides the built-in PII kinds
    (`PII_MASK`). A match is replaced by `[name]`. Applies to messages written from now on;
    `manage.py remask_messages` applies the rules to the stored ones."""

    NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")

    name = models.CharField(
        max_length=32,
        unique=True,
        help_text="Lowercase letters, digits, - and _; a match becomes [name].",
    )
    pattern = models.TextField(help_text="A Python regular expression, e.g. \\bEMP-\\d{6}\\b.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        if not self.NAME.fullmatch(self.name or ""):
            raise ValidationError({"name": "Use lowercase letters, digits, - and _."})
        try:
            compiled = re.compile(self.pattern)
        except re.error as error:
            raise ValidationError({"pattern": f"Not a valid regular expression: {error}"}) from None
        if compiled.search("") is not None:
            raise ValidationError(
                {
                    "pattern": "The pattern matches empty text: it would mask "
                    "between every character."
                }
            )


class Backend(models.Model):
    """An upstream besides `OLLAMA_URL`'s: another Ollama, or a hosted OpenAI-compatible API.

    The proxy routes each request by its model to a healthy backend that serves it
    (proxy.backends). The API key is sent to the hosted API only: the admin never shows it, and
    it never reaches a message, a log line, an error or a metric. The health fields are written
    by the proxy's background checks.
    """

    class Kind(models.TextChoices):
        OLLAMA = "ollama", "Ollama"
        OPENAI = "openai", "OpenAI-compatible API"

    NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")

    name = models.CharField(
        max_length=64,
        unique=True,
        help_text="Lowercase letters, digits, ., - and _; names the backend on messages, "
        "prices and metrics.",
    )
    kind = models.CharField(max_length=16, choices=Kind, default=Kind.OLLAMA)
    url = models.URLField(
        max_length=500,
        help_text="Ollama: its address, e.g. http://gpu-2:11434. OpenAI-compatible: the base "
        "URL the /v1 paths hang off, e.g. https://api.openai.com/v1.",
    )
    # Stored encrypted (proxy/sealed.py); the admin takes at most 500 characters of key.
    api_key = SealedCharField(
        max_length=1000, blank=True, help_text="Sent as Authorization: Bearer to an API."
    )
    model_names = models.TextField(
        blank=True,
        help_text="Models it serves, one per line or comma-separated; * is a wildcard "
        "(gpt-4o*). Empty: what its /api/tags or /v1/models lists.",
    )
    priority = models.IntegerField(
        default=100, help_text="Lower is tried first; equal priorities share the load."
    )
    weight = models.PositiveSmallIntegerField(
        default=1, help_text="Share of the load among backends of equal priority."
    )
    enabled = models.BooleanField(default=True)

    healthy = models.BooleanField(null=True, editable=False)
    checked_at = models.DateTimeField(null=True, editable=False)
    health_error = models.CharField(max_length=255, blank=True, editable=False)
    discovered_models = models.JSONField(default=list, blank=True, editable=False)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        if not self.NAME.fullmatch(self.name or ""):
            raise ValidationError({"name": "Use lowercase letters, digits, ., - and _."})
        if self.weight is not None and self.weight < 1:
            raise ValidationError({"weight": "At least 1."})

    def model_patterns(self) -> list[str]:
        return [name.strip() for name in re.split(r"[,\n]", self.model_names) if name.strip()]
