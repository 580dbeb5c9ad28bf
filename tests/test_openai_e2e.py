"""End to end on 127.0.0.1: OpenAIEditBackend, OpenAI's own SDK and `editroute edit` against the stand-in server."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image

from backends.errors import BackendMisconfigured, BackendUnavailable, ContentRejected, EditError
from backends.images import InputImage
from backends.openai import OpenAIEditBackend, Settings
from backends.standins import FakeOpenAIServer
from pipeline.cli import main
from pipeline.commands.edit import exact_usd
from tests.backend_contract import BackendContract, make_request
from tests.imagery import image_bytes, mask_bytes

KEY = "sk-e2e-SECRET-7f3a9c1b5d"


@pytest.fixture
def server():
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def backend_for(srv: FakeOpenAIServer, **settings) -> OpenAIEditBackend:
    return OpenAIEditBackend("openai", Settings(base_url=srv.base_url, **settings), sleep=lambda s: None)


class TestOpenAIContract(BackendContract):
    @pytest.fixture
    def backend(self, server, key):
        b = backend_for(server)
        yield b
        b.close()

    @pytest.fixture
    def paid_calls(self, server):
        return lambda: len(server.requests)


def test_429_with_retry_after_then_success(key):
    slept: list[float] = []
    with FakeOpenAIServer(api_key=KEY, script=[{"status": 429, "retry_after_ms": 40}]) as srv:
        backend = OpenAIEditBackend("openai", Settings(base_url=srv.base_url), sleep=slept.append)
        result = backend.edit(make_request(n=2))
    assert [r.status for r in srv.requests] == [429, 200]
    assert slept == [0.04] and len(result.images) == 2


def test_real_rate_limit_window_is_waited_out(key):
    with FakeOpenAIServer(api_key=KEY, rate_limit_rpm=1, rate_window_s=0.3) as srv:
        backend = OpenAIEditBackend("openai", Settings(base_url=srv.base_url))  # real sleeps
        backend.edit(make_request())
        backend.edit(make_request())
    assert [r.status for r in srv.requests] == [200, 429, 200]


def test_dropped_connections_exhaust_retries(key):
    with FakeOpenAIServer(script=["drop", "drop", "drop"]) as srv:
        with pytest.raises(BackendUnavailable, match="connection failed"):
            backend_for(srv).edit(make_request())
    assert len(srv.requests) == 3


def test_moderation_trigger_is_content_rejected_without_retry(server, key):
    with pytest.raises(ContentRejected, match="moderation_blocked"):
        backend_for(server).edit(make_request(prompt="a moderation-test scene"))
    assert len(server.requests) == 1


def test_wrong_key_is_config_error_that_hides_both_keys(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0000111122223333")
    with pytest.raises(BackendMisconfigured, match=r"\$OPENAI_API_KEY was rejected") as info:
        backend_for(server).edit(make_request())
    assert "sk-wrong" not in str(info.value) and "3333" not in str(info.value)
    assert server.requests[0].status == 401 and server.requests[0].auth == "bearer"


def test_standin_speaks_the_real_error_envelopes(server):
    png = image_bytes(64, 64)
    auth = {"Authorization": f"Bearer {KEY}"}

    def post(files, data=None):
        r = httpx.post(
            server.base_url + "/images/edits",
            headers=auth,
            files=files,
            data={"prompt": "x", "model": "gpt-image-2.6-flare", **(data or {})},
        )
        assert r.headers["x-editroute-standin"] == "openai"
        return r.status_code, r.json().get("error", {}).get("code"), r.json().get("error", {}).get("param")

    two = [("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]
    assert post(two) == (400, "duplicate_parameter", "image")
    assert post([("image[]", ("a.png", png, "application/octet-stream"))]) == (
        400,
        "unsupported_file_mimetype",
        "image[0]",
    )
    one = [("image", ("a.png", png, "image/png"))]
    assert post(one, {"response_format": "b64_json"}) == (400, "unknown_parameter", "response_format")
    assert post(one, {"input_fidelity": "high"}) == (400, "invalid_input_fidelity_model", "input_fidelity")
    assert post(one, {"model": "gpt-image-1"}) == (404, "model_not_found", "model")  # shut down 2026-10-23
    assert post(one, {"moderation": "low"}) == (400, "unknown_parameter", "moderation")  # a JSON-body field
    assert post(one, {"size": "2048x1152"})[2] == "size"  # custom sizes: gpt-image-2 and 2.5 only
    assert post(one, {"model": "gpt-image-2", "size": "2048x1152"}) == (200, None, None)
    assert post(one, {"model": "gpt-image-2.5-flare", "size": "4000x1344"})[2] == "size"  # edge above 3840
    assert post(one, {"model": "gpt-image-2", "quality": "xhigh"})[2] == "quality"


# ---- our request is the SDK's request ------------------------------------------------------------


SDK_CASES = {
    # id: (model, images, mask, markup, options); the newer fields go as the SDK user sends what edit() may lack:
    # through extra_body (markup, a file, is edit()'s own argument in SDK >= 3.57)
    "one image": ("gpt-image-2.6-flare", 1, True, False, {"quality": "low", "complexity": "low"}),
    "several images": ("gpt-image-2.6-sunburst", 3, False, False, {"complexity": "high", "safety_identifier": "u-9"}),
    "mask": ("gpt-image-2.5-flare", 1, True, False, {"quality": "xhigh", "size": "1536x864"}),
    "markup": ("gpt-image-2.6-sunburst", 1, False, True, {"quality": "medium"}),
    "gif": (
        "gpt-image-2.6-flare",
        1,
        False,
        False,
        {"output_format": "gif", "frame_count": 4, "frame_duration_ms": 120},
    ),
}
_SDK_ARGS = ("quality", "size", "output_format")  # edit() arguments in every SDK version


def _sdk_call(srv: FakeOpenAIServer, model: str, images: list, mask, markup, options: dict) -> None:
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=srv.base_url, max_retries=0)
    kwargs: dict = {"mask": mask} if mask else {}
    if markup:
        kwargs["markup"] = markup
    gif = options.get("output_format") == "gif"
    kwargs.update({"size": "auto", "quality": "auto"} | {k: v for k, v in options.items() if k in _SDK_ARGS})
    extra = {k: v for k, v in options.items() if k not in _SDK_ARGS}
    client.images.edit(
        model=model,
        image=images[0] if len(images) == 1 else images,
        prompt="put a red ball here",
        n=2,
        **({} if gif else {"output_format": "webp", "output_compression": 80}),
        background="opaque",
        user="u-1",
        extra_body=extra or None,
        **kwargs,
    )


def _shape(rec):
    """What must match: every part's name, filename style, content type, and the text fields' values."""
    return (
        [(p.name, p.filename, p.content_type) for p in rec.file_parts],
        rec.fields,
        sorted((p.name, p.content_type) for p in rec.parts if p.filename is None),
        rec.path,
        rec.content_type.split(";")[0],
        rec.auth,
    )


@pytest.mark.parametrize("case", list(SDK_CASES))
def test_our_request_matches_the_openai_sdk(server, key, case):
    from backends.base import EditRequest

    model, n_images, with_mask, with_markup, options = SDK_CASES[case]
    fmts = ["png", "jpeg", "webp"][:n_images]
    files = [(f"in{i}.{f}", image_bytes(64, 64, f), f"image/{f}") for i, f in enumerate(fmts)]
    mask = ("mask.png", mask_bytes(64, 64), "image/png") if with_mask else None
    markup = ("markup.png", mask_bytes(64, 64), "image/png") if with_markup else None
    _sdk_call(server, model, files, mask, markup, options)
    gif = options.get("output_format") == "gif"
    backend_for(server, model=model).edit(
        EditRequest(
            prompt="put a red ball here",
            images=tuple(InputImage.from_bytes(data, name) for name, data, _ in files),
            mask=InputImage.from_bytes(mask[1], mask[0]) if mask else None,
            markup=InputImage.from_bytes(markup[1], markup[0]) if markup else None,
            n=2,
            **({} if gif else {"output_format": "webp", "output_compression": 80}),
            background="opaque",
            user="u-1",
            **options,
        )
    )
    sdk, ours = server.requests
    assert sdk.status == ours.status == 200, (sdk.status, ours.status)
    assert _shape(ours) == _shape(sdk)
    expected_name = "image" if n_images == 1 else "image[]"
    assert [p.name for p in ours.file_parts][:n_images] == [expected_name] * n_images
    for name, value in options.items():
        assert ours.fields[name] == str(value)


# ---- the command line ----------------------------------------------------------------------------


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "m.png").write_bytes(mask_bytes(64, 64))
    return tmp_path / "a.png", tmp_path / "m.png"


def test_cli_edit_writes_n_images_and_prints_exact_cost(server, key, tmp_path, capsys):
    a, m = _inputs(tmp_path)
    out = tmp_path / "out"
    rc = main(
        [
            "edit",
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            "--image",
            str(a),
            "--mask",
            str(m),
            "--prompt",
            "put a red ball here",
            "-n",
            "3",
            "--quality",
            "medium",
            "--output-format",
            "webp",
            "--output-compression",
            "80",
            "--out",
            str(out),
        ]
    )
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["0.webp", "1.webp", "2.webp"]
    for f in files:
        with Image.open(f) as img:
            assert img.format == "WEBP" and img.size == (64, 64)  # size auto: the input's own size
        assert str(f) in stdout
    # 19-char prompt = 5 text tokens x $5, 64x64 input = 194 image tokens x $10, 3 x 1056 medium tokens x $40
    # 19-char prompt = 5 text tokens x $5, 64x64 input = 388 image tokens (2.x rule) x $8, 3 x 1767 medium x $30
    assert "cost: $0.162159 " in stdout and "gpt-image-2.6-flare" in stdout
    assert "input_tokens=393 (text 5, image 388) output_tokens=5301" in stdout


def test_cli_edit_says_the_api_ignores_a_seed(server, key, tmp_path, capsys):
    a, m = _inputs(tmp_path)
    assert (
        main(
            [
                "edit",
                "--base-url",
                server.base_url,
                "--image",
                str(a),
                "--prompt",
                "x",
                "--seed",
                "7",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    assert "--seed is ignored" in capsys.readouterr().err


def test_cli_edit_errors_are_one_line_exit_2(server, tmp_path, capsys, monkeypatch):
    a, _ = _inputs(tmp_path)
    base = ["edit", "--base-url", server.base_url, "--image", str(a), "--out", str(tmp_path / "o")]
    assert main([*base, "--prompt", "x"]) == 2  # no key
    assert "no API key: set the environment variable OPENAI_API_KEY" in (err := capsys.readouterr().err)
    assert "--api-key-file on editroute edit" in err
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert main([*base, "--prompt", "x", "-n", "11"]) == 2
    assert capsys.readouterr().err.strip() == (
        "editroute edit: error: job 'cli', backend 'openai': n=11: n out of range (limit: 1 to 10)"
    )
    assert main([*base, "--prompt", "x", "--device", "cuda"]) == 2
    assert "--device does not apply to backend kind 'openai'" in capsys.readouterr().err
    assert main([*base, "--prompt", "x", "--image", str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert server.requests == [] and not (tmp_path / "o").exists()


def test_openai_base_url_env_points_the_default_at_a_compatible_server(server, key, tmp_path, monkeypatch, capsys):
    """Like the OpenAI SDK, an unset base_url comes from $OPENAI_BASE_URL; an explicit one wins."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    a, _ = _inputs(tmp_path)
    assert main(["edit", "--image", str(a), "--prompt", "x", "--out", str(tmp_path / "o")]) == 0, capsys.readouterr()
    assert len(server.requests) == 1 and (tmp_path / "o" / "0.png").exists()
    assert Settings(base_url="http://127.0.0.1:9/v1").base_url == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert Settings().base_url == "https://api.openai.com/v1"


# ---- the key never leaks -------------------------------------------------------------------------


def test_api_key_never_appears_in_output_logs_files_results_or_errors(key, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    a, m = _inputs(tmp_path)
    # edit: 429, dropped, ok | CLI: ok | moderation: ok->400 | 3 x 500 | CLI moderation: ok->400
    script = [{"status": 429, "retry_after_ms": 5}, "drop", "ok", "ok", "ok", 500, 500, 500]
    with FakeOpenAIServer(api_key=KEY, script=script) as srv:
        backend = backend_for(srv)
        seen += [repr(backend), repr(backend.settings), repr(srv), repr(srv.requests)]
        result = backend.edit(make_request())
        seen += [repr(result), repr(result.usage), repr(result.extras)]
        rc = main(
            [
                "-vv",
                "edit",
                "--base-url",
                srv.base_url,
                "--image",
                str(a),
                "--mask",
                str(m),
                "--prompt",
                "x",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        assert rc == 0
        for bad in [make_request(prompt="moderation-test"), make_request(), make_request(n=0)]:
            try:
                backend.edit(bad)
            except EditError as exc:
                seen += [str(exc), repr(exc), repr(exc.__dict__), repr(exc.__reduce__())]
        assert (
            main(
                [
                    "-vv",
                    "edit",
                    "--base-url",
                    srv.base_url,
                    "--image",
                    str(a),
                    "--prompt",
                    "moderation-test",
                    "--out",
                    str(tmp_path / "out2"),
                ]
            )
            == 2
        )
        seen += [repr(r.__dict__) for r in srv.requests]
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    seen += [r.getMessage() + repr(r.args) for r in caplog.records]
    seen += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    assert any("HTTP Request: POST" in s for s in seen)  # httpx's own debug/info logging was captured
    assert sum("cost: $" in s for s in seen) >= 1
    leaks = [s[:200] for s in seen if KEY in s or KEY[-10:] in s]
    assert leaks == []
    assert result.cost_usd > 0


def test_cli_cost_is_exact_and_readable():
    assert exact_usd(Decimal("0.162159")) == "$0.162159"  # token-billed: as computed from usage
    assert exact_usd(Decimal("0.02927511458333333333333333333")) == "$0.029275115"  # GPU-seconds x rate
    assert exact_usd(Decimal("0E-12")) == "$0"
