"""What the proxy records: one Message per request to a model route."""

import uuid

from django.db import models


class MessageQuerySet(models.QuerySet):
    def for_model(self, model: str):
        return self.filter(model=model)

    def with_status(self, status: str):
        return self.filter(status=status)


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

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [
            # The newest-first list every page and the admin changelist open with.
            models.Index(fields=["-timestamp", "-id"], name="message_recent_idx"),
            # Filtering one model's messages over a time range.
            models.Index(fields=["model", "-timestamp"], name="message_model_time_idx"),
            # Filtering one user's messages over a time range.
            models.Index(fields=["user", "-timestamp"], name="message_user_time_idx"),
        ]

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
