"""`manage.py rebuild_rollups`: recompute the rollups from the messages."""

from django.core.management.base import BaseCommand

from analytics.filters import parse_time
from proxy import rollups


def add_range_arguments(parser):
    parser.add_argument("--since", type=parse_time, help="Epoch seconds or ISO 8601.")
    parser.add_argument("--until", type=parse_time, help="Epoch seconds or ISO 8601.")


class Command(BaseCommand):
    help = "Recompute the rollups (aggregations' source) of whole UTC days from the messages."

    def add_arguments(self, parser):
        add_range_arguments(parser)

    def handle(self, *args, since, until, **options):
        days = sum(1 for _ in rollups.rebuild(since, until))
        self.stdout.write(f"Rebuilt the rollups of {days} day(s).")
