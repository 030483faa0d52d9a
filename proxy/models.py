"""What the proxy records: one Message per request to a model route, and what the writer keeps
beside it: rollups for the dashboards, the price table and the category rules."""

import hashlib
import math
import re
import secrets
import uuid
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import connections, models
from django.db.models import BooleanField, Count, F, FloatField, Q, Sum
from django.db.models.expressions import RawSQL

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


def _bucket_counts(field: str) -> dict:
    counts = {}
    names = LATENCY_BUCKETS if field == "latency_seconds" else TTFT_BUCKETS
    lower = None
    for name, upper in zip(names, (*HISTOGRAM_BOUNDS, None), strict=True):
        within = Q()
        if lower is not None:
            within &= Q(**{f"{field}__gt": lower})
        if upper is not None:
            within &= Q(**{f"{field}__lte": upper})
        counts[name] = Count("id", filter=within & Q(**{f"{field}__isnull": False}))
        lower = upper
    return counts


def _sums(grouped) -> list[dict]:
    """Grouped sums as dicts named like the columns they sum (a `sum_` alias cannot clash with
    a column of the same name while the query is built)."""
    rows = list(grouped.order_by())
    if not rows:
        return rows
    names = [name.removeprefix("sum_") for name in rows[0]]
    return [dict(zip(names, row.values(), strict=True)) for row in rows]


class EpochSeconds(models.Func):
    """Whole seconds since 1970 (UTC) of a datetime column, on either database."""

    output_field = models.BigIntegerField()

    def as_sqlite(self, compiler, connection, **extra):
        # %%%% survives both the template's and the query parameters' % formatting.
        return self.as_sql(
            compiler, connection, template="CAST(strftime('%%%%s', %(expressions)s) AS INTEGER)"
        )

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(
            compiler,
            connection,
            template="CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)",
        )


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


def time_bucket(epoch_seconds, interval: int, offset: int = 0):
    """An epoch-seconds expression floored to `interval` seconds, counted from `offset`."""
    expression = epoch_seconds - (epoch_seconds - offset) % interval
    return models.ExpressionWrapper(expression, output_field=models.BigIntegerField())


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

    def newest_first(self):
        """The order of every list and export; served by `message_recent_idx`."""
        return self.order_by("-timestamp", "-id")

    def older_than(self, timestamp: datetime, pk: int):
        """The keyset step of a newest-first list: rows after (timestamp, pk) in that order."""
        return self.filter(Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=pk)).filter(
            timestamp__lte=timestamp
        )

    def summarise(self, *group_by: str, sums=ROLLUP_SUMS, **expressions):
        """The rollup sums (`ROLLUP_SUMS`, or those named in `sums`) of these messages, per group.

        The message-scan twin of `MessageRollup.objects.summarise`: used where a filter has no
        rollup dimension (search, user, token or latency ranges) and for the seconds at the
        edges of a time range that whole rollup buckets cannot cover.
        """
        with_rate = Q(tokens_per_second__gt=0, output_tokens__isnull=False)
        measures = {
            "messages": Count("id"),
            "input_tokens": Sum("input_tokens"),
            "input_token_messages": Count("input_tokens"),
            "output_tokens": Sum("output_tokens"),
            "output_token_messages": Count("output_tokens"),
            "cost_usd": Sum("cost_usd"),
            "latency_seconds": Sum("latency_seconds"),
            "ttft_messages": Count("ttft_seconds"),
            "ttft_seconds": Sum("ttft_seconds"),
            "generated_tokens": Sum("output_tokens", filter=with_rate),
            "generation_seconds": Sum(
                F("output_tokens") * 1.0 / F("tokens_per_second"),
                filter=with_rate,
                output_field=FloatField(),
            ),
            **_bucket_counts("latency_seconds"),
            **_bucket_counts("ttft_seconds"),
        }
        chosen = {f"sum_{name}": measures[name] for name in sums}
        return _sums(self.annotate(**expressions).values(*group_by).annotate(**chosen))

    def summarise_users(self, *group_by: str):
        """Per-user sums (`USER_ROLLUP_SUMS`), the message-scan twin of `UserRollup`."""
        return _sums(
            self.values(*group_by).annotate(
                sum_messages=Count("id"),
                sum_input_tokens=Sum("input_tokens"),
                sum_output_tokens=Sum("output_tokens"),
                sum_cost_usd=Sum("cost_usd"),
            )
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

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
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


class RollupQuerySet(models.QuerySet):
    def covering(self, spans):
        """Rows of the given (bucket_seconds, start, end) spans; start/end are epoch seconds,
        end excluded, None for open. Served by the unique key's (bucket_seconds, bucket_start)."""
        condition = Q(pk__in=[])
        for seconds, start, end in spans:
            span = Q(bucket_seconds=seconds)
            if start is not None:
                span &= Q(bucket_start__gte=start)
            if end is not None:
                span &= Q(bucket_start__lt=end)
            condition |= span
        return self.filter(condition)

    def summarise(self, *group_by: str, sums=None, **expressions):
        """Sums of the counter columns (all, or those named in `sums`) per group; see
        `MessageQuerySet.summarise`."""
        if sums is None:
            sums = ROLLUP_SUMS if self.model is MessageRollup else USER_ROLLUP_SUMS
        totals = {f"sum_{name}": Sum(name) for name in sums}
        return _sums(self.annotate(**expressions).values(*group_by).annotate(**totals))

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


class UserRollup(models.Model):
    """Sums of the messages of one user, model and status per hour and per day (unique and
    top users).

    No minute resolution: a user rollup row per minute would be nearly a row per message. The
    minutes at the edges of a range come from the messages themselves.
    """

    RESOLUTIONS = (3600, 86400)

    bucket_seconds = models.PositiveIntegerField()
    bucket_start = models.BigIntegerField()
    user = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, default="")
    messages = _counter()
    input_tokens = _counter()
    output_tokens = _counter()
    cost_usd = models.FloatField(default=0.0)

    objects = RollupQuerySet.as_manager()

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
        ]

    def __str__(self):
        return f"{self.user} {self.model} {self.bucket_seconds}s at {self.bucket_start}"


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
