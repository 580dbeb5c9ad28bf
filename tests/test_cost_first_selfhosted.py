"""The shipped mask-less and compositing examples run self-hosted under the shipped cost-first policy, pointed at
the tiny stand-ins the way `editroute demo` points it (routing, rules and budgets unchanged): nothing that SDXL
inpainting cannot do has to go to the API any more."""

from __future__ import annotations

import json

import yaml
from PIL import Image


def test_maskless_and_compositing_examples_run_self_hosted_under_cost_first(
    tmp_path, monkeypatch, tiny_sdxl_dir, tiny_clipseg_dir, tiny_qwen_edit_dir, tiny_flux2_klein_dir
):
    from backends.standins import tiny_flux2_klein, tiny_qwen_edit
    from pipeline.commands.demo import DEMO_KEY, DEMO_KEY_ENV, ROOT, standin_policy
    from pipeline.run import run_batch

    cache = tmp_path / "cache" / "editroute"  # the demo's stand-in cache, holding this session's builds
    cache.mkdir(parents=True)
    (cache / f"tiny-qwen-edit-r{tiny_qwen_edit.RECIPE}").symlink_to(tiny_qwen_edit_dir)
    (cache / f"tiny-flux2-klein-r{tiny_flux2_klein.RECIPE}").symlink_to(tiny_flux2_klein_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache.parent))
    monkeypatch.setenv(DEMO_KEY_ENV, DEMO_KEY)
    policy = standin_policy(
        ROOT / "configs" / "policies" / "cost-first.yaml",
        api_url="http://127.0.0.1:9/v1",  # nothing listens: a job routed to the API would fail
        sdxl_dir=tiny_sdxl_dir,
        clipseg_dir=tiny_clipseg_dir,
    )
    assert policy["backends"]["qwen-local"]["model"] == str(cache / f"tiny-qwen-edit-r{tiny_qwen_edit.RECIPE}")
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    examples = ROOT / "examples"
    nomask = [json.loads(line) for line in (examples / "all.jsonl").read_text().splitlines()]
    nomask = [e for e in nomask if "mask" not in e and "image" in e and e.get("background") != "transparent"]
    for entry in nomask:
        entry["image"] = str(examples / entry["image"])
    (tmp_path / "maskless.jsonl").write_text("".join(json.dumps(e) + "\n" for e in nomask))
    backends = {}
    for manifest in (examples / "compositing.yaml", tmp_path / "maskless.jsonl"):
        out = tmp_path / manifest.stem
        result = run_batch(manifest, tmp_path / "policy.yaml", out)
        assert result.ok, manifest
        for record in out.glob("*/result.json"):
            data = json.loads(record.read_text())
            backends[data["job_id"]] = data["backend"]
            first = Image.open(next(record.parent.glob("0.*")))
            assert f"{first.size[0]}x{first.size[1]}" == data["size"]
    ids = {e["id"] for e in nomask} | {"comp-kitchen-3", "comp-kitchen-4"}
    assert set(backends) == ids and {"mkt-summer-6", "mkt-summer-10", "comp-kitchen-4"} <= ids
    assert set(backends.values()) <= {"sdxl-local", "klein-local", "qwen-local"}, backends
    assert backends["comp-kitchen-4"] == "klein-local"  # 4 inputs: only klein takes them
    assert backends["ecom-shoe-nomask"] == "sdxl-local"  # background swap: CLIPSeg mask keeps the product


def test_plan_shows_how_much_of_the_synthetic_mix_stays_on_the_api(tmp_path, capsys):
    """`plan --monthly-volume` on the synthetic production mix: with the instruction editors, nothing of it needs
    the API under cost-first; with SDXL as the only self-hosted model, the mask-less variants and composites do."""
    from pipeline.bench.policy_mix import write_manifest
    from pipeline.cli import main
    from pipeline.commands.demo import ROOT

    mix = write_manifest(tmp_path / "mix")
    after = ROOT / "configs" / "policies" / "cost-first.yaml"
    data = yaml.safe_load(after.read_text())
    for name in ("klein-local", "qwen-local"):  # cost-first as it was: SDXL the only self-hosted model
        del data["backends"][name], data["quality"][name], data["fallbacks"][name]
    data["fallbacks"]["sdxl-local"] = ["api-flare", "api"]
    before = tmp_path / "before.yaml"
    before.write_text(yaml.safe_dump(data))
    shares = {}
    for label, policy in (("before", before), ("after", after)):
        assert main(["plan", str(mix), "--policy", str(policy), "--monthly-volume", "2000", "--json"]) == 0
        shares[label] = json.loads(capsys.readouterr().out)["projection"]["hosting_share"]
    assert shares["after"]["api"] == 0 and shares["after"]["held"] == 0
    assert shares["before"]["api"] + shares["before"]["held"] >= 0.1  # 5 variant + 5 composite jobs of 85
    main(["plan", str(mix), "--policy", str(after), "--monthly-volume", "2000"])
    assert "on the API: 0% of jobs (self-hosted 100%)" in capsys.readouterr().out
