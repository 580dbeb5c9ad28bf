"""End to end over the wire: the example manifests through the real OpenAI backend against the loopback
stand-in server (not the real API), a 429 storm included."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backends.standins import FakeOpenAIServer
from pipeline.cli import main
from pipeline.ledger import Ledger
from pipeline.run import run_batch
from tests.batch_helpers import API_BACKEND, STANDIN_KEY, write_manifest, write_policy
from tests.routing_helpers import EXAMPLES

API_POLICY = (
    "\nbackends:\n"
    + API_BACKEND
    + """\
  api-flare:
    kind: openai
    model: gpt-image-2.6-flare
    base_url: {url}
    max_retries: 0
quality:
  api: {{low: 0.72, medium: 0.82, high: 0.90}}
  api-flare: {{low: 0.62, medium: 0.72, high: 0.80}}
rules:
  - {{when: {{quality: [medium, high, auto]}}, use: api}}
objective: {{type: cheapest, min_quality: 0.6}}
fallbacks:
  api: [api-flare]
"""
)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", STANDIN_KEY)
    return STANDIN_KEY


def test_example_manifest_runs_end_to_end_on_the_api_standin(tmp_path, api_key, capsys):
    out = tmp_path / "out"
    with FakeOpenAIServer(api_key=api_key) as server:
        policy = write_policy(tmp_path, API_POLICY.format(url=server.base_url))
        code = main(["run", str(EXAMPLES / "all.jsonl"), "--policy", str(policy), "--out", str(out), "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report["failures"]
        calls = len(server.requests)
    total = sum(1 for line in (EXAMPLES / "all.jsonl").read_text().splitlines() if line.strip())
    assert report["jobs"]["done"] == total and calls == total
    with Ledger.in_dir(out) as ledger:
        billed = Decimal(0)
        for rec in ledger.jobs():
            result = json.loads((out / rec.id / "result.json").read_text())
            assert len(result["outputs"]) == json.loads(
                next(line for line in (EXAMPLES / "all.jsonl").read_text().splitlines() if f'"id": "{rec.id}"' in line)
            ).get("n", 1)
            assert result["usage"]["output_tokens"] > 0 and Decimal(result["cost_usd"]) == rec.cost
            billed += rec.cost
        assert ledger.total_spent() == billed == Decimal(report["spend_usd"])
    # nothing secret was written anywhere in the output folder
    for path in out.rglob("*"):
        if path.is_file():
            assert STANDIN_KEY.encode() not in path.read_bytes(), path
    # a rerun calls nothing
    with FakeOpenAIServer(api_key=api_key) as server:
        policy = write_policy(tmp_path, API_POLICY.format(url=server.base_url))
        assert main(["run", str(EXAMPLES / "all.jsonl"), "--policy", str(policy), "--out", str(out), "--json"]) == 0
        assert server.requests == []
        assert json.loads(capsys.readouterr().out)["this_run"]["reused"] == total


def test_batch_survives_a_429_storm_and_outages(tmp_path, api_key):
    storm = [{"status": 429, "retry_after_ms": 5}] * 14 + [500, 500] + [{"status": 429, "retry_after_ms": 5}] * 6
    manifest = write_manifest(tmp_path, 10)
    out = tmp_path / "out"
    with FakeOpenAIServer(api_key=api_key, script=storm) as server:
        policy = write_policy(tmp_path, API_POLICY.format(url=server.base_url))
        result = run_batch(manifest, policy, out)
        statuses = [r.status for r in server.requests]
    assert result.tally.done == 10 and result.tally.failed == 0
    assert statuses.count(429) == 20 and statuses.count(200) == 10
    with Ledger.in_dir(out) as ledger:
        assert ledger.counts() == {"done": 10}
        attempts = ledger.attempts()
        assert any(a["error_class"] == "RateLimited" for a in attempts)
        paid = [a for a in attempts if a["error_class"] is None]
        assert len(paid) == 10  # each job billed once, whatever it took
        assert ledger.total_spent() == sum((a["cost"] for a in paid), Decimal(0))
