"""Partial images while an edit runs (OpenAI's streaming `partial_images`), passed from the backend that makes
them to whoever streams them to a client.

    with previews.open_channel(job_id, partial_images=2, on_partial=send) as channel:   # the server
        ... run the job ...
    channel = previews.channel_for(request.job_id)                                       # a backend
    if channel is not None and not channel.send(png_bytes):  # False: the listener is gone (or had enough)
        ...

A request asks for previews with `EditRequest.partial_images` (0-3; None: not streamed), and only a backend
whose `capabilities.streaming` is True is given such a job. A backend finds the job's channel by its job id; the
channel numbers the partial images, drops any beyond the number asked for, and says when the listener went away
(`cancelled`), so the backend can stop work that nobody will see. Channels live in this process: a job run
elsewhere (a Ray worker) finds none and sends no partials; its final image is unaffected.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

PartialSink = Callable[[int, bytes], None]  # (partial_image_index, the encoded image)


class Channel:
    def __init__(self, job_id: str, partial_images: int, on_partial: PartialSink) -> None:
        self.job_id = job_id
        self.partial_images = partial_images
        self._on_partial = on_partial
        self._sent = 0
        self._cancelled = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def wanted(self) -> int:
        """Partial images still wanted (0 when the listener is gone)."""
        return 0 if self.cancelled else max(0, self.partial_images - self._sent)

    def send(self, data: bytes) -> bool:
        """Pass one partial image on; False when it was not wanted (all sent, or the listener is gone)."""
        with self._lock:
            if self.cancelled or self._sent >= self.partial_images:
                return False
            index = self._sent
            self._sent += 1
        self._on_partial(index, data)
        return True

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Run `hook` (e.g. close an upstream stream) when the listener goes away; at once if it already has."""
        with self._lock:
            if not self.cancelled:
                self._hooks.append(hook)
                return
        hook()

    def cancel(self) -> None:
        """The listener is gone: the backend should stop and say what it spent."""
        with self._lock:
            if self.cancelled:
                return
            self._cancelled.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            with contextlib.suppress(Exception):  # a hook failing must not hide the cancellation
                hook()


_channels: dict[str, Channel] = {}
_lock = threading.Lock()


def listen(job_id: str, partial_images: int, on_partial: PartialSink) -> Channel:
    """Listen for the partial images of job `job_id` until `stop_listening(channel)`."""
    channel = Channel(job_id, partial_images, on_partial)
    with _lock:
        _channels[job_id] = channel
    return channel


def stop_listening(channel: Channel) -> None:
    with _lock:
        if _channels.get(channel.job_id) is channel:
            del _channels[channel.job_id]


@contextlib.contextmanager
def open_channel(job_id: str, partial_images: int, on_partial: PartialSink) -> Iterator[Channel]:
    """`listen` for the duration of a block."""
    channel = listen(job_id, partial_images, on_partial)
    try:
        yield channel
    finally:
        stop_listening(channel)


def channel_for(job_id: str | None) -> Channel | None:
    """The channel listening to this job, if any."""
    if job_id is None:
        return None
    with _lock:
        return _channels.get(job_id)
