"""Exit codes are defined once and the README, `--help` and every command agree: 0 all done, 1 some jobs failed,
2 bad input or config (nothing could run), 130 interrupted. Manifest problems carry a reason that says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backends.standins import FakeOpenAIServer
from pipeline.cli import build_parser, main
from pipeline.commands import EXIT_CODES_TEXT, ExitCode
from tests.imagery import image_bytes

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-exit-codes-test"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        yield srv


def _files(tmp_path: Path, server: FakeOpenAIServer, lines: list[dict]) -> tuple[Path, Path]:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"backends:\n  api: {{kind: openai, base_url: '{server.base_url}'}}\nquality: {{api: 0.8}}\n")
    return manifest, policy


BAD = [
    {"id": "no-image", "image": "missing.png", "prompt": "x"},
    {"id": "bad-n", "image": "a.png", "prompt": "x", "n": 99},
]
GOOD = [{"id": "good", "image": "a.png", "prompt": "x"}]


def test_the_codes_are_one_table_that_readme_and_help_repeat():
    assert [int(c) for c in ExitCode] == [0, 1, 2, 130]
    help_text = " ".join(build_parser().format_help().split())
    assert " ".join(EXIT_CODES_TEXT.split()) in help_text
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert " ".join(EXIT_CODES_TEXT.split()) in readme
    run_help = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    assert " ".join(EXIT_CODES_TEXT.split()) in run_help


def test_a_manifest_whose_every_job_is_invalid_exits_2_under_a_clear_reason(server, tmp_path, capsys):
    manifest, policy = _files(tmp_path, server, BAD)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"]) == ExitCode.BAD_INPUT
    assert "no job in the manifest can run" in capsys.readouterr().err
    assert main(["report", str(out), "--json"]) == 0
    reasons = {f["reason"] for f in json.loads(capsys.readouterr().out)["failures"]}
    assert reasons == {"InvalidManifestEntry"}
    assert main(["plan", str(manifest), "--policy", str(policy)]) == ExitCode.BAD_INPUT
    assert server.requests == []


def test_some_invalid_jobs_beside_valid_ones_exit_1_and_the_rest_run(server, tmp_path, capsys):
    manifest, policy = _files(tmp_path, server, BAD + GOOD)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"]) == ExitCode.JOBS_FAILED
    assert json.loads(capsys.readouterr().out)["this_run"]["done"] == 1
    assert main(["plan", str(manifest), "--policy", str(policy)]) == ExitCode.JOBS_FAILED


def test_a_clean_manifest_exits_0(server, tmp_path, capsys):
    manifest, policy = _files(tmp_path, server, GOOD)
    assert main(["run", str(manifest), "--policy", str(policy), "--out", str(tmp_path / "o"), "--json"]) == 0


def test_readme_states_no_other_exit_code():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for match in re.finditer(r"exits? (\d+)", readme):
        assert int(match.group(1)) in {int(c) for c in ExitCode}, match.group(0)
