"""Reading a multipart edit request as it streams in, with every size limit enforced on the way.

A body declaring more than `Limits.max_body_bytes` is refused (413) before a byte of it is read; a body
without a (truthful) Content-Length is cut off at the same total. Each part is capped while it arrives: an
image or mask at `max_image_bytes`, the prompt at 4 bytes a character, other fields at `max_field_bytes`, at
most `max_images` images and `max_parts` parts. After the first problem the rest of the body is read and
dropped (so the client sees the 400 instead of a broken pipe), never kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from pipeline.serve.wire import KNOWN_FIELDS, ApiError, Form, Limits, Upload


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
        self._buf = bytearray()
        self._name = ""
        self._param = ""
        self._filename: str | None = None
        self._cap = 0

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
        self._headers, self._buf = {}, bytearray()
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
            if self.images > lim.max_images:
                return self._fail(
                    ApiError(
                        400,
                        f"Too many images: at most {lim.max_images} per request.",
                        param="image",
                        code="invalid_value",
                    )
                )
            self._param = "image" if name == "image" else f"image[{self.images - 1}]"
            self._cap = lim.max_image_bytes
        elif name == "mask":
            self._cap = lim.max_image_bytes
        elif name == "prompt":
            self._cap = lim.max_prompt_bytes
        elif name in KNOWN_FIELDS:
            self._cap = lim.max_field_bytes
        else:
            return self._fail(ApiError(400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if len(self._buf) + (end - start) > self._cap:
            if self._name == "prompt":
                return self._fail(
                    ApiError(
                        400,
                        f"Invalid 'prompt': string too long. Expected a string with maximum "
                        f"length {self.limits.max_prompt_chars}.",
                        param="prompt",
                        code="string_above_max_length",
                    )
                )
            what = "file" if self._filename is not None else "value"
            return self._fail(
                ApiError(
                    400,
                    f"Invalid {what} '{self._param}': larger than the limit of {_mb(self._cap)}.",
                    param=self._param,
                    code="file_too_large" if self._filename is not None else "string_above_max_length",
                )
            )
        self._buf += data[start:end]

    def _end(self) -> None:
        if self.error is not None:
            return
        data = bytes(self._buf)
        self._buf = bytearray()
        if self._filename is not None:
            self.form.files.append(Upload(self._name, data, self._filename, self._headers.get("content-type")))
        else:
            self.form.fields.setdefault(self._name, []).append(data.decode("utf-8", "replace"))


async def read_form(
    chunks: AsyncIterator[bytes], content_type: str | None, content_length: str | None, limits: Limits
) -> Form:
    mime, opts = parse_options_header(content_type or "")
    if mime != b"multipart/form-data":
        raise ApiError(
            400,
            "Expected a multipart/form-data body (as the OpenAI SDK's images.edit sends).",
            code="invalid_content_type",
        )
    boundary = opts.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart/form-data body without a boundary.", code="invalid_content_type")
    cap = limits.max_body_bytes
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number.", code="invalid_request") from None
        if declared > cap:
            raise ApiError(
                413,
                f"Request too large: {_mb(declared)} declared, at most {_mb(cap)} "
                f"({limits.max_images} images of {_mb(limits.max_image_bytes)} and a mask).",
                code="request_too_large",
            )
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
    try:
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}", code="invalid_multipart") from None
    return collector.form
