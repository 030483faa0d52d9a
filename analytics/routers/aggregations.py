"""/analytics/aggregations and /analytics/models: figures from rollups (see aggregations.py)."""

from typing import Literal

from django.http import HttpResponse
from ninja import Query, Router
from ninja.errors import HttpError

from .. import aggregations
from ..filters import MessageFilter
from ..schemas import Aggregations, ModelList

router = Router(tags=["aggregations"])


@router.get("/aggregations", response=Aggregations, summary="Totals, series and breakdowns")
def aggregate(
    request,
    filters: Query[MessageFilter],
    interval: Literal["1m", "5m", "1h", "1d", "1w"] = "1h",
    top_users: int = Query(10, ge=1, le=100),
):
    """Read from rollups; search, user and the token, latency and cost ranges make it a scan
    of the matching messages instead (`source` says which), and a category or endpoint
    criterion does so for the user figures. Percentiles are estimated from
    histogram buckets: see `bounds`. Cached for a few seconds (ANALYTICS_CACHE_SECONDS)."""
    try:
        figures = aggregations.aggregations(filters, interval, top_users)
    except aggregations.TooManyPoints as error:
        raise HttpError(422, str(error)) from None
    return HttpResponse(figures, content_type="application/json")


@router.get("/models", response=ModelList, summary="Models seen, with their figures")
def models(request, filters: Query[MessageFilter]):
    return HttpResponse(aggregations.models(filters), content_type="application/json")
