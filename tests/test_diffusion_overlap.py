"""Post-processing overlaps the next GPU call: the local executor gives a diffusion backend two host threads, its
device lock keeps pipeline calls one at a time, and a job's paste-back and encoding run while the next job's
pipeline call does (on the tiny FLUX.2 klein stand-in, through the real executor)."""

from __future__ import annotations

import threading
import time

from backends.diffusion import Flux2KleinBackend
from pipeline.run.executors import LocalExecutor, limits_for
from tests.backend_contract import make_request
from tests.fixtures_tiny_diffusion import tiny_instruct_settings


def test_paste_back_runs_while_the_next_pipeline_call_does(tiny_flux2_klein_dir):
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()
    next_call_started = threading.Event()
    overlapped: list[bool] = []

    class Recording(Flux2KleinBackend):
        def _call_pipeline(self, pipe, kwargs):
            start = time.perf_counter()
            next_call_started.set()
            try:
                return super()._call_pipeline(pipe, kwargs)
            finally:
                with lock:
                    calls.append((start, time.perf_counter()))

        def _finish(self, job, generated, gpu_s, loaded, warm_up):
            if not overlapped:  # the first job to finish waits: does another job reach the pipeline meanwhile?
                next_call_started.clear()
                overlapped.append(next_call_started.wait(timeout=30))
            return super()._finish(job, generated, gpu_s, loaded, warm_up)

    backend = Recording.from_settings("klein", tiny_instruct_settings(tiny_flux2_klein_dir))
    assert limits_for(backend).concurrency == 2
    executor = LocalExecutor({"klein": backend})
    try:
        futures = [executor.submit("klein", make_request(seed=k, mask=True)) for k in range(4)]
        results = [f.result(timeout=120) for f in futures]
    finally:
        executor.close()
    assert overlapped == [True]  # a pipeline call started while a job was still being pasted back
    spans = sorted(calls)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # never two pipeline calls at once
    assert [r.seed for r in results] == [0, 1, 2, 3] and all(len(r.images) == 1 for r in results)
