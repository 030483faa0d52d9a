"""`manage.py remask_messages`: apply today's masking to the stored messages."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from proxy import privacy
from proxy.models import Message

FIELDS = privacy.TEXT_FIELDS + privacy.JSON_FIELDS


class Command(BaseCommand):
    help = (
        "Mask the stored messages with the current rules (PII_MASK and the admin's masking "
        "rules), in batches by primary key. Masked text stays masked: this adds masks, it "
        "cannot remove one. The search index follows the new text."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Messages per transaction."
        )

    def handle(self, *args, batch_size, **options):
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        privacy.forget()
        masker = privacy.current()
        if masker is None:
            self.stdout.write("Masking is off (PII_MASK empty, no masking rules): nothing to do.")
            return
        seen = changed = 0
        for rows in Message.objects.in_batches(*FIELDS, size=batch_size):
            seen += len(rows)
            updates = [row for row in rows if privacy.mask_row(row, masker)]
            if updates:
                # Only the masked fields of these rows: a concurrent write elsewhere is kept.
                with transaction.atomic():
                    for row in updates:
                        Message.objects.filter(id=row["id"]).update(
                            **{name: row[name] for name in FIELDS}
                        )
                changed += len(updates)
            self.stdout.write(f"  {seen} message(s) read, {changed} masked", ending="\r")
        self.stdout.write(f"Re-masked {changed} of {seen} message(s).")
