"""Static files streamed under ASGI without Django's warning on every file.

WhiteNoise answers a static file with a `FileResponse` that reads the file synchronously. Under
ASGI, Django then reads the whole file into memory in a worker thread before sending it, and
warns on each such response ("StreamingHttpResponse must consume synchronous iterators"): a line
in the log for every script and stylesheet of every page. `StaticFiles` is WhiteNoise's
middleware with one change: a file answered to an ASGI request gets an asynchronous body, the
file read in blocks in a worker thread and each block sent as it is read. WhiteNoise still
finds the file, and sets its headers, ranges and status; a WSGI request is answered as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from django.core.handlers.asgi import ASGIRequest
from whitenoise.middleware import WhiteNoiseMiddleware

# Bigger than FileResponse's 4 KiB: a thread hop per block (the largest vendored script, 210 KB,
# is four blocks).
BLOCK_BYTES = 64 * 1024


class StaticFiles(WhiteNoiseMiddleware):
    @staticmethod
    def serve(static_file, request):
        response = WhiteNoiseMiddleware.serve(static_file, request)
        if isinstance(request, ASGIRequest):
            # No file for a HEAD or a 304 (a browser's revalidation): an empty body. A file
            # stays among the response's resources, closed when the response is.
            response.streaming_content = _blocks(response.file_to_stream)
        return response


async def _blocks(filelike) -> AsyncIterator[bytes]:
    if filelike is None:
        return
    while block := await asyncio.to_thread(filelike.read, BLOCK_BYTES):
        yield block
