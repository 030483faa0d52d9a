"""Who may use the proxy routes: proxy keys, the model management routes, rate limits.

The forwarder asks `Gate.admit` before relaying a request, and only while `Gate.enabled` (a key
is required, management is restricted, a rate limit is set, or proxy keys exist) or when a
request carries a bearer value with our scheme (a key created since this worker last read the
keys). Otherwise the hot path pays an attribute read and a header lookup, and the proxy is as
open as Ollama.

- A bearer value with our scheme (`Authorization: Bearer omp_…`) is ours: it is checked against
  the keys in memory (proxy.keys) and never forwarded upstream, valid or not. A valid key
  attributes the message to its owner, unless a trusted user header (PROXY_USER_HEADERS)
  names the user; an invalid or revoked one gets 401. Other Authorization values pass through
  untouched (Ollama ignores them; an authenticating proxy in front of it may not).
- `PROXY_REQUIRE_KEY`: no valid key, 401; `GET /` and `HEAD /` stay open for health checks.
- `PROXY_ALLOW_MANAGEMENT`: pull, push, create, copy, delete and blobs for all, for admin
  keys only, or for none (403).
- Rate limits (proxy.ratelimit) on the model routes, per key, else per client IP (429 with
  Retry-After).

Refusals use Ollama's error shape and are counted like every exchange by the recorder's
metrics (`ollama_requests_total{status="error"}`; on the model routes the GenAI histograms carry
the HTTP status as `error_type`); they are not stored as messages, so a flood of refused
requests cannot fill the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from django.conf import settings

from . import ollama
from .exchange import Exchange
from .keys import KeyRing, KnownKey
from .models import ProxyKey
from .ratelimit import Limits

MANAGEMENT_ROUTES = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})
BLOBS = "/api/blobs/"
SCHEME = ProxyKey.SCHEME
JSON_UTF8 = (b"content-type", b"application/json; charset=utf-8")
BEARER_CHALLENGE = (b"www-authenticate", b'Bearer realm="ollama-monitor"')


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    message: str
    headers: tuple = ()

    async def respond(self, send, extra_headers: list) -> None:
        headers = [JSON_UTF8, *self.headers, *extra_headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": ollama.error_body(self.message)})


def is_management(path: str) -> bool:
    return path in MANAGEMENT_ROUTES or path.startswith(BLOBS)


def our_secret(authorization: str) -> str | None:
    """The proxy key in an Authorization value, when it carries one of ours."""
    scheme, _, secret = authorization.partition(" ")
    secret = secret.strip()
    if scheme.lower() == "bearer" and secret.startswith(ProxyKey.SCHEME):
        return secret
    return None


class Gate:
    """One per worker, started by the forwarder with the settings of the moment."""

    def __init__(self):
        self.require_key = settings.PROXY_REQUIRE_KEY
        self.management = settings.PROXY_ALLOW_MANAGEMENT
        rpm = settings.PROXY_RATE_LIMIT_RPM
        tokens = settings.PROXY_RATE_LIMIT_TOKENS_PER_DAY
        self.limits = Limits(rpm, tokens) if rpm or tokens else None
        self.user_headers = tuple(settings.PROXY_USER_HEADERS)
        self.keys = KeyRing(settings.PROXY_KEY_REFRESH_SECONDS, on_change=self._keys_read)
        self.always = self.require_key or self.management != "all" or self.limits is not None
        self.enabled = self.always

    async def start(self) -> None:
        await self.keys.start()

    async def stop(self) -> None:
        await self.keys.stop()

    def _keys_read(self, keys: KeyRing) -> None:
        # Once a key exists, every request is looked at: a key of ours must not go upstream.
        self.enabled = self.always or bool(keys.by_hash)

    async def admit(
        self, exchange: Exchange, headers: dict[str, str], forwarded: list[tuple[str, str]]
    ) -> Refusal | None:
        """None when the request may be relayed, else why not. Removes our keys from the
        headers to forward, and notes the key's owner and the rate-limit identity."""
        key: KnownKey | None = None
        if "authorization" in headers:
            found = [our_secret(value) for name, value in forwarded if name == "authorization"]
            presented = [secret for secret in found if secret is not None]
            if presented:
                forwarded[:] = [
                    (name, value)
                    for name, value in forwarded
                    if name != "authorization" or our_secret(value) is None
                ]
                key = self.keys.get(presented[0]) or await self.keys.get_fresh(presented[0])
                if key is None or not key.valid:
                    return refuse(
                        exchange,
                        401,
                        "unauthorized",
                        "invalid or revoked proxy key",
                        (BEARER_CHALLENGE,),
                    )
                if not any(headers.get(name) for name in self.user_headers):
                    exchange.user = key.username
        path = exchange.path
        if key is None and self.require_key and path != "/":
            return refuse(
                exchange,
                401,
                "unauthorized",
                "this server needs a proxy key: Authorization: Bearer <key>",
                (BEARER_CHALLENGE,),
            )
        if self.management != "all" and is_management(path):
            if self.management == "none":
                return refuse(
                    exchange, 403, "forbidden", "model management is turned off on this server"
                )
            if key is None or not key.is_admin:
                return refuse(exchange, 403, "forbidden", "model management needs an admin key")
        if self.limits is not None and exchange.method == "POST" and path in ollama.MODEL_ROUTES:
            identity = f"key:{key.id}" if key is not None else f"ip:{exchange.client_ip}"
            limited = await self.limits.check(identity)
            if limited is not None:
                message, retry_after = limited
                return refuse(
                    exchange, 429, "rate_limited", message, ((b"retry-after", b"%d" % retry_after),)
                )
            if self.limits.tokens_per_day:
                exchange.rate_key = identity  # the writer counts its tokens
        return None


def refuse(exchange: Exchange, status: int, reason: str, message: str, headers=()) -> Refusal:
    """A refusal, noted on the exchange so the recorder counts it like any other."""
    exchange.http_status = status
    exchange.error = f"{reason.replace('_', ' ')}: {message}"
    exchange.finished = perf_counter()
    return Refusal(status, reason, exchange.error, headers)
