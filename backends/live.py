"""What a backend can tell the caller of a job before its `edit()` returns: partial images while it runs (OpenAI's
streaming `partial_images`), and the final answer as soon as the provider's response is read (so a server can
answer its client before the images are decoded and written).

    channel = live.listen(job_id, partial_images=2, on_partial=send, on_final=answer)   # the server
    ...run the job...
    live.stop_listening(channel)

    channel = live.channel_for(request.job_id)                                           # a backend
    if channel is not None:
        channel.send(png_bytes)          # a partial image (bytes, or the provider's base64 text); False: unwanted
        channel.final(FinalAnswer(b64s, result))   # the result about to be returned, its images still base64

A request asks for partial images with `EditRequest.partial_images` (0-3; None: not streamed), and only a backend
whose `capabilities.streaming` is True is given such a job. The channel numbers the partial images, drops any
beyond the number asked for, and says when the listener went away (`cancelled`), so the backend can stop work
nobody will see. A backend sends `final` only for an answer it is about to return as its result. Channels live
in this process: a job run elsewhere (a Ray worker) finds none, and its caller gets everything from the result.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backends.base import EditResult

PartialSink = Callable[[int, "bytes | str"], None]  # (partial_image_index, image bytes or base64 text)


HANDOFF_S = 0.5  # how long a backend leaves the CPU to the caller sending a final answer on, at most


@dataclass(frozen=True)
class FinalAnswer:
    """The result a backend is about to return, with its images still as the provider's base64 text
    (`result.images` is empty: the backend decodes them after sending this). The caller sets `taken` once it has
    passed the answer on, and the backend waits for that (at most HANDOFF_S) before its own CPU-heavy decoding,
    which would otherwise hold the interpreter while the answer is being sent."""

    images_b64: tuple[str | memoryview, ...]  # base64 text, or a view of the ASCII bytes of it
    result: EditResult
    taken: threading.Event = field(default_factory=threading.Event, compare=False)


class Channel:
    def __init__(
        self,
        job_id: str,
        partial_images: int,
        on_partial: PartialSink | None = None,
        on_final: Callable[[FinalAnswer], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.partial_images = partial_images
        self._on_partial = on_partial
        self._on_final = on_final
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
        return 0 if self.cancelled or self._on_partial is None else max(0, self.partial_images - self._sent)

    def send(self, data: bytes | str) -> bool:
        """Pass one partial image on (bytes, or base64 text); False when it was not wanted."""
        with self._lock:
            if self.cancelled or self._on_partial is None or self._sent >= self.partial_images:
                return False
            index = self._sent
            self._sent += 1
        self._on_partial(index, data)
        return True

    def final(self, answer: FinalAnswer) -> None:
        """The result the backend is about to return, as early as it has it; returns once the listener has passed
        it on (or after HANDOFF_S)."""
        if self._on_final is None or self.cancelled:
            return
        self._on_final(answer)
        answer.taken.wait(HANDOFF_S)

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


def listen(
    job_id: str,
    partial_images: int = 0,
    on_partial: PartialSink | None = None,
    on_final: Callable[[FinalAnswer], None] | None = None,
) -> Channel:
    """Listen to job `job_id` until `stop_listening(channel)`."""
    channel = Channel(job_id, partial_images, on_partial, on_final)
    with _lock:
        _channels[job_id] = channel
    return channel


def stop_listening(channel: Channel) -> None:
    with _lock:
        if _channels.get(channel.job_id) is channel:
            del _channels[channel.job_id]


def channel_for(job_id: str | None) -> Channel | None:
    """The channel listening to this job, if any."""
    if job_id is None:
        return None
    with _lock:
        return _channels.get(job_id)
