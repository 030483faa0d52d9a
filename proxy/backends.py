"""The upstreams behind the one endpoint, and which of them answers a request.

Backends come from `OLLAMA_URL` (one Ollama, or several separated by commas) and from the admin's
`Backend` table (more Ollamas, hosted OpenAI-compatible APIs). Each worker keeps them in memory
(`Registry`) and never reads the table for a request: a background task reads it and checks every
backend each BACKEND_CHECK_SECONDS (an Ollama's `GET /` and `/api/tags`, an API's `/models` with
its key), which also discovers the models each one serves.

Routing goes by the request's model: the healthy backends that serve it, by priority; among equal
priorities the least loaded first (requests in flight, then requests so far, both per unit of
weight). The forwarder tries them in that order while no byte has reached the client. A backend
that fails BACKEND_FAILURES times in a row (checks or connects) is out of routing, its circuit
open, until a check passes; when no healthy backend serves a model the others are tried anyway,
so a lone Ollama that is away still answers with its own error. A model nobody lists goes to the
Ollamas, which answer for it as Ollama does (not found, or pulled).

With a single backend nothing is parsed or chosen: every request goes to it, as without routing.
The API key of a hosted backend lives only here and in the outgoing header: `Upstream` never
shows it, and nothing derived from it reaches a message, a log line, an error or a label.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from django.db import connection

from . import metrics, ollama, translate
from .models import Backend

log = logging.getLogger(__name__)

OLLAMA = Backend.Kind.OLLAMA
HOSTED = Backend.Kind.OPENAI
# Health is written to a backend's row when it changes, else at most this often.
WRITE_HEALTH_SECONDS = 60.0
# Discovered names kept on a row for the admin (a hosted API can list hundreds).
SHOWN_MODELS = 200
# Routes a hosted API serves itself, under its base URL.
HOSTED_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


def model_key(name: str) -> str:
    """A model name as Ollama compares it: case-insensitive, `:latest` when no tag is given."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def shown_url(url: str) -> str:
    """A URL fit for messages and logs: without any user or password in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def env_name(url: str) -> str:
    """The name of an `OLLAMA_URL` backend: host and port, which no admin name can be."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}:{port}"


class Upstream:
    """One backend as this worker sees it: its settings, health and load."""

    __slots__ = (
        "api_key",
        "failures",
        "health_error",
        "healthy",
        "in_flight",
        "kind",
        "models",
        "name",
        "own_ids",
        "patterns",
        "plain",
        "priority",
        "row_id",
        "served",
        "url",
        "weight",
        "written",
    )

    def __init__(
        self,
        name: str,
        url: str,
        *,
        kind: str = OLLAMA,
        api_key: str = "",
        patterns: tuple[str, ...] = (),
        priority: int = 100,
        weight: int = 1,
        row_id: int | None = None,
    ):
        self.name = name
        self.url = url.rstrip("/")
        # Host, port and path prefix for the lean client (proxy/http1.py) when the URL is
        # plain HTTP; None sends its requests through aiohttp (HTTPS).
        self.plain = _plain_address(self.url)
        self.kind = kind
        self.api_key = api_key
        self.patterns = tuple(pattern.lower() for pattern in patterns)
        self.priority = priority
        self.weight = max(1, weight)
        self.row_id = row_id
        self.models: frozenset[str] = frozenset()
        # A hosted API's own ids by `model_key`, from its /v1/models: what to send it back.
        self.own_ids: dict[str, str] = {}
        self.healthy = True  # until a check or connects say otherwise
        self.failures = 0
        self.health_error = ""
        self.in_flight = 0
        self.served = 0
        self.written: tuple | None = None  # (state, when) last written to the row

    def __repr__(self) -> str:
        return f"<Upstream {self.name} {self.kind} {shown_url(self.url)}>"

    @property
    def hosted(self) -> bool:
        return self.kind == HOSTED

    def described(self) -> str:
        """Which upstream, for an error message: kind and URL, never the key."""
        if self.hosted:
            return f"the OpenAI-compatible API {self.name} at {shown_url(self.url)}"
        return f"Ollama at {shown_url(self.url)}"

    def serves(self, model: str, key: str = "") -> bool:
        """Its configured names and patterns when it has some, else what it lists. `key`: the
        model's `model_key`, when the caller has it."""
        key = key or model_key(model)
        if not self.patterns:
            return key in self.models
        name = model.strip().lower()
        return any(
            fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(key, pattern)
            for pattern in self.patterns
        )

    def own_id(self, model: str) -> str:
        """The name this backend knows a requested model by (`gpt-4o-mini` for a request for
        `gpt-4o-mini:latest`); the name as requested when it listed no such model."""
        return self.own_ids.get(model_key(model), model)

    def url_for(self, raw_path: str) -> str:
        """Where one of our paths is on this backend: a hosted API's base URL ends in /v1."""
        return self.url + self.path_for(raw_path)

    def path_for(self, raw_path: str) -> str:
        """One of our paths under this backend's base URL."""
        return raw_path.removeprefix("/v1") if self.hosted else raw_path

    def headers_for(self, forwarded: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers to send: a hosted API gets its own key instead of the client's
        credentials and cookies."""
        if not self.hosted:
            return forwarded
        kept = [
            (name, value) for name, value in forwarded if name not in {"authorization", "cookie"}
        ]
        if self.api_key:
            kept.append(("authorization", f"Bearer {self.api_key}"))
        return kept

    def load(self) -> tuple:
        """Its place among backends of equal priority: least loaded per unit of weight first."""
        return (self.priority, self.in_flight / self.weight, self.served / self.weight)

    def passed(self, models: frozenset[str] | None = None) -> None:
        """A check passed or a request was answered: the circuit closes."""
        if models is not None:
            self.models = models
        if self.failures or not self.healthy:
            if not self.healthy:
                log.info("backend %s is back", self.name)
            self.failures = 0
            self.health_error = ""
            self._set_health(True)

    def failed(self, error: str) -> None:
        """A check failed or a connect did: enough in a row open the circuit."""
        self.failures += 1
        self.health_error = error[:255]
        if self.healthy and self.failures >= settings.BACKEND_FAILURES:
            # "Down", not "out of routing": a lone backend is still tried (nothing else to try).
            log.warning("backend %s is down: %s", self.name, self.health_error)
            self._set_health(False)

    def announce(self) -> None:
        """Put its health in the backend-up gauge (a new backend, or a new worker's start)."""
        self._set_health(self.healthy)

    def _set_health(self, healthy: bool) -> None:
        self.healthy = healthy
        metrics.BACKEND_UP.labels(self.name).set(1 if healthy else 0)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the backends to try in order, and the model it asked for."""

    upstreams: list[Upstream]
    model: str = ""


class CheckFailed(Exception):
    pass


def _plain_address(url: str) -> tuple[str, int, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port or 80
    except ValueError:  # a malformed port: aiohttp says what is wrong with it
        return None
    if parts.scheme != "http" or not parts.hostname:
        return None
    return parts.hostname, port, parts.path


class Registry:
    """The backends of one worker; started and stopped by the forwarder."""

    def __init__(self, session: aiohttp.ClientSession):
        self.session = session
        self.from_env = [Upstream(env_name(url), url) for url in settings.OLLAMA_URL.split(",")]
        self.upstreams: list[Upstream] = list(self.from_env)
        self.single: Route | None = Route(self.upstreams)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="proxy-backends")
        self.task: asyncio.Task | None = None
        self.table_failing = False
        self.check_timeout = aiohttp.ClientTimeout(total=settings.BACKEND_CHECK_TIMEOUT)

    async def start(self) -> None:
        """Read the table; with several backends, check them all before the first request,
        so routing knows their models."""
        for upstream in self.upstreams:
            upstream.announce()
        await self.reload()
        if self.single is None:
            await self.check()
        self.task = asyncio.get_running_loop().create_task(self._run(), name="proxy-backends")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await asyncio.get_running_loop().run_in_executor(self.executor, _close_connection)
        self.executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(settings.BACKEND_CHECK_SECONDS)
            try:
                await self.reload()
                await self.check()
            except Exception:  # the checks must outlive any one bad round
                log.exception("backends: a round of health checks failed")

    # --- routing (on the event loop, per request) -------------------------------------------

    def route(self, method: str, path: str, body: bytes | None) -> Route:
        """The backends for a request, best first. A hosted API answers the /v1 model routes
        itself and the Ollama-native ones through proxy.translate."""
        if self.single is not None:
            return self.single
        model = ""
        if path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
        elif method == "POST" and body:
            model = ollama.requested_model(body)
        hosted = (
            path in HOSTED_ROUTES
            or path in translate.NATIVE_ROUTES
            or path.startswith("/v1/models/")
        )
        usable = [u for u in self.upstreams if hosted or not u.hosted]
        key = model_key(model)
        serving = [u for u in usable if model and u.serves(model, key)]
        if not serving:
            serving = [u for u in usable if not u.hosted]
        healthy = [u for u in serving if u.healthy] or serving
        return Route(sorted(healthy, key=Upstream.load), model)

    # --- merged lists -----------------------------------------------------------------------

    async def merged_list(self, path: str) -> bytes | None:
        """`/api/tags`, `/api/ps` or `/v1/models` of every healthy backend as one reply, best
        priority first; None when none answered. The hosted APIs' models are in `/api/tags` too:
        Ollama clients can use them through proxy.translate."""
        upstreams = [u for u in self.upstreams if u.healthy] or self.upstreams
        upstreams = sorted(upstreams, key=lambda u: u.priority)
        wanted = [u for u in upstreams if not u.hosted or path != "/api/ps"]
        replies = await asyncio.gather(*(self._list(u, path) for u in wanted))
        if all(reply is None for reply in replies):
            return None
        entries = []
        for upstream, reply in zip(wanted, replies, strict=True):
            for entry in reply or []:
                if not upstream.patterns or upstream.serves(ollama.model_name(path, entry)):
                    entries.append(entry)
        return ollama.merged_list(path, entries)

    async def _list(self, upstream: Upstream, path: str) -> list[dict] | None:
        own = "/v1/models" if upstream.hosted else path
        try:
            payload = await self._get(upstream, own)
        except (aiohttp.ClientError, TimeoutError, CheckFailed) as error:
            log.debug("backend %s: no %s: %s", upstream.name, path, _reason(error))
            return None
        entries = ollama.listed_models(own, payload)
        if upstream.hosted and path == "/api/tags":
            return [ollama.hosted_tag(ollama.model_name(own, entry)) for entry in entries]
        return entries

    # --- health checks ----------------------------------------------------------------------

    async def check(self) -> None:
        """Check every backend at once; their rows get the outcome."""
        await asyncio.gather(*(self._check(upstream) for upstream in self.upstreams))
        due = [u for u in self.upstreams if u.row_id is not None and _health_due(u)]
        if due:
            states = [(u.row_id, u.healthy, u.health_error, sorted(u.models)) for u in due]
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self._write_health, states
            )

    async def _check(self, upstream: Upstream) -> None:
        try:
            if upstream.hosted:
                listed = await self._get(upstream, "/v1/models")
                names = ollama.listed_models("/v1/models", listed)
                path = "/v1/models"
            else:
                await self._get(upstream, "/")
                listed = await self._get(upstream, "/api/tags")
                names = ollama.listed_models("/api/tags", listed)
                path = "/api/tags"
        except (aiohttp.ClientError, TimeoutError, CheckFailed) as error:
            upstream.failed(_reason(error))
            return
        ids = {model_key(name): name for name in (ollama.model_name(path, e) for e in names)}
        if upstream.hosted:
            upstream.own_ids = ids
        upstream.passed(frozenset(ids))

    async def _get(self, upstream: Upstream, path: str) -> bytes:
        headers = upstream.headers_for([])
        async with self.session.get(
            upstream.url_for(path), headers=headers, timeout=self.check_timeout
        ) as response:
            if response.status != 200:
                raise CheckFailed(f"{path} answered HTTP {response.status}")
            return await response.read()

    # --- the table (in the backends thread) -------------------------------------------------

    async def reload(self) -> None:
        rows = await asyncio.get_running_loop().run_in_executor(self.executor, self._read_table)
        if rows is None:
            return
        known = {u.name: u for u in self.upstreams}
        upstreams = list(self.from_env)
        for row in rows:
            fresh = Upstream(
                row.name,
                row.url,
                kind=row.kind,
                api_key=row.api_key,
                patterns=tuple(row.model_patterns()),
                priority=row.priority,
                weight=row.weight,
                row_id=row.pk,
            )
            kept = known.get(row.name)
            if kept is not None and _same_endpoint(kept, fresh):
                kept.priority, kept.weight, kept.row_id = fresh.priority, fresh.weight, row.pk
                fresh = kept
            else:
                fresh.announce()
            upstreams.append(fresh)
        names = {u.name for u in upstreams}
        for gone in known.keys() - names:
            with contextlib.suppress(KeyError):
                metrics.BACKEND_UP.remove(gone)
        self.upstreams = upstreams
        self.single = Route(upstreams) if len(upstreams) == 1 else None

    def _read_table(self) -> list[Backend] | None:
        try:
            rows = list(Backend.objects.filter(enabled=True))
        except Exception as error:
            if not self.table_failing:
                log.warning("backends: cannot read the table (%s); keeping the last ones", error)
            self.table_failing = True
            connection.close()  # reopened on the next try
            return None
        self.table_failing = False
        return rows

    def _write_health(self, states: list[tuple]) -> None:
        now = datetime.now(UTC)
        try:
            for row_id, healthy, error, models in states:
                Backend.objects.filter(pk=row_id).update(
                    healthy=healthy,
                    health_error=error,
                    checked_at=now,
                    discovered_models=models[:SHOWN_MODELS],
                )
        except Exception as error:
            log.debug("backends: cannot write health (%s)", error)
            connection.close()


def _close_connection() -> None:
    connection.close()  # resolved in the backends thread, which owns this connection


def _same_endpoint(kept: Upstream, fresh: Upstream) -> bool:
    """Whether a row still describes the same upstream, so its health and load carry over."""
    return (kept.kind, kept.url, kept.api_key, kept.patterns) == (
        fresh.kind,
        fresh.url,
        fresh.api_key,
        fresh.patterns,
    )


def _health_due(upstream: Upstream) -> bool:
    state = (upstream.healthy, upstream.health_error, upstream.models)
    now = monotonic()
    if upstream.written is not None:
        written_state, when = upstream.written
        if written_state == state and now - when < WRITE_HEALTH_SECONDS:
            return False
    upstream.written = (state, now)
    return True


def _reason(error: BaseException) -> str:
    """A failure in words: aiohttp's errors name the host and port, never a header."""
    if isinstance(error, TimeoutError):
        return f"no answer within {settings.BACKEND_CHECK_TIMEOUT:g} s"
    return str(error) or type(error).__name__
