"""`editroute plan` and `editroute policy check`: what a user sees, with no GPU and no API key."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import pytest

from pipeline.cli import main
from pipeline.jobs import Manifest
from pipeline.routing import build_backends, load_policy, plan_jobs
from tests.routing_helpers import EXAMPLES, SHIPPED, TWO_BACKENDS, write_policy

ALL = str(EXAMPLES / "all.jsonl")
POLICIES = {p.stem: str(p) for p in SHIPPED}


@pytest.fixture
def fake_policy(tmp_path):
    return str(
        write_policy(
            tmp_path,
            TWO_BACKENDS
            + """
rules:
  - {name: text to api, when: {tags: [text]}, use: pricey}
objective: {type: cheapest, min_quality: 0.5}
budgets:
  - {backend: pricey, period: month, limit_usd: 0.2, on_exhausted: stop}
""",
        )
    )


def _plan_json(capsys, *args: str) -> tuple[int, dict]:
    rc = main(["plan", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_plan_prints_split_costs_comparison_and_reasons(capsys, fake_policy):
    rc = main(["plan", ALL, "--policy", fake_policy, "--explain"])
    out = capsys.readouterr().out
    assert "cheap" in out and "pricey" in out and "self-hosted" in out
    assert "all-API:" in out and "all-self-hosted:" in out and "cannot run there" in out
    for job in Manifest(ALL).jobs():
        assert f"{job.id} -> " in out
    assert "chose cheap" in out and "rule 'text to api' (tags any of text): use pricey" in out
    assert rc in (0, 1)


def test_plan_json_adds_up_and_budgets_bind_within_the_plan(capsys, fake_policy):
    rc, data = _plan_json(capsys, ALL, "--policy", fake_policy)
    jobs = sum(1 for _ in Manifest(ALL).jobs())
    assert data["jobs"] == data["entries"] == jobs >= 15 and data["problems"] == []
    split = data["split"]
    assert sum(s["jobs"] for s in split.values()) + data["held"] == jobs
    assert abs(Decimal(data["total_usd"]) - sum(Decimal(s["usd"]) for s in split.values())) <= Decimal("0.00001")
    assert Decimal(split["pricey"]["usd"]) <= Decimal("0.2")  # the $0.20 month budget held within the plan
    assert data["held"] > 0 and rc == 1
    held = [d for d in data["decisions"] if d["backend"] is None]
    assert all(any("job held" in r for r in d["reasons"]) for d in held)
    assert data["all_self_hosted"]["cannot_run"] > 0  # mask-less and composite jobs
    assert data["all_api"]["cannot_run"] == 0


def test_plan_reports_manifest_problems_and_plans_the_rest(capsys, tmp_path, fake_policy):
    manifest = tmp_path / "jobs.jsonl"
    img = EXAMPLES / "images" / "product_mug.png"
    manifest.write_text(
        json.dumps({"id": "a", "image": str(img), "prompt": "x"})
        + "\n"
        + json.dumps({"id": "b", "image": "nope.png", "prompt": "x"})
        + "\n",
        encoding="utf-8",
    )
    rc, data = _plan_json(capsys, str(manifest), "--policy", fake_policy)
    assert rc == 1 and data["jobs"] == 1
    assert data["problems"][0]["line"] == 2 and "file not found" in data["problems"][0]["message"]


def test_monthly_volume_projects_the_mix_and_the_volume_shift_binds(capsys, tmp_path):
    policy = str(
        write_policy(
            tmp_path,
            TWO_BACKENDS
            + """
objective: {type: best_quality}
volume_shift:
  - {after_jobs: 100, counting: [pricey], to: cheap}
""",
        )
    )
    _, small = _plan_json(capsys, ALL, "--policy", policy)
    assert small["split"]["cheap"]["jobs"] == 0  # 16 jobs: never past the threshold
    _, data = _plan_json(capsys, ALL, "--policy", policy, "--monthly-volume", "1000")
    proj = data["projection"]
    assert proj["jobs"] == 1000 and proj["monthly_volume"] == 1000
    assert proj["split"]["pricey"]["jobs"] >= 100 and proj["split"]["cheap"]["jobs"] > 500


def test_bad_policy_exits_2_with_the_message(capsys, tmp_path):
    bad = write_policy(tmp_path, TWO_BACKENDS + "objective: {type: fastest}\n")
    assert main(["plan", ALL, "--policy", str(bad)]) == 2
    assert (
        "objective.type: expected: Input should be 'cheapest' or 'best_quality' (got 'fastest')"
        in capsys.readouterr().err
    )
    assert main(["policy", "check", str(bad)]) == 2


def test_policy_check_summarises(capsys, fake_policy):
    assert main(["policy", "check", fake_policy]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "self-hosted" in out
    assert "rule 'text to api': when tags any of text -> use pricey" in out
    assert "budget: pricey $0.2 per month, then stop" in out


def test_policy_check_shows_training_data_and_who_each_require_admits(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["policy", "check", POLICIES["hosted-mix"]]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert "commercially_cleared" in rows["firefly"] and "undisclosed" in rows["gemini-draft"]
    assert "-> require training_data=commercially_cleared (qualify: firefly)" in out
    none = write_policy(tmp_path, TWO_BACKENDS + "rules:\n  - {require: {training_data: commercially_cleared}}\n")
    assert main(["policy", "check", str(none)]) == 0
    assert "no backend qualifies: matching jobs are held" in capsys.readouterr().out


# ---- the shipped policies (they name the openai and sdxl backends) ---------------------------------------


def test_balanced_plan_explains_every_job_without_key_or_gpu(capsys):
    assert "OPENAI_API_KEY" not in os.environ
    rc = main(["plan", ALL, "--policy", POLICIES["balanced"], "--explain"])
    out = capsys.readouterr().out
    assert rc == 0
    for job in Manifest(ALL).jobs():
        assert f"{job.id} -> " in out
    assert "sdxl-local" in out and "api" in out and "chose " in out


def test_shipped_policies_give_visibly_different_splits():
    manifest = Manifest(ALL)
    splits = {}
    for name, path in POLICIES.items():
        policy = load_policy(path)
        summary = plan_jobs(policy, build_backends(policy), manifest.jobs())
        assert summary.held == 0, name
        by_hosting: dict[str, int] = {}
        for backend, totals in summary.split.items():
            by_hosting[policy.hosting(backend)] = by_hosting.get(policy.hosting(backend), 0) + totals.jobs
        splits[name] = (tuple(sorted(by_hosting.items())), tuple((b, t.jobs) for b, t in summary.split.items()))
    assert len({s for s in splits.values()}) == len(splits), splits
    hosted = {name: dict(s[0]) for name, s in splits.items()}
    assert hosted["quality-first"].get("self-hosted", 0) < hosted["cost-first"]["self-hosted"]
    assert hosted["balanced"]["self-hosted"] > 0 and hosted["balanced"]["api"] > 0
    assert 0 < hosted["volume-shift"]["self-hosted"]
