"""The load generator of the proxy benchmark: an asyncio HTTP client that times every request.

Our own client rather than wrk or hey because those time whole responses only; this one also
notes the time to the first body byte (TTFT) of each stream and keeps a few bodies so the
benchmark can check that every path delivered the same NDJSON lines. It runs on uvloop with
aiohttp's client: keep-alive, a fixed number of connections, each looping for a fixed time or a
fixed number of requests. A worker never abandons a request at the deadline, so every request
sent is answered and can be matched against the proxy's records.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from time import perf_counter

import aiohttp


@dataclass(frozen=True)
class Load:
    """One kind of request, sent again and again."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Result:
    sent: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    # Newlines per response: an NDJSON line or half an SSE frame each. One value when no line
    # was lost or added anywhere.
    newline_counts: set[int] = field(default_factory=set)
    samples: list[bytes] = field(default_factory=list)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def run(
    base_url: str,
    load: Load,
    connections: int,
    *,
    duration: float | None = None,
    requests_per_connection: int | None = None,
    samples: int = 3,
) -> Result:
    """Send `load` over `connections` keep-alive connections, for a duration or a count."""
    result = Result()
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    url = base_url + load.path
    headers = {"Content-Type": "application/json", **load.headers}
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    ) as session:
        started = perf_counter()
        deadline = started + duration if duration is not None else None
        await asyncio.gather(
            *(
                _worker(
                    session,
                    url,
                    load.body,
                    headers,
                    deadline,
                    requests_per_connection,
                    result,
                    samples,
                )
                for _ in range(connections)
            )
        )
        result.elapsed = perf_counter() - started
    return result


async def _worker(session, url, body, headers, deadline, count, result: Result, samples) -> None:
    done = 0
    while (deadline is None or perf_counter() < deadline) and (count is None or done < count):
        done += 1
        result.sent += 1
        keep = [] if len(result.samples) < samples else None
        newlines = 0
        first = None
        started = perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                async for chunk in response.content.iter_any():
                    if first is None:
                        first = perf_counter()
                    newlines += chunk.count(b"\n")
                    if keep is not None:
                        keep.append(chunk)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            result.errors += 1
            result.first_error = result.first_error or repr(error)
            continue
        finished = perf_counter()
        if status != 200:
            result.errors += 1
            result.first_error = result.first_error or f"HTTP {status}"
            continue
        result.latencies.append(finished - started)
        result.ttfts.append((first or finished) - started)
        result.newline_counts.add(newlines)
        if keep is not None and len(result.samples) < samples:
            result.samples.append(b"".join(keep))
