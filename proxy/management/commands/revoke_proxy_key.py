"""`manage.py revoke_proxy_key PREFIX`: revoke a proxy key by its visible prefix."""

from django.core.management.base import BaseCommand, CommandError

from proxy.models import ProxyKey


class Command(BaseCommand):
    help = (
        "Revoke the proxy key whose prefix (shown in the admin, e.g. omp_AbCd1234) is given; "
        "every worker refuses it within PROXY_KEY_REFRESH_SECONDS."
    )

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix, **options):
        prefix = prefix.rstrip("…").strip()
        if len(prefix) < 8:
            raise CommandError("Give at least 8 characters of the key's prefix.")
        keys = list(ProxyKey.objects.filter(prefix__startswith=prefix[:16], revoked=False))
        keys = [
            key for key in keys if prefix.startswith(key.prefix) or key.prefix.startswith(prefix)
        ]
        if not keys:
            raise CommandError(f"No active proxy key has the prefix {prefix!r}.")
        if len(keys) > 1:
            listed = ", ".join(str(key) for key in keys)
            raise CommandError(f"Several keys have the prefix {prefix!r}: {listed}; give more.")
        key = keys[0]
        key.revoked = True
        key.save(update_fields=["revoked"])
        self.stdout.write(f"Revoked {key} of {key.user.get_username()}.")
