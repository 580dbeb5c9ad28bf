"""The double-pay window: milliseconds between the last byte of a paid answer arriving and that answer being
durable on disk. A kill -9 inside the window loses an answer the API has billed, and the rerun pays for it again.

N jobs through the real `execute_job` (local executor, 4 calls in flight) and the real OpenAI backend against the
loopback stand-in, run as its own process as the API would be (latency per answer; noisy 1024x1024 inputs, so
each answer is a multi-MB PNG in base64 like a real gpt-image one). An httpx transport stamps each answer's last
byte as it is read; the durable moments are stamped where they happen:

  outputs durable    `write_files` returned for the job's folder (images + result.json fsynced): the window
                     before the call journal, and still what it would be without one
  journal durable    the call journal's `save` returned (the raw body fsynced, before decoding): the window now
  journal kill-safe  the journal record was renamed into place (before its fsync): from then a kill -9 (not a
                     power cut) cannot lose the answer; the window that matters for a killed process

Both are measured in the same run on the same answers (the ratio is the figure); `--code DIR` imports editroute
from another checkout (e.g. a worktree of the commit before the journal, which has only `outputs`).

    python benchmarks/double_pay_window.py [--jobs 40] [--latency 0.3] [--code /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench-loopback-only"  # the stand-in's key; not a real credential


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.3, help="stand-in seconds per answer")
    ap.add_argument("--code", type=Path, default=ROOT, help="the editroute checkout to measure")
    ap.add_argument("--smooth", action="store_true", help="smooth inputs: ~0.15 MB answers (as kill_test.py's)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve()))
    os.environ["OPENAI_API_KEY"] = KEY
    windows = measure(args.jobs, args.latency, smooth=args.smooth)
    print(f"double-pay window, {args.jobs} jobs, {args.latency:g} s latency, 4 in flight; code: {args.code}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}")
    print(f"date: {date.today().isoformat()}; answer size: {windows.pop('answer_mb'):.2f} MB each")
    for name, values in windows.items():
        if values:
            q = statistics.quantiles(values, n=20, method="inclusive")
            print(
                f"  last byte -> {name:17s}: p50 {statistics.median(values):7.1f} ms   "
                f"p95 {q[18]:7.1f} ms   max {max(values):7.1f} ms   ({len(values)} answers)"
            )
        else:
            print(f"  last byte -> {name:17s}: not in this code")
    return 0


def measure(jobs: int, latency: float, *, smooth: bool = False) -> dict:
    import httpx
    import numpy as np
    from PIL import Image

    import pipeline.run.execute as execute
    from backends.base import EditRequest
    from backends.images import InputImage
    from backends.openai import OpenAIEditBackend, Settings
    from pipeline.jobs import Job
    from pipeline.ledger import Ledger
    from pipeline.run import ExecContext, LocalExecutor, execute_job

    arrived: dict[str, float] = {}
    durable: dict[str, dict[str, float]] = {"outputs durable": {}, "journal durable": {}, "journal kill-safe": {}}
    sizes: list[int] = []
    prompt = re.compile(rb'name="prompt"\r\n\r\n[^\r]* (job\d+)\r\n')

    class Stamped(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = super().handle_request(request)
            response.read()  # the whole body, as the client reads it
            arrived[prompt.search(request.read()).group(1).decode()] = time.perf_counter()
            sizes.append(len(response.content))
            return response

    write_files = execute.write_files

    def stamped_write(folder, files):
        digests = write_files(folder, files)
        durable["outputs durable"][Path(folder).name] = time.perf_counter()
        return digests

    execute.write_files = stamped_write
    try:
        from pipeline.run.journal import AttemptJournal

        save = AttemptJournal.save

        def stamped_save(self, record):
            save(self, record)
            durable["journal durable"][self.job_id] = time.perf_counter()
            if self.saved and isinstance(self.saved[-1], tuple):
                durable["journal kill-safe"][self.job_id] = self.saved[-1][0]

        AttemptJournal.save = stamped_save
    except ImportError:  # the code before the call journal
        pass

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    if smooth:
        Image.new("RGB", (1024, 1024), (40, 90, 160)).save(buf, format="PNG")
    else:
        Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(buf, format="PNG")
    noisy = buf.getvalue()
    mask = io.BytesIO()
    edit = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    edit.paste((0, 0, 0, 0), (0, 0, 128, 128))  # a small region to edit: the rest of the answer stays noisy
    edit.save(mask, format="PNG")
    with tempfile.TemporaryDirectory() as tmp, _standin(latency) as base_url:
        out = Path(tmp) / "out"
        backend = OpenAIEditBackend(
            "api",
            Settings(base_url=base_url, model="gpt-image-2", concurrency=4),
            client=httpx.Client(transport=Stamped(), timeout=120),
        )
        engine = LocalExecutor({"api": backend})
        ctx = ExecContext(ledger=Ledger.in_dir(out), executor=engine, out_dir=out, backends={"api": backend})
        work = [
            Job(
                id=f"job{i:03d}",
                request=EditRequest(
                    prompt=f"studio backdrop, variant job{i:03d}",
                    images=(InputImage.from_bytes(noisy, name="in.png"),),
                    mask=InputImage.from_bytes(mask.getvalue(), name="mask.png"),
                    size="1024x1024",
                    quality="low",
                    job_id=f"job{i:03d}",
                ),
            )
            for i in range(jobs)
        ]
        router = _FixedRoute(backend)
        threads = [threading.Thread(target=lambda j=j: execute_job(j, router.route, ctx)) for j in work]
        for i in range(0, len(threads), 8):  # the runner's window: 2 x the 4 calls in flight
            for t in threads[i : i + 8]:
                t.start()
            for t in threads[i : i + 8]:
                t.join()
        engine.close()
    result: dict = {
        name: [(stamps[j] - arrived[j]) * 1000 for j in stamps if j in arrived] for name, stamps in durable.items()
    }
    result["answer_mb"] = statistics.mean(sizes) / 1e6 if sizes else 0.0
    return result


@contextlib.contextmanager
def _standin(latency: float):
    """The OpenAI stand-in in a process of its own (its image encoding must not share our interpreter)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.standins.openai_server", "--port", str(port), "--latency", str(latency)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        while "base_url" not in (line := proc.stdout.readline()):
            if not line and proc.poll() is not None:
                raise RuntimeError("the stand-in did not start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _FixedRoute:
    """Every job to the one backend (what the router would decide; its cost is not what is measured)."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def route(self, job):
        from pipeline.routing import Decision

        return Decision(
            job_id=job.id,
            backend="api",
            estimate=self.backend.estimate(job.request),
            alternatives=(),
            fallbacks=(),
            reasons=("benchmark",),
        )


if __name__ == "__main__":
    raise SystemExit(main())
