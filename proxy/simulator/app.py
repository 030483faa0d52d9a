"""The aiohttp application: gin-like routing, request accounting, :func:`build_app`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import SimulatorConfig
from .errors import ApiError, ClientGone, ServerDrop
from .knobs import Knobs
from .native import (
    handle_chat,
    handle_embed,
    handle_embeddings,
    handle_generate,
    handle_ps,
    handle_pull,
    handle_root,
    handle_show,
    handle_tags,
    handle_version,
)
from .openai import (
    handle_openai_chat,
    handle_openai_completions,
    handle_openai_embeddings,
    handle_openai_model,
    handle_openai_models,
)
from .openai_output import openai_json
from .output import native_error, plain_text
from .state import (
    BODY_KEY,
    START_KEY,
    STATE_KEY,
    WRITTEN_KEY,
    SimState,
    handle_sim_requests,
    handle_sim_reset,
    handle_sim_stats,
    handle_sim_wait,
    state_of,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Gin lists allowed methods in the order its method trees were created.
METHOD_ORDER = ("HEAD", "GET", "POST", "DELETE")

ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"HEAD": handle_root, "GET": handle_root},
    "/api/version": {"HEAD": handle_version, "GET": handle_version},
    "/api/pull": {"POST": handle_pull},
    "/api/tags": {"HEAD": handle_tags, "GET": handle_tags},
    "/api/show": {"POST": handle_show},
    "/api/ps": {"GET": handle_ps},
    "/api/generate": {"POST": handle_generate},
    "/api/chat": {"POST": handle_chat},
    "/api/embed": {"POST": handle_embed},
    "/api/embeddings": {"POST": handle_embeddings},
    "/v1/chat/completions": {"POST": handle_openai_chat},
    "/v1/completions": {"POST": handle_openai_completions},
    "/v1/embeddings": {"POST": handle_openai_embeddings},
    "/v1/models": {"GET": handle_openai_models},
}
MODEL_ROUTE = re.compile(r"/v1/models/[^/]+")
SIM_ROUTES: dict[str, dict[str, Handler]] = {
    "/_sim/stats": {"GET": handle_sim_stats},
    "/_sim/requests": {"GET": handle_sim_requests},
    "/_sim/reset": {"POST": handle_sim_reset},
    "/_sim/wait": {"GET": handle_sim_wait},
}


def _methods_for(path: str) -> dict[str, Handler] | None:
    if path in ROUTES:
        return ROUTES[path]
    if MODEL_ROUTE.fullmatch(path):
        return {"GET": handle_openai_model}
    return None


async def _route_error(request: web.Request) -> web.Response:
    methods = _methods_for(request.path)
    if methods is None:
        return plain_text(404, "404 page not found")
    allowed = ", ".join(m for m in METHOD_ORDER if m in methods)
    return plain_text(405, "405 method not allowed", {"Allow": allowed})


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _not_found(request: web.Request) -> web.Response:
    return plain_text(404, "404 page not found")


async def _unauthorized(request: web.Request) -> web.Response:
    # The shape hosted OpenAI-compatible APIs answer a missing or wrong key with.
    error = {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    return openai_json({"error": error}, 401)


def _hosted_handler(request: web.Request, config: SimulatorConfig) -> Handler | None:
    """In hosted mode, the answer that replaces routing: not found or unauthorized."""
    openai_path = request.path.startswith("/v1/")
    if config.openai_only and not openai_path:
        return _not_found
    authorized = request.headers.get("Authorization") == f"Bearer {config.api_key}"
    if config.api_key and openai_path and not authorized:
        return _unauthorized
    return None


# Handlers that apply the knobs themselves; other routes only honour X-Sim-TTFT.
INFERENCE_HANDLERS: frozenset[Handler] = frozenset(
    {
        handle_generate,
        handle_chat,
        handle_embed,
        handle_embeddings,
        handle_openai_chat,
        handle_openai_completions,
        handle_openai_embeddings,
    }
)


async def _run(request: web.Request, handler: Handler) -> web.StreamResponse:
    if handler not in INFERENCE_HANDLERS and "X-Sim-TTFT" in request.headers:
        # Lets tests make any route slow (e.g. to drop the client while it waits).
        try:
            knobs = Knobs.from_request(request, state_of(request).config)
        except ApiError as error:
            return native_error(error)
        await knobs.load_delay()
    return await handler(request)


def _sent_bytes(request: web.Request, response: web.StreamResponse | None) -> bytes:
    if request.method == "HEAD":
        return b""
    if isinstance(response, web.Response) and not response.prepared:
        body = response.body
        return bytes(body) if isinstance(body, (bytes, bytearray)) else b""
    return bytes(request[WRITTEN_KEY])


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Single entry point: routes, records the request and tracks its outcome."""
    sim = SIM_ROUTES.get(request.path)
    if sim is not None:
        handler = sim.get(request.method)
        if handler is None:
            return plain_text(405, "405 method not allowed", {"Allow": ", ".join(sim)})
        return await handler(request)

    state = state_of(request)
    methods = _methods_for(request.path)
    if request.method == "OPTIONS":
        handler = _no_content
    else:
        handler = (methods or {}).get(request.method) or _route_error
    handler = _hosted_handler(request, state.config) or handler

    request[START_KEY] = time.perf_counter_ns()
    request[WRITTEN_KEY] = bytearray()
    body = await request.read()
    request[BODY_KEY] = body
    state.record(request, body)
    state.bump("requests")
    state.bump("in_flight")
    outcome = "completed"
    response: web.StreamResponse | None = None
    try:
        response = await _run(request, handler)
    except ClientGone as gone:
        outcome = "disconnects"
        response = gone.response or web.Response()
    except ServerDrop as drop:
        outcome = "dropped"
        response = drop.response or web.Response()
    except asyncio.CancelledError:
        outcome = "disconnects"
        raise
    finally:
        state.last_response = _sent_bytes(request, response)
        state.last_response_status = response.status if response is not None else None
        state.bump("in_flight", -1)
        state.bump(outcome)
    return response


async def _strip_server_header(request: web.Request, response: web.StreamResponse) -> None:
    # Go's net/http sends no Server header.
    response.headers.pop("Server", None)


def build_app(config: SimulatorConfig | None = None) -> web.Application:
    """Build the aiohttp application (serve it with ``handler_cancellation=True``)."""
    config = config or SimulatorConfig()
    # Ollama has no request size limit (base64 images); aiohttp defaults to 1 MiB.
    app = web.Application(client_max_size=1 << 30)
    app[STATE_KEY] = SimState(config)
    app.router.add_route("*", "/{path:.*}", dispatch)
    app.on_response_prepare.append(_strip_server_header)
    return app
