"""Gemini and Firefly through `editroute run` (the runner, the SQLite ledger, outputs on disk) against their loopback
stand-ins: issue 17's Done-when at the level a user meets it. What each backend does alone is tested in
test_gemini_e2e.py / test_firefly_e2e.py; here: what the pipeline adds (routing, fallbacks, settled spend, the
journal across a SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from backends.standins import FakeOpenAIServer
from backends.standins.firefly_server import FakeFireflyServer
from backends.standins.gemini_server import FakeGeminiServer
from pipeline.cli import main
from pipeline.ledger import Ledger
from tests.hosted_helpers import LITE, billed_by_gemini
from tests.imagery import encode, gradient, mask_image

ROOT = Path(__file__).resolve().parents[1]
GKEY, OKEY = "AIza-run-SECRET-0f1e2d", "sk-run-SECRET-3c4b5a"
CID, SECRET = "ff-run-client", "ff-run-SECRET-6a7b8c"
BOX = (30, 70, 110, 120)  # the edit region of the 160x128 inputs (alpha 0 in the OpenAI mask)


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GKEY)
    monkeypatch.setenv("OPENAI_API_KEY", OKEY)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", CID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", SECRET)


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(gradient(160, 128), "png"))
    (folder / "b.png").write_bytes(encode(gradient(96, 96).transpose(Image.Transpose.ROTATE_90), "png"))
    (folder / "mask.png").write_bytes(encode(mask_image(160, 128, BOX), "png"))
    return folder


def write(path: Path, data) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(j) + "\n" for j in data))
    else:
        path.write_text(yaml.safe_dump(data))
    return path


def run(manifest: Path, policy: Path, out: Path) -> dict:
    rc = main(["run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"])
    return {"rc": rc}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def outside(a: np.ndarray) -> np.ndarray:
    keep = np.ones(a.shape[:2], dtype=bool)
    keep[BOX[1] : BOX[3], BOX[0] : BOX[2]] = False
    return a[keep]


def gemini_spec(srv: FakeGeminiServer, **extra) -> dict:
    return {"kind": "gemini", "model": LITE, "base_url": srv.base_url, "max_retries": 0, **extra}


def openai_spec(srv: FakeOpenAIServer) -> dict:
    return {"kind": "openai", "model": "gpt-image-2.6-flare", "base_url": srv.base_url, "max_retries": 0}


def firefly_spec(srv: FakeFireflyServer, **extra) -> dict:
    return {
        "kind": "firefly",
        "base_url": srv.base_url,
        "token_url": srv.token_url,
        "price_per_operation_usd": "0.06",
        "poll_interval_s": 0.02,
        "max_poll_interval_s": 0.05,
        "requests_per_minute": None,  # the stand-in has no per-organisation limit
        **extra,
    }


# ---- Gemini: masked, mask-less, multi-image and n=3 through the runner -----------------------------------


def test_gemini_through_run_masked_maskless_multi_image_and_n3_billed_as_the_stand_in_billed(tmp_path, inputs):
    jobs = [
        {"id": "masked", "image": "in/a.png", "mask": "in/mask.png", "prompt": "a red armchair"},
        {"id": "maskless", "image": "in/a.png", "prompt": "make it dusk"},
        {"id": "two-images", "images": ["in/a.png", "in/b.png"], "prompt": "put image 2 on the wall of image 1"},
        {"id": "n3", "image": "in/a.png", "mask": "in/mask.png", "prompt": "three armchairs", "n": 3},
    ]
    manifest = write(tmp_path / "jobs.jsonl", jobs)
    out = tmp_path / "out"
    with FakeGeminiServer(api_key=GKEY) as srv:
        policy = write(tmp_path / "p.yaml", {"backends": {"gemini": gemini_spec(srv)}, "quality": {"gemini": 0.7}})
        assert run(manifest, policy, out)["rc"] == 0
    assert len(srv.calls) == 6 and all(c.status == 200 for c in srv.calls)  # n=3 is 3 calls
    assert sorted(len(c.body["contents"][0]["parts"]) - 1 for c in srv.calls) == [1, 1, 1, 1, 1, 2]  # inline images
    original = pixels(inputs / "a.png")
    with Ledger.in_dir(out) as ledger:
        recs = {r.id: r for r in ledger.jobs()}
        assert {r.status for r in recs.values()} == {"done"}
        assert len(recs["n3"].outputs) == 3 and len(recs["masked"].outputs) == 1
        for job in ("masked", "n3"):
            for o in recs[job].outputs:
                edited = pixels(out / o["path"])
                assert edited.shape == original.shape  # size auto: the input's own
                assert np.array_equal(outside(edited), outside(original))  # pixels outside the mask unchanged
                assert not np.array_equal(edited, original)
        assert pixels(out / recs["maskless"].outputs[0]["path"]).shape == original.shape
        assert ledger.total_spent() == billed_by_gemini(srv) > 0  # the ledger holds exactly what Google bills
        n3 = json.loads((out / "n3" / "result.json").read_text())
    assert len(n3["extras"]["calls"]) == 3 and n3["extras"]["n_mode"] == "parallel_calls"
    assert Decimal(n3["cost_usd"]) == sum(Decimal(c["cost_usd"]) for c in n3["extras"]["calls"])


def test_a_failed_gemini_call_of_n3_settles_what_the_finished_calls_cost(tmp_path, inputs):
    """Issue 17: n>1 with one call failing bills the finished calls (EditError.spent_usd); the job falls back."""
    manifest = write(tmp_path / "jobs.jsonl", [{"id": "n3", "image": "in/a.png", "prompt": "variants", "n": 3}])
    out = tmp_path / "out"
    with (
        FakeGeminiServer(api_key=GKEY, script=["ok", {"status": 500}, "ok"], latency_s=0.2) as g,
        FakeOpenAIServer(api_key=OKEY) as o,
    ):
        policy = write(
            tmp_path / "p.yaml",
            {
                "backends": {"gemini": gemini_spec(g), "openai": openai_spec(o)},
                "quality": {"gemini": 0.7, "openai": 0.8},
                "objective": {"type": "cheapest"},
                "fallbacks": {"gemini": ["openai"]},
            },
        )
        assert run(manifest, policy, out)["rc"] == 0
    gemini_billed = billed_by_gemini(g)
    assert [c.status for c in g.calls].count(500) == 1 and gemini_billed > 0  # the others finished, billed
    openai_billed = sum((r.billed_usd for r in o.requests if r.status == 200), Decimal(0))
    with Ledger.in_dir(out) as ledger:
        assert ledger.get("n3").status == "done" and ledger.get("n3").backend == "openai"
        assert ledger.total_spent("gemini") == gemini_billed  # settled, not dropped at $0
        assert ledger.total_spent() == gemini_billed + openai_billed


# ---- failure modes where the pipeline matters ------------------------------------------------------------


def test_gemini_unavailable_falls_back_and_a_safety_block_does_not_unless_the_policy_says(tmp_path, inputs):
    outage = write(tmp_path / "outage.jsonl", [{"id": "outage", "image": "in/a.png", "prompt": "make it dusk"}])
    blocked = write(tmp_path / "blocked.jsonl", [{"id": "blocked", "image": "in/a.png", "prompt": "block-prompt"}])
    with FakeGeminiServer(api_key=GKEY, script=[503]) as g, FakeOpenAIServer(api_key=OKEY) as o:
        spec = {
            "backends": {"gemini": gemini_spec(g), "openai": openai_spec(o)},
            "quality": {"gemini": 0.7, "openai": 0.8},
            "objective": {"type": "cheapest"},
            "fallbacks": {"gemini": ["openai"]},
        }
        policy = write(tmp_path / "p.yaml", spec)
        assert run(outage, policy, tmp_path / "out")["rc"] == 0
        assert run(blocked, policy, tmp_path / "out")["rc"] == 1  # the blocked job failed
        with Ledger.in_dir(tmp_path / "out") as ledger:
            done, refused = ledger.get("outage"), ledger.get("blocked")
            assert done.status == "done" and done.backend == "openai"  # BackendUnavailable: the next fallback
            assert [a["backend"] for a in ledger.attempts("outage")] == ["gemini", "openai"]
            assert refused.status == "failed" and refused.error_class == "ContentRejected"
            assert "blockReason" in refused.error and [a["backend"] for a in ledger.attempts("blocked")] == ["gemini"]
        openai_calls = len(o.requests)
        policy = write(tmp_path / "p2.yaml", {**spec, "fallback_on_rejected": True})
        assert run(blocked, policy, tmp_path / "out2")["rc"] == 0
        assert len(o.requests) == openai_calls + 1
        with Ledger.in_dir(tmp_path / "out2") as ledger:
            assert ledger.get("blocked").backend == "openai"  # the policy asked: another provider's filter


# ---- Firefly: a masked fill with its polarity proven, and a SIGKILL mid-poll through the runner ---------


def test_firefly_masked_fill_through_run_changes_exactly_the_openai_transparent_region(tmp_path):
    side = 1024
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.png").write_bytes(encode(gradient(side, side), "png"))
    box = (100, 600, 420, 900)
    (tmp_path / "in" / "mask.png").write_bytes(encode(mask_image(side, side, box), "png"))
    manifest = write(
        tmp_path / "jobs.jsonl", [{"id": "fill", "image": "in/big.png", "mask": "in/mask.png", "prompt": "a vase"}]
    )
    with FakeFireflyServer(client_id=CID, client_secret=SECRET, output_mime="image/png") as ff:
        policy = write(
            tmp_path / "p.yaml",
            {"backends": {"firefly": firefly_spec(ff, paste_back=False)}, "quality": {"firefly": 0.8}},
        )
        assert run(manifest, policy, tmp_path / "out")["rc"] == 0
        (job,) = ff.jobs.values()
    assert job.body["mask"]["invert"] is False  # white = edit, as Firefly's masking guide says
    with Ledger.in_dir(tmp_path / "out") as ledger:
        rec = ledger.get("fill")
        assert rec.cost == Decimal("0.06") and ledger.total_spent() == Decimal("0.06")
        changed = (pixels(tmp_path / "out" / rec.outputs[0]["path"]) != pixels(tmp_path / "in" / "big.png")).any(-1)
    expected = np.zeros((side, side), dtype=bool)
    expected[box[1] : box[3], box[0] : box[2]] = True
    assert np.array_equal(changed, expected)  # what changed is what the stand-in filled: the white mask pixels


def test_sigkill_of_editroute_run_during_a_firefly_poll_then_a_rerun_submits_nothing_twice(tmp_path, inputs):
    manifest = write(
        tmp_path / "jobs.jsonl",
        [{"id": "fill", "image": "in/a.png", "mask": "in/mask.png", "prompt": "a red armchair", "n": 2}],
    )
    out = tmp_path / "out"
    with FakeFireflyServer(client_id=CID, client_secret=SECRET) as ff:
        policy = write(tmp_path / "p.yaml", {"backends": {"firefly": firefly_spec(ff)}, "quality": {"firefly": 0.8}})
        ff.polls_to_finish = 10**9  # the job runs on while the first run polls it
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--policy", str(policy), "--out", str(out)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while ff.count("status") < 3 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert len(ff.submits()) == 1
        ff.polls_to_finish = 1  # it finished meanwhile
        assert run(manifest, policy, out)["rc"] == 0  # a plain rerun
    assert len(ff.submits()) == 1 and ff.count("upload") == 2  # nothing uploaded or submitted twice
    with Ledger.in_dir(out) as ledger:
        rec = ledger.get("fill")
        assert rec.status == "done" and len(rec.outputs) == 2
        assert ledger.total_spent() == Decimal("0.12")  # 2 operations x $0.06, once
    result = json.loads((out / "fill" / "result.json").read_text())
    assert result["extras"]["jobs"][0]["resumed"] is True
    assert not (out / "fill" / ".journal").exists() or not any((out / "fill" / ".journal").iterdir())


def test_the_readme_claim_hosted_mix_routes_legal_cleared_to_firefly_and_drafts_to_gemini(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    rc = main(
        [
            "plan",
            str(ROOT / "examples" / "hosted-mix.jsonl"),
            "--policy",
            str(ROOT / "configs" / "policies" / "hosted-mix.yaml"),
            "--json",
        ]
    )
    assert rc == 0
    plan = json.loads(capsys.readouterr().out)
    routed = {d["id"]: d["backend"] for d in plan["decisions"]}
    assert {k for k, v in routed.items() if v == "firefly"} == {
        "legal-mug-bg",
        "legal-banner-autumn",
        "legal-draft-shoe",
    }
    assert {k for k, v in routed.items() if v == "gemini-draft"} == {
        "draft-armchair",
        "draft-summer-3",
        "draft-kitchen",
    }
    assert routed["final-sale-fr"] == "openai"
    assert plan["models"]["firefly"] == "(PLACEHOLDER $0.10/operation)"  # not a contract's rate, and it says so
    assert plan["split"]["gemini-draft"]["images"] == 5 and plan["split"]["firefly"]["usd"] == "0.300000"
    why = {d["id"]: d["reasons"] for d in plan["decisions"]}
    assert any("require training_data=commercially_cleared: only firefly qualifies" in r for r in why["legal-mug-bg"])
    assert any("use gemini-draft skipped" in r for r in why["legal-draft-shoe"])  # the licence beats the draft rule
    assert any("drafts to the cheapest hosted edit" in r and "use gemini-draft" in r for r in why["draft-armchair"])
    assert any("3 parallel calls, each billed" in r for r in why["draft-summer-3"])
