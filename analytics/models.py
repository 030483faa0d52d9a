"""API tokens for scripts that read the analytics API (`Authorization: Bearer <token>`)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

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
