"""`manage.py prune_messages`: delete old messages, archiving them first."""

import re

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from proxy import retention


def days(text: str) -> int:
    """`90d` or `90`: a number of days."""
    found = re.fullmatch(r"\s*(\d+)\s*d?\s*", text)
    if not found or int(found.group(1)) < 1:
        raise ValueError(text)
    return int(found.group(1))


days.__name__ = "number of days (e.g. 90d)"


class Command(BaseCommand):
    help = (
        "Delete the messages older than --older-than (default RETENTION_DAYS) whole UTC days, "
        "archiving them first as gzip JSON lines, one file per day, with --archive (default "
        "RETENTION_ARCHIVE_DIR). Rollups are kept. Safe to run from cron while traffic flows."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=days, help="e.g. 90d (default RETENTION_DAYS)")
        parser.add_argument("--archive", help="Directory for the archives (created 0700).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would go; do it not.")
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Messages per transaction."
        )

    def handle(self, *args, older_than, archive, dry_run, batch_size, **options):
        keep_days = older_than or settings.RETENTION_DAYS
        if not keep_days:
            self.stdout.write(
                "Retention is off (RETENTION_DAYS=0, no --older-than): nothing pruned."
            )
            return
        if not 1 <= batch_size <= retention.MAX_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {retention.MAX_BATCH}.")
        cutoff = retention.cutoff_for(keep_days, timezone.now())
        archive = archive or settings.RETENTION_ARCHIVE_DIR or None
        days = retention.days_before(cutoff)
        total = sum(days.values())
        verb = "Would prune" if dry_run else "Pruning"
        self.stdout.write(
            f"{verb} {total} message(s) from before {cutoff:%Y-%m-%d} 00:00 UTC "
            f"({keep_days} day(s) kept), over {len(days)} day(s)."
        )
        try:
            directory = retention.archive_directory(archive) if archive and not dry_run else None
            for day in days if directory else ():
                retention.check_target(directory, day)
        except (retention.ArchiveError, OSError) as error:
            raise CommandError(f"Archive refused: {error}. Nothing was deleted.") from None
        if dry_run:
            for day, count in days.items():
                target = f" -> {archive}/{retention.archive_name(day)}" if archive else ""
                self.stdout.write(f"  {day}: {count} message(s){target}")
            return
        if not archive:
            self.stdout.write("No archive (--archive or RETENTION_ARCHIVE_DIR): deleting only.")
        try:
            deleted = retention.prune(cutoff, directory, batch_size)
        except (retention.ArchiveError, OSError) as error:
            raise CommandError(
                f"Archive refused: {error}. Stopped; what was deleted so far is archived."
            ) from None
        for day, count in sorted(deleted.items()):
            where = f" archived to {directory / retention.archive_name(day)}" if directory else ""
            self.stdout.write(f"  {day}: deleted {count} message(s){where}")
        self.stdout.write(
            f"Deleted {sum(deleted.values())} message(s); the rollups (dashboards) keep them."
        )
