"""Every input rule in backends/validation.py: the refusal names the field, the value and the limit."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from backends.base import Capabilities, EditRequest
from backends.errors import InvalidRequest
from backends.images import InputImage
from backends.validation import capability_problems, check_request, request_problems
from tests.imagery import encode, gradient, image_bytes, mask_bytes

MB50 = 50 * 1024 * 1024


def img(fmt: str = "png", w: int = 64, h: int = 64, name: str | None = None) -> InputImage:
    return InputImage.from_bytes(
        image_bytes(w, h, fmt if fmt != "gif" else "png") if fmt != "gif" else encode(gradient(w, h), "gif"),
        name or f"in.{fmt}",
    )


def animated_png() -> InputImage:
    buf = io.BytesIO()
    frames = [gradient(32, 32), gradient(32, 32).rotate(90)]
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return InputImage.from_bytes(buf.getvalue(), "anim.png")


def req(**kw) -> EditRequest:
    kw.setdefault("prompt", "make it blue")
    kw.setdefault("images", (img(),))
    return EditRequest(**kw)


def rgb_mask() -> InputImage:
    return InputImage.from_bytes(encode(Image.new("RGB", (64, 64)), "png"), "flat.png", field="mask")


# (id, request kwargs, field, value text that must appear, limit text that must appear)
CASES = [
    ("no images", {"images": ()}, "image", "0", "1 to 16 images"),
    ("17 images", {"images": tuple(img() for _ in range(17))}, "image", "17", "at most 16 images"),
    ("gif", {"images": (img("gif", name="anim.gif"),)}, "image", "anim.gif", "png, webp or jpeg"),
    (
        "bmp second image",
        {"images": (img(), InputImage.from_bytes(encode(gradient(), "bmp"), "x.bmp"))},
        "image[1]",
        "x.bmp",
        "png, webp or jpeg",
    ),
    ("animated", {"images": (animated_png(),)}, "image", "anim.png", "a still image"),
    (
        "too many bytes",
        {"images": (replace(img(name="huge.png"), nbytes=MB50 + 1),)},
        "image",
        "huge.png",
        f"< {MB50} bytes",
    ),
    (
        "mask not png",
        {"mask": InputImage.from_bytes(image_bytes(64, 64, "webp"), "m.webp")},
        "mask",
        "m.webp",
        "a PNG with an alpha channel",
    ),
    ("mask without alpha", {"mask": rgb_mask()}, "mask", "flat.png", "a PNG with an alpha channel"),
    ("mask wrong size", {"mask": InputImage.from_bytes(mask_bytes(32, 48), "m.png")}, "mask", "32x48", "64x64"),
    (
        "mask too big",
        {"mask": replace(InputImage.from_bytes(mask_bytes(), "big.png"), nbytes=MB50 + 1)},
        "mask",
        "big.png",
        f"< {MB50} bytes",
    ),
    ("empty prompt", {"prompt": "  "}, "prompt", "'  '", "1 to 32000 characters"),
    ("long prompt", {"prompt": "x" * 32001}, "prompt", "32001 characters", "32000 characters"),
    ("n zero", {"n": 0}, "n", "0", "1 to 10"),
    ("n eleven", {"n": 11}, "n", "11", "1 to 10"),
    ("n not int", {"n": "3"}, "n", "'3'", "1 to 10"),
    ("size word", {"size": "big"}, "size", "'big'", "1024x1024 | 1536x1024 | 1024x1536 | auto or WxH"),
    ("size not /16", {"size": "1000x1000"}, "size", "'1000x1000'", "multiples of 16"),
    ("size ratio", {"size": "3840x1024"}, "size", "'3840x1024'", "ratio <= 3:1"),
    ("size edge", {"size": "4096x2048"}, "size", "'4096x2048'", "edge <= 3840"),
    ("size pixels", {"size": "512x512"}, "size", "'512x512'", ">= 655360 pixels"),
    ("quality", {"quality": "ultra"}, "quality", "'ultra'", "low | medium | high | auto"),
    ("format", {"output_format": "gif"}, "output_format", "'gif'", "png | jpeg | webp"),
    ("compression high", {"output_format": "webp", "output_compression": 101}, "output_compression", "101", "0 to 100"),
    (
        "compression negative",
        {"output_format": "jpeg", "output_compression": -1},
        "output_compression",
        "-1",
        "0 to 100",
    ),
    ("compression on png", {"output_compression": 80}, "output_compression", "80", "jpeg or webp output only"),
    ("background", {"background": "green"}, "background", "'green'", "transparent | opaque | auto"),
    (
        "transparent jpeg",
        {"background": "transparent", "output_format": "jpeg"},
        "background",
        "'transparent'",
        "output_format png or webp",
    ),
    ("input fidelity", {"input_fidelity": "medium"}, "input_fidelity", "'medium'", "low | high"),
    ("seed negative", {"seed": -1}, "seed", "-1", "0 to 2**63-1"),
    ("seed huge", {"seed": 2**63}, "seed", str(2**63), "0 to 2**63-1"),
]


@pytest.mark.parametrize(("kwargs", "field", "value", "limit"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_names_field_value_and_limit(kwargs, field, value, limit):
    problems = request_problems(req(**kwargs))
    assert [p.field for p in problems] == [field], [str(p) for p in problems]
    text = str(problems[0])
    assert text.startswith(f"{field}=")
    assert value in text and limit in text.split("(limit: ", 1)[1]
    assert limit in problems[0].limit


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"images": tuple(img(f) for f in ("png", "jpeg", "webp"))},
        {"images": tuple(img() for _ in range(16)), "mask": InputImage.from_bytes(mask_bytes(), "m.png")},
        {"size": "2048x1152", "quality": "high", "n": 10},
        {"output_format": "png", "output_compression": 100},
        {"output_format": "webp", "output_compression": 0, "background": "transparent"},
        {"input_fidelity": "high", "seed": 0},
        {"prompt": "x" * 32000},
    ],
    ids=[
        "minimal",
        "three formats",
        "16 images + mask",
        "custom size",
        "png 100",
        "webp 0 transparent",
        "fidelity seed",
        "prompt at limit",
    ],
)
def test_valid_requests_pass(kwargs):
    assert request_problems(req(**kwargs)) == []


CAP_CASES = [
    (
        "max images",
        Capabilities(max_images=1),
        {"images": (img(), img())},
        "image",
        "2",
        "at most 1 image(s) on this backend",
    ),
    ("mask required", Capabilities(mask_optional=False), {}, "mask", "None", "a mask is required on this backend"),
    (
        "size offered",
        Capabilities(sizes=frozenset({"1024x1024"})),
        {"size": "1536x1024"},
        "size",
        "'1536x1024'",
        "1024x1024",
    ),
    ("no custom sizes", Capabilities(), {"size": "2048x1152"}, "size", "'2048x1152'", "1024x1024"),
    ("quality offered", Capabilities(qualities=frozenset({"low"})), {"quality": "high"}, "quality", "'high'", "low"),
    ("max n", Capabilities(max_n=4), {"n": 5}, "n", "5", "at most 4 on this backend"),
    (
        "format offered",
        Capabilities(formats=frozenset({"png"})),
        {"output_format": "webp"},
        "output_format",
        "'webp'",
        "png",
    ),
    (
        "transparent",
        Capabilities(transparent_background=False),
        {"background": "transparent"},
        "background",
        "'transparent'",
        "opaque or auto on this backend",
    ),
    (
        "fidelity",
        Capabilities(input_fidelity=False),
        {"input_fidelity": "low"},
        "input_fidelity",
        "'low'",
        "omit it on this backend",
    ),
    (
        "bytes",
        Capabilities(max_image_bytes=100),
        {"images": (img(name="a.png"),)},
        "image",
        "a.png",
        "< 100 bytes on this backend",
    ),
]


@pytest.mark.parametrize(
    ("caps", "kwargs", "field", "value", "limit"), [c[1:] for c in CAP_CASES], ids=[c[0] for c in CAP_CASES]
)
def test_capability_problems_name_field_value_and_limit(caps, kwargs, field, value, limit):
    problems = capability_problems(req(**kwargs), caps)
    assert [p.field for p in problems] == [field]
    text = str(problems[0])
    assert value in text and limit in text.split("(limit: ", 1)[1]


def test_custom_size_allowed_where_arbitrary_sizes():
    assert capability_problems(req(size="2048x1152"), Capabilities(arbitrary_sizes=True)) == []


def test_check_request_raises_all_problems_naming_job_and_backend():
    with pytest.raises(InvalidRequest) as info:
        check_request(req(n=0, quality="ultra", job_id="job-7"), Capabilities(), backend="openai-hq")
    text = str(info.value)
    assert text.startswith("job 'job-7', backend 'openai-hq': ")
    assert "n=0" in text and "quality='ultra'" in text
    assert info.value.field == "n"


def test_capabilities_checked_only_after_shared_rules_pass():
    with pytest.raises(InvalidRequest) as info:
        check_request(req(n=5), Capabilities(max_n=4), backend="sdxl")
    assert info.value.field == "n" and "at most 4 on this backend" in str(info.value)
    check_request(req(n=4), Capabilities(max_n=4), backend="sdxl")


@pytest.mark.parametrize("data", [b"not an image at all", image_bytes(64, 64)[:-60]], ids=["garbage", "truncated"])
def test_an_image_that_does_not_decode_is_refused_naming_field_value_and_limit(data):
    with pytest.raises(InvalidRequest) as info:
        InputImage.from_bytes(data, "photo.png", field="image[2]")
    err = info.value
    assert (err.field, err.value, err.limit) == ("image[2]", "photo.png", "a png, webp or jpeg file")
    assert str(err).startswith("image[2]: photo.png is not a decodable image")
