"""The report page at /dashboard/report/: any date range, shown or downloaded (HTML, CSV).

The same permission as the dashboard; error texts appear only for readers who may see message
content.
"""

from urllib.parse import urlencode

from django.http import HttpResponse
from django.shortcuts import render

from analytics.auth import READ_CONTENT
from analytics.views import reader_required

from . import periods, rendering
from .report import build

FORMATS = ("page", "html", "csv")


@reader_required
def report(request):
    """`?period=day|week|month` (the last complete one, default day) or `?start=&end=`
    (dates or ISO 8601 times, see `periods.custom`); `format=html|csv` downloads it."""
    start, end = request.GET.get("start", "").strip(), request.GET.get("end", "").strip()
    kind = request.GET.get("period", "").strip() or "day"
    export = request.GET.get("format", "").strip() or "page"
    chosen = {"start": start, "end": end, "period": kind}
    try:
        if export not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {export!r}")
        period = periods.custom(start, end) if start or end else periods.last(kind)
    except ValueError as error:
        context = {"error": str(error), "chosen": chosen, "kinds": periods.KINDS}
        return render(request, "reports/page.html", context, status=400)
    built = build(
        period,
        base_url=request.build_absolute_uri("/"),
        error_text=request.user.has_perm(READ_CONTENT),
    )
    if export == "csv":
        return _download(rendering.csv_text(built), "text/csv", rendering.csv_name(built))
    images = rendering.chart_images(built)
    if export == "html":
        name = rendering.csv_name(built).removesuffix(".csv") + ".html"
        return _download(rendering.html(built, images, inline=True), "text/html", name)
    rendering.set_sources(images, inline=True)
    shown = {name: value for name, value in chosen.items() if value and name != "period"}
    shown = shown or {"period": kind}
    context = {
        **rendering.context(built, images),
        "chosen": chosen,
        "kinds": periods.KINDS,
        "downloads": {name: "?" + urlencode({**shown, "format": name}) for name in ("html", "csv")},
    }
    return render(request, "reports/page.html", context)


def _download(content: str, content_type: str, name: str) -> HttpResponse:
    response = HttpResponse(content, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response
