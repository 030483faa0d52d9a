"""The ASGI entry point: `ollama_monitor.asgi:application`.

Ollama's own paths (`/`, `/api/*`, `/v1/*`) go to the proxy's lean forwarder; WebSockets (the
live feed at /ws/messages/) to channels; everything else (admin, dashboard, analytics API,
metrics) to Django. The lifespan opens and closes the forwarder's upstream client and
recorder, once per worker process.
"""

import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ollama_monitor.settings")
django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from proxy import metrics  # noqa: E402  (needs Django set up)
from proxy.consumers import LiveFeedConsumer  # noqa: E402
from proxy.forwarder import Forwarder, quiet_stream_cuts  # noqa: E402
from proxy.ollama import is_ollama_path  # noqa: E402

log = logging.getLogger(__name__)
forwarder = Forwarder()
# A reply the upstream broke off is cut by raising to uvicorn, which would log a traceback for
# each: the forwarder logs it in one line and records it instead.
logging.getLogger("uvicorn.error").addFilter(quiet_stream_cuts)
# The live feed: the admin's login session, from a page of ours (the Origin is an allowed host).
websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter([path("ws/messages/", LiveFeedConsumer.as_asgi())]))
)


async def lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await forwarder.startup()
            except Exception as error:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(error)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await forwarder.shutdown()
            metrics.process_stopped()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and is_ollama_path(scope["path"]):
        await forwarder(scope, receive, send)
    elif scope["type"] == "http" and scope["path"] == "/metrics":
        # Answered here, not by a Django view: a scrape every few seconds need not pay Django's
        # request cycle and middleware (~1.8 ms, DESIGN.md §1), and a Prometheus on another host
        # reaches it by an address ALLOWED_HOSTS would refuse. django-prometheus's metrics of
        # Django's own pages are in the same registry, so they are on this page too.
        await metrics.serve(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket_application(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
    else:
        await django_application(scope, receive, send)
