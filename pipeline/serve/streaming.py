"""A streamed edit (`stream=true`): OpenAI's server-sent events, `image_edit.partial_image` as the backend sends
each preview, then `image_edit.completed` with the image and `usage` (https://developers.openai.com/api/reference/
resources/images/methods/edit; the SDK's `ImageEditStreamEvent`).

    response = await stream_edit(service, prepared, receive, headers)   # a JSON error, or the event stream

The 200 and its headers wait for the first event, so a job that fails before any partial image gets its proper
status (a 429 with the provider's retry-after, a 400, ...) as a plain request does. An error after the stream
began is an error event (`data: {"error": {...}}`, which the SDK raises as `APIError`). A client that goes away
mid-stream cancels its job (`EditService.cancel`): the backend stops at its next step or event and its call is
recorded at what it may have cost (a provider bills a started edit; a GPU's seconds are spent), and no retry joins
it (the SDK does not retry a stream that began). One that goes away before the stream began is treated like a
plain request's client: the job goes on, and the SDK's retry may join it.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from PIL import Image
from starlette.responses import JSONResponse, Response

from pipeline.serve.service import EditService, Prepared, Served
from pipeline.serve.wire import completed_event, partial_event, sse

Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


async def client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (uvicorn also says so once the response is complete)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def first_of(item: Awaitable[Any], gone: asyncio.Future) -> tuple[bool, Any]:
    """(True, value) when `item` comes first; (False, None) when the client went away first."""
    task = asyncio.ensure_future(item)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return True, task.result()
    task.cancel()
    return False, None


class _Stream:
    """One streamed edit: the job's items (("partial", index, image) | ("done", Served)) become events."""

    def __init__(self, service: EditService, prepared: Prepared) -> None:
        self.service, self.prepared = service, prepared
        self.request = prepared.job.request
        self.items: asyncio.Queue = asyncio.Queue()

    def on_partial(self, index: int, image: bytes | str) -> None:
        self.items.put_nowait(("partial", index, image))

    def cancel(self) -> None:
        self.service.cancel(self.prepared)

    def encode(self, item: tuple) -> bytes:
        if item[0] == "partial":
            r = self.request
            shape = {"output_format": r.output_format, "quality": r.quality, "background": r.background}
            return sse(partial_event(item[2], item[1], {**shape, "size": _size_of(item[2], r.size)}))
        served: Served = item[1]
        served.passed_on()  # (encoded now: the backend may decode and write while the event goes out)
        self.service.tries.answered(self.prepared.key)
        if not served.ok:
            return sse(self.service.error_for(served).body())
        return sse(completed_event(served.images[0], served.record, self.request))


class _EventStream(Response):
    """The event stream from its first event on: each event as it comes; the job cancelled if the client goes away
    before the completed event."""

    media_type = "text/event-stream"

    def __init__(self, stream: _Stream, first: tuple, gone: asyncio.Future, headers: Mapping[str, str]) -> None:
        self.status_code, self.background = 200, None
        self.init_headers({**headers, "cache-control": "no-cache"})  # no body yet: no content-length
        self.stream, self.first, self.gone = stream, first, gone

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        stream, item, finished = self.stream, self.first, False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            while True:
                await send({"type": "http.response.body", "body": stream.encode(item), "more_body": True})
                if item[0] == "done":
                    break
                came, item = await first_of(stream.items.get(), self.gone)
                if not came:
                    return
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not finished:
                stream.cancel()
            self.gone.cancel()


async def stream_edit(service: EditService, prepared: Prepared, receive: Receive, headers: dict) -> Response:
    """Run a streamed edit and answer with its events (or with a plain error before the first one)."""
    stream = _Stream(service, prepared)
    answer, _ = service.start(prepared, on_partial=stream.on_partial)
    answer.add_done_callback(lambda f: stream.items.put_nowait(("done", f.result())))
    gone = asyncio.ensure_future(client_gone(receive))
    try:
        came, first = await first_of(stream.items.get(), gone)
    except BaseException:
        gone.cancel()
        raise
    if not came:  # gone before the stream began: the job goes on, for the SDK's retry to join
        answer.add_done_callback(lambda f: f.result().passed_on())
        return Response(status_code=499)
    if first[0] == "done" and not first[1].ok:
        first[1].passed_on()
        service.tries.answered(prepared.key)
        gone.cancel()
        err = service.error_for(first[1])
        return JSONResponse(err.body(), status_code=err.status, headers={**headers, **err.headers()})
    return _EventStream(stream, first, gone, headers)


def _size_of(data: bytes | str, requested: str) -> str:
    """A partial image's own size (`WxH`) from its header (bytes, or the start of its base64); the requested
    size if it cannot be read."""
    try:
        head = base64.b64decode(data[:65536]) if isinstance(data, str) else data
        with Image.open(io.BytesIO(head)) as img:
            return f"{img.width}x{img.height}"
    except Exception:  # noqa: BLE001 - any unreadable header: say what was asked for
        return requested
