"""Reading an edit request's body as it streams in, with every size limit enforced on the way.

A body declaring more than `Limits.max_body_bytes` is refused (413) before a byte of it is read; a body
without a (truthful) Content-Length is cut off at the same total. A multipart body (`read_form`) has each part
capped while it arrives: an image, mask or markup layer at `max_image_bytes`, the prompt at 4 bytes a character
(its characters counted on, so the error says its length), other fields at `max_field_bytes`, at most
`max_images` images and `max_parts` parts. After the first problem the rest of the body is read and dropped (so
the client sees the 400 instead of a broken pipe), never kept. A JSON body (`read_body`) is read whole, capped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from pipeline.serve.fields import KNOWN, too_long
from pipeline.serve.wire import FILE_PARTS, ApiError, Form, Limits, Upload


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1_000_000 else f"{n} bytes"


class _Collector:
    """python-multipart callbacks that build a `Form`, stopping at the first broken limit."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.form = Form()
        self.error: ApiError | None = None
        self.parts = 0
        self.images = 0
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self._buf: list[memoryview] = []  # the part's data as views of the chunks: copied once, at its end
        self._size = 0
        self._name = ""
        self._param = ""
        self._filename: str | None = None
        self._cap = 0
        self._prompt_chars = 0  # characters of a prompt past its byte cap, counted to report its length
        self._skip = False  # an image part beyond the limit: counted, not kept

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._hfield,
            "on_header_value": self._hvalue,
            "on_header_end": self._hend,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._buf, self._size, self._skip = {}, [], 0, False
        self.parts += 1

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._field.decode("latin-1").strip().lower()] = self._value.decode("utf-8", "replace").strip()
        self._field, self._value = b"", b""

    def _fail(self, error: ApiError) -> None:
        if self.error is None:
            self.error = error

    def _headers_done(self) -> None:
        lim = self.limits
        if self.parts > lim.max_parts:
            return self._fail(ApiError(400, f"Too many form parts (limit {lim.max_parts}).", code="too_many_parts"))
        _, opts = parse_options_header(self._headers.get("content-disposition", ""))
        name = (opts.get(b"name") or b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        self._name, self._filename = name, None if filename is None else filename.decode("utf-8", "replace")
        self._param = name
        if name in ("image", "image[]"):
            self.images += 1
            if self.images > lim.max_images:  # counted on (nothing kept) so the error can say how many
                self._cap, self._skip = 0, True
                return
            self._param = "image" if name == "image" else f"image[{self.images - 1}]"
            self._cap = lim.max_image_bytes
        elif name in FILE_PARTS:
            self._cap = lim.max_image_bytes
        elif name == "prompt":
            self._cap = lim.max_prompt_bytes
        elif name.split("[", 1)[0] in KNOWN:
            self._cap = lim.max_field_bytes
        else:
            base = name.split("[", 1)[0]  # `style[tone]`: the parameter is `style`
            return self._fail(ApiError(400, f"Unknown parameter: '{base}'.", param=base, code="unknown_parameter"))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._skip:
            return
        if self._prompt_chars:  # an over-long prompt: count its characters (UTF-8 lead bytes), keep nothing
            self._prompt_chars += _chars(data[start:end])
            return
        if self.error is not None:
            return
        if self._size + (end - start) > self._cap:
            if self._name == "prompt" and self._filename is None:
                self._prompt_chars = _chars(b"".join(self._buf)) + _chars(data[start:end])
                self._buf, self._size = [], 0
                return
            what = "file" if self._filename is not None else "value"
            return self._fail(
                ApiError(
                    400,
                    f"Invalid {what} '{self._param}': larger than the limit of {_mb(self._cap)}.",
                    param=self._param,
                    code="file_too_large" if self._filename is not None else "string_above_max_length",
                )
            )
        # a view of an immutable chunk (copied only when joined); anything mutable is copied now
        self._buf.append(memoryview(data)[start:end] if isinstance(data, bytes) else memoryview(bytes(data[start:end])))
        self._size += end - start

    def _end(self) -> None:
        if self._skip:
            self._skip = False
            return
        if self._prompt_chars:
            self._fail(too_long("prompt", self.limits.max_prompt_chars, self._prompt_chars))
            self._prompt_chars = 0
        if self.error is not None:
            return
        data = b"".join(self._buf)
        self._buf, self._size = [], 0
        if self._filename is not None:
            self.form.files.append(Upload(self._name, data, self._filename, self._headers.get("content-type")))
        else:
            self.form.fields.setdefault(self._name, []).append(data.decode("utf-8", "replace"))


_CONTINUATION = bytes(range(0x80, 0xC0))


def _chars(data: bytes) -> int:
    """UTF-8 characters in `data`: every byte that is not a continuation byte (0b10xxxxxx) starts one."""
    return len(data.translate(None, _CONTINUATION))


def _declared(content_length: str | None, limits: Limits) -> None:
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise ApiError(400, "Content-Length is not a number.", code="invalid_request") from None
    if declared > limits.max_body_bytes:
        raise ApiError(
            413,
            f"Request too large: {_mb(declared)} declared, at most {_mb(limits.max_body_bytes)} "
            f"({limits.max_images} images of {_mb(limits.max_image_bytes)}, a mask and a markup layer).",
            code="request_too_large",
        )


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limits: Limits) -> bytes:
    """A JSON body, whole, within the size limit."""
    _declared(content_length, limits)
    cap, parts, total = limits.max_body_bytes, [], 0
    async for chunk in chunks:
        total += len(chunk)
        if total > cap:
            raise ApiError(413, f"Request too large: more than {_mb(cap)}.", code="request_too_large")
        parts.append(chunk)
    return b"".join(parts)


async def read_form(
    chunks: AsyncIterator[bytes], content_type: str | None, content_length: str | None, limits: Limits
) -> Form:
    _, opts = parse_options_header(content_type or "")
    boundary = opts.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data body without a boundary.", code="invalid_content_type")
    cap = limits.max_body_bytes
    _declared(content_length, limits)
    collector = _Collector(limits)
    parser = MultipartParser(boundary, callbacks=collector.callbacks())  # type: ignore[arg-type]
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > cap:  # no Content-Length, or a false one: stop reading here
            raise ApiError(413, f"Request too large: more than {_mb(cap)}.", code="request_too_large")
        if collector.error is None and chunk:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                collector.error = ApiError(400, f"Malformed multipart body: {exc}", code="invalid_multipart")
    if collector.error is not None:
        raise collector.error
    if collector.images > limits.max_images:
        raise ApiError(
            400,
            f"Invalid 'image': array too long. Expected an array with maximum length {limits.max_images}, but got "
            f"an array with length {collector.images} instead.",
            param="image",
            code="array_above_max_length",
        )
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}", code="invalid_multipart") from None
    return collector.form
