"""The Ray executor on a local 2-CPU Ray runtime (no GPUs ever requested; `sdxl` is a custom resource).

One Ray start for the whole module. Faults are injected from inside a job: the handler SIGKILLs its own
actor process, deterministically, the first time (or every time) it sees a marked job.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from backends.base import EditRequest
from backends.errors import BackendUnavailable, InvalidRequest
from backends.images import InputImage
from backends.standins import FunctionBackend, solid_images
from pipeline.cluster import ActorPool, RayExecutor, plan_actors
from pipeline.errors import ConfigError
from pipeline.routing import RaySettings, parse_ray_settings
from tests.batch_helpers import API_BACKEND, STANDIN_KEY
from tests.imagery import image_bytes
from tests.routing_helpers import EXAMPLES

ray = pytest.importorskip("ray")

CLUSTER_SDXL = 6  # custom `sdxl` slots on the test node
ACTORS = 2  # per pool: three pools fit at once (module fixture, a batch, the parity check)


# -- runs inside the actors (imported there by reference) ----------------------------------------------------
def faulty(marker_dir: str, request: EditRequest) -> list[bytes]:
    """Records each run; SIGKILLs its own process on a job whose prompt says so (`die once` / `die always`)."""
    folder = Path(marker_dir)
    with open(folder / f"{request.job_id}.runs", "a") as fh:
        fh.write(f"{os.getpid()}\n")
    died = folder / f"{request.job_id}.died"
    if request.prompt == "die always" or (request.prompt == "die once" and not died.exists()):
        died.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if request.prompt == "refuse":
        raise InvalidRequest("refused by the handler", field="prompt", job_id=request.job_id)
    return solid_images(request)


def runs(marker_dir: Path, job_id: str) -> int:
    path = marker_dir / f"{job_id}.runs"
    return len(path.read_text().split()) if path.exists() else 0


def request(job_id: str, prompt: str = "paint it") -> EditRequest:
    return EditRequest(
        prompt=prompt, images=(InputImage.from_bytes(image_bytes(32, 32), name="in.png"),), job_id=job_id
    )


def function_backends(marker_dir: Path) -> dict[str, FunctionBackend]:
    """`gpu` runs on Ray (named in `ray.backends`; the actor gets a copy of this object), `api` stays here."""
    return {
        "gpu": FunctionBackend(name="gpu", handler=functools.partial(faulty, str(marker_dir))),
        "api": FunctionBackend(name="api"),
    }


RAY_TEST_SETTINGS = {"num_gpus": 0, "num_cpus": 0.25, "resources": {"sdxl": 1}, "ready_timeout_s": 30}


@pytest.fixture(scope="module")
def ray_cluster():
    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=0,
        resources={"sdxl": CLUSTER_SDXL},
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield ray.cluster_resources()
    ray.shutdown()


# -- the resource check (pure) -------------------------------------------------------------------------------
def test_gpu_actor_on_cpu_cluster_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        plan_actors(RaySettings(), ["sdxl"], {"CPU": 2.0, "memory": 1e9})
    msg = str(err.value)
    assert "'sdxl'" in msg and "GPU=1" in msg and "GPU=0" in msg
    assert "num_gpus: 0" in msg and "--num-gpus" in msg


def test_missing_custom_resource_names_it_and_how_to_declare_it():
    with pytest.raises(ConfigError, match=r"sdxl=1.*ray start .*--resources='\{\"sdxl\": 1\}'"):
        plan_actors(RaySettings(num_gpus=0, resources={"sdxl": 1}), ["gen"], {"CPU": 8.0, "GPU": 0.0})


def test_default_is_one_actor_per_gpu_split_between_backends():
    cluster = {"CPU": 32.0, "GPU": 4.0, "sdxl": 8.0}
    assert plan_actors(RaySettings(), ["a"], cluster) == 4
    assert plan_actors(RaySettings(), ["a", "b"], cluster) == 2
    assert plan_actors(RaySettings(num_gpus=0.5), ["a"], cluster) == 8
    assert plan_actors(RaySettings(num_gpus=0, num_cpus=0), ["a"], cluster) == 1  # nothing to count: one
    with pytest.raises(ConfigError, match="fits only 4"):
        plan_actors(RaySettings(actors=3), ["a", "b"], cluster)


def test_bad_ray_section_names_the_key():
    with pytest.raises(ConfigError, match=r"ray\.num_gpus.*-1") as err:
        parse_ray_settings({"num_gpus": -1}, source="p.yaml")
    assert "p.yaml" in str(err.value)
    with pytest.raises(ConfigError, match=r"ray\.gpus"):
        parse_ray_settings({"gpus": 1})


# -- on the local Ray runtime --------------------------------------------------------------------------------
def test_resource_the_cluster_lacks_fails_fast_before_any_actor(ray_cluster, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot host an actor for backend 'gpu'.*GPU=1"):
        RayExecutor(function_backends(tmp_path), ray_settings={"backends": ["gpu"], "num_gpus": 1, "num_cpus": 0.5})
    assert runs(tmp_path, "j") == 0


def test_actors_that_cannot_get_scheduled_time_out_with_a_clear_message(ray_cluster, tmp_path):
    settings = RaySettings(
        backends=["gpu"], actors=1, num_gpus=0, num_cpus=0.1, resources={"sdxl": 1}, ready_timeout_s=2
    )
    squatter = ray.remote(num_cpus=0.1, resources={"sdxl": CLUSTER_SDXL})(_Squatter).remote()
    ray.get(squatter.ping.remote())  # holds every sdxl slot
    try:
        with pytest.raises(ConfigError, match=r"not ready after 2 s.*sdxl=1.*free now"):
            RayExecutor(function_backends(tmp_path), ray_settings=settings)
    finally:
        ray.kill(squatter)


class _Squatter:
    def ping(self) -> bool:
        return True


def edit(executor: RayExecutor, req: EditRequest, backend: str = "gpu"):
    return executor.submit(backend, req.materialized()).result(timeout=120)


@pytest.fixture(scope="module")
def executor(ray_cluster, tmp_path_factory):
    marker_dir = tmp_path_factory.mktemp("ray-faults")
    settings = {"backends": ["gpu"], "actors": ACTORS, **RAY_TEST_SETTINGS}
    ex = RayExecutor(function_backends(marker_dir), ray_settings=settings)
    ex.marker_dir = marker_dir
    yield ex
    ex.close()


def test_self_hosted_backends_run_on_pinned_actors_and_api_ones_here(executor):
    assert list(executor.pools) == ["gpu"]  # the api backend stays on the driver
    assert executor.concurrency("gpu") == ACTORS and executor.concurrency("api") is None
    assert executor.capacity() == ACTORS + 4  # the api backend keeps the local executor's limit
    pids = executor.pools["gpu"].pids
    assert len(set(pids)) == ACTORS and os.getpid() not in pids
    result = edit(executor, request("plain"))
    assert result.backend == "gpu" and len(result.images) == 1 and result.size == "32x32"
    assert runs(executor.marker_dir, "plain") == 1


def test_backend_errors_come_back_as_themselves(executor):
    with pytest.raises(InvalidRequest) as err:
        edit(executor, request("bad", prompt="refuse"))
    assert err.value.job_id == "bad" and err.value.field == "prompt"


def test_actor_killed_mid_job_is_replaced_and_the_job_runs_again_once(executor):
    pool: ActorPool = executor.pools["gpu"]
    before = pool.replaced
    result = edit(executor, request("victim", prompt="die once"))
    assert len(result.images) == 1
    assert runs(executor.marker_dir, "victim") == 2  # died once, then completed on a live actor
    assert pool.replaced == before + 1
    assert len(pool.pids) == ACTORS  # back to full strength
    after = edit(executor, request("after"))
    assert len(after.images) == 1


def test_second_death_gives_backend_unavailable_so_fallbacks_apply(executor):
    with pytest.raises(BackendUnavailable, match="died 2 times") as err:
        edit(executor, request("doomed", prompt="die always"))
    assert err.value.job_id == "doomed" and err.value.backend == "gpu"
    assert runs(executor.marker_dir, "doomed") == 2  # tried exactly twice, never more
    assert len(executor.pools["gpu"].pids) == ACTORS


def test_api_backend_runs_in_the_driver_process(executor):
    result = edit(executor, request("api-job"), backend="api")
    assert result.backend == "api"
    assert executor.backends["api"].calls == 1  # the driver's own object did the work
    assert runs(executor.marker_dir, "api-job") == 0


def test_grouped_jobs_run_in_one_actor_call_each_with_its_own_outcome(executor):
    """`submit_batch`: result i for job i; a refused job gets its error in its place; an actor death re-runs the
    group once on a fresh actor (the dead one returned nothing, so nothing completes twice)."""
    jobs = [request("b-1"), request("b-bad", prompt="refuse"), request("b-die", prompt="die once"), request("b-2")]
    assert executor.max_batch("gpu") == 1  # FunctionBackend has no max_batch: one job per call
    out = executor.submit_batch("gpu", [r.materialized() for r in jobs]).result(timeout=120)
    assert [type(o).__name__ for o in out] == ["EditResult", "InvalidRequest", "EditResult", "EditResult"]
    assert out[1].job_id == "b-bad"
    assert runs(executor.marker_dir, "b-1") == 2 and runs(executor.marker_dir, "b-die") == 2  # group re-ran once
    assert runs(executor.marker_dir, "b-2") == 1  # after the death, in the re-run only
    local = executor.submit_batch("api", [request("b-api"), request("b-api-2")]).result(timeout=30)
    assert [r.backend for r in local] == ["api", "api"]


def test_sdxl_actor_loads_its_pipeline_at_start_and_batches_on_it(ray_cluster, tiny_sdxl_dir):
    from backends.diffusion import SDXLInpaintBackend
    from tests.backend_contract import make_request
    from tests.fixtures_sdxl import tiny_settings

    backend = SDXLInpaintBackend.from_settings("sdxl", tiny_settings(tiny_sdxl_dir, max_batch=3))
    ex = RayExecutor({"sdxl": backend}, ray_settings={"actors": 1, **RAY_TEST_SETTINGS, "num_cpus": 1})
    try:
        (info,) = [a.info for a in ex.pools["sdxl"]._idle]
        assert info["loaded"] and ex.max_batch("sdxl") == 3  # load() ran in ready(): the first job is warm
        jobs = [
            make_request(seed=1, job_id="s1"),
            make_request(n=11, job_id="s-bad"),
            make_request(seed=2, n=2, job_id="s2"),
        ]
        out = ex.submit_batch("sdxl", [j.materialized() for j in jobs]).result(timeout=120)
        # jobs submitted one by one (as the runner does) are grouped by batch_key and share actor calls too
        futures = [ex.submit("sdxl", make_request(seed=10 + i, job_id=f"q{i}").materialized()) for i in range(3)]
        queued = [f.result(timeout=120) for f in futures]
    finally:
        ex.close()
    assert [len(r.images) for r in queued] == [1, 1, 1] and max(r.extras["batch_jobs"] for r in queued) >= 2
    assert isinstance(out[1], InvalidRequest) and out[1].field == "n"
    assert [len(out[0].images), len(out[2].images)] == [1, 2]
    assert out[0].extras["batch_jobs"] == 2 and out[2].extras["batch_jobs"] == 2
    assert out[2].usage.gpu_seconds == pytest.approx(2 * out[0].usage.gpu_seconds)
    assert backend.pipeline_calls == 0  # the driver's copy never ran


# -- whole batches through the runner ------------------------------------------------------------------------
def batch_policy(marker_dir: Path):
    """`gpu` (self-hosted, on Ray) with `api` (here) as its fallback; built in Python to carry the handler."""
    from pipeline.routing import Policy

    return Policy.model_validate(
        {
            "backends": {
                "gpu": {
                    "kind": "function",
                    "hosting": "self-hosted",
                    "cost_per_image": "0.01",
                    "handler": functools.partial(faulty, str(marker_dir)),
                },
                "api": {"kind": "function", "hosting": "api", "cost_per_image": "0.05"},
            },
            "quality": {"gpu": 0.8, "api": 0.8},
            "objective": {"type": "cheapest"},
            "fallbacks": {"gpu": ["api"]},
            "source": "ray-test-policy",
        }
    )


def test_actor_killed_mid_batch_every_job_done_exactly_once(ray_cluster, tmp_path):
    from pipeline.ledger import Ledger
    from pipeline.run import run_batch
    from tests.batch_helpers import write_manifest

    manifest = write_manifest(tmp_path, 6)
    lines = manifest.read_text().splitlines()
    victims = {"job02": "die once", "job04": "die always"}
    for i, line in enumerate(lines):
        entry = json.loads(line)
        entry["prompt"] = victims.get(entry["id"], entry["prompt"])
        lines[i] = json.dumps(entry)
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    markers = tmp_path / "markers"
    markers.mkdir()

    result = run_batch(
        manifest,
        batch_policy(markers),
        out,
        executor="ray",
        executor_options={"ray_settings": {"actors": ACTORS, **RAY_TEST_SETTINGS}},
    )
    assert (result.tally.done, result.tally.failed) == (6, 0)
    with Ledger.in_dir(out) as ledger:
        jobs = {r.id: r for r in ledger.jobs()}
        assert {j: r.status for j, r in jobs.items()} == {f"job{i:02d}": "done" for i in range(6)}
        assert {j: r.backend for j, r in jobs.items() if r.backend != "gpu"} == {"job04": "api"}  # fell back
        settled = [a for a in ledger.attempts() if a["cost"] > 0]
        assert sorted(a["job_id"] for a in settled) == sorted(jobs)  # one paid call per job, never two
        assert ledger.total_spent() == Decimal("0.01") * 5 + Decimal("0.05")
    assert runs(markers, "job02") == 2 and runs(markers, "job04") == 2  # retried once, never more
    assert all(runs(markers, f"job{i:02d}") == 1 for i in (0, 1, 3, 5))
    assert sorted(p.name for p in (out / "job02").iterdir()) == ["0.png", "result.json"]

    again = run_batch(
        manifest,
        batch_policy(markers),
        out,
        executor="ray",
        executor_options={"ray_settings": {"actors": ACTORS, **RAY_TEST_SETTINGS}},
    )
    assert (again.tally.done, again.tally.reused) == (0, 6)  # resume: nothing runs twice
    assert runs(markers, "job00") == 1


# -- the same example batch, local vs Ray: same bytes, same ledger -------------------------------------------
KEY = STANDIN_KEY

PARITY_POLICY = (
    "\nbackends:\n"
    + API_BACKEND
    + """\
  sdxl-local:
{sdxl}
quality:
  api: 0.9
  sdxl-local: 0.7
rules:
  - {{name: masked edits self-hosted, when: {{has_mask: true}}, prefer: sdxl-local}}
objective: {{type: cheapest}}
fallbacks:
  sdxl-local: [api]
"""
)


def parity_inputs(folder: Path, tiny_sdxl_dir: Path, url: str) -> tuple[Path, Path]:
    """examples/all.jsonl with a fixed seed on every job, and a policy: masked edits on the tiny SDXL stand-in,
    the rest (text, composites, no mask, transparent) on the loopback API stand-in."""
    import shutil

    import yaml

    from tests.fixtures_sdxl import tiny_settings

    shutil.copytree(EXAMPLES / "images", folder / "images")
    lines = []
    for i, line in enumerate(s for s in (EXAMPLES / "all.jsonl").read_text().splitlines() if s.strip()):
        entry = json.loads(line)
        entry.setdefault("seed", 1000 + i)
        lines.append(json.dumps(entry))
    manifest = folder / "all-seeded.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    sdxl = yaml.safe_dump({"kind": "sdxl", **tiny_settings(tiny_sdxl_dir)})
    policy = folder / "policy.yaml"
    policy.write_text(PARITY_POLICY.format(url=url, sdxl="\n".join("    " + s for s in sdxl.splitlines())))
    return manifest, policy


def outputs_of(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.parent != out and p.name != "result.json"
    }


def ledger_summary(out: Path) -> dict:
    from pipeline.ledger import Ledger

    with Ledger.in_dir(out) as ledger:
        jobs = {r.id: (r.status, r.backend) for r in ledger.jobs()}
        per_job = {r.id: r.cost for r in ledger.jobs()}
        results = {j: json.loads((out / j / "result.json").read_text()) for j in jobs}
        return {
            "jobs": jobs,
            "api_usd": ledger.total_spent("api"),
            "sdxl_usd": ledger.total_spent("sdxl-local"),
            "sdxl_billed": sum((per_job[j] for j, (_, b) in jobs.items() if b == "sdxl-local"), Decimal(0)),
            "seeds": {j: r.get("seed") for j, r in results.items()},
            "gpu_s": {j: r["usage"]["gpu_seconds"] for j, r in results.items() if jobs[j][1] == "sdxl-local"},
        }


def test_example_batch_gives_the_same_bytes_and_ledger_with_local_and_ray(
    ray_cluster, tmp_path, tiny_sdxl_dir, monkeypatch
):
    import torch

    from backends.standins import FakeOpenAIServer
    from pipeline.routing import build_backends, load_policy
    from pipeline.run import run_batch

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    ray_settings = {"actors": 1, **RAY_TEST_SETTINGS, "num_cpus": 1}
    threads = torch.get_num_threads()
    with FakeOpenAIServer(api_key=KEY) as server:
        manifest, policy_file = parity_inputs(tmp_path, tiny_sdxl_dir, server.base_url)
        policy = load_policy(policy_file)
        local_backends = build_backends(policy)
        # CPU float results depend on the intra-op thread count; Ray gives an actor of num_cpus=1 one thread
        torch.set_num_threads(1)
        try:
            local = run_batch(manifest, policy, tmp_path / "local", backends=local_backends)
        finally:
            torch.set_num_threads(threads)
        ray_backends = build_backends(policy)
        on_ray = run_batch(
            manifest,
            policy,
            tmp_path / "ray",
            executor="ray",
            backends=ray_backends,
            executor_options={"ray_settings": ray_settings},
        )

    counts = ("done", "failed", "reused", "skipped", "interrupted")
    assert [getattr(local.tally, k) for k in counts] == [getattr(on_ray.tally, k) for k in counts]
    assert local.tally.failed == 0 and local.tally.done == len(manifest.read_text().splitlines())
    assert local_backends["sdxl-local"].pipeline_calls >= 3  # the batch really mixes both kinds of backend
    assert ray_backends["sdxl-local"].pipeline_calls == 0  # ...and with Ray the driver's copy never ran one

    a, b = outputs_of(tmp_path / "local"), outputs_of(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if a[k] != b[k]] == []  # every output file byte for byte

    la, lb = ledger_summary(tmp_path / "local"), ledger_summary(tmp_path / "ray")
    assert la["jobs"] == lb["jobs"] and la["seeds"] == lb["seeds"]
    assert la["api_usd"] == lb["api_usd"] > 0  # token-billed: identical to the nano-dollar
    # self-hosted cost is measured GPU time (so it differs by timing noise); on Ray it is measured in the actor
    # and the ledger holds exactly what each job reported
    assert lb["sdxl_usd"] == lb["sdxl_billed"] > 0 and la["sdxl_usd"] == la["sdxl_billed"] > 0
    assert all(s > 0 for s in lb["gpu_s"].values()) and la["gpu_s"].keys() == lb["gpu_s"].keys()


def test_cli_run_on_ray_without_gpus_fails_fast_naming_the_fix(ray_cluster, tmp_path, tiny_sdxl_dir, capsys):
    """`editroute run --executor ray` with the default `num_gpus: 1` on this CPU-only cluster: exit 2 at once,
    nothing run or billed, instead of actors pending forever."""
    from backends.standins import FakeOpenAIServer
    from pipeline.cli import main
    from pipeline.ledger import Ledger

    with FakeOpenAIServer(api_key=KEY) as server:
        manifest, policy = parity_inputs(tmp_path, tiny_sdxl_dir, server.base_url)
        code = main(
            [
                "run",
                str(manifest),
                "--policy",
                str(policy),
                "--out",
                str(tmp_path / "out"),
                "--executor",
                "ray",
                "--json",
            ]
        )
        assert server.requests == []
    err = capsys.readouterr().err
    assert code == 2
    assert "'sdxl-local'" in err and "GPU=1" in err and "num_gpus: 0" in err
    with Ledger.in_dir(tmp_path / "out") as ledger:
        assert ledger.total_spent() == 0 and not [r for r in ledger.jobs() if r.status == "done"]
