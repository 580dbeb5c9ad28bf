"""Manifests: every problem reported at once with its line, before anything runs; valid jobs stay usable."""

from __future__ import annotations

import inspect
import json

import pytest

from pipeline.errors import ConfigError
from pipeline.jobs import Manifest, load_jobs, validate_manifest
from tests.imagery import image_bytes, mask_bytes
from tests.routing_helpers import EXAMPLES


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "img" / "b.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "img" / "m.png").write_bytes(mask_bytes(64, 64))
    (tmp_path / "img" / "small_mask.png").write_bytes(mask_bytes(32, 32))
    return tmp_path


def _jsonl(folder, *entries: dict | str) -> str:
    path = folder / "jobs.jsonl"
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries), encoding="utf-8")
    return path


def test_valid_manifest_gives_jobs_with_probed_images_and_options(folder):
    path = _jsonl(
        folder,
        {
            "id": "one",
            "image": "img/a.png",
            "mask": "img/m.png",
            "prompt": "white backdrop",
            "size": "1024x1024",
            "quality": "low",
            "n": 3,
            "output_format": "webp",
            "output_compression": 80,
            "seed": 5,
            "tags": ["product"],
            "backend": "api",
        },
        {"id": "two", "images": ["img/a.png", "img/b.png"], "prompt": "combine", "tags": "composite"},
    )
    one, two = load_jobs(path)
    assert one.id == "one" and one.line == 1 and one.backend == "api" and one.tags == ("product",)
    r = one.request
    assert (r.size, r.quality, r.n, r.output_format, r.output_compression, r.seed, r.job_id) == (
        "1024x1024",
        "low",
        3,
        "webp",
        80,
        5,
        "one",
    )
    assert r.images[0].size == (64, 64) and r.has_mask
    assert r.images[0].data is None and r.mask.data is None  # probed from the header, not read
    assert len(two.request.images) == 2 and two.tags == ("composite",) and two.line == 2


def test_all_problems_at_once_with_line_numbers_and_the_rest_still_runs(folder):
    path = _jsonl(
        folder,
        {"id": "ok-1", "image": "img/a.png", "prompt": "fine"},
        {"id": "bad-n", "image": "img/a.png", "prompt": "x", "n": 12, "sise": "1024x1024"},
        "",
        "# a comment",
        {"id": "ok-1", "image": "img/a.png", "prompt": "same id again"},
        {"id": "missing", "images": ["img/a.png", "img/nope.png"], "prompt": "x"},
        {"id": "mask", "image": "img/a.png", "mask": "img/small_mask.png", "prompt": "x", "quality": "ultra"},
        '{"id": "broken", "image": ',
        {"id": "ok-2", "image": "img/b.png", "prompt": "fine too"},
    )
    manifest = Manifest(path)
    problems = manifest.check()
    text = "\n".join(map(str, problems))
    assert f"{path}:2: job 'bad-n': n=12: n out of range (limit: 1 to 10)" in text
    assert f"{path}:2: job 'bad-n': unknown field 'sise'; did you mean 'size'?" in text
    assert f"{path}:1: job 'ok-1': duplicate id 'ok-1' (line 1, line 5)" in text
    assert f"{path}:5: job 'ok-1': duplicate id 'ok-1'" in text
    assert f"{path}:6: job 'missing': images[1]: file not found: {folder / 'img' / 'nope.png'}" in text
    assert f"{path}:7: job 'mask': mask='32x32': mask must have the same dimensions as the first image" in text
    assert f"{path}:7: job 'mask': quality='ultra': unknown quality" in text
    assert f"{path}:8: not valid JSON" in text
    assert (manifest.entries, manifest.valid) == (7, 1)
    assert [j.id for j in manifest.jobs()] == ["ok-2"]  # one bad job does not sink the batch
    jobs, again = validate_manifest(path)
    assert [j.id for j in jobs] == ["ok-2"] and len(again) == len(problems)
    with pytest.raises(ConfigError, match="problem"):
        load_jobs(path)


def test_entry_type_errors_are_named(folder):
    path = _jsonl(
        folder,
        {"id": 7, "image": "img/a.png", "prompt": 3, "n": "2", "tags": [1]},
        {"id": "no/slash", "image": "img/a.png", "mask": "img/m.png", "images": ["img/b.png"], "prompt": "x"},
        "[1, 2]",
    )
    text = "\n".join(map(str, Manifest(path).check()))
    assert "job '7': prompt: expected a string (got 3)" in text
    assert "job '7': n: expected an integer (got '2')" in text
    assert "job '7': tags: expected a list of strings" in text
    assert "job 'no/slash': id='no/slash': expected letters, digits" in text
    assert "job 'no/slash': give exactly one of `image` (a path) or `images`" in text
    assert ":3: expected a mapping of job fields (got list)" in text


def test_yaml_manifest_list_or_jobs_key_with_line_numbers(folder):
    (folder / "a.yaml").write_text(
        "- id: y1\n  image: img/a.png\n  prompt: x\n- id: y2\n  image: img/a.png\n  prompt: x\n  n: 0\n",
        encoding="utf-8",
    )
    (folder / "b.yaml").write_text("# header\njobs:\n  - {id: z1, image: img/a.png, prompt: x}\n", encoding="utf-8")
    jobs, problems = validate_manifest(folder / "a.yaml")
    assert [j.id for j in jobs] == ["y1"] and jobs[0].line == 1
    assert [str(p) for p in problems] == [f"{folder / 'a.yaml'}:4: job 'y2': n=0: n out of range (limit: 1 to 10)"]
    jobs, problems = validate_manifest(folder / "b.yaml")
    assert [(j.id, j.line) for j in jobs] == [("z1", 3)] and not problems


def test_jsonl_is_streamed_not_loaded_whole(folder):
    path = _jsonl(folder, *({"id": f"j{i}", "image": "img/a.png", "prompt": "x"} for i in range(50)))
    manifest = Manifest(path)
    assert manifest.check() == []
    jobs = manifest.jobs()
    assert inspect.isgenerator(jobs)  # the runner iterates; nothing holds all jobs
    assert next(jobs).id == "j0"
    assert sum(1 for _ in Manifest(path)) == 50  # jobs() runs check() first when needed


def test_missing_manifest_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="manifest not found"):
        Manifest(tmp_path / "nope.jsonl")


def test_shipped_examples_are_valid_and_cover_the_five_use_cases():
    names = {p.stem for p in EXAMPLES.glob("*.jsonl")} | {p.stem for p in EXAMPLES.glob("*.yaml")}
    assert names >= {"ecommerce", "marketing", "compositing", "localisation", "prototyping", "all"}
    jobs, problems = validate_manifest(EXAMPLES / "all.jsonl")
    assert not problems and 10 <= len(jobs) <= 20
    assert any(len(j.request.images) >= 3 for j in jobs)
    assert any(j.request.n >= 5 for j in jobs)
    assert any(j.request.mask is None for j in jobs) and any(j.request.mask is not None for j in jobs)
    for p in (EXAMPLES / "images").glob("*.png"):
        assert p.stat().st_size < 16_000
