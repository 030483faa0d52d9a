"""`manage.py recategorize`: apply today's category rules to the recorded messages."""

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from proxy import categories, rollups
from proxy.models import CategoryRule, Message

from .rebuild_rollups import add_range_arguments

FIELDS = ("id", "timestamp", "prompt", "model", "endpoint", "user", "category")


class Command(BaseCommand):
    help = (
        "Apply the category rules again, then rebuild the rollups they changed. Request "
        "headers are not stored, so a category a header rule gave (one no other rule can give) "
        "is kept unless --all."
    )

    def add_arguments(self, parser):
        add_range_arguments(parser)
        parser.add_argument(
            "--all", action="store_true", help="Also replace categories header rules gave."
        )
        parser.add_argument("--batch", type=int, default=2000)

    def handle(self, *args, since, until, batch, **options):
        book = categories.Rulebook(list(CategoryRule.objects.order_by("priority", "id")))
        messages = Message.objects.between(since, until)
        changed, kept, first, last = 0, 0, None, None
        for rows in messages.in_batches(*FIELDS, size=batch):
            updates = []
            for row in rows:
                if not options["all"] and row["category"] not in book.derivable:
                    kept += 1
                    continue
                category = book.categorise(row)
                if category != row["category"]:
                    updates.append((category, row["id"]))
                    first = min(first or row["timestamp"], row["timestamp"])
                    last = max(last or row["timestamp"], row["timestamp"])
            if updates:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.executemany(
                        "UPDATE proxy_message SET category = %s WHERE id = %s", updates
                    )
                changed += len(updates)
        days = sum(1 for _ in rollups.rebuild(first, last)) if changed else 0
        self.stdout.write(
            f"Recategorised {changed} message(s), kept {kept} from header rules; rebuilt the "
            f"rollups of {days} day(s)."
        )
