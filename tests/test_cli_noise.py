"""The command line says each thing once and briefly: one short line for a model that is not in the offline cache,
no traceback when a reader closes the pipe (`| head`), and `serve` checks its port and upstream keys before it
announces anything."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.ledger import Ledger
from tests.imagery import image_bytes, mask_bytes

REPO = Path(__file__).resolve().parents[1]
NOT_CACHED = "editroute-tests/sdxl-that-is-not-in-any-cache"


def _manifest(tmp_path: Path, jobs: int = 3) -> Path:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "m.png").write_bytes(mask_bytes(64, 64))
    lines = [json.dumps({"id": f"j{i}", "image": "a.png", "mask": "m.png", "prompt": f"x {i}"}) for i in range(jobs)]
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "jobs.jsonl"


def test_an_sdxl_model_missing_offline_is_one_short_line_per_backend(tmp_path, capsys):
    pytest.importorskip("diffusers")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"backends:\n  gpu: {{kind: sdxl, model: {NOT_CACHED}, device: cpu}}\nquality: {{gpu: 0.7}}\n")
    out = tmp_path / "out"
    assert main(["run", str(_manifest(tmp_path)), "--policy", str(policy), "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    with Ledger.in_dir(out) as ledger:
        errors = [rec.error for rec in ledger.jobs()]
    message = errors[0]
    assert len(message) < 320, message
    assert "not in the Hugging Face cache" in message and f"hf download {NOT_CACHED}" in message
    for noise in ("local_files_only", "stacktrace", "stack trace"):
        assert noise not in message and noise not in err
    assert err.count("not in the Hugging Face cache") <= 2  # the backend's warning and the first job, not per job
    assert err.count("same error as") >= 1, err


def _report_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    with Ledger.in_dir(out) as ledger:
        for i in range(40):
            ledger.record_invalid(f"job-{i}", "a reason")
    return out


@pytest.mark.parametrize("fmt", [[], ["--json"], ["--csv"]])
def test_report_piped_into_head_ends_quietly(tmp_path, fmt):
    out = _report_dir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    cmd = [sys.executable, "-m", "pipeline.cli", "report", str(out), *fmt]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    proc.stdout.close()  # the reader is gone before the first write, as with `| head -0` (or a long report)
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err == "" and proc.returncode == 141  # as a shell reports a process ended by SIGPIPE


def test_help_piped_into_head_ends_quietly():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ---- serve ---------------------------------------------------------------------------------------------


def _api_policy(tmp_path: Path, **settings) -> Path:
    extra = "".join(f", {k}: '{v}'" for k, v in settings.items())
    path = tmp_path / "policy.yaml"
    path.write_text(
        f"backends:\n  api: {{kind: openai, base_url: 'http://127.0.0.1:9/v1'{extra}}}\nquality: {{api: 0.8}}\n"
    )
    return path


def _serve(tmp_path: Path, policy: Path, port: int, **env: str) -> subprocess.CompletedProcess:
    """`editroute serve` in its own process (a server that wrongly starts is killed by the timeout)."""
    cmd = [sys.executable, "-m", "pipeline.cli", "serve", "--policy", str(policy), "--port", str(port)]
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env}
    try:
        return subprocess.run(
            [*cmd, "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"editroute serve started instead of refusing: {exc.stderr}")


def test_serve_on_a_busy_port_exits_2_before_announcing_anything(tmp_path):
    pytest.importorskip("fastapi")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(tmp_path, _api_policy(tmp_path), port, OPENAI_API_KEY="sk-upstream")
    assert proc.returncode == 2
    assert "listening" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert f"--port {port}" in proc.stderr and "in use" in proc.stderr


def test_serve_refuses_to_start_without_an_upstream_key(tmp_path):
    pytest.importorskip("fastapi")
    proc = _serve(tmp_path, _api_policy(tmp_path), 0)
    err = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "OPENAI_API_KEY" in err and "'api'" in err and "listening" not in err
    missing = tmp_path / "no-such.key"
    proc = _serve(tmp_path, _api_policy(tmp_path, api_key_file=missing), 0, OPENAI_API_KEY="sk-upstream")
    assert proc.returncode == 2 and str(missing) in " ".join(proc.stderr.split())


def test_the_no_client_keys_warning_is_about_the_servers_own_keys(tmp_path, monkeypatch, caplog):
    pytest.importorskip("fastapi")
    from pipeline.serve import ServeConfig, build

    monkeypatch.setenv("OPENAI_API_KEY", "sk-upstream")
    app, service, keys = build(ServeConfig(policy=_api_policy(tmp_path), out_dir=tmp_path / "o"), env={})
    service.close()
    assert keys == ()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "client" in warning and "EDITROUTE_API_KEYS" in warning and "not" in warning and "OpenAI" in warning
