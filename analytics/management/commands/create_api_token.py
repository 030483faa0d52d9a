"""`manage.py create_api_token USERNAME`: issue an API token and print it (once)."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics.models import ApiToken


class Command(BaseCommand):
    help = "Issue an API token for a user and print it; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What the token is for.")
        parser.add_argument("--days", type=int, help="Expire after this many days (default never).")

    def handle(self, *args, username, name, days, **options):
        try:
            user = get_user_model().objects.get_by_natural_key(username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        token, secret = ApiToken.issue(user, name, expires_at)
        if user.has_perm("analytics.send_feedback") and not user.has_perm("proxy.view_message"):
            self.stderr.write(f"Note: {username} may send feedback but read nothing.")
        elif not user.has_perm("proxy.view_message"):
            self.stderr.write(
                f"Note: {username} lacks the permission proxy.view_message; the API will answer "
                "403 until it is granted."
            )
        self.stderr.write(f"Issued {token} for {username}; it is shown once:")
        self.stdout.write(secret)
