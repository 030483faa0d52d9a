"""`manage.py import_messages FILE...`: restore archived messages."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from proxy import retention


class Command(BaseCommand):
    help = (
        "Restore messages from prune_messages archives (gzip JSON lines). Idempotent: a "
        "message already present (same request id) is skipped, so importing twice adds nothing. "
        "The rollups of the days that got messages are recomputed; today's masking applies."
    )

    def add_arguments(self, parser):
        parser.add_argument("files", nargs="+", type=Path)
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Messages per transaction."
        )

    def handle(self, *args, files, batch_size, **options):
        if not 1 <= batch_size <= retention.MAX_BATCH:
            raise CommandError(f"--batch-size must be from 1 to {retention.MAX_BATCH}.")
        missing = [str(path) for path in files if not path.is_file()]
        if missing:
            raise CommandError(f"Not a file: {', '.join(missing)}")
        days, read, inserted, bad, failed = set(), 0, 0, 0, []
        for path in files:
            batch, file_inserted = [], 0
            try:
                for number, row, problem in retention.read(path):
                    if row is None:
                        bad += 1
                        self.stderr.write(f"{path}:{number}: skipped, {problem}")
                        continue
                    read += 1
                    batch.append(row)
                    if len(batch) >= batch_size:
                        file_inserted += self._insert(batch, days)
                        batch = []
            except (OSError, EOFError) as error:  # a damaged file: keep what came before
                failed.append(f"{path}: {error}")
            file_inserted += self._insert(batch, days)
            inserted += file_inserted
            self.stdout.write(f"{path}: {file_inserted} message(s) imported")
        rebuilt = retention.rebuild_days(days)
        self.stdout.write(
            f"Imported {inserted} of {read} message(s) read ({read - inserted} already present"
            f"{f', {bad} bad line(s) skipped' if bad else ''}); rebuilt the rollups of "
            f"{rebuilt} day(s)."
        )
        if failed:
            raise CommandError("Could not read to the end: " + "; ".join(failed))

    def _insert(self, batch: list[dict], days: set) -> int:
        if not batch:
            return 0
        new = retention.restore(batch)
        days.update(row["timestamp"].date() for row in new)
        return len(new)
