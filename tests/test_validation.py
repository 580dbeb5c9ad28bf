"""Every input rule in backends/validation.py: the refusal names the field, the value and the limit."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from backends.base import Capabilities, EditRequest, GifLimits, SizeRule
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
    ("size ratio", {"size": "3840x1024"}, "size", "'3840x1024'", "ratio between 1:3 and 3:1"),
    ("size edge", {"size": "4096x2048"}, "size", "'4096x2048'", "longest edge <= 3840"),
    ("size pixels", {"size": "512x512"}, "size", "'512x512'", "655,360 to 8,294,400 pixels"),
    ("size max pixels", {"size": "3840x2400"}, "size", "'3840x2400'", "655,360 to 8,294,400 pixels"),
    ("quality", {"quality": "ultra"}, "quality", "'ultra'", "low | medium | high | xhigh | max | auto"),
    ("format", {"output_format": "tiff"}, "output_format", "'tiff'", "png | jpeg | webp | gif"),
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
    ("complexity", {"complexity": "extreme"}, "complexity", "'extreme'", "low | medium | high"),
    ("moderation", {"moderation": "off"}, "moderation", "'off'", "low | auto"),
    ("safety id empty", {"safety_identifier": " "}, "safety_identifier", "' '", "1 to 128 characters"),
    ("safety id long", {"safety_identifier": "u" * 129}, "safety_identifier", "129 characters", "1 to 128 characters"),
    ("frames without gif", {"frame_count": 4}, "frame_count", "4", "output_format gif"),
    ("frame count", {"output_format": "gif", "frame_count": 17}, "frame_count", "17", "2 to 16"),
    ("frame ms", {"output_format": "gif", "frame_duration_ms": 10}, "frame_duration_ms", "10", "20 to 655350"),
    (
        "gif with mask",
        {"output_format": "gif", "mask": InputImage.from_bytes(mask_bytes(), "m.png")},
        "mask",
        "m.png",
        "no mask with gif output",
    ),
    (
        "gif compression",
        {"output_format": "gif", "output_compression": 50},
        "output_compression",
        "50",
        "omit it with gif output",
    ),
    (
        "gif transparent",
        {"output_format": "gif", "background": "transparent"},
        "background",
        "'transparent'",
        "output_format png or webp",
    ),
    (
        "markup with mask",
        {"markup": InputImage.from_bytes(mask_bytes(), "k.png"), "mask": InputImage.from_bytes(mask_bytes(), "m.png")},
        "markup",
        "k.png",
        "a mask or a markup layer, not both",
    ),
    ("markup wrong size", {"markup": InputImage.from_bytes(mask_bytes(32, 48), "k.png")}, "markup", "32x48", "64x64"),
    (
        "markup no alpha",
        {"markup": InputImage.from_bytes(encode(Image.new("RGB", (64, 64)), "png"), "k.png")},
        "markup",
        "k.png",
        "a PNG with an alpha channel",
    ),
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
        {"output_format": "gif", "frame_count": 16, "frame_duration_ms": 20, "complexity": "low"},
        {"markup": InputImage.from_bytes(mask_bytes(), "k.png"), "moderation": "low", "safety_identifier": "a" * 128},
        {
            "images": (InputImage.remote(file_id="file-abc"), InputImage.remote(url="https://x.test/a.png")),
            "mask": InputImage.remote(file_id="file-m"),
            "quality": "max",
        },
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
        "gif",
        "markup moderation safety id",
        "remote refs",
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
    ("complexity", Capabilities(), {"complexity": "low"}, "complexity", "'low'", "omit it on this backend"),
    (
        "markup",
        Capabilities(),
        {"markup": InputImage.from_bytes(mask_bytes(), "k.png")},
        "markup",
        "k.png",
        "omit it on this backend",
    ),
    ("gif", Capabilities(), {"output_format": "gif"}, "output_format", "'gif'", "jpeg | png | webp"),
    (
        "remote",
        Capabilities(),
        {"images": (InputImage.remote(file_id="file-abc"),)},
        "image",
        "file_id:file-abc",
        "a local file on this backend",
    ),
    ("edge", Capabilities(arbitrary_sizes=True), {"size": "4000x1344"}, "size", "'4000x1344'", "longest edge <= 3840"),
    (
        "ratio",
        Capabilities(arbitrary_sizes=True, size_rule=SizeRule(max_ratio=2)),
        {"size": "1920x640"},
        "size",
        "'1920x640'",
        "ratio between 1:2 and 2:1",
    ),
    (
        "gif frames",
        Capabilities(formats=frozenset({"gif"}), gif=GifLimits(max_frames=8)),
        {"output_format": "gif", "frame_count": 9},
        "frame_count",
        "9",
        "2 to 8 here",
    ),
    (
        "gif frame edge",
        Capabilities(formats=frozenset({"gif"}), gif=GifLimits(max_edge_by_frames=((9, 960),))),
        {"output_format": "gif", "size": "1024x1024"},
        "size",
        "'1024x1024'",
        "frame edges <= 960 px",
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


def test_pixel_checks_are_skipped_for_remote_refs_and_said_so():
    from backends.validation import skipped_checks

    remote = req(images=(InputImage.remote(url="https://cdn.test/a.png"),), mask=InputImage.remote(file_id="file-m"))
    assert request_problems(remote) == []
    notes = skipped_checks(remote)
    assert len(notes) == 2 and "https://cdn.test/a.png" in notes[0] and "same size as the first image" in notes[1]
    assert skipped_checks(req()) == []


@pytest.mark.parametrize(
    ("kwargs", "limit"),
    [
        ({"url": "http://cdn.test/a.png"}, "https://"),
        ({"file_id": "file abc"}, "file-abc123"),
        ({"file_id": ""}, "non-empty"),
        ({}, "file_id or url"),
        ({"file_id": "file-a", "url": "https://x.test/a.png"}, "file_id or url"),
    ],
)
def test_remote_refs_must_be_an_https_url_or_a_file_id(kwargs, limit):
    with pytest.raises(InvalidRequest) as info:
        InputImage.remote(**kwargs, field="images[2]")
    assert info.value.field == "images[2]" and limit in info.value.limit


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
