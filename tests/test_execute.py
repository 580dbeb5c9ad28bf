"""The single-job execution core: idempotency, corrupt inputs, retries, fallbacks, budgets, crash adoption."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from backends.base import CostEstimate, EditRequest
from backends.errors import BackendUnavailable, ContentRejected, InvalidRequest, RateLimited
from backends.images import InputImage
from backends.standins import FunctionBackend, solid_images
from pipeline.jobs import Job
from pipeline.ledger import BudgetCap, Ledger
from pipeline.routing import Decision
from pipeline.run import ExecContext, LocalExecutor, RetryPolicy, execute_job, job_key
from tests.imagery import image_bytes, mask_bytes


def make_job(
    folder: Path,
    job_id: str = "j1",
    *,
    prompt: str = "white backdrop",
    n: int = 1,
    seed: int | None = 7,
    image: bytes | None = None,
) -> Job:
    folder.mkdir(parents=True, exist_ok=True)
    img = folder / f"{job_id}.png"
    img.write_bytes(image if image is not None else image_bytes(32, 32))
    mask = folder / f"{job_id}-mask.png"
    mask.write_bytes(mask_bytes(32, 32))
    request = EditRequest(
        prompt=prompt,
        images=(InputImage.from_path(img),),
        mask=InputImage.from_path(mask),
        n=n,
        seed=seed,
        job_id=job_id,
    )
    return Job(id=job_id, request=request)


def decision(job: Job, backend: str = "api", fallbacks: tuple[str, ...] = (), usd: str = "0.05") -> Decision:
    return Decision(
        job_id=job.id,
        backend=backend,
        estimate=CostEstimate(Decimal(usd), "test"),
        alternatives=(),
        fallbacks=fallbacks,
        reasons=("chosen by the test",),
    )


def context(tmp_path: Path, *backends: FunctionBackend, caps=None, **kwargs) -> ExecContext:
    by_name = {b.name: b for b in backends}
    return ExecContext(
        ledger=Ledger.in_dir(tmp_path / "out"),
        executor=LocalExecutor(by_name),
        out_dir=tmp_path / "out",
        backends=by_name,
        caps_for=(lambda name: caps or ()),
        retry=RetryPolicy(base_delay_s=0.0),
        **kwargs,
    )


def scripted(*errors):
    """A handler that raises the given errors on its first calls, then succeeds."""
    queue = list(errors)

    def handler(request):
        if queue:
            raise queue.pop(0)
        return solid_images(request)

    return handler


def test_success_writes_outputs_then_result_then_ledger_and_rerun_is_free(tmp_path):
    api = FunctionBackend(name="api", cost_per_image=Decimal("0.04"))
    ctx = context(tmp_path, api)
    job = make_job(tmp_path / "in", n=2)
    out = execute_job(job, decision(job), ctx)
    assert out.status == "done" and out.backend == "api" and out.cost == Decimal("0.08") and not out.reused
    assert [p.name for p in out.outputs] == ["0.png", "1.png"] and all(p.exists() for p in out.outputs)
    result = json.loads((tmp_path / "out" / "j1" / "result.json").read_text())
    assert result["backend"] == "api" and result["cost_usd"] == "0.08" and result["seed"] == 7
    assert result["reasons"] == ["chosen by the test"] and len(result["outputs"]) == 2
    rec = ctx.ledger.get("j1")
    assert rec.status == "done" and rec.cost == Decimal("0.08") and rec.attempts == 1

    again = execute_job(job, decision(job), ctx)
    assert again.status == "done" and again.reused and api.calls == 1
    assert ctx.ledger.total_spent() == Decimal("0.08")

    routed = []
    execute_job(job, lambda j: routed.append(j) or decision(j), ctx)  # done jobs are not even routed
    assert routed == []

    out.outputs[1].unlink()  # a result no longer on disk is made again
    third = execute_job(job, decision(job), ctx)
    assert third.status == "done" and not third.reused and api.calls == 2


def test_key_covers_inputs_and_options_but_not_the_id(tmp_path):
    a = make_job(tmp_path / "a", "a")
    b = make_job(tmp_path / "b", "b")
    assert job_key(a) == job_key(b)
    assert job_key(a) != job_key(make_job(tmp_path / "c", "c", seed=8))
    assert job_key(a) != job_key(make_job(tmp_path / "d", "d", prompt="other"))
    assert job_key(a) != job_key(make_job(tmp_path / "e", "e", image=image_bytes(32, 32, "webp")))


def test_same_inputs_under_another_id_reuse_the_first_result(tmp_path):
    api = FunctionBackend(name="api")
    ctx = context(tmp_path, api)
    first, second = make_job(tmp_path / "a", "a"), make_job(tmp_path / "b", "b")
    execute_job(first, decision(first), ctx)
    out = execute_job(second, decision(second), ctx)
    assert out.status == "done" and out.reused and out.duplicate_of == "a" and api.calls == 1
    rec = ctx.ledger.get("b")  # counted as done by a's outputs, at no cost of its own
    assert rec.status == "done" and rec.cost == 0 and rec.outputs == ctx.ledger.get("a").outputs
    assert ctx.ledger.total_spent() == ctx.ledger.get("a").cost
    again = execute_job(second, decision(second), ctx)
    assert again.reused and again.duplicate_of == "a" and api.calls == 1


def test_corrupt_image_fails_before_any_spend(tmp_path):
    api = FunctionBackend(name="api")
    ctx = context(tmp_path, api)
    job = make_job(tmp_path / "in", image=image_bytes(64, 64)[:-60])  # header fine, pixels truncated
    out = execute_job(job, decision(job), ctx)
    assert out.status == "failed" and out.error_class == "InvalidRequest" and "not a decodable image" in out.error
    assert api.calls == 0 and ctx.ledger.attempts() == [] and ctx.ledger.get("j1").status == "failed"
    missing = Job(
        id="gone",
        request=EditRequest(
            prompt="x",
            images=(
                InputImage(
                    name="gone.png",
                    format="png",
                    width=32,
                    height=32,
                    nbytes=10,
                    has_alpha=False,
                    path=tmp_path / "gone.png",
                ),
            ),
        ),
    )
    out = execute_job(missing, decision(missing), ctx)
    assert out.status == "failed" and "cannot read gone.png" in out.error


def test_rate_limits_are_waited_out_and_billed_once(tmp_path):
    api = FunctionBackend(
        name="api", handler=scripted(RateLimited("429", retry_after=0.01), RateLimited("429", retry_after=0.0))
    )
    ctx = context(tmp_path, api)
    job = make_job(tmp_path / "in")
    out = execute_job(job, decision(job), ctx)
    assert out.status == "done" and out.attempts == 3
    assert [a["error_class"] for a in ctx.ledger.attempts()] == ["RateLimited", "RateLimited", None]
    assert ctx.ledger.total_spent() == Decimal("0.01")


def test_unavailable_backend_falls_back_and_invalid_or_rejected_do_not(tmp_path):
    api = FunctionBackend(
        name="api",
        handler=scripted(
            BackendUnavailable("503 upstream"),
            InvalidRequest("size not offered", field="size"),
            ContentRejected("moderation_blocked"),
        ),
    )
    gpu = FunctionBackend(name="gpu", cost_per_image=Decimal("0.002"))
    ctx = context(tmp_path, api, gpu)
    a = make_job(tmp_path / "in", "a")
    out = execute_job(a, decision(a, fallbacks=("gpu",)), ctx)
    assert out.status == "done" and out.backend == "gpu" and out.cost == Decimal("0.002")
    attempts = json.loads((tmp_path / "out" / "a" / "result.json").read_text())["attempts"]
    assert [(t["backend"], t["error_class"]) for t in attempts] == [("api", "BackendUnavailable"), ("gpu", None)]
    for job_id, cls in (("b", "InvalidRequest"), ("c", "ContentRejected")):
        job = make_job(tmp_path / "in", job_id, prompt=job_id)
        out = execute_job(job, decision(job, fallbacks=("gpu",)), ctx)
        assert out.status == "failed" and out.error_class == cls and out.backend == "api"
    assert gpu.calls == 1


def test_budget_cap_moves_to_fallback_then_fails_clearly(tmp_path):
    api = FunctionBackend(name="api", cost_per_image=Decimal("0.04"))
    gpu = FunctionBackend(name="gpu", cost_per_image=Decimal("0.01"))
    caps = [BudgetCap("api", "day", usd=Decimal("0.10")), BudgetCap("gpu", "day", usd=Decimal("0.02"))]
    ctx = context(tmp_path, api, gpu, caps=caps)
    outcomes = []
    for i in range(6):
        job = make_job(tmp_path / "in", f"j{i}", prompt=f"p{i}")
        outcomes.append(execute_job(job, decision(job, fallbacks=("gpu",), usd="0.04"), ctx))
    assert [o.backend for o in outcomes[:4]] == ["api", "api", "gpu", "gpu"]
    assert all(o.status == "failed" and o.error_class == "BudgetExceeded" for o in outcomes[4:])
    assert "$0.10 per day on backend 'api'" in outcomes[4].error
    assert ctx.ledger.spent("api", "day") <= Decimal("0.10") and ctx.ledger.spent("gpu", "day") <= Decimal("0.02")


def test_unroutable_and_stopped_jobs(tmp_path):
    api = FunctionBackend(name="api")
    ctx = context(tmp_path, api)
    job = make_job(tmp_path / "in")
    none = Decision(job.id, None, None, (), (), ("no backend takes 16 images",))
    out = execute_job(job, none, ctx)
    assert out.status == "failed" and out.error_class == "Unroutable" and "16 images" in out.error
    ctx.retry_failed = True
    ctx.stop.set()
    out = execute_job(job, decision(job), ctx)
    assert out.status == "interrupted" and ctx.ledger.get("j1").status == "interrupted" and api.calls == 0


class CrashBeforeDone(Ledger):
    def complete(self, *args, **kwargs):
        raise SystemExit("killed after the outputs were written")


def test_result_on_disk_after_a_crash_is_adopted_not_paid_again(tmp_path):
    api = FunctionBackend(name="api", cost_per_image=Decimal("0.04"))
    ctx = context(tmp_path, api)
    ctx.ledger = CrashBeforeDone.in_dir(tmp_path / "out")
    job = make_job(tmp_path / "in")
    with pytest.raises(SystemExit):
        execute_job(job, decision(job), ctx)
    assert ctx.ledger.get("j1").status == "running"
    ctx.ledger = Ledger.in_dir(tmp_path / "out")  # the next run (a new owner; the old one is gone)
    out = execute_job(job, decision(job), ctx)
    assert out.status == "done" and out.reused and api.calls == 1
    assert ctx.ledger.get("j1").status == "done" and ctx.ledger.total_spent() == Decimal("0.04")


def test_concurrent_jobs_respect_a_shared_cap(tmp_path):
    api = FunctionBackend(name="api", cost_per_image=Decimal("0.03"), latency_s=0.01)
    ctx = context(tmp_path, api, caps=[BudgetCap(None, "day", usd=Decimal("0.30"))])
    jobs = [make_job(tmp_path / "in", f"j{i}", prompt=f"p{i}") for i in range(24)]
    results = []
    threads = [
        threading.Thread(target=lambda j=j: results.append(execute_job(j, decision(j, usd="0.03"), ctx))) for j in jobs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o.status == "done" for o in results) == 10
    assert ctx.ledger.total_spent() == Decimal("0.30")


def test_a_jobs_files_are_whole_or_absent_and_no_temp_file_is_left(tmp_path):
    import hashlib

    from pipeline.run import write_files

    files = [("0.png", b"image bytes"), ("result.json", b'{"done": true}')]
    assert write_files(tmp_path / "new" / "j1", files) == [hashlib.sha256(d).hexdigest() for _, d in files]
    assert [(p.name, p.read_bytes()) for p in sorted((tmp_path / "new" / "j1").iterdir())] == files
    blocked = tmp_path / "blocked"
    (blocked / "result.json").mkdir(parents=True)  # the last rename fails, as a full disk or a crash would
    with pytest.raises(OSError):
        write_files(blocked, [("0.png", b"new image"), ("result.json", b"{}")])
    assert sorted(p.name for p in blocked.iterdir()) == ["0.png", "result.json"]  # no temp names left behind
    assert (blocked / "0.png").read_bytes() == b"new image" and (blocked / "result.json").is_dir()


def test_inputs_that_arrived_decoded_are_not_decoded_again():
    """An upload to `editroute serve` is decoded while the form is parsed; running the job must not redo it."""
    from dataclasses import replace

    from pipeline.run import materialize

    uploaded = InputImage.from_bytes(image_bytes(), name="upload.png")
    on_disk = replace(InputImage.from_bytes(image_bytes(), name="disk.png"), data=None)  # as a manifest gives it
    request = EditRequest(prompt="p", images=(uploaded, on_disk))
    decoded = materialize(request, [b"bytes that do not decode", image_bytes()])
    assert decoded.images[0] is uploaded and decoded.images[1].data == image_bytes()
    with pytest.raises(InvalidRequest):  # bytes read from a path are still decoded and checked
        materialize(request, [image_bytes(), b"bytes that do not decode"])


@pytest.mark.parametrize("hosted", [True, False])
def test_a_backend_bug_after_the_call_went_out_is_a_possible_charge_when_hosted(tmp_path, hosted):
    """A call that raised something unexpected (a bug parsing the answer, say) after it went out may have been
    billed by a hosted service: its hold stays as a possible charge, never counted free. Nobody bills a
    self-hosted call: that one is settled at $0. Either way the job fails and the rest of a batch runs on."""

    def parser_bug(request):
        raise KeyError("data")

    api = FunctionBackend(name="api", handler=parser_bug)
    job = make_job(tmp_path / "in")
    ctx = context(tmp_path, api, hosted=lambda name: hosted)
    out = execute_job(job, decision(job), ctx)
    assert out.status == "failed" and out.error_class == "KeyError"
    assert ctx.ledger.get("j1").status == "failed"
    [attempt] = ctx.ledger.attempts("j1")
    assert attempt["call_started_at"] is not None and attempt["error_class"] == "KeyError"
    if hosted:
        assert (attempt["state"], attempt["outcome"], attempt["reserved"]) == ("reserved", "unknown", Decimal("0.05"))
        assert ctx.ledger.get("j1").cost == Decimal(0)  # not billed: a possible charge, held against budgets
    else:
        assert (attempt["state"], attempt["cost"], attempt["outcome"]) == ("settled", Decimal(0), None)
