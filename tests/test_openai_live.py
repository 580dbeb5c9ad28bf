"""Today's OpenAI contract, per live model, against the loopback stand-in (not the real API): each new field
reaches the server in the right encoding, each illegal combination is refused before any request naming the
field, and each call costs what an independent formula over the server's `usage` says, to the cent."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image

from backends.base import EditRequest
from backends.errors import BackendMisconfigured, InvalidRequest
from backends.images import InputImage
from backends.openai import OpenAIEditBackend, Settings
from backends.pricing import load_prices
from backends.standins import FakeOpenAIServer
from backends.standins.openai_files import add_file
from tests.imagery import encode, image_bytes, mask_bytes

KEY = "sk-live-contract-0123456789"
LIVE = [m for m, e in load_prices().models.items() if e.status == "live"]
PNG, MASK = image_bytes(64, 64), mask_bytes(64, 64)
MARKUP = mask_bytes(64, 64, box=(40, 40, 64, 64))  # opaque strokes, a transparent corner: a valid layer

# case -> the request options that exercise the field (the field the server must receive, and its value)
FIELD_CASES: dict[str, tuple[dict, str, object]] = {
    "complexity": ({"complexity": "high"}, "complexity", "high"),
    "safety_identifier": ({"safety_identifier": "9f86d081884c7d65"}, "safety_identifier", "9f86d081884c7d65"),
    "moderation": ({"moderation": "low"}, "moderation", "low"),
    "markup": ({"markup": "MARKUP", "mask": None}, "markup", None),
    "gif frames": (
        {"output_format": "gif", "frame_count": 4, "frame_duration_ms": 120, "mask": None},
        "frame_count",
        4,
    ),
    "xhigh": ({"quality": "xhigh"}, "quality", "xhigh"),
    "max": ({"quality": "max"}, "quality", "max"),
    "custom size": ({"size": "1536x864"}, "size", "1536x864"),
}
CAPABILITY_OF = {
    "complexity": lambda c: c.complexity,
    "safety_identifier": lambda c: True,
    "moderation": lambda c: c.remote_refs,
    "markup": lambda c: c.markup,
    "gif frames": lambda c: c.gif is not None,
    "xhigh": lambda c: "xhigh" in c.qualities,
    "max": lambda c: "max" in c.qualities,
    "custom size": lambda c: c.arbitrary_sizes,
}


def caps(model: str):
    return OpenAIEditBackend("x", Settings(model=model)).capabilities


def combos(taken: bool) -> list:
    return [
        pytest.param(model, case, inputs, id=f"{model}-{case}-{inputs}")
        for model in LIVE
        for case in FIELD_CASES
        for inputs in ("local", "file_id")
        if CAPABILITY_OF[case](caps(model)) is taken and (taken or inputs == "local")
    ]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def backend_for(srv: FakeOpenAIServer, model: str) -> OpenAIEditBackend:
    return OpenAIEditBackend("openai", Settings(base_url=srv.base_url, model=model, max_retries=0))


def request_for(srv: FakeOpenAIServer, inputs: str, options: dict) -> EditRequest:
    """A 64x64 edit with a mask; `file_id` inputs are uploaded to the stand-in's Files store first."""

    def image(data: bytes, name: str, field: str) -> InputImage:
        if inputs == "file_id":
            return InputImage.remote(file_id=add_file(srv, data, name), field=field)
        return InputImage.from_bytes(data, name, field=field)

    opts = dict(options)
    if opts.get("markup") == "MARKUP":
        opts["markup"] = image(MARKUP, "markup.png", "markup")
    opts.setdefault("mask", image(MASK, "mask.png", "mask"))
    return EditRequest(prompt="swap the label text", images=(image(PNG, "in.png", "image"),), job_id="live", **opts)


@pytest.mark.parametrize(("model", "case", "inputs"), combos(taken=True))
def test_each_new_field_reaches_the_api_in_the_right_encoding(server, model, case, inputs):
    options, field, value = FIELD_CASES[case]
    result = backend_for(server, model).edit(request_for(server, inputs, options))
    (rec,) = server.edit_requests
    expected = "json" if inputs == "file_id" or "moderation" in options else "multipart"
    assert rec.status == 200 and rec.encoding == expected == result.extras["encoding"]
    if expected == "json":
        sent = rec.json
        assert sent["model"] == model and all(set(ref) == {"file_id"} or inputs == "local" for ref in sent["images"])
        if inputs == "local":  # moderation forces JSON: local bytes travel as data URLs
            assert sent["images"][0]["image_url"].startswith("data:image/png;base64,")
    else:
        sent = rec.fields
        assert sent["model"] == model and [p.name for p in rec.file_parts][0] == "image"
        value = None if value is None else str(value)
    if field == "markup":
        assert ("markup" in sent) if expected == "json" else ("markup" in [p.name for p in rec.file_parts])
    else:
        assert sent[field] == value
    assert "input_fidelity" not in sent and "response_format" not in sent
    if case == "gif frames":
        assert result.output_format == "gif" and Image.open(io.BytesIO(result.images[0])).n_frames == 4


@pytest.mark.parametrize(("model", "case", "inputs"), combos(taken=False))
def test_fields_a_model_does_not_take_are_refused_before_any_request(server, model, case, inputs):
    options, field, _ = FIELD_CASES[case]
    with pytest.raises(InvalidRequest) as info:
        backend_for(server, model).edit(request_for(server, inputs, options))
    expected_field = "output_format" if case == "gif frames" else field
    assert info.value.field == expected_field and "'openai'" in str(info.value) and "live" in str(info.value)
    assert server.requests == []


ILLEGAL = {
    # case: (models it applies to, request options, the field the refusal names, a text of the limit)
    "input_fidelity on 2.x": (LIVE, {"input_fidelity": "high"}, "input_fidelity", "omit it"),
    "4000-px edge": (LIVE, {"size": "4000x1344"}, "size", "3840"),
    "1:4 ratio": (LIVE, {"size": "768x3072"}, "size", "3:1"),
    "gif with a mask": (LIVE, {"output_format": "gif"}, "mask", "no mask with gif output"),
    "gif with compression": (
        LIVE,
        {"output_format": "gif", "mask": None, "output_compression": 50},
        "output_compression",
        "omit it with gif output",
    ),
    "gif 17 frames": (LIVE, {"output_format": "gif", "mask": None, "frame_count": 17}, "frame_count", "2 to 16"),
    "frames without gif": (LIVE, {"frame_duration_ms": 100}, "frame_duration_ms", "output_format gif"),
    "markup with mask": (LIVE, {"markup": "MARKUP"}, "markup", "not both"),
    "xhigh on gpt-image-2": (["gpt-image-2", "gpt-image-2-2026-04-21"], {"quality": "xhigh"}, "quality", "low"),
    "transparent on gpt-image-2": (["gpt-image-2"], {"background": "transparent"}, "background", "opaque or auto"),
    "safety id too long": (LIVE, {"safety_identifier": "h" * 129}, "safety_identifier", "128"),
    "moderation value": (LIVE, {"moderation": "off"}, "moderation", "low | auto"),
}


@pytest.mark.parametrize(
    ("model", "case"), [pytest.param(m, c, id=f"{m}-{c}") for c, (models, *_) in ILLEGAL.items() for m in models]
)
def test_each_illegal_combination_is_refused_before_any_request_naming_the_field(server, model, case):
    _, options, field, limit = ILLEGAL[case]
    with pytest.raises(InvalidRequest) as info:
        backend_for(server, model).edit(request_for(server, "local", options))
    assert info.value.field == field, str(info.value)
    assert limit in str(info.value) and f"{field}=" in str(info.value)
    assert server.requests == []


def test_markup_without_transparent_pixels_and_oversized_data_urls_are_refused_before_any_request(server):
    opaque = encode(Image.new("RGBA", (64, 64), (255, 0, 0, 255)), "png")
    backend = backend_for(server, "gpt-image-2.6-sunburst")
    req = request_for(server, "local", {"mask": None}).__class__(
        prompt="circle it",
        images=(InputImage.from_bytes(PNG, "in.png"),),
        markup=InputImage.from_bytes(opaque, "k.png"),
    )
    with pytest.raises(InvalidRequest, match="no transparent pixels") as info:
        backend.edit(req)
    assert info.value.field == "markup"
    huge = replace(InputImage.from_bytes(PNG, "big.png"), nbytes=16_000_000)  # a 21.3M-character data URL
    with pytest.raises(InvalidRequest, match="20,971,520") as info:
        backend.edit(EditRequest(prompt="x", images=(huge,), moderation="low"))
    assert info.value.field == "image" and "file_id" in str(info.value)
    assert server.requests == []


def test_unverified_features_reach_the_api_only_when_opted_in(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, accept_unverified=True) as srv:
        opted = OpenAIEditBackend(
            "openai",
            Settings(base_url=srv.base_url, model="gpt-image-2.6-flare", unverified_features=("xhigh_max",)),
        )
        opted.edit(EditRequest(prompt="x", images=(InputImage.from_bytes(PNG, "in.png"),), quality="max"))
        with pytest.raises(InvalidRequest):
            backend_for(srv, "gpt-image-2.6-flare").edit(
                EditRequest(prompt="x", images=(InputImage.from_bytes(PNG, "in.png"),), quality="max")
            )
    assert [r.fields["quality"] for r in srv.edit_requests] == ["max"]


# ---- cost ---------------------------------------------------------------------------------------------------

# USD per 1M tokens as OpenAI's pages state them for every live GPT image model (written out here, not read from
# prices.yaml): text in 5.00, cached text 1.25, image in 8.00, cached image 2.00, image out 30.00.
RATES = {"text": Decimal("5"), "text_cached": Decimal("1.25"), "image": Decimal("8"), "image_cached": Decimal("2")}
IMAGE_OUT = Decimal("30")


@pytest.mark.parametrize("model", LIVE)
@pytest.mark.parametrize("cached", [0, 300], ids=["uncached", "300 cached"])
def test_cost_of_a_call_is_the_formula_over_the_servers_usage_to_the_cent(monkeypatch, model, cached):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY, cached_tokens=cached) as srv:
        req = EditRequest(
            prompt="put the bottle on the counter " * 3,
            images=(InputImage.from_bytes(image_bytes(96, 64), "a.png"), InputImage.from_bytes(PNG, "b.png")),
            n=2,
            quality="high",
        )
        result = backend_for(srv, model).edit(req)
        (rec,) = srv.edit_requests
    usage = result.usage.to_dict()
    text, image, out = usage["input_text_tokens"], usage["input_image_tokens"], usage["output_tokens"]
    cached_text = min(cached, text)  # a bare cached total counts against text first (the smaller discount)
    cached_image = min(cached - cached_text, image)
    expected = (
        (text - cached_text) * RATES["text"]
        + cached_text * RATES["text_cached"]
        + (image - cached_image) * RATES["image"]
        + cached_image * RATES["image_cached"]
        + out * IMAGE_OUT
    ) / 1_000_000
    assert out > 0 and image > 0 and rec.status == 200
    assert result.cost_usd == expected
    assert result.cost_usd.quantize(Decimal("0.01")) == expected.quantize(Decimal("0.01"))


# ---- lifecycle on the wire ----------------------------------------------------------------------------------


def test_model_not_found_from_the_api_is_misconfigured_and_never_retried(monkeypatch):
    """prices.yaml still says live, the API has shut the model down: one request, a config error, no retry."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    table = load_prices()
    gone = table.models["gpt-image-2.5-flare"].model_copy(update={"status": "retired", "shutdown": "2026-12-06"})
    server_view = table.model_copy(update={"models": {**table.models, "gpt-image-2.5-flare": gone}})
    with FakeOpenAIServer(api_key=KEY, prices=server_view) as srv:
        backend = OpenAIEditBackend("api", Settings(base_url=srv.base_url, model="gpt-image-2.5-flare", max_retries=3))
        with pytest.raises(BackendMisconfigured, match="does not know this model.*model_not_found"):
            backend.edit(EditRequest(prompt="x", images=(InputImage.from_bytes(PNG, "in.png"),)))
    assert [r.status for r in srv.requests] == [404]


def test_remote_refs_resolve_on_the_server_and_unknown_ones_fail_cleanly(server):
    url = "https://cdn.example.test/bottle.png"
    server.remote_images[url] = PNG
    backend = backend_for(server, "gpt-image-2")
    ok = backend.edit(EditRequest(prompt="x", images=(InputImage.remote(url=url),), size="1024x1024"))
    assert ok.extras["encoding"] == "json" and server.edit_requests[-1].json["images"] == [{"image_url": url}]
    with pytest.raises(InvalidRequest, match="No such File object"):
        backend.edit(EditRequest(prompt="x", images=(InputImage.remote(file_id="file-missing"),)))
    assert [r.status for r in server.edit_requests] == [200, 400]


# ---- manifests and the command line ------------------------------------------------------------------------


def _manifest(tmp_path: Path, entries: list[dict]) -> Path:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "k.png").write_bytes(MARKUP)
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return path


def test_manifest_takes_remote_refs_and_the_new_fields_and_names_bad_ones(tmp_path):
    from pipeline.jobs import validate_manifest

    path = _manifest(
        tmp_path,
        [
            {"id": "ref", "image": {"file_id": "file-abc"}, "markup": "k.png", "prompt": "x", "complexity": "low"},
            {
                "id": "urls",
                "images": ["https://cdn.test/a.png", "a.png"],
                "mask": {"file_id": "file-m"},
                "prompt": "x",
                "moderation": "low",
                "safety_identifier": "h1",
            },
            {
                "id": "gif",
                "image": "a.png",
                "prompt": "x",
                "output_format": "gif",
                "frame_count": 5,
                "frame_duration_ms": 80,
            },
            {"id": "http", "image": "http://cdn.test/a.png", "prompt": "x"},
            {"id": "badref", "image": {"file_id": "file-a", "path": "x"}, "prompt": "x"},
            {"id": "frames", "image": "a.png", "prompt": "x", "frame_count": 4},
        ],
    )
    jobs, problems = validate_manifest(path)
    assert [j.id for j in jobs] == ["ref", "urls", "gif"]
    ref, urls, gif = jobs
    assert ref.request.images[0].file_id == "file-abc" and ref.request.markup.name == "k.png"
    assert urls.request.images[0].url == "https://cdn.test/a.png" and urls.request.mask.file_id == "file-m"
    assert (gif.request.frame_count, gif.request.frame_duration_ms) == (5, 80)
    text = "\n".join(map(str, problems))
    assert "job 'http': image: 'http://cdn.test/a.png' is not an https URL" in text
    assert "job 'badref': image: expected {file_id: ...} or {url: https://...}" in text
    assert "job 'frames': frame_count=4: frame_count applies only to gif output" in text


def test_a_job_with_remote_refs_runs_only_where_remote_refs_are_taken(tmp_path, server):
    from pipeline.run import run_batch

    file_id = add_file(server, PNG, "a.png")
    path = _manifest(tmp_path, [{"id": "ref", "image": {"file_id": file_id}, "prompt": "x", "size": "1024x1024"}])
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"backends:\n  local: {{kind: function, hosting: self-hosted, cost_per_image: '0.0001'}}\n"
        f"  api: {{kind: openai, model: gpt-image-2.6-flare, base_url: {server.base_url}}}\n"
        "quality: {local: 0.9, api: 0.9}\nobjective: {type: cheapest}\n"
    )
    first = run_batch(path, policy, tmp_path / "out")
    assert first.tally.done == 1
    (rec,) = server.edit_requests
    assert rec.encoding == "json" and rec.json["images"] == [{"file_id": file_id}]
    result = json.loads((tmp_path / "out" / "ref" / "result.json").read_text())
    reasons = " ".join(result["reasons"])
    assert result["backend"] == "api" and "capability: local" in reasons
    assert f"image file_id:{file_id}: remote reference, not checked here" in reasons
    assert run_batch(path, policy, tmp_path / "out").tally.reused == 1 and len(server.edit_requests) == 1


def test_cli_edit_sends_the_new_flags_in_the_right_encoding(tmp_path, server, capsys):
    from pipeline.cli import main

    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "k.png").write_bytes(MARKUP)
    file_id = add_file(server, PNG, "a.png")
    base = ["edit", "--base-url", server.base_url, "--prompt", "circle the logo", "--out"]
    assert (
        main(
            [
                *base,
                str(tmp_path / "1"),
                "--image",
                str(tmp_path / "a.png"),
                "--markup",
                str(tmp_path / "k.png"),
                "--complexity",
                "high",
                "--safety-identifier",
                "h-42",
                "--model",
                "gpt-image-2.6-sunburst",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                *base,
                str(tmp_path / "2"),
                "--image",
                f"file_id:{file_id}",
                "--moderation",
                "low",
                "--output-format",
                "gif",
                "--frame-count",
                "3",
                "--frame-duration-ms",
                "90",
            ]
        )
        == 0
    )
    assert main([*base, str(tmp_path / "3"), "--image", str(tmp_path / "a.png"), "--quality", "max"]) == 2
    err = capsys.readouterr().err
    assert "quality='max': quality not offered here (limit: auto | high | low | medium)" in err
    first, second = server.edit_requests
    assert first.encoding == "multipart" and "markup" in [p.name for p in first.file_parts]
    assert (first.fields["complexity"], first.fields["safety_identifier"]) == ("high", "h-42")
    assert first.fields["model"] == "gpt-image-2.6-sunburst"
    assert second.encoding == "json" and second.json["images"] == [{"file_id": file_id}]
    assert (second.json["moderation"], second.json["frame_count"], second.json["model"]) == (
        "low",
        3,
        "gpt-image-2.6-flare",  # `editroute edit`'s default model
    )
    assert (tmp_path / "2" / "0.gif").read_bytes()[:3] == b"GIF"


def test_job_keys_of_jobs_without_the_new_fields_are_what_older_ledgers_stored():
    """A resume after upgrading must find the jobs an older editroute finished: their key is unchanged."""
    import hashlib

    from pipeline.jobs import Job
    from pipeline.run import job_key

    req = EditRequest(prompt="x", images=(InputImage.from_bytes(PNG, "a.png"),), mask=InputImage.from_bytes(MASK, "m"))
    old = hashlib.sha256()
    for data in (PNG, MASK):
        old.update(hashlib.sha256(data).digest())
    fields = {"mask": True, "prompt": "x", "size": "auto", "quality": "auto", "n": 1, "output_format": "png"}
    fields |= {"output_compression": None, "background": "auto", "input_fidelity": None, "seed": None, "backend": None}
    old.update(json.dumps(fields, sort_keys=True).encode())
    assert job_key(Job(id="j", request=req)) == old.hexdigest()
    assert job_key(Job(id="j", request=replace(req, complexity="low"))) != old.hexdigest()
