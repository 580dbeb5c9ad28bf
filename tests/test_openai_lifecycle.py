"""Model lifecycle and defaults as a user meets them: retired models refused by every command before any call,
shipped policies on live models only, `doctor` comparing the API's shutdown dates with prices.yaml, `plan` and
`report` naming models, and the README's main job on the loopback stand-in (not the real API)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from backends.pricing import load_prices
from backends.standins import FakeOpenAIServer
from pipeline.cli import main
from pipeline.ledger import Ledger
from pipeline.routing import load_policy
from pipeline.run import build_report
from tests.imagery import image_bytes, mask_bytes
from tests.routing_helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "configs" / "policies").glob("*.yaml"))
KEY = "sk-lifecycle-0123456789"
RETIRED = """
backends:
  api: {{kind: openai, model: {model}, base_url: {url}}}
quality: {{api: 0.9}}
"""


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "m.png").write_bytes(mask_bytes(64, 64))
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"id": "j1", "image": "a.png", "mask": "m.png", "prompt": "red"}) + "\n")
    return tmp_path / "a.png", manifest


def test_policy_check_on_gpt_image_1_fails_naming_the_shutdown_date_and_a_replacement(tmp_path, server, capsys):
    policy = tmp_path / "old.yaml"
    policy.write_text(RETIRED.format(model="gpt-image-1", url=server.base_url))
    assert main(["policy", "check", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "backends.api" in err and "gpt-image-1" in err and "2026-10-23" in err and "gpt-image-2.5-sunburst" in err


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"])
def test_plan_run_serve_and_edit_refuse_a_retired_model_before_any_call(tmp_path, server, capsys, model):
    policy = tmp_path / "old.yaml"
    policy.write_text(RETIRED.format(model=model, url=server.base_url))
    image, manifest = _inputs(tmp_path)
    shutdown = load_prices().models[model].shutdown
    for argv in (
        ["plan", str(manifest), "--policy", str(policy)],
        ["run", str(manifest), "--policy", str(policy), "--out", str(tmp_path / "out")],
        ["serve", "--policy", str(policy), "--out", str(tmp_path / "srv"), "--port", "9"],
        [
            "edit",
            "--model",
            model,
            "--base-url",
            server.base_url,
            "--image",
            str(image),
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "e"),
        ],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"shut down on {shutdown}" in err and "use 'gpt-image-2" in err, (argv, err)
    assert server.requests == []
    assert not (tmp_path / "e").exists()


def test_a_deprecated_model_warns_with_its_date_but_runs(tmp_path, server, caplog, monkeypatch):
    table = load_prices()
    entry = table.models["gpt-image-2"].model_copy(
        update={"status": "deprecated", "shutdown": "2027-03-01", "replacement": ("gpt-image-2.6-sunburst",)}
    )
    monkeypatch.setattr(
        "backends.openai.backend.load_prices",
        lambda: table.model_copy(update={"models": {**table.models, "gpt-image-2": entry}}),
    )
    policy = tmp_path / "p.yaml"
    policy.write_text(RETIRED.format(model="gpt-image-2", url=server.base_url))
    caplog.set_level(logging.WARNING)
    assert main(["policy", "check", str(policy)]) == 0
    assert "'gpt-image-2' shuts down on 2027-03-01; move to gpt-image-2.6-sunburst" in caplog.text


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_every_shipped_policy_passes_and_names_only_live_models(path, capsys):
    assert main(["policy", "check", str(path)]) == 0
    models = [s.settings.get("model") for s in load_policy(path).backends.values() if s.kind == "openai"]
    table = load_prices()
    assert models and all(table.models[m].status == "live" for m in models), models
    text = path.read_text()
    # nor in the comments a user copies from (a "-mini" model; "Gemini" is fine)
    assert "gpt-image-1" not in text and re.search(r"\bmini\b", text) is None


def test_plan_lists_each_backends_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    balanced = str(ROOT / "configs" / "policies" / "balanced.yaml")
    assert main(["plan", str(EXAMPLES / "all.jsonl"), "--policy", balanced]) == 0
    out = capsys.readouterr().out
    assert "gpt-image-2.6-sunburst" in out and "gpt-image-2.6-flare" in out and "gpt-image-1" not in out
    assert main(["plan", str(EXAMPLES / "all.jsonl"), "--policy", balanced, "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert models["api"] == "gpt-image-2.6-sunburst" and models["api-flare"] == "gpt-image-2.6-flare"


# ---- doctor against GET /v1/models --------------------------------------------------------------------------


def _doctor(tmp_path: Path, srv: FakeOpenAIServer, model: str, capsys) -> tuple[int, str]:
    policy = tmp_path / "p.yaml"
    policy.write_text(RETIRED.format(model=model, url=srv.base_url))
    rc = main(["doctor", "--policy", str(policy)])
    return rc, capsys.readouterr().out


def test_doctor_reports_shutdown_dates_that_differ_from_prices_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "400")
    with FakeOpenAIServer(api_key=KEY) as srv:
        rc, out = _doctor(tmp_path, srv, "gpt-image-2.6-flare", capsys)
        assert rc == 0 and "shutdown dates of" in out and "match prices.yaml" in out
        assert [(r.method, r.path) for r in srv.requests] == [("GET", "/v1/models")]
    with FakeOpenAIServer(api_key=KEY, model_shutdowns={"gpt-image-2": "2027-04-21"}) as srv:
        rc, out = _doctor(tmp_path, srv, "gpt-image-2.6-flare", capsys)
    assert rc == 2 and "gpt-image-2: API shutdown_date 2027-04-21, prices.yaml none" in out
    assert srv.edit_requests == []


def test_doctor_flags_a_policy_model_the_api_no_longer_lists_and_skips_without_a_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    table = load_prices()
    gone = table.models["gpt-image-2.5-flare"].model_copy(update={"status": "retired"})
    server_view = table.model_copy(update={"models": {**table.models, "gpt-image-2.5-flare": gone}})
    with FakeOpenAIServer(api_key=KEY, prices=server_view) as srv:
        rc, out = _doctor(tmp_path, srv, "gpt-image-2.5-flare", capsys)
        assert rc == 0 and "skipped" in out and "no API key" in out  # no key: nothing compared, nothing sent
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        rc, out = _doctor(tmp_path, srv, "gpt-image-2.5-flare", capsys)
    assert rc == 2 and "gpt-image-2.5-flare (backend api): not listed by the API" in out
    assert KEY not in out


# ---- report: each model's estimates against its bills -------------------------------------------------------


def test_report_shows_the_estimate_to_bill_ratio_per_model(tmp_path, monkeypatch, capsys):
    """`quality: auto` is estimated at high; a server that runs auto as low bills far less: the ratio says so."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("COLUMNS", "200")
    _inputs(tmp_path)
    (tmp_path / "jobs.jsonl").write_text(
        "\n".join(json.dumps({"id": f"j{i}", "image": "a.png", "prompt": f"job {i}"}) for i in range(3)) + "\n"
    )
    with FakeOpenAIServer(api_key=KEY, auto_quality="low") as srv:
        policy = tmp_path / "p.yaml"
        policy.write_text(RETIRED.format(model="gpt-image-2.6-flare", url=srv.base_url))
        assert main(["run", str(tmp_path / "jobs.jsonl"), "--policy", str(policy), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    with Ledger.in_dir(tmp_path / "o") as ledger:
        (row,) = build_report(ledger)["models"]
        attempts = ledger.attempts()
    held = sum(a["reserved"] for a in attempts)
    billed = sum(a["cost"] for a in attempts)
    assert row["model"] == "gpt-image-2.6-flare" and row["calls"] == 3
    assert row["estimate_to_bill"] == round(float(held / billed), 3) > 10  # high (7024) vs low (196) tokens
    assert main(["report", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "estimate vs bill per model" in out and "gpt-image-2.6-flare" in out
