"""kill -9 at random moments: what a crash can cost, counted against what the API says it answered and billed.

`editroute run` (a real subprocess) runs a manifest of J jobs against the loopback OpenAI stand-in (latency per
answer, 2 calls in flight by default, a budget cap). Each cycle starts the run and kills it (SIGKILL) at a random
moment of one of two kinds, picked at random: 0..latency after its first request reached the stand-in (calls in
flight), or 0..60 ms after its first answer was delivered (that answer being journaled, decoded, written,
recorded). K kills (fewer if every job is settled before), then one plain rerun to the end, then one
`--retry-failed` run (for jobs the crash limit stopped). The stand-in records every answer:
when it was made (billed: the API bills what it generated, whether or not the client was still there) and when
its last byte was written to the client (delivered). Printed, each of which must be 0:

  lost                 jobs not done at the end, other than jobs the budget refused that had no answer delivered
                       (outside the grace, below) to a live run
  half_written         output folders holding a file that no verified result.json lists, or a done job whose
                       result.json does not verify (sha256 of each file, images decode)
  paid_twice           answers delivered at least `--grace-ms` before a kill whose job the API answered (and
                       billed) again after it. Within the grace the answer may still be between the socket and
                       the disk: the double-pay window (benchmarks/double_pay_window.py); those are printed apart
  budget_overshoot     what the API billed (every answer it generated) above the cap, in USD
  stale_temp_files     `*.tmp` files left anywhere in the output folder
  never_sent_retry     jobs failed by the crash limit after the plain rerun that never reached the API

    python benchmarks/kill_test.py [--kills 20] [--jobs 30] [--latency 0.3] [--concurrency 2] [--cap 0.38] [--seed 1]
                                   [--code /path/to/other/checkout]   # e.g. the commit before the fix
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY = "sk-bench-loopback-only"  # the stand-in's key; not a real credential
ANSWER_WINDOW_S = 0.06  # after an answer is delivered: while it is journaled, decoded, written, recorded
LAUNCH = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
POLICY = """
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
BUDGET = 'budgets:\n  - {{backend: api, period: day, limit_usd: "{cap}"}}'


@dataclass
class KillReport:
    kills: int = 0
    runs: int = 0
    requests: int = 0
    answers_billed: int = 0
    answers_delivered: int = 0
    billed_usd: Decimal = Decimal(0)
    cap_usd: Decimal = Decimal(0)
    done: int = 0
    refused_by_budget: int = 0
    lost: list[str] = field(default_factory=list)
    half_written: list[str] = field(default_factory=list)
    paid_twice: list[str] = field(default_factory=list)
    paid_twice_in_window_ms: list[float] = field(default_factory=list)
    stale_temp_files: list[str] = field(default_factory=list)
    never_sent_retry: list[str] = field(default_factory=list)
    possible_charges: int = 0
    delivered_jobs: set[str] = field(default_factory=set)  # an answer reached a live run, outside the grace

    @property
    def budget_overshoot(self) -> Decimal:
        return max(Decimal(0), self.billed_usd - self.cap_usd)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.half_written
            or self.paid_twice
            or self.budget_overshoot
            or self.stale_temp_files
            or self.never_sent_retry
        )

    def lines(self) -> list[str]:
        window = ", ".join(f"{ms:.0f}" for ms in self.paid_twice_in_window_ms) or "none"
        return [
            f"kills: {self.kills} in {self.runs} runs; requests {self.requests}, answers billed "
            f"{self.answers_billed} (${self.billed_usd}), delivered {self.answers_delivered}; cap ${self.cap_usd}",
            f"jobs: {self.done} done, {self.refused_by_budget} refused by the budget; possible charges held "
            f"(unknown outcome): {self.possible_charges}",
            f"lost:              {len(self.lost)} {self.lost or ''}",
            f"half_written:      {len(self.half_written)} {self.half_written or ''}",
            f"paid_twice:        {len(self.paid_twice)} {self.paid_twice or ''}",
            f"  (paid again, delivered inside the grace before a kill, ms before it: {window})",
            f"budget_overshoot:  ${self.budget_overshoot}",
            f"stale_temp_files:  {len(self.stale_temp_files)} {self.stale_temp_files or ''}",
            f"never_sent_retry:  {len(self.never_sent_retry)} {self.never_sent_retry or ''}",
        ]


def run_kill_test(
    work: Path,
    *,
    kills: int = 20,
    jobs: int = 30,
    latency: float = 0.3,
    cap: Decimal = Decimal("0.38"),
    seed: int = 1,
    grace_ms: float = 50.0,
    code: Path = ROOT,
    concurrency: int = 2,
) -> KillReport:
    from backends.standins import FakeOpenAIServer

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    manifest = write_jobs(work, jobs)
    out = work / "out"
    report = KillReport(cap_usd=cap)
    runs: list[tuple[float, float | None]] = []  # (started, killed at) of each run, in time.time()
    env = {**os.environ, "PYTHONPATH": str(code), "OPENAI_API_KEY": KEY}
    with FakeOpenAIServer(latency_s=latency) as api:
        policy = write_policy(work, api.base_url, concurrency=concurrency, extra=BUDGET.format(cap=cap))

        def start(*extra: str) -> subprocess.Popen:
            report.runs += 1
            runs.append((time.time(), None))
            cmd = [sys.executable, "-c", LAUNCH, "run", str(manifest), "--policy", str(policy), "--out", str(out)]
            return subprocess.Popen(
                [*cmd, "--json", *extra], cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )

        while report.kills < kills:
            before = len(api.requests)
            run = start()
            after_answer = rng.random() < 0.5  # else: while its first calls are in flight

            def moment_came(before: int = before, after_answer: bool = after_answer) -> bool:
                mine = api.requests[before:]
                return any(r.delivered_at for r in mine) if after_answer else bool(mine)

            deadline = time.monotonic() + 60
            while not moment_came() and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            if run.poll() is None:
                time.sleep(rng.uniform(0, ANSWER_WINDOW_S if after_answer else latency))
            if run.poll() is not None:  # it finished first: nothing left to kill
                run.communicate()
                if _statuses(out) and all(s in ("done", "failed") for s in _statuses(out).values()):
                    break
                continue
            runs[-1] = (runs[-1][0], time.time())
            run.send_signal(signal.SIGKILL)
            run.communicate()
            report.kills += 1
        run = start()  # a plain rerun, to the end
        _, err = run.communicate(timeout=600)
        report.never_sent_retry = sorted(
            job
            for job, (status, error_class) in _rows(out).items()
            if status == "failed" and error_class == "Interrupted" and not any(job_of(r) == job for r in api.requests)
        )
        run = start("--retry-failed")
        run.communicate(timeout=600)
        time.sleep(latency * 2)  # answers to the last killed calls are still being made
        _account(report, api.requests, runs, grace_ms)
    rows = _rows(out)
    for job, (status, error_class) in sorted(rows.items()):
        if status == "done":
            report.done += 1
        elif error_class in ("BudgetExceeded", "Unroutable") and job not in report.delivered_jobs:
            report.refused_by_budget += 1
        else:
            report.lost.append(f"{job}:{status}:{error_class}")
    report.half_written = _half_written(out, rows)
    report.stale_temp_files = sorted(str(p.relative_to(out)) for p in out.rglob("*.tmp"))
    report.possible_charges = _possible_charges(out)
    return report


def _account(report: KillReport, requests: list, runs: list[tuple[float, float | None]], grace_ms: float) -> None:
    """An answer counts as delivered before a kill if its last byte was written before the run that asked for it
    (the one running when the request arrived) was killed."""
    billed = [r for r in requests if r.status == 200 and r.answered_at is not None]
    report.requests = len(requests)
    report.answers_billed = len(billed)
    report.billed_usd = sum((r.billed_usd for r in billed), Decimal(0))
    for r in billed:
        kill = next((k for s, k in reversed(runs) if s <= r.received_at), None)
        if r.delivered_at is None or (kill is not None and r.delivered_at > kill):
            continue  # never reached a live client
        report.answers_delivered += 1
        if kill is None or (kill - r.delivered_at) * 1000 >= grace_ms:
            report.delivered_jobs.add(job_of(r))  # it reached the client outside the double-pay window
        if kill is None:
            continue
        again = [o for o in billed if job_of(o) == job_of(r) and o.answered_at > kill]
        if not again:
            continue
        lead_ms = (kill - r.delivered_at) * 1000
        if lead_ms >= grace_ms:
            report.paid_twice.append(f"{job_of(r)} (delivered {lead_ms:.0f} ms before a kill)")
        else:
            report.paid_twice_in_window_ms.append(lead_ms)


def write_policy(folder: Path, url: str, *, concurrency: int = 4, extra: str = "") -> Path:
    """One `api` backend on the stand-in at `url`, no retries (a crash test counts every call), plus `extra`."""
    path = folder / "policy.yaml"
    path.write_text(POLICY.format(url=url, concurrency=concurrency, extra=extra))
    return path


def write_jobs(folder: Path, count: int) -> Path:
    """`count` masked jobs job00.. at quality low and 1024x1024, so the estimate is exactly what the stand-in
    bills; each prompt ends with its job id (`job_of` tells the stand-in's requests apart by it). Also the kill -9
    tests' manifest (tests/crash_helpers.py)."""
    from PIL import Image

    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 32))
    mask.save(img / "mask.png")
    lines = []
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 7 % 256, 90, 160)).save(img / f"p{i:02d}.png")
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


def ledger_rows(out: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """A run's ledger read with plain sqlite3 (no editroute code); [] before the run has created it."""
    if not (out / "editroute.db").exists():
        return []
    conn = sqlite3.connect(out / "editroute.db", timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # its tables not created yet
        return []
    finally:
        conn.close()


def _rows(out: Path) -> dict[str, tuple[str, str | None]]:
    return {job: (status, cls) for job, status, cls in ledger_rows(out, "SELECT id, status, error_class FROM jobs")}


def _statuses(out: Path) -> dict[str, str]:
    return {job: status for job, (status, _) in _rows(out).items()}


def _possible_charges(out: Path) -> int:
    rows = ledger_rows(out, "SELECT COUNT(*) FROM attempts WHERE state='reserved' AND outcome='unknown'")
    return rows[0][0] if rows else 0


def _half_written(out: Path, rows: dict[str, tuple[str, str | None]]) -> list[str]:
    from PIL import Image

    bad = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        listed: set[str] = set()
        result = folder / "result.json"
        if result.exists():
            try:
                data = json.loads(result.read_text())
                for entry in [*data.get("outputs", []), *data.get("artifacts", [])]:
                    path = out / entry["path"]
                    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
                        raise ValueError(f"{entry['path']}: sha256 differs")
                    listed.add(path.name)
                for entry in data.get("outputs", []):
                    with Image.open(out / entry["path"]) as im:
                        im.load()
            except Exception as exc:  # noqa: BLE001 - any failure means a result that does not verify
                bad.append(f"{folder.name}: result.json does not verify ({exc})")
                continue
        elif rows.get(folder.name, ("",))[0] == "done":
            bad.append(f"{folder.name}: done without result.json")
        for p in folder.iterdir():
            if not p.name.startswith(".") and p.name != "result.json" and p.name not in listed:
                bad.append(f"{folder.name}/{p.name}: not listed by a verified result.json")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--cap", type=Decimal, default=Decimal("0.38"), help="the api backend's daily budget (USD)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=2, help="calls in flight (the policy's concurrency)")
    ap.add_argument("--grace-ms", type=float, default=50.0)
    ap.add_argument("--code", type=Path, default=ROOT, help="the editroute checkout `editroute run` comes from")
    ap.add_argument("--keep", type=Path, default=None, help="work here (kept) instead of a temp folder")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        t0 = time.perf_counter()
        report = run_kill_test(
            work,
            kills=args.kills,
            jobs=args.jobs,
            latency=args.latency,
            cap=args.cap,
            seed=args.seed,
            grace_ms=args.grace_ms,
            code=args.code.resolve(),
            concurrency=args.concurrency,
        )
    print(
        f"kill -9 test: {args.jobs} jobs, {args.latency:g} s latency, {args.concurrency} in flight, cap ${args.cap}, "
        f"seed {args.seed}, "
        f"grace {args.grace_ms:g} ms; code {args.code}; {time.perf_counter() - t0:.0f} s"
    )
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs; date {date.today().isoformat()}")
    print("\n".join(report.lines()))
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
