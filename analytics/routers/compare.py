"""/analytics/compare: models side by side, with the axes of the comparison page's radar."""

from typing import Annotated

from ninja import Query, Router
from pydantic import Field

from .. import comparison
from ..filters import MessageFilter
from ..schemas import Comparison

router = Router(tags=["aggregations"])

ModelName = Annotated[str, Field(min_length=1, max_length=255)]
CHOSEN = Query(
    None,
    max_length=comparison.MAX_MODELS,
    description="The models to compare, in order (repeat it); default: the busiest.",
)


@router.get("/compare", response=Comparison, summary="Models side by side")
def compare(
    request,
    filters: Query[MessageFilter],
    models: list[ModelName] = CHOSEN,
):
    """Tokens per second, time to first token, latency percentiles, success rate, cost per
    1,000 output tokens, average feedback score and volume per model, over the messages the
    filters match; `models` (repeat it: `models=a&models=b`, at most 8) chooses them, else
    the busiest 8. `radar` puts each model on four axes relative to the best model shown."""
    return comparison.compare(filters, models)
