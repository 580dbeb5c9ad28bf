"""`editroute demo`: the five use cases end to end, offline, on stand-ins that say they are stand-ins."""

from __future__ import annotations

import json
from decimal import Decimal

from pipeline.cli import main
from pipeline.commands.demo import DEMO_KEY
from pipeline.ledger import Ledger


def test_demo_runs_the_examples_offline_and_a_second_run_bills_nothing(tmp_path, tiny_sdxl_dir, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--sdxl-dir", str(tiny_sdxl_dir), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "DEMO on local stand-ins" in captured.err and "noise" in report["stand_ins"]["sdxl"]
    assert report["jobs"]["failed"] == 0 and report["jobs"]["done"] == report["jobs"]["total"] >= 10
    used = {b["backend"]: b for b in report["backends"]}
    assert used["sdxl-local"]["jobs_done"] >= 1 and used["api"]["jobs_done"] >= 1  # both kinds really ran
    assert Decimal(report["spend_usd"]) > 0
    assert (out / "STAND-INS.txt").read_text().startswith("editroute demo")  # what `editroute review` looks for
    policy = (out / "demo-policy.yaml").read_text()
    assert "127.0.0.1" in policy and str(tiny_sdxl_dir) in policy and DEMO_KEY not in policy
    with Ledger.in_dir(out) as ledger:
        for rec in ledger.jobs():
            assert rec.outputs and all((out / o["path"]).is_file() for o in rec.outputs)

    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["this_run"]["done"] == 0 and again["this_run"]["reused"] == report["jobs"]["total"]
    assert again["spend_usd"] == report["spend_usd"]
