"""A report as people read it: HTML (mail and dashboard), plain text, CSV, and the e-mail that
carries all three.

The HTML has its CSS inline (mail clients drop <style> blocks) and shows the charts as PNG
images: attached with a Content-ID in mail, as data: URLs in a page or a downloaded file.
"""

from __future__ import annotations

import base64
import csv
import io
from email.mime.image import MIMEImage

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import SafeMIMEMultipart
from django.template.loader import render_to_string
from django.utils import timezone

from analytics.export import FORMULA_STARTS

from . import charts
from .report import LABELS, SPIKE_FACTOR, SPIKE_MIN_ERRORS, SPIKE_MIN_RATE, Figure, Report

NONE = "\N{EN DASH}"

# --- numbers ----------------------------------------------------------------------------------


def show(value, unit: str = "count") -> str:
    """A value as the report writes it; a dash when there is none."""
    if value is None:
        return NONE
    if unit == "usd":
        if value >= 100:
            return f"${value:,.0f}"
        return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"
    if unit == "seconds":
        return f"{value:.2f} s" if value < 10 else f"{value:,.1f} s"
    if unit == "rate":
        return f"{value * 100:.1f} %"
    if unit == "speed":
        return f"{value:,.1f} tok/s"
    if unit == "share":
        return f"{value * 100:.0f} %"
    return f"{value:,.0f}"


def change(figure: Figure) -> str:
    """How a figure changed: +12 %, -3.5 %, +1.2 pts for a rate, `new`, or empty."""
    trend = figure.trend
    if trend is None:
        return ""
    if trend == "new":
        return "new"
    if trend == "same":
        return "±0 pts" if figure.unit == "rate" else "±0 %"
    amount = figure.change * 100
    sign = "+" if amount > 0 else "-"
    if figure.unit == "rate":
        return f"{sign}{abs(amount):.1f} pts"
    return f"{sign}{abs(amount):.1f} %" if abs(amount) < 10 else f"{sign}{abs(amount):,.0f} %"


def tone(figure: Figure) -> str:
    """The colour of a change: green when it went the good way, red the bad way, else grey."""
    return {True: "#1a7f37", False: "#c62828"}.get(figure.good, "#666666")


# --- charts -----------------------------------------------------------------------------------


def chart_images(report: Report) -> dict[str, dict]:
    """The report's charts: {name: {png, title, alt}}; none for an empty report."""
    if report.empty:
        return {}
    labels = [bucket.label for bucket in report.buckets]
    per = report.bucket_name
    images = {
        "activity": {
            "png": charts.activity(
                labels,
                [bucket.figures["messages"] for bucket in report.buckets],
                [bucket.figures["errors"] for bucket in report.buckets],
            ),
            "title": f"Messages and errors per {per}",
        },
        "timings": {
            "png": charts.timings(
                labels,
                {
                    "Latency p50": [bucket.figures["p50_latency"] for bucket in report.buckets],
                    "Latency p95": [bucket.figures["p95_latency"] for bucket in report.buckets],
                    "TTFT p50": [bucket.figures["p50_ttft"] for bucket in report.buckets],
                    "TTFT p95": [bucket.figures["p95_ttft"] for bucket in report.buckets],
                },
            ),
            "title": f"Latency and time to first token per {per} (seconds)",
        },
    }
    rated = [row for row in report.top_models if row["tokens_per_second"].current is not None]
    if rated:
        images["speeds"] = {
            "png": charts.speeds(
                [(row["name"] or "(none)", *_pair(row["tokens_per_second"])) for row in rated]
            ),
            "title": "Tokens per second by model",
        }
    for name, image in images.items():
        image["alt"] = image["title"]
        image["cid"] = f"{name}@ollama-monitor"
    return images


def _pair(figure: Figure):
    return figure.current, figure.previous


# --- HTML, text, CSV --------------------------------------------------------------------------


def html(report: Report, images: dict[str, dict], *, inline: bool) -> str:
    """The report as a whole HTML document; `inline` puts the charts in the page itself
    (data: URLs) rather than referring to the mail's attached images (cid:)."""
    set_sources(images, inline=inline)
    return render_to_string("reports/email.html", context(report, images))


def set_sources(images: dict[str, dict], *, inline: bool) -> None:
    """Each image's `src`: a data: URL, or its Content-ID in the mail."""
    for image in images.values():
        if inline:
            image["src"] = "data:image/png;base64," + base64.b64encode(image["png"]).decode()
        else:
            image["src"] = "cid:" + image["cid"]


def context(report: Report, images: dict[str, dict]) -> dict:
    totals = [{"label": LABELS[name], "figure": figure} for name, figure in report.totals.items()]
    return {
        "report": report,
        "totals": totals,
        "images": images,
        "title": subject(report),
        "spike_rule": spike_rule(report),
    }


def spike_rule(report: Report) -> str:
    """What made a bucket an error spike in this report."""
    baseline = "the previous period's" if report.previous_had_messages else "this period's"
    article = "An" if report.bucket_name == "hour" else "A"
    return (
        f"{article} {report.bucket_name} with at least {SPIKE_MIN_ERRORS} errors and an error "
        f"rate of at least {show(report.spike_threshold, 'rate')} ({SPIKE_FACTOR:g} times "
        f"{baseline} {show(report.error_baseline, 'rate')}, and at least "
        f"{show(SPIKE_MIN_RATE, 'rate')})."
    )


def subject(report: Report) -> str:
    messages = report.totals["messages"]
    headline = f"{show(messages.current)} messages"
    if change(messages):
        headline += f" ({change(messages)})"
    return f"Ollama Monitor report, {report.period.label}: {headline}"


def text(report: Report) -> str:
    """The plain-text part: the same figures in aligned columns."""
    period, previous = report.period, report.previous
    lines = [
        subject(report),
        "",
        f"Period:   {_when(period.start)} to {_when(period.end)} ({settings.TIME_ZONE})",
        f"Compared: {_when(previous.start)} to {_when(previous.end)}",
        f"Dashboard: {report.dashboard_url}",
        "",
    ]
    if report.empty:
        lines.append("No messages in this period.")
        return "\n".join(lines) + "\n"
    lines += _table(
        "Totals",
        ("", "this period", "previous", "change"),
        [
            (LABELS[name], show(f.current, f.unit), show(f.previous, f.unit), change(f))
            for name, f in report.totals.items()
        ],
    )
    lines += _table(
        "Top models",
        ("model", "messages", "change", "errors", "cost", "p95 latency", "tok/s"),
        [
            (
                row["name"] or "(none)",
                show(row["messages"].current),
                change(row["messages"]),
                f"{row['errors']:,} ({show(row['error_rate'].current, 'rate')})",
                show(row["cost"].current, "usd"),
                show(row["p95_latency"].current, "seconds"),
                show(row["tokens_per_second"].current, "speed"),
            )
            for row in report.top_models
        ],
    )
    lines += _table(
        "Top users",
        ("user", "messages", "change", "tokens in/out", "cost"),
        [
            (
                row["name"] or "(none)",
                show(row["messages"].current),
                change(row["messages"]),
                f"{row['input_tokens']:,} / {row['output_tokens']:,}",
                show(row["cost"].current, "usd"),
            )
            for row in report.top_users
        ],
    )
    lines += _table(
        "Categories",
        ("category", "messages", "share", "change", "cost"),
        [
            (
                row["name"] or "(none)",
                show(row["messages"].current),
                show(row["share"], "share"),
                change(row["messages"]),
                show(row["cost"].current, "usd"),
            )
            for row in report.top_categories
        ],
    )
    lines += ["Error spikes", f"  {spike_rule(report)}"]
    if not report.spikes:
        lines.append("  none")
    for spike in report.spikes:
        models = ", ".join(f"{model or '(none)'} {count:,}" for model, count in spike["models"])
        lines.append(
            f"  {_when(spike['start'])}: {spike['errors']:,} errors of {spike['messages']:,} "
            f"({show(spike['error_rate'], 'rate')}): {models}"
        )
        for example in spike["examples"]:
            lines.append(f"    {_message_line(example)}")
            if example.get("error"):
                lines.append(f"      {' '.join(example['error'].split())}")
            lines.append(f"      {example['url']}")
    lines += ["", "Slowest requests"]
    for row in report.slowest:
        lines.append(f"  {_message_line(row)}")
        lines.append(f"    {row['url']}")
    return "\n".join(lines) + "\n"


def _when(moment) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"


def _message_line(row: dict) -> str:
    status = row["status"] + (f" {row['http_status']}" if row["http_status"] else "")
    return (
        f"{row['time']:%Y-%m-%d %H:%M:%S} {row['model'] or '(none)'} {row['endpoint']} "
        f"{row['user'] or '(none)'} {status} {show(row['latency_seconds'], 'seconds')}"
    )


def _table(title: str, head: tuple, rows: list[tuple]) -> list[str]:
    if not rows:
        return [title, "  none", ""]
    widths = [max(len(str(row[i])) for row in (head, *rows)) for i in range(len(head))]
    lines = [title]
    for row in (head, *rows):
        cells = [
            str(cell).ljust(width) if index == 0 else str(cell).rjust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    lines.append("")
    return lines


CSV_COLUMNS = (
    "section",
    "name",
    "messages",
    "previous_messages",
    "errors",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "previous_cost_usd",
    "p50_latency_seconds",
    "p95_latency_seconds",
    "p50_ttft_seconds",
    "tokens_per_second",
    "previous_tokens_per_second",
)


def csv_text(report: Report) -> str:
    """The report's numbers per model, user and category (and the totals), for a spreadsheet.
    A name that a spreadsheet would run as a formula gets a leading ' (see analytics.export)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    totals = report.totals
    writer.writerow(
        _csv_row(
            "total",
            "",
            totals["messages"],
            totals["errors"].current,
            totals["error_rate"].current,
            totals["input_tokens"].current,
            totals["output_tokens"].current,
            totals["cost"],
            totals["p50_latency"].current,
            totals["p95_latency"].current,
            totals["p50_ttft"].current,
            totals["tokens_per_second"],
        )
    )
    for section, rows in (("model", report.models), ("category", report.categories)):
        for row in rows:
            writer.writerow(
                _csv_row(
                    section,
                    row["name"],
                    row["messages"],
                    row["errors"],
                    row["error_rate"].current,
                    row["input_tokens"],
                    row["output_tokens"],
                    row["cost"],
                    row["p50_latency"],
                    row["p95_latency"].current,
                    row["p50_ttft"],
                    row["tokens_per_second"],
                )
            )
    for row in report.users:
        writer.writerow(
            _csv_row(
                "user",
                row["name"],
                row["messages"],
                None,
                None,
                row["input_tokens"],
                row["output_tokens"],
                row["cost"],
                None,
                None,
                None,
                Figure(None, None),
            )
        )
    return buffer.getvalue()


def _csv_row(section, name, messages: Figure, errors, error_rate, tokens_in, tokens_out,
             cost: Figure, p50, p95, ttft, speed: Figure) -> list:  # fmt: skip
    if name.startswith(FORMULA_STARTS):
        name = "'" + name
    values = [
        messages.current,
        messages.previous,
        errors,
        error_rate,
        tokens_in,
        tokens_out,
        cost.current,
        cost.previous,
        p50,
        p95,
        ttft,
        speed.current,
        speed.previous,
    ]
    return [section, name, *("" if value is None else _plain(value) for value in values)]


def _plain(value):
    return round(value, 6) if isinstance(value, float) else value


def csv_name(report: Report) -> str:
    start = timezone.localtime(report.period.start)
    return f"ollama-monitor-report-{start:%Y%m%d}-{report.period.kind}.csv"


# --- the e-mail -------------------------------------------------------------------------------


class ReportEmail(EmailMultiAlternatives):
    """A multipart e-mail whose HTML part sits in multipart/related with the chart images it
    refers to by Content-ID, the structure mail clients expect for inline images:
    mixed[alternative[text, related[html, png…]], csv]."""

    def __init__(self, *args, images: dict[str, dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.images = images or {}

    def _create_mime_attachment(self, content, mimetype):
        part = super()._create_mime_attachment(content, mimetype)
        if mimetype != "text/html" or not self.images:
            return part
        related = SafeMIMEMultipart(_subtype="related", encoding=self.encoding)
        related.attach(part)
        for name, image in self.images.items():
            picture = MIMEImage(image["png"], "png")
            picture["Content-ID"] = f"<{image['cid']}>"
            picture.add_header("Content-Disposition", "inline", filename=f"{name}.png")
            related.attach(picture)
        return related


def email(report: Report, to: list[str], *, as_html: bool = True) -> ReportEmail:
    """The report as an e-mail: a text part, the HTML with its charts (unless `as_html` is
    false) and the CSV attachment."""
    images = chart_images(report) if as_html else {}
    message = ReportEmail(subject(report), text(report), to=to, images=images)
    if as_html:
        message.attach_alternative(html(report, images, inline=False), "text/html")
    message.attach(csv_name(report), csv_text(report), "text/csv")
    return message
