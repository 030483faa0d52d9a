"""/analytics/export: every matching message as CSV, JSON or JSON lines, streamed."""

from typing import Literal

from ninja import Query, Router

from ..auth import can_read_content
from ..export import export_response
from ..filters import MessageFilter

router = Router(tags=["export"])


@router.get("/export", summary="Download the matching messages")
def export(request, filters: Query[MessageFilter], format: Literal["csv", "json", "jsonl"] = "csv"):
    """Newest first, streamed with flat memory (keyset pages). CSV cells that a spreadsheet
    would run as a formula (starting with = + - @, tab or carriage return) get a leading `'`."""
    return export_response(filters.apply(), format, content=can_read_content(request))
