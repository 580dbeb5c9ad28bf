"""`editroute edit --backend gemini|firefly` against the loopback stand-ins: flags, outputs, and a Firefly edit
SIGKILLed while it polls that resumes on the same command instead of submitting (and paying) again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from backends.standins.firefly_server import FakeFireflyServer
from backends.standins.gemini_server import FakeGeminiServer
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
ROOM, FLOOR = str(ROOT / "examples/images/room.png"), str(ROOT / "examples/images/room_floor_mask.png")
GKEY, CID, SECRET = "AIza-edit-SECRET-1f2e3d", "ff-edit-client", "ff-edit-SECRET-4c5b6a"


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", GKEY)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", CID)
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_SECRET", SECRET)


def test_edit_on_gemini_writes_n_images_at_the_inputs_size_and_the_exact_bill(creds, tmp_path, capsys):
    out = tmp_path / "g"
    with FakeGeminiServer(api_key=GKEY) as srv:
        rc = main(["edit", "--backend", "gemini", "--base-url", srv.base_url, "--image", ROOM, "--mask", FLOOR]
                  + ["--prompt", "a red armchair", "-n", "3", "--out", str(out)])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0 and len(srv.calls) == 3
    for k in range(3):
        with Image.open(out / f"{k}.png") as img:
            assert img.size == (160, 128)
    assert "cost: $" in stdout and "gemini-3.1-flash-lite-image" in stdout and "resized:" in stdout
    assert GKEY not in stdout and not list(out.glob(".edit-journal-*"))  # gemini keeps no journal


def test_edit_flags_that_do_not_apply_to_the_kind_are_refused_before_any_call(creds, tmp_path, capsys):
    rc = main(["edit", "--backend", "gemini", "--token-url", "http://127.0.0.1:9/ims", "--image", ROOM]
              + ["--prompt", "x", "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2 and "--token-url does not apply to backend kind 'gemini'" in capsys.readouterr().err


CHILD = """
import sys
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def firefly_edit_args(srv: FakeFireflyServer, out: Path) -> list[str]:
    return ["edit", "--backend", "firefly", "--base-url", srv.base_url, "--token-url", srv.token_url,
            "--price-per-operation-usd", "0.06", "--requests-per-minute", "6000", "--image", ROOM, "--mask", FLOOR,
            "--prompt", "a red armchair", "-n", "2", "--out", str(out)]  # fmt: skip


def test_a_firefly_edit_killed_while_polling_resumes_on_the_same_command_and_submits_nothing_twice(
    creds, tmp_path, capsys
):
    out = tmp_path / "ff"
    with FakeFireflyServer(client_id=CID, client_secret=SECRET) as srv:
        srv.polls_to_finish = 10**9  # still running while the first process polls
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *firefly_edit_args(srv, out)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while srv.count("status") < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
        assert len(srv.submits()) == 1 and len(list(out.glob(".edit-journal-*.json"))) == 1
        srv.polls_to_finish = 1  # it finished meanwhile
        assert main(firefly_edit_args(srv, out)) == 0
    stdout = capsys.readouterr().out
    assert "resuming from" in stdout and "cost: $0.12 " in stdout  # 2 operations x $0.06, billed once
    assert len(srv.submits()) == 1 and srv.count("upload") == 2  # nothing uploaded or submitted twice
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]  # the journal is gone once done


def test_a_paid_firefly_edit_whose_outputs_could_not_be_written_keeps_its_journal_and_resumes(
    creds, tmp_path, capsys, monkeypatch
):
    """The journal goes only once the images are on disk: a failed write (or a kill) after the paid job finished
    leaves it, and the same command then polls the finished job instead of paying for a new one."""
    import pipeline.run

    out = tmp_path / "ff"
    written = pipeline.run.atomic_write_bytes

    def disk_full(path, data):
        raise OSError(28, "No space left on device")

    with FakeFireflyServer(client_id=CID, client_secret=SECRET) as srv:
        monkeypatch.setattr(pipeline.run, "atomic_write_bytes", disk_full)
        with pytest.raises(OSError, match="No space left"):
            main(firefly_edit_args(srv, out))
        assert len(srv.submits()) == 1 and len(list(out.glob(".edit-journal-*.json"))) == 1
        monkeypatch.setattr(pipeline.run, "atomic_write_bytes", written)
        assert main(firefly_edit_args(srv, out)) == 0
    assert "resuming from" in capsys.readouterr().out
    assert len(srv.submits()) == 1  # paid once
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png"]  # the journal is gone once done
