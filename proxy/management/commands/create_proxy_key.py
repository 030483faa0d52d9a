"""`manage.py create_proxy_key USERNAME`: issue a key for the proxy routes and print it (once)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from proxy.models import ProxyKey


class Command(BaseCommand):
    help = "Issue a proxy key for a user and print it; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="What the key is for.")
        parser.add_argument(
            "--admin",
            action="store_true",
            help="May use the model management routes (PROXY_ALLOW_MANAGEMENT=admin-keys).",
        )

    def handle(self, *args, username, name, admin, **options):
        users = get_user_model()
        try:
            user = users.objects.get_by_natural_key(username)
        except users.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        key, secret = ProxyKey.issue(user, name, is_admin=admin)
        kind = "admin key" if admin else "key"
        self.stderr.write(f"Issued the proxy {kind} {key} for {username}; it is shown once:")
        self.stdout.write(secret)
