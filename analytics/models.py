"""API tokens for scripts that read the analytics API (`Authorization: Bearer <token>`)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Avg, Q
from django.utils import timezone

from proxy.models import json_time

# How stale `last_used_at` may get: one write per token per minute, not one per request.
LAST_USED_PRECISION = timedelta(minutes=1)


def digest(secret: str) -> str:
    """What is stored of a token. A token is 256 random bits, so a fast hash suffices."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )


class ApiToken(models.Model):
    """A bearer token acting as its user, with that user's permissions.

    Only the SHA-256 of the token is kept; it is shown once, when issued. The prefix (its
    first characters) is kept to tell tokens apart in the admin and in logs.
    """

    SCHEME = "omk_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. a script.")
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    last_used_at = models.DateTimeField(null=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def issue(cls, user, name: str, expires_at=None) -> tuple[ApiToken, str]:
        """A new token for `user`: the saved row and the token itself (not kept anywhere)."""
        token = cls(user=user, name=name, expires_at=expires_at)
        secret = token.new_secret()
        token.save()
        return token, secret

    def new_secret(self) -> str:
        """Give this (unsaved) token a fresh secret; returns it, the only time it is seen."""
        secret = self.SCHEME + secrets.token_urlsafe(32)
        self.prefix = secret[:12]
        self.key_hash = digest(secret)
        return secret

    @classmethod
    def user_for(cls, secret: str):
        """The active user a presented token stands for, or None."""
        if not secret.startswith(cls.SCHEME) or len(secret) > 100:
            return None
        token = cls.objects.active().select_related("user").filter(key_hash=digest(secret)).first()
        if token is None or not token.user.is_active:
            return None
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            cls.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class FeedbackQuerySet(models.QuerySet):
    def rated_at_least(self, score: float):
        """The ids of the messages whose average score is at least `score`."""
        return (
            self.values("message")
            .annotate(average=Avg("score"))
            .filter(average__gte=score)
            .values("message")
        )


class Feedback(models.Model):
    """What someone thought of a message's answer: thumbs up or down, or 1 to 5 stars, from a
    source (an app, a person, an evaluation script); one per message and source, updated in
    place when sent again.

    `score` puts both kinds on one scale from 0 (worst) to 1 (best), so they average and
    compare: thumbs down 0, up 1; n stars (n - 1) / 4, so 1 star 0, 3 stars 0.5, 5 stars 1.
    The rating as given is kept (`scale` and `value`).
    """

    class Scale(models.TextChoices):
        THUMBS = "thumbs"
        STARS = "stars"

    THUMBS = {"down": 0, "up": 1}
    STARS = range(1, 6)
    SOURCE_CHARS = 64
    COMMENT_CHARS = 2000

    # No index of its own: the unique (message, source) key starts with it.
    message = models.ForeignKey(
        "proxy.Message", on_delete=models.CASCADE, related_name="feedback", db_index=False
    )
    # Copied from the message (neither changes once recorded), so scores per model over a time
    # range read the feedback alone (scores.py).
    model = models.CharField(max_length=255, blank=True, editable=False)
    message_timestamp = models.DateTimeField(editable=False)
    source = models.CharField(
        max_length=SOURCE_CHARS, help_text="Who or what rated, e.g. open-webui or alice."
    )
    scale = models.CharField(max_length=8, choices=Scale)
    value = models.PositiveSmallIntegerField(help_text="Thumbs: 0 down, 1 up. Stars: 1 to 5.")
    score = models.FloatField(help_text="0 (worst) to 1 (best), whatever the scale.")
    comment = models.TextField(max_length=COMMENT_CHARS, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whose session or API token sent it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FeedbackQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "feedback"
        ordering = ["-updated_at", "-id"]
        permissions = [("send_feedback", "Can send feedback on messages")]
        constraints = [
            # One score per message and source; also serves a message's feedback and the
            # join from messages (the `has_feedback` and `min_score` filters, the averages).
            models.UniqueConstraint(fields=["message", "source"], name="feedback_message_source"),
            models.CheckConstraint(
                condition=Q(scale="thumbs", value__lte=1)
                | Q(scale="stars", value__gte=1, value__lte=5),
                name="feedback_rating_in_scale",
            ),
            models.CheckConstraint(
                condition=Q(score__gte=0, score__lte=1), name="feedback_score_0_to_1"
            ),
        ]
        indexes = [
            # Scores per model over a time range (scores.py), from this index alone.
            models.Index(
                fields=["message_timestamp", "model", "score"], name="feedback_time_model_idx"
            ),
        ]

    def __str__(self):
        return f"{self.rating} from {self.source}"

    @classmethod
    def parse_rating(cls, rating) -> tuple[str, int]:
        """The (scale, value) of a rating as a client sends it: "up" or "down", or a whole
        number of stars from 1 to 5. ValueError for anything else."""
        if isinstance(rating, str) and rating.strip().lower() in cls.THUMBS:
            return cls.Scale.THUMBS, cls.THUMBS[rating.strip().lower()]
        if isinstance(rating, int) and not isinstance(rating, bool) and rating in cls.STARS:
            return cls.Scale.STARS, rating
        raise ValueError(
            f'a rating is "up", "down" or a whole number of stars from 1 to 5, got {rating!r}'
        )

    @classmethod
    def score_of(cls, scale: str, value: int) -> float:
        if scale == cls.Scale.THUMBS:
            return float(value)
        return (value - cls.STARS.start) / (cls.STARS.stop - 1 - cls.STARS.start)

    @classmethod
    def give(cls, message, source: str, rating, *, comment: str = "", user=None):
        """Record a rating of `message` from `source`, replacing that source's earlier one.
        Returns the row and whether it is new. Safe against a concurrent first rating."""
        scale, value = cls.parse_rating(rating)
        return cls.objects.update_or_create(
            message=message,
            source=source,
            defaults={
                "model": message.model,
                "message_timestamp": message.timestamp,
                "scale": scale,
                "value": value,
                "score": cls.score_of(scale, value),
                "comment": comment,
                "user": user,
            },
        )

    def describe(self) -> str:
        """The rating in words, e.g. "thumbs up" or "4 of 5 stars"."""
        if self.scale == self.Scale.THUMBS:
            return f"thumbs {self.rating}"
        return f"{self.value} of {self.STARS.stop - 1} stars"

    @property
    def rating(self) -> str | int:
        """The rating as given: "up"/"down" or the number of stars."""
        if self.scale == self.Scale.THUMBS:
            return "up" if self.value else "down"
        return self.value

    def as_json(self, *, content: bool) -> dict:
        """This feedback in the API's JSON shape (`schemas.FeedbackOut`); the comment, free
        text that can quote the answer, only with `content`."""
        return {
            "message": self.message.request_id.hex,
            "source": self.source,
            "rating": self.rating,
            "scale": self.scale,
            "score": self.score,
            "comment": self.comment if content else None,
            "user": self.user.get_username() if self.user else None,
            "created_at": json_time(self.created_at),
            "updated_at": json_time(self.updated_at),
        }
