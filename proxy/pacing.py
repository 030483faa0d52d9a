"""The writer gives way to the event loop while it keeps up.

The recorder's writer thread shares the machine's cores, and the GIL, with the event loop that
relays the streams. A batch is milliseconds of CPU in one piece (reading the exchanges,
masking, one insert of ~80 rows with its indexes and search triggers): a request that arrives
meanwhile waits for the core and then for the GIL, again at each of its few waits on a socket.
That was the proxy's p99 at one connection (bench/proxy.py: +3.6-4.2 ms over direct with a
p50 of +0.25 ms).

While the queue is short, the writer works in pieces of about `PIECE_SECONDS` and sleeps
`REST_SECONDS` between them (a sleep releases the core and the GIL), and inserts at most
`PACED_ROWS` rows per statement (still one transaction per batch). Work that cannot wait (a
backlog, a flush, shutdown, a replay) is done at full speed: pacing never lets the writer fall
behind, it only spreads the same work over a few more milliseconds.

Off by default (`RECORDER_PACE`): in seven same-run comparisons of the benchmark it lowered the
added p99 at one connection (4.1-5.7 -> 2.3-3.4 ms) but cost 3-19 % more CPU per request at
that rate (the writer's pieces interleave with the event loop and the upstream on a shared core)
and raised p50 in five runs of seven (by up to 0.1 ms); at an Ollama's usual pace a batch is
under a piece and nothing changes.

Only the thread that calls `paced()` is paced: the state is per thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

# Measured with bench/proxy.py's one-connection case (see docs/benchmarks.md).
PIECE_SECONDS = 0.001
REST_SECONDS = 0.001
PACED_ROWS = 16

_state = threading.local()


@contextlib.contextmanager
def paced(active: bool = True) -> Iterator[None]:
    """Pace this thread's `breathe()` calls and statement sizes for the block."""
    previous = getattr(_state, "since", None)
    _state.since = time.perf_counter() if active else None
    try:
        yield
    finally:
        _state.since = previous


def breathe() -> None:
    """A point where a paced thread may rest; a no-op elsewhere (a few hundred ns)."""
    since = getattr(_state, "since", None)
    if since is None:
        return
    now = time.perf_counter()
    if now - since >= PIECE_SECONDS:
        time.sleep(REST_SECONDS)
        _state.since = time.perf_counter()


def rows_per_statement(most: int) -> int:
    """The most rows one insert takes: `most`, or fewer in a paced thread."""
    return min(most, PACED_ROWS) if getattr(_state, "since", None) is not None else most
