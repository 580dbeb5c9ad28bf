"""An edit request, multipart or JSON, read into an `EditRequest` (or refused as OpenAI refuses it).

    parse_form(form, limits)             # multipart: `image` or `image[]` file parts, `mask`, `markup`, text fields
    parse_json(body, limits, refs)       # JSON: `images: [{file_id} | {image_url}]`, `mask`, `markup`, typed fields

Both check the fields (`fields.read_fields`), probe every image from its header (`probe.probe_image`; no pixel
is decoded), then apply the edit API's shared rules (`backends.validation.request_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.base import EditRequest
from backends.images import InputImage
from backends.validation import request_problems
from pipeline.serve.fields import KNOWN, Fields, Values, bad, read_fields
from pipeline.serve.probe import check_mimetype, probe_image
from pipeline.serve.refs import Refs
from pipeline.serve.settings import ServeSettings
from pipeline.serve.wire import FILE_PARTS, ApiError, Form, Limits, ParsedRequest, Upload, error_for_invalid


def _array_too_long(count: int, limit: int, param: str) -> ApiError:
    return bad(
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, but got an array with "
        f"length {count} instead.",
        param,
        "array_above_max_length",
    )


def parse_form(form: Form, limits: Limits | None = None) -> ParsedRequest:
    """The OpenAI edit form -> a ParsedRequest, or the first problem as OpenAI would report it."""
    limits = limits or Limits()
    for part in form.files:
        if part.name not in FILE_PARTS:
            base = part.name.split("[", 1)[0]
            if base in KNOWN:
                raise bad(
                    f"Invalid type for '{base}': expected a string, but got a file instead.", base, "invalid_type"
                )
            raise bad(f"Unknown parameter: '{part.name}'.", part.name, "unknown_parameter")
    for name in FILE_PARTS:
        if name in form.fields:
            param = name.rstrip("[]")
            raise bad(f"Invalid type for '{param}': expected a file, but got a string instead.", param, "invalid_type")
    values = Values.from_form({k: v for k, v in form.fields.items() if k not in FILE_PARTS})
    singles = [f for f in form.files if f.name == "image"]
    arrays = [f for f in form.files if f.name == "image[]"]
    if len(singles) > 1 or (singles and arrays):
        raise bad(
            "Duplicate parameter: 'image'. You provided multiple values for this parameter; to send an array use "
            "the array syntax instead e.g. 'image[]=<value>'.",
            "image",
            "duplicate_parameter",
        )
    layers: dict[str, Upload] = {}
    for part in form.files:
        if part.name in ("mask", "markup"):
            if part.name in layers:
                raise bad(f"Duplicate parameter: '{part.name}'.", part.name, "duplicate_parameter")
            layers[part.name] = part
    fields = read_fields(values)
    parts = singles or arrays
    if not parts:
        raise bad("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(parts) > limits.max_images:
        raise _array_too_long(len(parts), limits.max_images, "image")

    def load(part: Upload, param: str) -> InputImage:
        check_mimetype(part.content_type, param)
        return probe_image(part.data, param=param, name=part.filename or param, max_pixels=limits.max_image_pixels)

    images = tuple(load(p, "image" if singles else f"image[{i}]") for i, p in enumerate(parts))
    mask = load(layers["mask"], "mask") if "mask" in layers else None
    markup = load(layers["markup"], "markup") if "markup" in layers else None
    return _finish(fields, images, mask, markup)


def parse_json(body: Any, limits: Limits | None = None, refs: Refs | None = None) -> ParsedRequest:
    """The JSON edit body -> a ParsedRequest (image references resolved by `refs`)."""
    limits = limits or Limits()
    if not isinstance(body, Mapping):
        raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
    if "image" in body:
        raise bad(
            "Unknown parameter: 'image'. JSON bodies give images as 'images': [{\"image_url\": ...} | "
            '{"file_id": ...}].',
            "image",
            "unknown_parameter",
        )
    fields = read_fields(Values.from_json(body))
    refs = refs or Refs(ServeSettings(), limits)  # no fetching unless a server's settings say so
    listed = body.get("images")
    if listed is None:
        raise bad("Missing required parameter: 'images'.", "images", "missing_required_parameter")
    if not isinstance(listed, list):
        raise ApiError(
            400,
            "Invalid type for 'images': expected an array of image references.",
            param="images",
            code="invalid_type",
        )
    if not listed:
        raise bad(
            "Invalid 'images': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "images",
            "empty_array",
        )
    if len(listed) > limits.max_images:
        raise _array_too_long(len(listed), limits.max_images, "images")
    images = tuple(refs.image(ref, f"images[{i}]") for i, ref in enumerate(listed))
    mask = refs.image(body["mask"], "mask") if body.get("mask") is not None else None
    markup = refs.image(body["markup"], "markup") if body.get("markup") is not None else None
    return _finish(fields, images, mask, markup)


def _finish(
    fields: Fields, images: tuple[InputImage, ...], mask: InputImage | None, markup: InputImage | None
) -> ParsedRequest:
    if fields.output_format == "svg":
        raise ApiError(
            400,
            "Unsupported value: 'output_format' does not support 'svg' here: none of this server's backends makes "
            "SVG images.",
            param="output_format",
            code="unsupported_value",
        )
    if fields.svg is not None:
        raise bad("Invalid 'svg': it applies only to output_format=svg.", "svg", "invalid_value")
    if fields.stream and fields.n > 1:
        raise ApiError(
            400,
            "Unsupported value: 'n' must be 1 with 'stream': a streamed edit returns one image here.",
            param="n",
            code="unsupported_value",
        )
    request = EditRequest(
        prompt=fields.prompt,
        images=images,
        mask=mask,
        markup=markup,
        size=fields.size,
        quality=fields.quality,
        n=fields.n,
        output_format=fields.output_format,
        output_compression=fields.output_compression,
        background=fields.background,
        input_fidelity=fields.input_fidelity,
        user=fields.user or None,
        seed=fields.seed,
        complexity=fields.complexity,
        moderation=fields.moderation,
        safety_identifier=fields.safety_identifier or None,
        frame_count=fields.frame_count,
        frame_duration_ms=fields.frame_duration_ms,
        partial_images=(fields.partial_images or 0) if fields.stream else None,
    )
    problems = request_problems(request)
    if problems:
        raise error_for_invalid(problems[0])
    return ParsedRequest(request=request, model=fields.model, tags=fields.tags)
