"""`manage.py recompute_costs`: price the recorded messages again with today's price table."""

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from proxy import costs, rollups
from proxy.models import Message, ModelPrice

from .rebuild_rollups import add_range_arguments

FIELDS = ("id", "timestamp", "model", "backend", "input_tokens", "output_tokens")
DURATIONS = ("total_duration_seconds", "latency_seconds", "cost_usd")


class Command(BaseCommand):
    help = "Recompute every message's cost from the price table, then the rollups it changed."

    def add_arguments(self, parser):
        add_range_arguments(parser)
        parser.add_argument("--batch", type=int, default=5000)

    def handle(self, *args, since, until, batch, **options):
        book = costs.PriceBook(list(ModelPrice.objects.all()))
        messages = Message.objects.between(since, until)
        changed, first, last = 0, None, None
        for rows in messages.in_batches(*FIELDS, *DURATIONS, size=batch):
            updates = []
            for row in rows:
                cost = book.cost_usd(row)
                if cost != row["cost_usd"]:
                    updates.append((cost, row["id"]))
                    first = min(first or row["timestamp"], row["timestamp"])
                    last = max(last or row["timestamp"], row["timestamp"])
            if updates:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.executemany(
                        "UPDATE proxy_message SET cost_usd = %s WHERE id = %s", updates
                    )
                changed += len(updates)
        days = sum(1 for _ in rollups.rebuild(first, last)) if changed else 0
        self.stdout.write(f"Repriced {changed} message(s); rebuilt the rollups of {days} day(s).")
