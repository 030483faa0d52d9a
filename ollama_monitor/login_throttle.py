"""Admin logins throttled: after `ADMIN_LOGIN_MAX_FAILURES` failures for one username from one
address, that pair is locked for `ADMIN_LOGIN_LOCK_SECONDS`, even with the right password.

Failures are counted from Django's `user_login_failed` signal in the cache (Redis, with
REDIS_URL, counts across workers), so every login path that calls `authenticate()` is
covered, and refused by an authentication backend listed before the model backend. A success
clears the count. Per username and address, so one attacker cannot lock an account out for
everyone (behind a front proxy every client has the proxy's address: then it is per username).
The admin's login form says why a locked login fails.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.dispatch import receiver


def _key(username: str, request) -> str:
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    # Hashed: a username is free text, and a cache key must stay short and plain.
    who = hashlib.sha256(f"{username.lower()}\n{address}".encode()).hexdigest()[:32]
    return f"login-failures:{who}"


def locked_for(username: str, request) -> int:
    """Seconds left on this username and address's lock; 0 when not locked."""
    failures, since = cache.get(_key(username, request), (0, 0.0))
    if failures < settings.ADMIN_LOGIN_MAX_FAILURES:
        return 0
    return max(0, math.ceil(since + settings.ADMIN_LOGIN_LOCK_SECONDS - time.time()))


class ThrottleBackend:
    """Stops `authenticate()` for a locked username and address, before any password check."""

    def authenticate(self, request, username=None, **credentials):
        if username and locked_for(username, request):
            raise PermissionDenied
        return None

    def get_user(self, user_id):
        return None


@receiver(user_login_failed)
def _failed(sender, credentials, request=None, **kwargs) -> None:
    username = credentials.get("username")
    if not username:
        return
    key = _key(username, request)
    failures, _ = cache.get(key, (0, 0.0))
    if failures >= settings.ADMIN_LOGIN_MAX_FAILURES and locked_for(username, request):
        return  # attempts during a lock do not extend it
    if failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
        failures = 0  # a lock that ran out: count afresh
    # The lock runs from the failure that completes the count.
    timeout = math.ceil(settings.ADMIN_LOGIN_LOCK_SECONDS)
    cache.set(key, (failures + 1, time.time()), timeout=timeout)


@receiver(user_logged_in)
def _succeeded(sender, request, user, **kwargs) -> None:
    cache.delete(_key(user.get_username(), request))


class ThrottledLoginForm(AdminAuthenticationForm):
    """The admin's login form, telling a locked user to wait instead of a generic failure."""

    def clean(self):
        username = self.cleaned_data.get("username")
        if username:
            seconds = locked_for(username, self.request)
            if seconds:
                raise ValidationError(
                    "Too many failed logins. Try again in %(minutes)d minute(s).",
                    code="locked",
                    params={"minutes": math.ceil(seconds / 60)},
                )
        return super().clean()
