"""Deadlines decide who may use a batch lane: the manifest's `deadline`, the router's filter (a job without one is
urgent), the objective picking the lane where it is cheaper, and the `when: {deadline: ...}` rule condition."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.deadlines import describe_s, parse_deadline
from pipeline.errors import ConfigError
from pipeline.jobs import validate_manifest
from tests.imagery import image_bytes, mask_bytes
from tests.routing_helpers import job, make_router

LANES = """
backends:
  api:
    kind: openai
    model: gpt-image-2
  api-batch:
    kind: openai-batch
    model: gpt-image-2
quality:
  api: 0.8
  api-batch: 0.8
fallbacks:
  api-batch: [api]
"""


def with_deadline(j, text: str | None):
    return replace(j, deadline=parse_deadline(text) if text else None)


def test_deadline_values():
    assert parse_deadline("24h").remaining_s() == 86400
    assert parse_deadline("36h").seconds == 36 * 3600 and parse_deadline("2d").seconds == 172800
    assert parse_deadline("90m").seconds == 5400
    at = parse_deadline("2030-01-02T03:04:05Z")
    assert at.at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_deadline("2030-01-02T03:04:05").at.tzinfo is UTC  # no zone: UTC
    for bad in ("soon", "0h", "-3h", "", "24 hours"):
        with pytest.raises(ValueError, match="expected"):
            parse_deadline(bad)
    assert (
        describe_s(86400) == "24h"
        and describe_s(172800) == "2d"
        and describe_s(36 * 3600) == "36h"
        and describe_s(600) == "10m"
    )


def test_manifest_takes_deadline_and_names_a_bad_one(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "m.png").write_bytes(mask_bytes(64, 64))
    lines = [
        {"id": "ok", "image": "a.png", "mask": "m.png", "prompt": "p", "deadline": "24h"},
        {"id": "bad", "image": "a.png", "mask": "m.png", "prompt": "p", "deadline": "tomorrow"},
        {"id": "num", "image": "a.png", "mask": "m.png", "prompt": "p", "deadline": 24},
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    jobs, problems = validate_manifest(path)
    assert [j.id for j in jobs] == ["ok"] and jobs[0].deadline.seconds == 86400
    assert {(p.job_id, p.field) for p in problems} == {("bad", "deadline"), ("num", "deadline")}
    assert "tomorrow" in str(problems[0]) and "24h" in str(problems[0])


def test_urgent_jobs_never_go_to_the_lane(tmp_path):
    router, _, _ = make_router(tmp_path, base=LANES)
    d = router.route(job("urgent", mask=True, quality="low", size="1024x1024"))
    assert d.backend == "api"
    assert any(
        "api-batch cannot run this job: results take up to 24h and the job has no deadline" in r for r in d.reasons
    )
    short = router.route(with_deadline(job("short", quality="low", size="1024x1024"), "6h"))
    assert short.backend == "api" and any("deadline 6h leaves 6h" in r for r in short.reasons)


def test_jobs_that_can_wait_go_to_the_cheaper_lane(tmp_path):
    router, _, _ = make_router(tmp_path, base=LANES)
    d = router.route(with_deadline(job("wait", quality="low", size="1024x1024"), "24h"))
    sync = next(a for a in d.alternatives if a.backend == "api")
    assert d.backend == "api-batch" and d.estimate.usd * 2 == sync.estimate.usd
    assert d.fallbacks == ("api",) and "Batch API rates" in d.estimate.basis
    later = datetime.now(UTC) + timedelta(days=3)
    assert router.route(with_deadline(job("abs"), later.isoformat())).backend == "api-batch"
    past = datetime.now(UTC) - timedelta(hours=1)
    assert router.route(with_deadline(job("late"), past.isoformat())).backend == "api"


def test_rule_on_deadline(tmp_path):
    rule = """
rules:
  - name: can wait two days
    when: {deadline: {min: 2d}}
    use: api-batch
  - avoid: api-batch
"""
    router, _, _ = make_router(tmp_path, rule, base=LANES)
    assert router.route(with_deadline(job("two"), "2d")).backend == "api-batch"
    one = router.route(with_deadline(job("one"), "24h"))
    assert one.backend == "api" and any("avoid api-batch" in r for r in one.reasons)
    assert any("deadline >= 2d" in r for r in router.route(with_deadline(job("three"), "3d")).reasons)
    with pytest.raises(ConfigError, match="duration"):
        make_router(tmp_path, "rules:\n  - when: {deadline: {min: soon}}\n    use: api\n", base=LANES)
