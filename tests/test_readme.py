"""Every command the README shows is run: here (the main job and the one edit, on the loopback OpenAI stand-in),
or by the test or CI step named in `ELSEWHERE`, which must still contain the signature given for it. A README
command with neither fails this test, so the README cannot drift from what is checked."""

from __future__ import annotations

import json
import re
import shlex
from decimal import Decimal
from pathlib import Path

import pytest

from backends.standins import FakeOpenAIServer
from pipeline.cli import main
from tests.routing_helpers import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KEY = "sk-readme-standin-0123456789"  # the stand-in's key, not a real credential

# command -> (file that runs it, a string that file must contain to show it does)
ELSEWHERE: dict[str, tuple[str, str]] = {
    "python -m venv .venv && . .venv/bin/activate": (".ci/run", "-m venv .venv"),
    'pip install -e ".[all,dev]"': (".ci/run", 'pip install -q -e ".[all,dev]"'),
    # the CPU wheel line needs download.pytorch.org, which CI cannot reach; CI installs the same pair from disk
    "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu": (".ci/run", "torchvision=="),
    "editroute demo": ("tests/test_demo.py", 'main(["demo", *common])'),
    "editroute demo --policy configs/policies/cost-first.yaml": ("tests/test_demo.py", '"cost-first.yaml"'),
    "editroute review editroute-demo/cost-first": ("tests/test_review_browser.py", '"review", str(out)'),
    "python -m pytest -q": (".ci/run", "python -m pytest -q"),
    "editroute serve --policy configs/policies/balanced.yaml": (
        "tests/test_server.py",
        '"configs/policies/balanced.yaml"',
    ),
}
RUN_HERE = {
    "export OPENAI_API_KEY=sk-...",
    "editroute plan examples/all.jsonl --policy configs/policies/balanced.yaml --explain",
    "editroute run examples/all.jsonl --policy configs/policies/balanced.yaml --out out/",
    "editroute report out/",
}


def readme_commands() -> list[str]:
    """The commands in the README's ```bash blocks, one per line (continuations joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def test_every_readme_command_is_run_by_a_test_or_ci():
    edits = [c for c in readme_commands() if c.startswith("editroute edit ")]
    unknown = [c for c in readme_commands() if c not in ELSEWHERE and c not in RUN_HERE and c not in edits]
    assert not unknown, f"README commands no test runs: {unknown}"
    assert len(edits) == 1
    for command, (where, signature) in ELSEWHERE.items():
        if command in readme_commands():
            assert signature in (ROOT / where).read_text(encoding="utf-8"), (command, where)


def test_the_readme_python_snippet_is_the_one_the_server_test_runs():
    from tests.test_server import README_SNIPPET

    readme = README.read_text(encoding="utf-8")
    for line in README_SNIPPET.strip().splitlines():
        assert line in readme, line


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """`export OPENAI_API_KEY=...` with $OPENAI_BASE_URL at the loopback stand-in; no self-hosted model in the
    Hugging Face cache, as on a fresh machine (those jobs take the policy's fallbacks)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.chdir(ROOT)
    with FakeOpenAIServer(api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        yield srv


def _argv(command: str, out: Path) -> list[str]:
    """A README command as `main()` takes it, its `out/` moved into the test's own folder."""
    return [out.as_posix() + a[3:] if a.startswith("out/") else a for a in shlex.split(command)[1:]]


def test_the_main_job_as_the_readme_shows_it(standin, tmp_path, capsys):
    out = tmp_path / "out/"
    plan, run, report = (c for c in readme_commands() if c in RUN_HERE and c.startswith("editroute "))
    assert main(_argv(plan, out)) == 0
    explained = capsys.readouterr().out
    assert "gpt-image-2.6-sunburst" in explained and "api-flare" in explained
    assert standin.edit_requests == []  # plan calls nothing
    assert main([*_argv(run, out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    total = sum(1 for line in (EXAMPLES / "all.jsonl").read_text().splitlines() if line.strip())
    assert result["jobs"]["done"] == total and result["failures"] == []
    models = {m["model"] for m in result["models"]}
    assert models == {"gpt-image-2.6-sunburst", "gpt-image-2.6-flare"}
    assert {r.fields.get("model") for r in standin.edit_requests} == models
    assert all(r.status == 200 for r in standin.edit_requests) and Decimal(result["spend_usd"]) > 0
    assert main(_argv(report, out)) == 0
    assert f"{total}" in capsys.readouterr().out
    assert KEY not in (out / "editroute.db").read_bytes().decode("latin-1")


def test_the_one_edit_as_the_readme_shows_it(standin, tmp_path, capsys):
    (edit,) = (c for c in readme_commands() if c.startswith("editroute edit "))
    out = tmp_path / "out/"
    assert main(_argv(edit, out)) == 0
    assert sorted(p.name for p in (out / "edit").iterdir()) == ["0.png"]
    assert len(standin.edit_requests) == 1 and standin.edit_requests[0].status == 200
