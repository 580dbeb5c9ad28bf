"""Everything local is checked before the first paid call: the output folder, files an edit would overwrite, disk
space for the outputs and the ledger. Each refusal is one line, exit 2, and the loopback API saw zero requests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from backends.standins import FakeOpenAIServer
from pipeline.cli import main
from pipeline.ledger import DB_NAME
from tests.imagery import image_bytes, mask_bytes

KEY = "sk-preflight-test"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(api_key=KEY) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        yield srv


@pytest.fixture
def image(tmp_path) -> Path:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    return tmp_path / "a.png"


def _edit(image: Path, out: Path, *extra: str) -> int:
    return main(["edit", "--image", str(image), "--prompt", "x", "-n", "2", "--out", str(out), *extra])


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _low_disk(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=free))


# ---- editroute edit --------------------------------------------------------------------------------------


def test_edit_refuses_an_out_that_is_a_file_before_paying(server, image, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert _edit(image, taken) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(taken) in line and "not a folder" in line
    assert server.requests == [] and taken.read_text() == "mine"


def test_edit_refuses_an_out_below_a_file_or_unwritable_before_paying(server, image, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _edit(image, tmp_path / "file" / "sub") == 2
    assert "--out" in _one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert _edit(image, locked / "o") == 2
        assert "not writable" in _one_line_error(capsys.readouterr().err)
    assert server.requests == []


def test_edit_does_not_overwrite_earlier_outputs_unless_asked(server, image, tmp_path, capsys):
    out = tmp_path / "o"
    assert _edit(image, out) == 0
    first = (out / "0.png").read_bytes()
    assert len(server.requests) == 1
    capsys.readouterr()
    assert _edit(image, out) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "0.png" in line and "--overwrite" in line
    assert len(server.requests) == 1 and (out / "0.png").read_bytes() == first
    assert _edit(image, out, "--overwrite") == 0
    assert len(server.requests) == 2


def test_edit_refuses_when_the_disk_cannot_hold_the_outputs(server, image, tmp_path, monkeypatch, capsys):
    _low_disk(monkeypatch, free=10_000)
    assert _edit(image, tmp_path / "o") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "disk" in line and "free" in line
    assert server.requests == []


def test_output_bytes_bound_is_conservative():
    """The bound is at least an uncompressed RGBA image per output, for every size form."""
    from backends.base import EditRequest
    from backends.images import InputImage
    from pipeline.run import output_bytes_bound

    img = InputImage(name="big.png", format="png", width=3000, height=2000, nbytes=9_000_000, has_alpha=False)
    for size, pixels in (("1024x1024", 1024 * 1024), ("1536x1024", 1536 * 1024), ("auto", 3000 * 2000)):
        req = EditRequest(prompt="x", images=(img,), size=size, n=3)
        assert output_bytes_bound(req) >= 3 * pixels * 4


# ---- editroute run ---------------------------------------------------------------------------------------


def _batch(tmp_path: Path, server: FakeOpenAIServer) -> tuple[Path, Path]:
    (tmp_path / "a.png").write_bytes(image_bytes(64, 64))
    (tmp_path / "m.png").write_bytes(mask_bytes(64, 64))
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(
        '{"id": "one", "image": "a.png", "mask": "m.png", "prompt": "x"}\n'
        '{"id": "two", "image": "a.png", "prompt": "y"}\n'
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"backends:\n  api: {{kind: openai, base_url: '{server.base_url}'}}\nquality: {{api: 0.8}}\n")
    return manifest, policy


def _run(manifest: Path, policy: Path, out: Path) -> int:
    return main(["run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"])


def test_run_refuses_an_out_that_is_a_file(server, tmp_path, capsys):
    manifest, policy = _batch(tmp_path, server)
    (tmp_path / "afile").write_text("mine")
    assert _run(manifest, policy, tmp_path / "afile") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "afile" in line and "not a folder" in line
    assert server.requests == []


def test_run_refuses_a_ledger_it_cannot_open(server, tmp_path, capsys):
    manifest, policy = _batch(tmp_path, server)
    out = tmp_path / "out"
    out.mkdir()
    (out / DB_NAME).write_bytes(b"not a database, just bytes " * 100)
    assert _run(manifest, policy, out) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert DB_NAME in line and "ledger" in line
    (out / DB_NAME).unlink()
    (out / DB_NAME).mkdir()
    assert _run(manifest, policy, out) == 2
    assert "ledger" in _one_line_error(capsys.readouterr().err)
    assert server.requests == []


def test_run_refuses_when_the_disk_cannot_hold_the_outputs(server, tmp_path, monkeypatch, capsys):
    manifest, policy = _batch(tmp_path, server)
    _low_disk(monkeypatch, free=50_000)
    assert _run(manifest, policy, tmp_path / "out") == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "2 job(s)" in line and "disk" in line and "--max-jobs" in line
    assert server.requests == []


def test_a_resumed_run_needs_space_only_for_the_jobs_left(server, tmp_path, monkeypatch, capsys):
    manifest, policy = _batch(tmp_path, server)
    out = tmp_path / "out"
    assert _run(manifest, policy, out) == 0
    assert len(server.requests) == 2
    _low_disk(monkeypatch, free=50_000)
    assert _run(manifest, policy, out) == 0, capsys.readouterr().err  # nothing left to write
    assert len(server.requests) == 2
