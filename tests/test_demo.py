"""`editroute demo`: the five use cases end to end, offline, on stand-ins that say they are stand-ins."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

from backends.standins import STANDIN_VERSION
from pipeline.cli import main
from pipeline.commands.demo import DEMO_KEY, URL_PLACEHOLDER
from pipeline.ledger import Ledger

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_demo_sequence_runs_each_policy_anew_and_the_saved_policy_reruns(
    tmp_path, tiny_sdxl_dir, tiny_clipseg_dir, monkeypatch, capsys
):
    """`editroute demo; editroute demo --policy configs/policies/cost-first.yaml`, then the saved file again
    (a rerun resumes: nothing is billed twice)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the demo looks for its CLIPSeg stand-in
    cached = tmp_path / "cache" / "editroute" / f"tiny-clipseg-v{STANDIN_VERSION}"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(tiny_clipseg_dir)  # the session's build, not a second one
    base = tmp_path / "editroute-demo"
    common = ["--out", str(base), "--sdxl-dir", str(tiny_sdxl_dir), "--json"]
    assert main(["demo", *common]) == 0
    captured = capsys.readouterr()
    first = json.loads(captured.out)
    assert "DEMO on local stand-ins" in captured.err and "noise" in first["stand_ins"]["sdxl"]
    assert first["jobs"]["failed"] == 0 and first["jobs"]["done"] == first["jobs"]["total"] >= 10
    used = {b["backend"]: b for b in first["backends"]}
    assert used["sdxl-local"]["jobs_done"] >= 1 and used["api"]["jobs_done"] >= 1  # both kinds really ran
    assert used["api-batch"]["jobs_done"] == 1 and first["batches"][0]["status"] == "completed"  # the job that can wait
    assert Decimal(first["spend_usd"]) > 0
    out = base / "balanced"  # each policy runs in its own folder
    assert str(tiny_sdxl_dir) in (out / "demo-policy.yaml").read_text()
    assert DEMO_KEY not in (out / "demo-policy.yaml").read_text()
    assert (out / "STAND-INS.txt").read_text().startswith("editroute demo")  # what `editroute review` looks for
    with Ledger.in_dir(out) as ledger:
        for rec in ledger.jobs():
            assert rec.outputs and all((out / o["path"]).is_file() for o in rec.outputs)

    cost_first = str(ROOT / "configs" / "policies" / "cost-first.yaml")
    assert main(["demo", "--policy", cost_first, *common]) == 0
    captured = capsys.readouterr()
    second = json.loads(captured.out)
    assert "cost-first.yaml" in captured.err
    # the second policy really ran: every job anew, in its own folder, with its own saved policy
    assert second["this_run"]["reused"] == 0 and second["this_run"]["done"] == second["jobs"]["total"]
    assert second["ledger"] == str(base / "cost-first" / "editroute.db") != first["ledger"]
    assert "cost-first.yaml" in (base / "cost-first" / "demo-policy.yaml").read_text()
    assert "balanced.yaml" in (base / "balanced" / "demo-policy.yaml").read_text()
    mix = {b["backend"]: b["jobs_done"] for b in second["backends"]}
    assert mix != {b["backend"]: b["jobs_done"] for b in first["backends"]}  # a different routing shows

    # the saved file keeps no dead port, says how to rerun, and reruns (resuming: nothing billed again)
    saved = base / "balanced" / "demo-policy.yaml"
    text = saved.read_text()
    assert URL_PLACEHOLDER in text and "editroute demo --policy" in text
    assert not re.search(r"127\.0\.0\.1:[1-9]\d*", text)
    assert main(["demo", "--policy", str(saved), *common]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["ledger"] == first["ledger"] and again["this_run"]["reused"] == first["jobs"]["total"]
    assert again["spend_usd"] == first["spend_usd"] and again["jobs"]["failed"] == 0
    assert saved.read_text() == text


def test_demo_of_the_hosted_mix_starts_the_gemini_and_firefly_stand_ins(tmp_path, capsys):
    """`editroute demo --policy configs/policies/hosted-mix.yaml --manifest examples/hosted-mix.jsonl`: labelled
    Gemini and Firefly stand-ins with credentials of their own; no SDXL is built for a policy without one."""
    from backends.standins.hosted_standins import FIREFLY_SECRET, FIREFLY_URL_PLACEHOLDER, GEMINI_KEY

    policy = str(ROOT / "configs" / "policies" / "hosted-mix.yaml")
    manifest = str(ROOT / "examples" / "hosted-mix.jsonl")
    common = ["--policy", policy, "--manifest", manifest, "--out", str(tmp_path), "--json"]
    assert main(["demo", *common]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "gemini stand-in" in captured.err and "firefly stand-in" in captured.err
    assert "not the real service" in report["stand_ins"]["gemini"] and "sdxl" not in report["stand_ins"]
    assert "Firefly" in report["stand_ins"]["firefly"]
    done = {b["backend"]: b["jobs_done"] for b in report["backends"]}
    assert done == {"firefly": 3, "gemini-draft": 3, "openai": 1} and report["jobs"]["failed"] == 0
    saved = (tmp_path / "hosted-mix" / "demo-policy.yaml").read_text()
    assert FIREFLY_URL_PLACEHOLDER in saved and GEMINI_KEY not in saved and FIREFLY_SECRET not in saved
    assert not re.search(r"127\.0\.0\.1:[1-9]\d*", saved)
    assert "Gemini" in (tmp_path / "hosted-mix" / "STAND-INS.txt").read_text()
    assert main(["demo", *common]) == 0  # a rerun: every job already done, nothing billed again
    again = json.loads(capsys.readouterr().out)
    assert again["this_run"]["reused"] == 7 and again["spend_usd"] == report["spend_usd"]
