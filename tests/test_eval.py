"""`editroute eval`: metrics that can fail, runs recorded in the ledger, the table / contact sheet / quality block,
and a policy that routes by the measured block. Backends are `FunctionBackend`s with real handlers (identity,
noise, failure); prompt adherence uses a tiny random-weight CLIP saved and reloaded offline."""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from decimal import Decimal

import numpy as np
import pytest
import yaml
from PIL import Image

from backends.base import Capabilities, EditRequest
from backends.errors import BackendUnavailable
from backends.standins import FunctionBackend
from pipeline.errors import ConfigError
from pipeline.eval import ClipScorer, plan_eval, run_eval, write_report
from pipeline.eval import contact_sheet as cs
from pipeline.eval import metrics as qm
from pipeline.routing import InMemorySpend, Router, build_backends, load_policy
from tests.imagery import gradient, mask_image


def _png(img: Image.Image, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper())
    return buf.getvalue()


def identity(request: EditRequest) -> list[bytes]:
    """Returns the input unchanged: perfect preservation."""
    return [_png(request.images[0].open().convert("RGB"), request.output_format)] * request.n


def noise(request: EditRequest) -> list[bytes]:
    """Random pixels everywhere (seeded by the request): preservation must come out poor."""
    w, h = request.images[0].size
    rng = np.random.default_rng(request.seed or 0)
    return [_png(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB"))] * request.n


def broken(request: EditRequest) -> list[bytes]:
    raise BackendUnavailable("GPU fell off the bus")


POLICY = """
backends:
  ident: {kind: function, cost_per_image: 0.01}
  noisy: {kind: function, cost_per_image: 0.002}
  masked-only:
    kind: function
    cost_per_image: 0.001
    capabilities: {mask_optional: false}
quality:
  ident: 0.3
  noisy: 0.9
  masked-only: 0.5
objective: {type: best_quality}
"""


@pytest.fixture()
def sample(tmp_path):
    """Three masked jobs and one mask-less job on small pictures."""
    (tmp_path / "img").mkdir()
    jobs = []
    for i, (w, h) in enumerate([(64, 64), (80, 48), (48, 72)]):
        gradient(w, h).save(tmp_path / "img" / f"p{i}.png")
        mask_image(w, h).save(tmp_path / "img" / f"m{i}.png")
        jobs.append(
            {
                "id": f"job{i}",
                "image": f"img/p{i}.png",
                "mask": f"img/m{i}.png",
                "seed": i,
                "prompt": f"replace the background with studio backdrop number {i}",
            }
        )
    jobs.append({"id": "nomask", "image": "img/p0.png", "seed": 9, "prompt": "make the sky a sunset"})
    manifest = tmp_path / "sample.jsonl"
    manifest.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(POLICY))
    return manifest, policy


def _backends(policy):
    backends = build_backends(load_policy(policy))
    backends["ident"].handler = identity
    backends["noisy"].handler = noise
    backends["masked-only"].handler = noise
    return backends


def _eval(manifest, policy, out, clip_dir, backends=None, tiers=("low", "high")):
    plan = plan_eval(manifest, policy, tiers=tiers, backends=backends or _backends(policy))
    result = run_eval(plan, out, ClipScorer(str(clip_dir), device="cpu").load())
    return plan, result, write_report(result, out)


# ---- metrics ------------------------------------------------------------------------------------------


def test_metrics_identity_is_perfect_and_noise_is_poor():
    a = qm.rgb_array(gradient(96, 64))
    noisy = np.random.default_rng(0).uniform(0, 255, a.shape)
    edit = qm.edit_region(mask_image(96, 64), (96, 64))
    assert math.isinf(qm.psnr(a, a, ~edit)) and qm.ssim(a, a, ~edit) == pytest.approx(1.0)
    assert qm.preservation(qm.psnr(a, a, ~edit), qm.ssim(a, a, ~edit)) == pytest.approx(1.0)
    assert qm.psnr(a, noisy, ~edit) < 12 and qm.ssim(a, noisy, ~edit) < 0.1
    assert qm.seam(a, a, edit) == 0.0
    hard = a.copy()
    hard[edit] = 0  # a black hole pasted in: a sharp border the input did not have
    assert qm.seam(hard, a, edit) > 1.0
    assert qm.seam(a, a, None) is None  # no mask, no border
    assert qm.quality_score(1.0, None, None) == 1.0  # weights renormalised over what applies


def _object_scene(fill) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clean red object on a flat grey background; the mask edits the background. (input, output, edit)"""
    src = np.full((64, 96, 3), 200.0)
    src[16:48, 32:64] = (180, 30, 30)
    edit = np.ones((64, 96), bool)
    edit[16:48, 32:64] = False
    out = src.copy()
    out[edit] = fill(int(edit.sum()))
    return src, out, edit


def test_seam_ranks_a_visible_seam_worse_than_a_clean_border():
    src = qm.rgb_array(gradient(96, 64))
    edit = qm.edit_region(mask_image(96, 64), (96, 64))

    def brighter(by: float) -> np.ndarray:  # the fill is right but offset: a step along the mask's border
        out = src.copy()
        out[edit] = np.clip(out[edit] + by, 0, 255)
        return out

    clean, faint, visible = qm.seam(src, src, edit), qm.seam(brighter(15), src, edit), qm.seam(brighter(40), src, edit)
    assert clean == 0.0 < faint < visible and visible > 1.0


def test_seam_does_not_call_noise_beside_a_clean_object_seamless():
    rng = np.random.default_rng(0)
    src, noisy, edit = _object_scene(lambda n: rng.uniform(0, 255, (n, 3)))
    _, white, _ = _object_scene(lambda n: np.full((n, 3), 255.0))  # a clean new background: crisper outline only
    assert qm.seam(noisy, src, edit) > 3.0  # the old metric scored this 0.0 (perfect)
    assert qm.seam(white, src, edit) < 0.5 < qm.seam(noisy, src, edit)
    assert qm.seam_score(qm.seam(noisy, src, edit)) < 0.25 < qm.seam_score(qm.seam(white, src, edit))


def test_align_undoes_letterboxing():
    src = gradient(64, 32)
    boxed = Image.new("RGB", (128, 128), (127, 127, 127))
    boxed.paste(src.resize((128, 64), Image.Resampling.LANCZOS), (0, 32))
    back = qm.rgb_array(qm.align(boxed, src.size))
    assert qm.psnr(back, qm.rgb_array(src)) > 25


# ---- eval end to end -------------------------------------------------------------------------------------


def test_eval_scores_identity_perfect_and_noise_poor(sample, tmp_path, tiny_clip_dir):
    manifest, policy = sample
    plan, result, files = _eval(manifest, policy, tmp_path / "out", tiny_clip_dir)
    # estimate shown before running = sum of the backends' estimates over the runs that are possible
    assert plan.estimated_usd == Decimal("0.01") * 8 + Decimal("0.002") * 8 + Decimal("0.001") * 6
    scores = {s.variant.id: s for s in result.scores}
    for i in range(3):
        ident, noisy = scores[f"job{i}.ident.low"], scores[f"job{i}.noisy.low"]
        assert ident.status == noisy.status == "ok"
        assert math.isinf(ident.psnr) and ident.ssim == pytest.approx(1.0) and ident.preservation == 1.0
        assert ident.seam == 0.0
        assert noisy.psnr < 12 and noisy.ssim < 0.1 and noisy.preservation < 0.25
        assert noisy.quality < ident.quality
    # the mask-less job: no preservation without a mask; the mask-only backend is skipped, said why
    assert scores["nomask.ident.low"].preservation is None and scores["nomask.ident.low"].quality is not None
    skipped = scores["nomask.masked-only.high"]
    assert skipped.status == "skipped" and "mask" in skipped.skip_or_error
    # the ledger holds what was spent, and it matches the estimate for these fixed-price backends
    assert result.spent == plan.estimated_usd
    # the block: per backend and tier, noisy measured below ident although declared above
    assert result.quality["ident"]["low"] > result.quality["noisy"]["low"]
    assert set(result.quality["ident"]) == {"low", "high"}


def test_eval_files_table_csv_sheet_and_stable_scores(sample, tmp_path, tiny_clip_dir):
    manifest, policy = sample
    plan, first, files = _eval(manifest, policy, tmp_path / "a", tiny_clip_dir, tiers=("low",))
    sheet = Image.open(files["contact_sheet"])
    assert sheet.height == len(plan.jobs) * cs.ROW_HEIGHT  # one row per job
    assert sheet.width == (2 + 3) * cs.CELL_W  # input, mask, then 3 backends x 1 tier
    rows = list(csv.DictReader(files["csv"].open()))
    assert len(rows) == len(plan.variants) == 4 * 3
    assert {r["status"] for r in rows} == {"ok", "skipped"}
    md = files["table"].read_text()
    assert "| ident | low |" in md and "quality = 0.5 adherence" in md
    # same seeds, same models -> the same scores in a fresh folder
    _, second, _ = _eval(manifest, policy, tmp_path / "b", tiny_clip_dir, tiers=("low",))
    assert second.quality == first.quality
    # rerun in the same folder: nothing is paid again
    _, again, _ = _eval(manifest, policy, tmp_path / "a", tiny_clip_dir, tiers=("low",))
    assert all(s.reused for s in again.scores if s.status == "ok")
    assert again.spent == first.spent and again.quality == first.quality


def test_a_job_without_a_seed_gets_a_fixed_one_so_an_eval_repeats(tmp_path, tiny_clip_dir):
    gradient(64, 64).save(tmp_path / "p.png")
    mask_image(64, 64).save(tmp_path / "m.png")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"id": "j", "image": "p.png", "mask": "m.png", "prompt": "a new backdrop"}) + "\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text("backends:\n  gpu: {kind: function, hosting: self-hosted}\nquality: {gpu: 0.5}\n")
    seeds = []

    def unseeded_noise(request: EditRequest) -> list[bytes]:  # like a diffusion model: no seed, new noise
        seeds.append(request.seed)
        pixels = np.random.default_rng(request.seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        return [_png(Image.fromarray(pixels, "RGB"))]

    results = []
    for out in ("a", "b"):
        backends = build_backends(load_policy(policy))
        backends["gpu"].handler = unseeded_noise
        results.append(_eval(manifest, policy, tmp_path / out, tiny_clip_dir, backends=backends, tiers=("low",))[1])
    assert seeds == [0, 0]
    assert results[0].scores[0].psnr == results[1].scores[0].psnr


def test_failed_runs_count_zero(sample, tmp_path, tiny_clip_dir):
    manifest, policy = sample
    backends = _backends(policy)
    backends["noisy"].handler = broken
    _, result, _ = _eval(manifest, policy, tmp_path / "out", tiny_clip_dir, backends=backends, tiers=("medium",))
    assert result.quality["noisy"] == {"medium": 0.0}
    failed = [s for s in result.scores if s.variant.backend == "noisy"]
    assert failed and all(s.status == "failed" and "GPU fell off" in s.error for s in failed)


def test_quality_block_loads_into_a_policy_and_changes_routing(sample, tmp_path, tiny_clip_dir):
    manifest, policy = sample
    _, result, files = _eval(manifest, policy, tmp_path / "out", tiny_clip_dir, tiers=("high",))
    block = yaml.safe_load(files["quality"].read_text())["quality"]
    assert set(block) == {"ident", "noisy", "masked-only"} and set(block["ident"]) == {"high"}

    from pipeline.jobs import load_jobs

    job = load_jobs(manifest)[0]
    declared = load_policy(policy)
    assert Router(declared, build_backends(declared), InMemorySpend()).route(job).backend == "noisy"
    measured_path = tmp_path / "measured.yaml"
    measured_path.write_text(policy.read_text() + f"quality_file: {files['quality']}\n")
    measured = load_policy(measured_path)
    assert measured.score("noisy", "high") == block["noisy"]["high"]  # measured tier replaced
    assert measured.score("noisy", "low") == 0.9  # the tiers not measured keep the declared score
    assert Router(measured, build_backends(measured), InMemorySpend()).route(job).backend == "ident"


def test_cli_shows_the_estimate_and_needs_yes_to_spend(sample, tmp_path, tiny_clip_dir, capsys, monkeypatch):
    from pipeline.cli import main

    manifest, policy = sample
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out = tmp_path / "cli"
    args = [
        "eval",
        str(manifest),
        "--policy",
        str(policy),
        "--out",
        str(out),
        "--tiers",
        "low",
        "--clip-model",
        str(tiny_clip_dir),
        "--clip-device",
        "cpu",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "estimated cost of this eval: $0.0510" in err and "pass --yes" in err
    assert not (out / "editroute.db").exists()  # nothing ran
    assert main([*args, "--yes"]) == 0
    printed = capsys.readouterr().out
    assert "quality.yaml" in printed and (out / "contact_sheet.png").is_file() and (out / "eval.md").is_file()


def test_cli_missing_clip_model_fails_before_spending(sample, tmp_path, capsys):
    from pipeline.cli import main

    manifest, policy = sample
    out = tmp_path / "cli"
    code = main(
        [
            "eval",
            str(manifest),
            "--policy",
            str(policy),
            "--out",
            str(out),
            "--tiers",
            "low",
            "--yes",
            "--clip-model",
            "nobody/no-such-clip",
            "--clip-device",
            "cpu",
        ]
    )
    assert code == 2 and "nobody/no-such-clip" in capsys.readouterr().err
    assert not (out / "editroute.db").exists()


def test_function_backend_capabilities_are_used(sample):
    manifest, policy = sample
    backends = _backends(policy)
    backends["ident"].capabilities = Capabilities(qualities=frozenset({"low"}))
    plan = plan_eval(manifest, policy, tiers=("low", "high"), backends=backends)
    skips = {v.id: v.skip for v in plan.variants if v.backend == "ident"}
    assert skips["job0.ident.low"] is None and "quality" in skips["job0.ident.high"]
    assert isinstance(backends["ident"], FunctionBackend)


def test_cli_stand_ins_eval_a_shipped_policy_offline(
    tmp_path,
    tiny_sdxl_dir,
    tiny_clipseg_dir,
    tiny_clip_dir,
    tiny_qwen_edit_dir,
    tiny_flux2_klein_dir,
    capsys,
    monkeypatch,
    caplog,
):
    """`editroute eval --stand-ins` on example jobs under the shipped cost-first policy: the API stand-in, tiny
    SDXL (with an inferred mask for the mask-less job) and tiny CLIP; the block it writes is marked as stand-in
    scores, which a policy refuses unless it opts in (then with a loud warning)."""
    from backends.standins import tiny_clip, tiny_sdxl
    from pipeline.cli import main
    from pipeline.commands.demo import DEMO_KEY, DEMO_KEY_ENV, ROOT

    monkeypatch.setenv(DEMO_KEY_ENV, DEMO_KEY)  # the command sets it too: restored after this test
    cache = tmp_path / "cache" / "editroute"  # the stand-ins' cache, filled with the session's tiny models
    cache.mkdir(parents=True)
    (cache / f"tiny-sdxl-v{tiny_sdxl.STANDIN_VERSION}").symlink_to(tiny_sdxl_dir)
    (cache / f"tiny-clipseg-v{tiny_clip.STANDIN_VERSION}").symlink_to(tiny_clipseg_dir)
    (cache / f"tiny-clip-v{tiny_clip.STANDIN_VERSION}").symlink_to(tiny_clip_dir)
    from backends.standins import tiny_flux2_klein, tiny_qwen_edit

    (cache / f"tiny-qwen-edit-r{tiny_qwen_edit.RECIPE}").symlink_to(tiny_qwen_edit_dir)
    (cache / f"tiny-flux2-klein-r{tiny_flux2_klein.RECIPE}").symlink_to(tiny_flux2_klein_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent))
    lines = [json.loads(line) for line in (ROOT / "examples" / "ecommerce.jsonl").read_text().splitlines()]
    sample = [e for e in lines if e["id"] in ("ecom-mug", "ecom-shoe-nomask")]
    for e in sample:
        e.update({k: str(ROOT / "examples" / e[k]) for k in ("image", "mask") if k in e})
    (tmp_path / "sample.jsonl").write_text("".join(json.dumps(e) + "\n" for e in sample))
    policy = ROOT / "configs" / "policies" / "cost-first.yaml"
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval"
    assert (
        main(
            ["eval", "sample.jsonl", "--policy", str(policy), "--out", "eval", "--tiers", "low", "--stand-ins", "--yes"]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "DEMO on local stand-ins" in printed.err
    assert "use it" not in printed.out and "source: stand-ins" in " ".join(printed.out.split())
    rows = {(r["job"], r["backend"]): r for r in csv.DictReader((out / "eval.csv").open())}
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 10  # 2 jobs x 5 backends
    assert rows[("ecom-shoe-nomask", "sdxl-local")]["mask_inferred"] == "True"
    assert (out / "contact_sheet.png").is_file() and (out / "eval.md").is_file()
    assert (out / "STAND-INS.txt").is_file()  # a review of these runs is marked as stand-in quality too
    written = yaml.safe_load((out / "quality.yaml").read_text())
    block = written["quality"]
    assert written["source"] == "stand-ins" and set(block) == {
        "api-flare",
        "api",
        "sdxl-local",
        "klein-local",
        "qwen-local",
    }
    assert written["samples"]["sdxl-local"]["low"] == {"runs": 2}
    # the README's old next step (include it, plan on it) is refused: stand-in scores never route by default
    (tmp_path / "policies").mkdir()
    mine = tmp_path / "policies" / "mine.yaml"
    mine.write_text(policy.read_text() + f"quality_file: {out / 'quality.yaml'}\n")
    with pytest.raises(ConfigError, match="STAND-INS.*allow_stand_in_quality: true"):
        load_policy(mine)
    mine.write_text(mine.read_text() + "allow_stand_in_quality: true\n")
    with caplog.at_level("WARNING", logger="pipeline.routing.quality_file"):
        opted_in = load_policy(mine)
    assert "ROUTING ON STAND-IN SCORES" in caplog.text
    assert (
        opted_in.score("sdxl-local", "low")
        == block["sdxl-local"]["low"]
        != load_policy(policy).score("sdxl-local", "low")
    )
    assert opted_in.quality_notes["sdxl-local"]["low"].startswith("measured on STAND-INS by eval")
