"""Helpers for kill -9 tests: a real `editroute run` subprocess (this tree's code, with a kill moment from
`tests.crash_hooks` when asked), manifests of jobs priced exactly by the OpenAI stand-in, the ledger read
with plain sqlite3, and waiting for a moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# the kill -9 benchmark's policy, manifest and ledger reads, re-exported for the tests
from benchmarks.kill_test import job_of as job_of
from benchmarks.kill_test import ledger_rows as ledger_rows
from benchmarks.kill_test import write_jobs as write_jobs
from benchmarks.kill_test import write_policy as write_policy
from tests.crash_hooks import HOOK_ENV

ROOT = Path(__file__).resolve().parents[1]
STANDIN_KEY = "sk-standin-crash-test-0123456789"  # the loopback stand-in's key, not a real credential

LAUNCH = "import sys, tests.crash_hooks as h; h.install(); from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


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


def statuses(out: Path) -> dict[str, str]:
    return dict(ledger_rows(out, "SELECT id, status FROM jobs"))
