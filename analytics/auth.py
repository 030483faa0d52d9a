"""Who may call the analytics API: a session (with CSRF on unsafe methods) or an API token,
and then only with the right permission (DESIGN.md §5).

- `proxy.view_message`: metadata (models, tokens, timings, users, costs, aggregations).
- `proxy.view_message_content`: prompts, responses and error texts too; without it those
  fields are null.
- `analytics.send_feedback`: rate messages (POST .../feedback), which needs no reading
  permission, so an app's account can relay its users' ratings and read nothing.

No credentials: 401. Credentials without the permission: 403.
"""

from __future__ import annotations

from django.conf import settings
from ninja.errors import HttpError
from ninja.security import HttpBearer
from ninja.security import SessionAuth as NinjaSessionAuth

from .models import ApiToken

READ_METADATA = "proxy.view_message"
READ_CONTENT = "proxy.view_message_content"
SEND_FEEDBACK = "analytics.send_feedback"


def _permitted(user, permission: str | None):
    if permission and not user.has_perm(permission):
        raise HttpError(403, f"This needs the permission {permission!r}.")
    return user


class TokenAuth(HttpBearer):
    """`Authorization: Bearer omk_…`, an `ApiToken`; no CSRF (nothing a browser sends alone)."""

    def __init__(self, permission: str | None = None):
        self.permission = permission
        super().__init__()

    def authenticate(self, request, token: str):
        user = ApiToken.user_for(token.strip())
        if user is None:
            return None
        request.user = user
        return _permitted(user, self.permission)


class SessionAuth(NinjaSessionAuth):
    """The admin's login session; unsafe methods also need the CSRF token (X-CSRFToken)."""

    def __init__(self, permission: str | None = None):
        self.permission = permission
        super().__init__(csrf=True)

    def _get_key(self, request):
        # No session cookie: not this kind of credentials (401), rather than a CSRF 403.
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request, key):
        if key is None:
            return None
        user = super().authenticate(request, key)
        return None if user is None else _permitted(user, self.permission)


def readers():
    """The credentials every reading endpoint takes."""
    return [TokenAuth(READ_METADATA), SessionAuth(READ_METADATA)]


def feedback_senders():
    """The credentials that may send feedback."""
    return [TokenAuth(SEND_FEEDBACK), SessionAuth(SEND_FEEDBACK)]


def can_read_content(request) -> bool:
    return request.auth.has_perm(READ_CONTENT)
