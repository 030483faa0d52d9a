"""Mail a report of the last day, week or month (or any range) against the period before it.

Run from cron or a systemd timer (deploy/systemd/ollama-monitor-report.timer); the mail goes
through Django's e-mail backend: SMTP with EMAIL_HOST, else printed on the console.
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from reports import periods, rendering
from reports.report import build


class Command(BaseCommand):
    help = "Mail a report of a period against the one before it (totals, models, users, errors)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--period",
            choices=periods.KINDS,
            help="The last complete day (yesterday, the default), week (from Monday) or month, "
            "in TIME_ZONE.",
        )
        parser.add_argument(
            "--start",
            help="With --end instead of --period: a date (YYYY-MM-DD) or an ISO 8601 time.",
        )
        parser.add_argument(
            "--end",
            help="A date (that day included) or an ISO 8601 time (excluded).",
        )
        parser.add_argument(
            "--to",
            nargs="+",
            metavar="ADDR",
            help="Recipients (default: REPORT_RECIPIENTS).",
        )
        parser.add_argument(
            "--format",
            choices=("html", "text"),
            default="html",
            help="html: HTML with charts and a text part (default); text: plain text only. "
            "Both attach the numbers as CSV.",
        )

    def handle(self, *args, period=None, start=None, end=None, to=None, format="html", **options):
        recipients = to or settings.REPORT_RECIPIENTS
        if not recipients:
            raise CommandError("No recipients: give --to ADDR or set REPORT_RECIPIENTS.")
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise CommandError(f"Not an e-mail address: {address!r}") from None
        chosen = self._period(period, start, end)
        report = build(
            chosen, base_url=settings.REPORT_BASE_URL, error_text=settings.REPORT_ERROR_TEXT
        )
        message = rendering.email(report, recipients, as_html=format == "html")
        message.send()
        if options["verbosity"] >= 1:
            self.stderr.write(
                f"Sent the report of {chosen.label} to {', '.join(recipients)} "
                f"({report.totals['messages'].current:,} messages)."
            )

    def _period(self, kind, start, end) -> periods.Period:
        if start or end:
            if kind:
                raise CommandError("Give either --period or --start and --end, not both.")
            if not (start and end):
                raise CommandError("--start and --end go together.")
            try:
                return periods.custom(start, end)
            except ValueError as error:
                raise CommandError(str(error)) from None
        return periods.last(kind or "day")
