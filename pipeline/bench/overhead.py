"""Pipeline overhead on CPU: what editroute itself costs per job, and how close it runs to an API rate limit.

(a) `local`: N jobs through the real `run_batch` (manifest check, routing, SQLite ledger, executor, atomic
    outputs, result.json) against a zero-latency `FunctionBackend` whose handler returns prebuilt bytes.
    Reports wall time per job (the pipeline's overhead: the backend does nothing), the handler's own time per
    call as the baseline, and peak resident memory of the process (each size runs in a fresh subprocess so
    peaks do not mix). Targets: < 2 ms per job; < 500 MB at 100,000 jobs.
(b) `api`: M jobs against the loopback `FakeOpenAIServer` with 1-2 s latency, a rate limit (requests per
    window, as the real API counts them) and scripted 429s, through the real OpenAI backend and runner with
    `requests_per_minute` set to the limit. Reports achieved requests per minute against the limit
    (target >= 90%) and the 429s seen.

    python -m pipeline.bench.overhead --jobs 10000 --jobs 100000 --api-jobs 500 --rpm 600
    editroute bench overhead --jobs 10000 --api-jobs 500
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

log = logging.getLogger(__name__)
KEY_ENV = "EDITROUTE_BENCH_KEY"
BENCH_KEY = "sk-bench-loopback-only"  # the stand-in's key; not a real credential


def _png(size: int = 16, alpha: int = 255) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (size, size), (120, 130, 140, alpha)).save(buf, format="PNG")
    return buf.getvalue()


def write_workload(root: Path, jobs: int, extra: dict | None = None) -> Path:
    """A JSONL manifest of `jobs` masked edits over two tiny images (distinct prompts: no job is a duplicate)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.png").write_bytes(_png())
    (root / "b.png").write_bytes(_png(alpha=200))
    (root / "mask.png").write_bytes(_png(alpha=0))
    manifest = root / "jobs.jsonl"
    fields = {"quality": "low", "size": "1024x1024", **(extra or {})}
    with manifest.open("w", encoding="utf-8") as fh:
        for i in range(jobs):
            entry = {
                "id": f"job-{i:06d}",
                "image": "a.png" if i % 2 else "b.png",
                "mask": "mask.png",
                "prompt": f"replace the background, variant {i}",
                "tags": ["bench"],
                **fields,
            }
            fh.write(json.dumps(entry) + "\n")
    return manifest


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        import psutil

        current = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        current = float("nan")
    return current, peak


# ---- (a) zero-latency backend -------------------------------------------------------------------------


def _per_file_writes(folder: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """The previous output writer, as the same-run baseline: each file on its own, a folder fsync per file."""
    from pipeline.run import atomic_write_bytes

    return [atomic_write_bytes(Path(folder) / name, data) for name, data in files]


def run_local(jobs: int, workdir: Path, writes: str = "per-job") -> dict:
    from backends.standins import FunctionBackend
    from pipeline.routing import Policy
    from pipeline.run import run_batch

    if writes == "per-file":  # baseline: swap the writer the execution core uses (this process only)
        import pipeline.run.execute

        pipeline.run.execute.write_files = _per_file_writes

    rss_start, _ = _rss_mb()
    manifest = write_workload(workdir, jobs)
    payload = _png(8)
    backend = FunctionBackend(
        name="zero", handler=lambda request: [payload] * request.n, cost_per_image=Decimal("0.001")
    )
    policy = Policy.model_validate({"backends": {"zero": {"kind": "function"}}, "quality": {"zero": 0.9}})

    # Baselines: the handler alone, as the runner calls it; and one manifest validation pass on its own.
    from pipeline.jobs import Manifest

    t = time.perf_counter()
    problems = Manifest(manifest).check()
    check_ms = (time.perf_counter() - t) / jobs * 1000
    assert not problems, problems[:3]
    sample = next(Manifest(manifest).jobs()).request
    t = time.perf_counter()
    for _ in range(2000):
        backend.edit(sample)
    handler_ms = (time.perf_counter() - t) / 2000 * 1000
    backend.calls = 0
    file_writes = write_strategies(workdir / "writes", payload, min(500, max(10, jobs // 20)))

    t0 = time.perf_counter()
    result = run_batch(manifest, policy, workdir / "out", backends={"zero": backend})
    wall = time.perf_counter() - t0
    rss_end, peak = _rss_mb()
    tally = result.tally
    return {
        "kind": "local",
        "writes": writes,
        "jobs": jobs,
        "done": tally.done,
        "failed": tally.failed,
        "wall_s": round(wall, 3),
        "ms_per_job": round(wall / jobs * 1000, 4),
        "jobs_per_s": round(jobs / wall, 1),
        "backend_ms_per_call": round(handler_ms, 4),
        "backend_calls": backend.calls,
        "validate_ms_per_job": round(check_ms, 4),
        **file_writes,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "peak_rss_mb": round(peak, 1),
    }


def write_strategies(root: Path, payload: bytes, jobs: int) -> dict:
    """Same-run baseline for the output files on this disk: a job's image + result.json written with one
    fsync of the folder per FILE (`atomic_write_bytes` each, as before) against one per JOB (`write_files`)."""
    from pipeline.run import atomic_write_bytes, write_files

    record = json.dumps({"job_id": "x", "outputs": [{"path": "x/0.png", "sha256": "0" * 64}]}, indent=2).encode()
    t = time.perf_counter()
    for i in range(jobs):
        atomic_write_bytes(root / f"file-{i}" / "0.png", payload)
        atomic_write_bytes(root / f"file-{i}" / "result.json", record)
    per_file = (time.perf_counter() - t) / jobs * 1000
    t = time.perf_counter()
    for i in range(jobs):
        write_files(root / f"job-{i}", [("0.png", payload), ("result.json", record)])
    per_job = (time.perf_counter() - t) / jobs * 1000
    return {
        "write_jobs": jobs,
        "files_ms_dir_fsync_per_file": round(per_file, 4),
        "files_ms_dir_fsync_per_job": round(per_job, 4),
    }


# ---- (b) loopback API with latency and a rate limit -----------------------------------------------------


def _server_class():
    from backends.standins import FakeOpenAIServer

    class LatencyRangeServer(FakeOpenAIServer):
        """Answers after a uniform lo..hi s delay; rate-limited requests answer at once, as the real API does."""

        def __init__(self, *args, latency_range: tuple[float, float], **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.latency_range = latency_range
            self._rng = random.Random(7)

        def handle(self, rec, headers, body):
            out = super().handle(rec, headers, body)
            with self._lock:
                delay = self._rng.uniform(*self.latency_range)
            time.sleep(delay)
            return out

    return LatencyRangeServer


def run_api(
    jobs: int, rpm: int, latency: tuple[float, float], inject_429: float, window_s: float, workdir: Path
) -> dict:
    from pipeline.routing import Policy
    from pipeline.run import run_batch

    per_window = max(1, round(rpm * window_s / 60))
    rng = random.Random(11)
    script = [{"status": 429, "retry_after_ms": 500} if rng.random() < inject_429 else "ok" for _ in range(jobs)]
    concurrency = math.ceil(rpm / 60 * latency[1] * 1.5) + 2  # enough in flight to reach the limit
    manifest = write_workload(workdir, jobs, {"output_format": "jpeg", "output_compression": 50})
    server = _server_class()(
        latency_range=latency, rate_limit_rpm=per_window, rate_window_s=window_s, script=script, api_key=BENCH_KEY
    )
    os.environ[KEY_ENV] = BENCH_KEY
    with server:
        policy = Policy.model_validate(
            {
                "backends": {
                    "api": {
                        "kind": "openai",
                        "model": "gpt-image-2.6-flare",
                        "base_url": server.base_url,
                        "api_key_env": KEY_ENV,
                        "concurrency": concurrency,
                        "requests_per_minute": rpm,
                        "max_retries": 4,
                    }
                },
                "quality": {"api": 0.9},
            }
        )
        t0 = time.perf_counter()
        result = run_batch(manifest, policy, workdir / "out")
        wall = time.perf_counter() - t0
        statuses = [r.status for r in server.requests]
    ok = statuses.count(200)
    scripted = sum(1 for s in script[: len(statuses)] if s != "ok")  # one script item per request
    limited = statuses.count(429)
    return {
        "kind": "api",
        "jobs": jobs,
        "done": result.tally.done,
        "failed": result.tally.failed,
        "wall_s": round(wall, 2),
        "rate_limit_rpm": rpm,
        "window_s": window_s,
        "concurrency": concurrency,
        "latency_s": list(latency),
        "requests": len(statuses),
        "ok_200": ok,
        "http_429": limited,
        "http_429_scripted": min(scripted, limited),
        "http_429_rate_limit": max(0, limited - scripted),
        "achieved_rpm": round(ok / wall * 60, 1),
        "of_limit": round(ok / wall * 60 / rpm, 4),
        "spend_usd": str(result.tally.spend),
    }


# ---- driver ---------------------------------------------------------------------------------------------


def _child(argv: list[str]) -> dict:
    """Run one measurement in a fresh interpreter, so its peak RSS is its own."""
    cmd = [sys.executable, "-m", "pipeline.bench.overhead", *argv]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(root)}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({' '.join(argv)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPU, Python {platform.python_version()}, {platform.system()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench.overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, action="append", help="zero-latency run sizes (repeatable; default 10000)")
    ap.add_argument("--api-jobs", type=int, default=500, help="jobs against the loopback API (0: skip)")
    ap.add_argument("--rpm", type=int, default=600, help="the stand-in's rate limit, requests per minute")
    ap.add_argument("--latency", default="1.0,2.0", help="simulated API latency range, seconds (lo,hi)")
    ap.add_argument("--inject-429", type=float, default=0.05, help="share of requests answered with a scripted 429")
    ap.add_argument("--window", type=float, default=10.0, help="rate-limit window in seconds (rpm scaled to it)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    ap.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the same-run baseline (each size again with a folder fsync per file)",
    )
    ap.add_argument("--writes", choices=["per-job", "per-file"], default="per-job", help=argparse.SUPPRESS)
    ap.add_argument("--child", choices=["local", "api"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lo, hi = (float(v) for v in args.latency.split(","))
    if args.child:
        logging.basicConfig(level=logging.ERROR)
        if args.child == "local":
            out = run_local(args.jobs[0], args.workdir, args.writes)
        else:
            out = run_api(args.api_jobs, args.rpm, (lo, hi), args.inject_429, args.window, args.workdir)
        print(json.dumps(out))
        return 0

    results = {"date": date.today().isoformat(), "machine": _machine(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="editroute-overhead-") as tmp:
        for n in args.jobs or [10_000]:
            for writes in ("per-job",) if args.no_baseline else ("per-job", "per-file"):
                run = _child(
                    ["--jobs", str(n), "--child", "local", "--writes", writes, "--workdir", f"{tmp}/local-{n}-{writes}"]
                )
                results["runs"].append(run)
                label = "" if writes == "per-job" else " (baseline: folder fsync per file)"
                print(
                    f"local {n:>7} jobs{label}: {run['ms_per_job']:.3f} ms/job ({run['jobs_per_s']:.0f} jobs/s), "
                    f"of which validation {run['validate_ms_per_job']:.3f}, backend "
                    f"{run['backend_ms_per_call']:.3f} ms; peak RSS {run['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
            if not args.no_baseline:
                now, before = results["runs"][-2:]
                print(
                    f"  one folder fsync per job: {before['ms_per_job'] / now['ms_per_job']:.2f}x the jobs/s of "
                    f"one per file; a job's files alone (image + result.json, one thread, "
                    f"{now['write_jobs']} jobs): {now['files_ms_dir_fsync_per_file']:.3f} -> "
                    f"{now['files_ms_dir_fsync_per_job']:.3f} ms",
                    flush=True,
                )
        if args.api_jobs > 0:
            run = _child(
                [
                    "--api-jobs",
                    str(args.api_jobs),
                    "--rpm",
                    str(args.rpm),
                    "--latency",
                    args.latency,
                    "--inject-429",
                    str(args.inject_429),
                    "--window",
                    str(args.window),
                    "--child",
                    "api",
                    "--workdir",
                    f"{tmp}/api",
                ]
            )
            results["runs"].append(run)
            print(
                f"api {args.api_jobs} jobs at {args.rpm} rpm, latency {lo:g}-{hi:g} s: {run['achieved_rpm']:.0f} "
                f"rpm = {run['of_limit']:.1%} of the limit; {run['http_429']} x 429 "
                f"({run['http_429_scripted']} scripted); {run['done']} done, {run['failed']} failed",
                flush=True,
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
