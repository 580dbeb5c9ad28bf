"""Jobs that share one backend call (SDXL-style batching) through the real runner, on a fake that batches:
equal keys share calls, each job keeps its own hold, bill, files and fate, and Ctrl-C loses nothing."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path

from backends.standins import FunctionBackend
from pipeline.ledger import Ledger
from pipeline.routing import load_policy
from pipeline.run import LocalExecutor, NullProgress, run_batch
from tests.batch_helpers import BatchingFake, BatchSettings, write_policy
from tests.imagery import image_bytes, mask_bytes

POLICY = """
backends:
  gpu: {kind: function, cost_per_image: "0.01"}
  spare: {kind: function, cost_per_image: "0.02"}
quality: {gpu: 0.8, spare: 0.8}
objective: {type: cheapest}
fallbacks: {gpu: [spare]}
"""


def _manifest(folder: Path, qualities: list[str], alone: set[int] = frozenset()) -> Path:
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    (img / "m.png").write_bytes(mask_bytes(64, 64))
    lines = []
    for i, quality in enumerate(qualities):
        (img / f"{i}.png").write_bytes(image_bytes(64, 64))
        prompt = f"{'alone ' if i in alone else ''}a red chair, variant {i}"
        lines.append(
            json.dumps(
                {
                    "id": f"job{i:02d}",
                    "image": f"img/{i}.png",
                    "mask": "img/m.png",
                    "prompt": prompt,
                    "quality": quality,
                    "n": 1 + i % 2,
                }
            )
        )
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _setup(tmp_path: Path, **fake):
    policy = load_policy(write_policy(tmp_path, POLICY))
    gpu = BatchingFake(name="gpu", cost_per_image=Decimal("0.01"), **fake)
    spare = FunctionBackend(name="spare", cost_per_image=Decimal("0.02"))
    return policy, {"gpu": gpu, "spare": spare}


def test_equal_keys_share_calls_and_each_job_keeps_its_own_record(tmp_path):
    qualities = ["low", "high"] * 5 + ["low"] * 4
    manifest = _manifest(tmp_path, qualities, alone={13})
    policy, backends = _setup(tmp_path, call_latency_s=0.1)
    out = tmp_path / "out"
    result = run_batch(manifest, policy, out, backends=backends)
    assert result.tally.done == len(qualities) and result.ok
    calls = backends["gpu"].batched_calls
    quality = {f"job{i:02d}": q for i, q in enumerate(qualities)}
    assert sorted(j for call in calls for j in call) == sorted(quality)  # every job in exactly one call
    assert all(len({quality[j] for j in call}) == 1 for call in calls)  # never mixes keys
    assert all(len(call) <= 4 for call in calls) and max(len(call) for call in calls) > 1
    assert ["job13"] in calls  # a job without a key runs alone
    with Ledger.in_dir(out) as ledger:
        for i in range(len(qualities)):
            rec = ledger.get(f"job{i:02d}")
            n = 1 + i % 2
            (attempt,) = ledger.attempts(rec.id)  # its own hold, settled with its own bill
            assert rec.status == "done" and attempt["state"] == "settled" and attempt["cost"] == Decimal("0.01") * n
            assert rec.cost == Decimal("0.01") * n and len(rec.outputs) == n
            data = json.loads((out / rec.id / "result.json").read_text())
            assert data["job_id"] == rec.id and all((out / o["path"]).is_file() for o in data["outputs"])
        assert ledger.total_spent() == Decimal("0.01") * sum(1 + i % 2 for i in range(len(qualities)))
    again = run_batch(manifest, policy, out, backends=backends)  # rerun: nothing called
    assert again.tally.reused == len(qualities) and len(backends["gpu"].batched_calls) == len(calls)


def test_a_refused_job_fails_alone_and_an_unavailable_one_falls_back(tmp_path):
    manifest = _manifest(tmp_path, ["low"] * 8)
    policy, backends = _setup(tmp_path, call_latency_s=0.1, refuse=frozenset({"job02"}), down=frozenset({"job05"}))
    out = tmp_path / "out"
    result = run_batch(manifest, policy, out, backends=backends)
    assert (result.tally.done, result.tally.failed) == (7, 1)
    assert max(len(call) for call in backends["gpu"].batched_calls) > 1
    with Ledger.in_dir(out) as ledger:
        refused = ledger.get("job02")
        assert refused.status == "failed" and refused.error_class == "InvalidRequest" and refused.cost == 0
        assert not (out / "job02").exists()
        moved = ledger.get("job05")
        assert moved.status == "done" and moved.backend == "spare"
        assert [(a["backend"], a["error_class"]) for a in ledger.attempts("job05")] == [
            ("gpu", "BackendUnavailable"),
            ("spare", None),
        ]
        assert {ledger.get(f"job{i:02d}").backend for i in (0, 1, 3, 4, 6, 7)} == {"gpu"}
        on_gpu = sum(1 + i % 2 for i in (0, 1, 3, 4, 6, 7))
        assert ledger.total_spent() == Decimal("0.01") * on_gpu + Decimal("0.04")  # job05 (n=2): spare only


def test_max_batch_one_gives_one_job_per_call(tmp_path):
    manifest = _manifest(tmp_path, ["low"] * 5)
    policy, backends = _setup(tmp_path, settings=BatchSettings(max_batch=1), call_latency_s=0.02)
    assert LocalExecutor(backends).capacity() == 1 + 4  # the gpu one call at a time, the API-like spare 4
    result = run_batch(manifest, policy, tmp_path / "out", backends=backends)
    assert result.tally.done == 5 and all(len(call) == 1 for call in backends["gpu"].batched_calls)


def test_stop_cancels_queued_jobs_and_the_rerun_pays_each_once(tmp_path):
    manifest = _manifest(tmp_path, ["low"] * 12)
    policy, backends = _setup(tmp_path, settings=BatchSettings(max_batch=2), call_latency_s=0.2)
    stop = threading.Event()

    class StopAtFirst(NullProgress):
        def finished(self, outcome):
            super().finished(outcome)
            stop.set()

    out = tmp_path / "out"
    first = run_batch(manifest, policy, out, backends=backends, progress=StopAtFirst(), stop=stop)
    assert first.interrupted and 1 <= first.tally.done < 12
    with Ledger.in_dir(out) as ledger:
        assert "running" not in ledger.counts()
        assert all(a["state"] != "reserved" for a in ledger.attempts())  # no hold left behind
    second = run_batch(manifest, policy, out, backends=backends)
    assert second.tally.reused == first.tally.done and second.tally.done == 12 - first.tally.done
    billed = [j for call in backends["gpu"].batched_calls for j in call]
    assert sorted(billed) == [f"job{i:02d}" for i in range(12)]  # each job called exactly once over both runs
    with Ledger.in_dir(out) as ledger:
        assert ledger.counts() == {"done": 12}
        assert ledger.total_spent() == Decimal("0.01") * sum(1 + i % 2 for i in range(12))


def test_real_tiny_sdxl_shares_pipeline_calls_and_bills_each_job(tmp_path, tiny_sdxl_dir):
    import yaml

    from pipeline.routing import build_backends
    from tests.fixtures_sdxl import tiny_settings

    spec = {"kind": "sdxl", **tiny_settings(tiny_sdxl_dir, max_batch=2)}
    policy = load_policy(write_policy(tmp_path, yaml.safe_dump({"backends": {"gpu": spec}, "quality": {"gpu": 0.8}})))
    backends = build_backends(policy)
    manifest = _manifest(tmp_path, ["low"] * 4)
    out = tmp_path / "out"
    result = run_batch(manifest, policy, out, backends=backends)
    assert result.tally.done == 4 and result.ok
    assert backends["gpu"].pipeline_calls < 4  # some jobs shared a call
    with Ledger.in_dir(out) as ledger:
        shared = 0
        for i in range(4):
            rec = ledger.get(f"job{i:02d}")
            data = json.loads((out / rec.id / "result.json").read_text())
            (attempt,) = ledger.attempts(rec.id)
            assert len(rec.outputs) == 1 + i % 2 and rec.cost > 0 and attempt["cost"] == rec.cost
            assert abs(Decimal(data["cost_usd"]) - rec.cost) < Decimal("1e-9")  # the ledger keeps nano-dollars
            shared += data["extras"]["batch_jobs"] > 1
        assert shared >= 2 and ledger.total_spent() == sum((r.cost for r in ledger.jobs()), Decimal(0))
