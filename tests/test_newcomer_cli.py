"""Small things a new user meets in the first hour: help that shows defaults, `editroute` alone prints help, the
stand-in builders answer --help, the README's commands leave `git status` clean, and the project cites only
public sources."""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = ["tiny_sdxl", "tiny_clipseg", "tiny_clip", "tiny_grounded_sam"]


@pytest.mark.parametrize("module", BUILDERS)
def test_each_stand_in_builder_prints_usage_for_help_instead_of_building(module, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    builder = importlib.import_module(f"backends.standins.{module}")
    with pytest.raises(SystemExit) as done:
        builder.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m backends.standins.{module}" in out and "DIR" in out
    assert list(tmp_path.iterdir()) == []  # no folder named --help


def _parsers(parser: argparse.ArgumentParser, name: str = "editroute"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_with_a_default_shows_it_in_help():
    missing = []
    for name, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.default in (None, False, argparse.SUPPRESS) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction | argparse._VersionAction):
                continue
            text = " ".join(formatter._format_action(action).split())
            if "default" not in text.lower():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_bare_editroute_prints_the_help_and_exits_2(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "usage: editroute" in out and "COMMAND" in out and "demo" in out and "Exit codes" in out
    assert "`editroute` alone prints this help (exit 2)" in " ".join(out.split())


# ---- the repository ------------------------------------------------------------------------------------


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture
def git_tree():
    if shutil.which("git") is None or _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")


def test_what_the_readme_commands_write_is_ignored_by_git(git_tree):
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # every command a user is shown
    readme = "\n".join(p.read_text(encoding="utf-8") for p in docs)
    written = set(re.findall(r"--out[ =]([\w./-]+)", readme))
    written |= {"editroute-demo/balanced/x", "editroute-out/x", "measured.yaml", "gpu_check.json", "sdxl_speed.json"}
    written = {w for w in written if not w.startswith(("/", "DIR", "$"))}
    assert {"out/", "eval-out", "bench/"} <= written | {"out/"}
    not_ignored = [w for w in sorted(written) if _git("check-ignore", "-q", w.rstrip("/") + "/probe").returncode != 0]
    not_ignored = [w for w in not_ignored if _git("check-ignore", "-q", w).returncode != 0]
    assert not not_ignored, f"README commands write these, .gitignore lacks them: {not_ignored}"


def test_the_project_cites_public_sources_not_team_files(git_tree):
    files = _git("ls-files", "backends", "pipeline", "configs", "benchmarks", "docs", "examples", "README.md").stdout
    offenders = []
    for rel in files.split():
        path = ROOT / rel
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".jsonl"} or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "CONTRACT.md" in line or "/work/shared" in line or re.search(r"\bshared/", line):
                offenders.append(f"{rel}:{n}: {line.strip()[:80]}")
    assert not offenders, offenders
