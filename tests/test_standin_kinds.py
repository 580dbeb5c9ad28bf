"""`kind: function` is a test-only stand-in: a real policy cannot use it by accident (grey images at $0.01 a
piece), it is never suggested in an error, and where the opt-in allows it, its outputs say what they are."""

from __future__ import annotations

import json

import pytest

from backends.registry import BACKEND_KINDS, STANDIN_ENV, UnknownBackendKind, backend_class
from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.routing import load_policy
from tests.imagery import image_bytes

POLICY = "backends:\n  api: {kind: function}\nquality: {api: 0.8}\n"


@pytest.fixture
def no_opt_in(monkeypatch):
    monkeypatch.delenv(STANDIN_ENV, raising=False)


def test_a_policy_with_kind_function_is_refused_without_the_opt_in(no_opt_in, tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    msg = str(err.value)
    assert "policy.yaml:2: backends.api.kind" in msg and "test-only stand-in" in msg and STANDIN_ENV in msg


def test_edit_refuses_backend_function_without_the_opt_in(no_opt_in, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(image_bytes(32, 32))
    args = ["edit", "--backend", "function", "--image", str(tmp_path / "a.png"), "--prompt", "x"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "test-only stand-in" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_errors_never_suggest_the_stand_in_kind(no_opt_in, monkeypatch):
    for typo in ("functon", "fnction", "func"):
        with pytest.raises(UnknownBackendKind) as err:
            backend_class(typo)
        assert "function" not in str(err.value), str(err.value)
    monkeypatch.setenv(STANDIN_ENV, "1")  # even with the opt-in: the list of kinds is for users
    with pytest.raises(UnknownBackendKind) as err:
        backend_class("functon")
    assert "function" not in str(err.value)
    assert "function" not in BACKEND_KINDS


def test_with_the_opt_in_its_outputs_and_report_say_stand_in(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(STANDIN_ENV, "1")
    (tmp_path / "a.png").write_bytes(image_bytes(32, 32))
    (tmp_path / "jobs.jsonl").write_text('{"id": "j", "image": "a.png", "prompt": "x"}\n')
    (tmp_path / "policy.yaml").write_text(POLICY)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "jobs.jsonl"), "--policy", str(tmp_path / "policy.yaml"), "--out", str(out)]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "api" in report["stand_ins"] and "not a real edit" in report["stand_ins"]["api"]
    assert "STAND-IN" in captured.err
    result = json.loads((out / "j" / "result.json").read_text())
    assert result["model"].startswith("stand-in") and result["extras"]["stand_in"]
    assert main([*args, "--retry-failed"]) == 0  # the human report says it too
    assert "STAND-IN" in capsys.readouterr().out
