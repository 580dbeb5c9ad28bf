"""The edit request's fields as OpenAI checks them, for both encodings, with OpenAI's codes and messages.

    values = Values.from_form(form.fields)       # multipart: every value a string, nested ones as `svg[model]`
    values = Values.from_json(body)              # JSON: typed values, nested objects
    fields = read_fields(values)                 # typed, defaulted, or the first fault as OpenAI names it

One code per fault, whatever the encoding or the characters in a value (OpenAI's request validation:
https://developers.openai.com/api/docs/guides/error-codes; the codes and message shapes below are the ones its
API returns, e.g. "Invalid 'n': integer above maximum value. Expected a value <= 10, but got 11 instead."):
unknown_parameter, duplicate_parameter, missing_required_parameter, invalid_type, invalid_value, empty_string,
string_above_max_length, integer_below_min_value, integer_above_max_value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.base import (
    BACKGROUNDS,
    COMPLEXITIES,
    INPUT_FIDELITIES,
    MAX_N,
    MAX_PROMPT_CHARS,
    MAX_SAFETY_IDENTIFIER_CHARS,
    MODERATIONS,
)
from pipeline.serve.wire import ApiError

QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
OUTPUT_FORMATS = ("png", "jpeg", "webp", "gif", "svg")
SVG_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
ENUMS: dict[str, tuple[str, ...]] = {
    "quality": QUALITIES,
    "background": BACKGROUNDS,
    "output_format": OUTPUT_FORMATS,
    "input_fidelity": INPUT_FIDELITIES,
    "moderation": MODERATIONS,
    "complexity": COMPLEXITIES,
}
INTEGERS: dict[str, tuple[int, int]] = {  # name -> (min, max)
    "n": (1, MAX_N),
    "output_compression": (0, 100),
    "partial_images": (0, 3),
    "frame_count": (2, 16),
    "frame_duration_ms": (20, 655_350),
    "seed": (0, 2**63 - 1),  # editroute's own (self-hosted backends), sent with the SDK's extra_body
}
STRINGS: dict[str, int] = {  # name -> max length
    "prompt": MAX_PROMPT_CHARS,
    "model": 256,
    "size": 32,
    "user": 256,
    "safety_identifier": MAX_SAFETY_IDENTIFIER_CHARS,
}
BOOLEANS = ("stream",)
OBJECTS = {"svg": {"model": str, "reasoning": {"effort": SVG_EFFORTS}}}
LISTS = ("tags",)  # editroute's own: labels for reports, `tags` (comma-separated) or `tags[]`
IMAGE_FIELDS = ("image", "images", "mask", "markup")
SCALARS = (*ENUMS, *INTEGERS, *STRINGS, *BOOLEANS)
KNOWN = (*SCALARS, *OBJECTS, *LISTS, *IMAGE_FIELDS)
_BRACKETS = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])+)$")


def bad(message: str, param: str | None, code: str, *, type: str = "invalid_request_error") -> ApiError:
    return ApiError(400, message, param=param, code=code, type=type)


def _listing(allowed: tuple[str, ...]) -> str:
    quoted = [f"'{a}'" for a in allowed]
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return "null"


@dataclass
class Values:
    """A request's non-image fields: `raw` by name (nested objects as dicts), `typed` for JSON (multipart values
    are all strings and are parsed)."""

    raw: dict[str, Any]
    typed: bool
    lists: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_form(cls, fields: Mapping[str, list[str]]) -> Values:
        """Multipart text fields; bracketed names (`svg[model]`, `svg[reasoning][effort]`, `tags[]`) nest as the
        SDK's `extra_body` writes them. A field sent twice is a `duplicate_parameter`."""
        raw: dict[str, Any] = {}
        lists: dict[str, list[str]] = {}
        for name, values in fields.items():
            m = _BRACKETS.match(name)
            if m is None:
                if len(values) > 1:
                    raise bad(
                        f"Duplicate parameter: '{name}'. You provided multiple values for this parameter.",
                        name,
                        "duplicate_parameter",
                    )
                raw[name] = values[0]
                continue
            base, keys = m.group(1), re.findall(r"\[([^\[\]]*)\]", m.group(2))
            if keys == [""]:  # name[]: an array
                if base not in LISTS and base not in IMAGE_FIELDS:
                    _unknown_or_typed(base, "an array")
                lists.setdefault(base, []).extend(values)
                continue
            if base not in OBJECTS:
                _unknown_or_typed(base, "an object")
            node = raw.setdefault(base, {})
            if not isinstance(node, dict):
                raise bad(f"Duplicate parameter: '{base}'.", base, "duplicate_parameter")
            for key in keys[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise bad(f"Duplicate parameter: '{name}'.", name, "duplicate_parameter")
            if keys[-1] in node or len(values) > 1:
                raise bad(f"Duplicate parameter: '{name}'.", name, "duplicate_parameter")
            node[keys[-1]] = values[0]
        return cls(raw, typed=False, lists=lists)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Values:
        raw = {k: v for k, v in body.items() if v is not None and k not in ("images", "mask", "markup")}
        lists = {}
        if isinstance(raw.get("tags"), list):
            lists["tags"] = [str(t) for t in raw.pop("tags")]
        return cls(raw, typed=True, lists=lists)


def _unknown_or_typed(base: str, got: str) -> None:
    if base in SCALARS:
        raise bad(f"Invalid type for '{base}': expected a scalar value, but got {got} instead.", base, "invalid_type")
    if base not in KNOWN:
        raise bad(f"Unknown parameter: '{base}'.", base, "unknown_parameter")


@dataclass(frozen=True)
class Fields:
    """The typed fields of an edit request (images aside)."""

    prompt: str
    model: str | None
    n: int = 1
    size: str = "auto"
    quality: str = "auto"
    background: str = "auto"
    output_format: str = "png"
    output_compression: int | None = None
    input_fidelity: str | None = None
    moderation: str | None = None
    complexity: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    frame_count: int | None = None
    frame_duration_ms: int | None = None
    stream: bool = False
    partial_images: int | None = None
    seed: int | None = None
    svg: Mapping[str, Any] | None = None
    tags: tuple[str, ...] = ()


def read_fields(values: Values) -> Fields:
    """Every non-image field checked and typed, in OpenAI's order of complaint: unknown names first."""
    raw = values.raw
    for name in raw:  # `response_format` too: dall-e only, GPT image models refuse it as unknown
        if name not in KNOWN:
            raise bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    prompt = _string(values, "prompt")
    if prompt is None:
        raise bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    out: dict[str, Any] = {"prompt": prompt}
    for name in ENUMS:
        if (value := _enum(values, name)) is not None:
            out[name] = value
    for name in INTEGERS:
        if (value := _integer(values, name)) is not None:
            out[name] = value
    for name in ("model", "size", "user", "safety_identifier"):
        if (value := _string(values, name)) is not None:
            out[name] = value
    out["stream"] = _boolean(values, "stream")
    if "svg" in raw:
        out["svg"] = _object(raw["svg"], OBJECTS["svg"], "svg")
    tags = [t.strip() for v in values.lists.get("tags", ()) for t in v.split(",")]
    if isinstance(raw.get("tags"), str):
        tags += [t.strip() for t in raw["tags"].split(",")]
    model = (out.pop("model", None) or "").strip()
    return Fields(**out, model=None if model in ("", "auto") else model, tags=tuple(t for t in tags if t))


def _string(values: Values, name: str) -> str | None:
    value = values.raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad(
            f"Invalid type for '{name}': expected a string, but got {_json_type(value)} instead.", name, "invalid_type"
        )
    if name == "prompt" and not value.strip():  # (whitespace alone: nothing to edit by, refused the same way)
        raise bad(
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty string instead.",
            name,
            "empty_string",
        )
    limit = STRINGS[name]
    if len(value) > limit:
        raise too_long(name, limit, len(value))
    return value


def too_long(name: str, limit: int, length: int | None) -> ApiError:
    got = f"a string with length {length}" if length is not None else "a longer string"
    return bad(
        f"Invalid '{name}': string too long. Expected a string with maximum length {limit}, but got {got} instead.",
        name,
        "string_above_max_length",
    )


def _enum(values: Values, name: str) -> str | None:
    value = values.raw.get(name)
    if value is None or (not values.typed and value == ""):
        return None
    if not isinstance(value, str):
        raise bad(
            f"Invalid type for '{name}': expected a string, but got {_json_type(value)} instead.", name, "invalid_type"
        )
    allowed = ENUMS[name]
    if value not in allowed:
        raise bad(f"Invalid value: '{value[:64]}'. Supported values are: {_listing(allowed)}.", name, "invalid_value")
    return value


def _integer(values: Values, name: str) -> int | None:
    value = values.raw.get(name)
    if value is None or (not values.typed and value.strip() == ""):
        return None
    if not values.typed:
        try:
            value = int(value.strip())
        except ValueError:
            raise bad(
                f"Invalid type for '{name}': expected an integer, but got a string instead.", name, "invalid_type"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int):
        raise bad(
            f"Invalid type for '{name}': expected an integer, but got {_json_type(value)} instead.",
            name,
            "invalid_type",
        )
    lo, hi = INTEGERS[name]
    if value < lo:
        raise bad(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if value > hi:
        raise bad(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    return value


def _boolean(values: Values, name: str) -> bool:
    value = values.raw.get(name)
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if not values.typed and value.strip().lower() in ("true", "false", ""):  # the SDK writes booleans so
        return value.strip().lower() == "true"
    raise bad(
        f"Invalid type for '{name}': expected a boolean, but got {_json_type(value)} instead.", name, "invalid_type"
    )


def _object(value: Any, schema: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A nested object (`svg`): known keys only, strings or enums at the leaves."""
    if not isinstance(value, Mapping):
        raise bad(
            f"Invalid type for '{path}': expected an object, but got {_json_type(value)} instead.", path, "invalid_type"
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{path}.{key}"
        if key not in schema:
            raise bad(f"Unknown parameter: '{where}'.", where, "unknown_parameter")
        rule = schema[key]
        if item is None:
            continue
        if isinstance(rule, Mapping):
            out[key] = _object(item, rule, where)
        elif not isinstance(item, str):
            raise bad(
                f"Invalid type for '{where}': expected a string, but got {_json_type(item)} instead.",
                where,
                "invalid_type",
            )
        elif isinstance(rule, tuple) and item not in rule:
            raise bad(f"Invalid value: '{item[:64]}'. Supported values are: {_listing(rule)}.", where, "invalid_value")
        else:
            out[key] = item
    return out
