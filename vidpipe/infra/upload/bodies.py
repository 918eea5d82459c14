"""Request bodies, streamed: into a store's writer, or read and dropped.

At most ``FLUSH_BYTES`` of a request are in memory at once, on their way to
the store in a worker thread. ``request.state.body`` says how far a body got
("started", "read"), so that an error answer knows whether the rest of it is
still on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

from anyio import to_thread
from starlette.requests import Request

from vidpipe.infra.upload.errors import TooLarge
from vidpipe.infra.upload.protocol import content_length
from vidpipe.infra.upload.stores import Writer

FLUSH_BYTES = 1 << 20
DRAIN_BYTES = 64 << 20  # a refused body up to this size is read (and dropped) before answering


def _write(writer: Writer, hasher: Any, data: bytes) -> None:
    if hasher is not None:
        hasher.update(data)
    writer.write(data)


async def pump(request: Request, writer: Writer, room: int, hasher: Any) -> int:
    """Stream the body into ``writer``; ``TooLarge`` as soon as it passes ``room``.

    One block is written (in a thread) while the next one arrives; blocks reach the
    writer in order, and at most two are in memory.
    """
    total = 0
    pending: list[bytes] = []
    size = 0
    writing: asyncio.Future[None] | None = None

    async def hand_on(data: bytes) -> None:
        nonlocal writing
        if writing is not None:
            await writing
        writing = asyncio.ensure_future(to_thread.run_sync(_write, writer, hasher, data))

    request.state.body = "started"
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            total += len(chunk)
            if total > room:
                raise TooLarge("the body goes past the upload's length")
            pending.append(chunk)
            size += len(chunk)
            if size >= FLUSH_BYTES:
                data, pending, size = b"".join(pending), [], 0
                await hand_on(data)
    finally:
        # On a disconnect too: what arrived is handed on (kept unless the PATCH is atomic).
        if pending and total <= room:
            await hand_on(b"".join(pending))
        if writing is not None:
            await asyncio.shield(writing)
    request.state.body = "read"
    return total


async def drain(request: Request) -> bool:
    """Read and drop a body nobody looked at (up to ``DRAIN_BYTES``), so that the client,
    still sending, reads the answer instead of a reset; True if all of it was read."""
    declared = content_length(request)
    if declared is not None and declared > DRAIN_BYTES:
        return False
    seen = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return False
        seen += len(message.get("body", b""))
        if seen > DRAIN_BYTES:
            return False
        if not message.get("more_body", False):
            return True
