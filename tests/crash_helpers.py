"""Helpers for kill -9 tests: a real `editroute run` subprocess (this tree's code, with a kill moment from
`tests.crash_hooks` when asked), manifests of jobs priced exactly by the OpenAI stand-in, the ledger read
with plain sqlite3, and waiting for a moment."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.crash_hooks import HOOK_ENV
from tests.imagery import image_bytes, mask_bytes

ROOT = Path(__file__).resolve().parents[1]
STANDIN_KEY = "sk-standin-crash-test-0123456789"  # the loopback stand-in's key, not a real credential

LAUNCH = "import sys, tests.crash_hooks as h; h.install(); from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"

API_POLICY = """
backends:
  api:
    kind: openai
    model: gpt-image-2
    base_url: {url}
    max_retries: 0
    concurrency: {concurrency}
quality: {{api: 0.8}}
{extra}
"""


def write_policy(folder: Path, url: str, *, concurrency: int = 4, extra: str = "") -> Path:
    path = folder / "policy.yaml"
    path.write_text(API_POLICY.format(url=url, concurrency=concurrency, extra=extra))
    return path


def write_jobs(folder: Path, count: int) -> Path:
    """`count` masked jobs job00.. at quality low and 1024x1024, so the estimate is exactly what the stand-in
    bills; each prompt ends with its job id (the stand-in's requests are told apart by it)."""
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    (img / "mask.png").write_bytes(mask_bytes(64, 64))
    lines = []
    for i in range(count):
        (img / f"p{i:02d}.png").write_bytes(image_bytes(64, 64))
        entry = {
            "id": f"job{i:02d}",
            "image": f"img/p{i:02d}.png",
            "mask": "img/mask.png",
            "prompt": f"white studio backdrop for job{i:02d}",
            "quality": "low",
            "size": "1024x1024",
        }
        lines.append(json.dumps(entry))
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def job_of(rec) -> str:
    return rec.fields.get("prompt", "").rsplit(" ", 1)[-1]


def env_for(*, hook: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": STANDIN_KEY}
    env.pop(HOOK_ENV, None)
    if hook:
        env[HOOK_ENV] = hook
    return env


def editroute_run(
    manifest: Path, policy: Path, out: Path, *, hook: str | None = None, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "run", str(manifest), "--policy", str(policy), "--out", str(out), "--json"]
        + list(extra),
        cwd=ROOT,
        env=env_for(hook=hook),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, dict, str]:
    """Wait for a run; (exit code, its JSON report or {}, stderr)."""
    stdout, stderr = proc.communicate(timeout=timeout)
    try:
        report = json.loads(stdout) if stdout.strip() else {}
    except ValueError:
        report = {}
    return proc.returncode, report, stderr


def wait_for(what: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {why}: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {why}: {proc.communicate()}")
        time.sleep(0.005)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def ledger_rows(out: Path, sql: str, args: tuple = ()) -> list[tuple]:
    try:
        conn = sqlite3.connect(out / "editroute.db", timeout=5)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


def statuses(out: Path) -> dict[str, str]:
    return dict(ledger_rows(out, "SELECT id, status FROM jobs"))
