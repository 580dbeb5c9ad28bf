"""One pipeline call as every diffusion family runs it: the call itself with foreign errors sorted, the device lock
and clock around it, and the line logged when a job's images are done. torch is imported inside the runtime's
functions only, so importing this stays light."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from backends import canvas as px
from backends.diffusion import runtime as rt
from backends.errors import BackendUnavailable, EditError


def call_pipeline(pipe: Any, kwargs: dict[str, Any], what: str) -> Any:
    """Run the pipeline. Out-of-memory arrives as RuntimeError or MemoryError and passes for `run_guarded` to sort
    out; any other foreign error (diffusers' own argument checks etc.) means this backend cannot serve the request:
    `BackendUnavailable` "<what> pipeline failed"."""
    try:
        return pipe(**kwargs)
    except EditError:
        raise
    except (RuntimeError, MemoryError):
        raise
    except Exception as exc:
        raise BackendUnavailable(f"{what} pipeline failed: {exc.__class__.__name__}: {exc}") from None


def metered_call(
    loaded: rt.LoadedPipeline, call: Callable[[], Any], before: Callable[[], None] | None = None
) -> tuple[Any, float, bool]:
    """`call()` under the device lock, after `before()` (this call's switches of the shared pipeline, e.g. the
    tier's LoRA: they must not change under another thread's call), timed on the device.

    Returns (output, device-seconds, warm_up); warm_up is the process's first call on this pipeline, whose lazy
    init or compilation makes its time untypical."""
    with loaded.lock:
        if before is not None:
            before()
        loaded.calls += 1
        warm_up = loaded.calls == 1
        with rt.timed(loaded.device) as clock:
            output = call()
    return output, clock["seconds"], warm_up


def log_done(
    log: logging.Logger,
    backend: str,
    images: int,
    geom: px.Geometry,
    tier_name: str,
    steps: int,
    device: str,
    gpu_s: float,
    cost: Any,
) -> None:
    """The one line a finished job logs, the same for every family."""
    log.info(
        "%s: %d image(s) %dx%d (work %dx%d, %s, %d steps) on %s in %.2fs GPU, $%s",
        backend,
        images,
        *geom.out_size,
        *geom.work_size,
        tier_name,
        steps,
        device,
        gpu_s,
        cost,
    )
