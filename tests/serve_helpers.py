"""What the server tests share: the policy they serve, the server on loopback, the official SDK client."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
from pathlib import Path

import yaml
from openai import OpenAI
from openai.types import ImagesResponse
from PIL import Image

from backends.standins import FakeOpenAIServer
from pipeline.serve import Limits, ServeConfig, ServeSettings, build, running
from tests.fixtures_sdxl import tiny_settings
from tests.imagery import image_bytes, mask_bytes

KEY = "er-test-key-0123456789"  # what clients send to editroute
UPSTREAM_KEY = "sk-upstream-test-abcdef"  # what editroute sends to the (stand-in) OpenAI API
REPO = Path(__file__).resolve().parents[1]


def png(w: int = 64, h: int = 64) -> tuple[str, bytes, str]:
    return ("photo.png", image_bytes(w, h), "image/png")


def mask(w: int = 64, h: int = 64) -> tuple[str, bytes, str]:
    return ("mask.png", mask_bytes(w, h), "image/png")


def write_policy(
    folder: Path,
    upstream: FakeOpenAIServer | None,
    sdxl_dir: Path | None = None,
    *,
    api: dict | None = None,
    **extra,
) -> Path:
    """api: settings for the openai backend beyond the defaults here (e.g. max_retries)."""
    folder.mkdir(parents=True, exist_ok=True)
    backends, quality = {}, {}
    if upstream is not None:
        key_file = folder / "upstream.key"
        key_file.write_text(UPSTREAM_KEY)
        backends["api"] = {
            "kind": "openai",
            "model": "gpt-image-2.6-sunburst",
            "base_url": upstream.base_url,
            "api_key_file": str(key_file),
            "max_retries": 0,
            **(api or {}),
        }
        quality["api"] = {"low": 0.7, "medium": 0.8, "high": 0.9}
    if sdxl_dir is not None:
        backends["sdxl-local"] = {"kind": "sdxl", **tiny_settings(sdxl_dir)}
        quality["sdxl-local"] = 0.65
    policy = {"backends": backends, "quality": quality, "objective": {"type": "cheapest"}, **extra}
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


@contextlib.contextmanager
def serving(
    policy: Path, out: Path, *, keys: str = KEY, limits: Limits | None = None, settings: ServeSettings | None = None
):
    config = ServeConfig(policy=policy, out_dir=out, limits=limits, settings=settings)
    app, service, _ = build(config, env={"EDITROUTE_API_KEYS": keys})
    with running(app) as url:
        yield url, service


def client(url: str, **kwargs) -> OpenAI:
    return OpenAI(base_url=url, api_key=kwargs.pop("api_key", KEY), **kwargs)


def decoded(result: ImagesResponse) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]


def edit(url: str, **kwargs):
    """images.edit through the SDK; returns (parsed ImagesResponse, response headers)."""
    raw = client(url).images.with_raw_response.edit(**kwargs)
    return raw.parse(), raw.headers


def run_threads(count: int, fn):
    results: list = [None] * count
    errors: list = []

    def one(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results
