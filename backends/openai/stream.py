"""A streamed OpenAI edit (`stream=true`) on the wire, as pure functions: server-sent events decoded from bytes,
and OpenAI's image-edit events read (https://developers.openai.com/api/reference/resources/images/methods/edit,
"Returns"; the SDK's `ImageEditPartialImageEvent` / `ImageEditCompletedEvent`).

    decoder = SSEDecoder()
    for chunk in response.iter_bytes():
        for event in decoder.feed(chunk):
            kind, payload = read_event(event)   # ("partial", base64 text) | ("completed", ImagesResponse dict)

The format (https://html.spec.whatwg.org/multipage/server-sent-events.html): lines `event: <name>` and
`data: <text>` (several `data:` lines join with newlines), an empty line ends an event, lines starting with `:`
are comments; line ends may be CRLF, LF or CR. An event whose data holds an `error` object is an error the
provider sent after the stream began; `read_event` turns it into the same `EditError` an error status would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backends.errors import BackendUnavailable, EditError, OutcomeUnknown
from backends.openai.wire import map_status_error

PARTIAL = "image_edit.partial_image"
COMPLETED = "image_edit.completed"
MAX_LINE = 64 * 1024 * 1024  # an event line longer than this is a broken stream (a 4K PNG as base64 is ~30 MB)


@dataclass(frozen=True)
class Event:
    event: str  # "" when the stream gave no `event:` line
    data: str


class SSEDecoder:
    """Incremental: feed bytes as they arrive, get the events they complete. Lines are found with `bytes.find`
    from where the last search stopped, so a multi-megabyte base64 line arriving in small chunks costs O(n)."""

    def __init__(self) -> None:
        self._buf = bytearray()  # appended in place: a long line arriving in small chunks is not copied per chunk
        self._scanned = 0  # bytes of _buf known to hold no line end
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self._buf += chunk
        out = []
        while True:
            cut = self._line_end()
            if cut is None:
                if len(self._buf) > MAX_LINE:
                    raise BackendUnavailable("the event stream sent a line longer than 64 MB")
                return out
            line = bytes(self._buf[: cut[0]])
            del self._buf[: cut[1]]
            self._scanned = 0
            event = self._line(line.decode("utf-8", "replace"))
            if event is not None:
                out.append(event)

    def _line_end(self) -> tuple[int, int] | None:
        """(end of the first line, start of the next) for CRLF, LF or a lone CR; None if no full line yet."""
        buf = self._buf
        lf, cr = buf.find(b"\n", self._scanned), buf.find(b"\r", self._scanned)
        if cr != -1 and (lf == -1 or cr < lf):
            if cr + 1 == len(buf):  # a CR at the end may be the first half of CRLF
                self._scanned = cr
                return None
            return cr, cr + 2 if buf[cr + 1 : cr + 2] == b"\n" else cr + 1
        if lf != -1:
            return lf, lf + 1
        self._scanned = len(buf)
        return None

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and not self._event:
                return None
            event = Event(self._event, "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # `id:` and `retry:` mean nothing for an image edit


def read_event(event: Event, *, key_source: str, secret: str | None = None) -> tuple[str, Any]:
    """("partial", base64 text) | ("completed", the ImagesResponse body) | ("other", None) for one event; raises
    the `EditError` an in-stream error means."""
    if event.data.strip() == "[DONE]":
        return "other", None
    try:
        data = json.loads(event.data)
    except ValueError:
        raise BackendUnavailable(
            f"the event stream sent an event that is not JSON ({event.event or 'no name'})"
        ) from None
    if not isinstance(data, dict):
        raise BackendUnavailable("the event stream sent an event that is not a JSON object")
    kind = data.get("type") or event.event
    if isinstance(data.get("error"), dict) or kind == "error":
        status = _status_of(data)
        raise map_status_error(status, {}, data, key_source=key_source, secret=secret)
    if kind == PARTIAL:
        b64 = data.get("b64_json")
        if not isinstance(b64, str) or not b64:
            raise BackendUnavailable("a partial_image event without b64_json")
        return "partial", b64  # base64 text, passed on as it came
    if kind == COMPLETED:  # as the ImagesResponse body a plain call answers (`response.read_bytes` reads it)
        body = {k: v for k, v in data.items() if k not in ("type", "b64_json", "created_at")}
        return "completed", {**body, "data": [{"b64_json": data.get("b64_json")}]}
    return "other", None


def _status_of(data: dict[str, Any]) -> int:
    """An in-stream error has no HTTP status: a request error (it names a param or an invalid_* code) reads as
    400, anything else as a server error."""
    err = data.get("error") if isinstance(data.get("error"), dict) else data
    code = str(err.get("code") or "")
    if err.get("param") or err.get("type") in ("invalid_request_error", "image_generation_user_error"):
        return 400
    if code in ("rate_limit_exceeded",):
        return 429
    return 500


def unfinished(partials: int) -> EditError:
    """The stream ended before `image_edit.completed`."""
    return OutcomeUnknown(
        f"the event stream ended after {partials} partial image(s) without the completed image; the provider "
        "may have billed it"
    )


def completed_or_raise(result: dict[str, Any] | None, partials: int) -> dict[str, Any]:
    if result is None:
        raise unfinished(partials)
    return result
