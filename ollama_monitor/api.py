"""The analytics API (django-ninja), mounted at /analytics/; docs at /analytics/docs."""

from ninja import NinjaAPI

from analytics.auth import readers
from analytics.routers import (
    aggregations,
    compare,
    conversations,
    export,
    feedback,
    messages,
    tokens,
)

api = NinjaAPI(
    title="Ollama Monitor analytics",
    version="1",
    description="Recorded messages, aggregations and exports. Authenticate with the admin's "
    "session (plus X-CSRFToken on unsafe methods) or `Authorization: Bearer <API token>`.",
    urls_namespace="analytics",
    auth=readers(),
)
api.add_router("/", messages.router)
api.add_router("/", conversations.router)
api.add_router("/", aggregations.router)
api.add_router("/", export.router)
api.add_router("/", tokens.router)
api.add_router("/", feedback.router)
api.add_router("/", compare.router)
