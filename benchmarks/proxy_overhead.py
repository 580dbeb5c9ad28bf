"""Proxy overhead: what `editroute serve` adds per image edit, against LiteLLM's proxy and the upstream itself.

Three ways to the same loopback OpenAI stand-in (same process, same latency setting), measured interleaved in one
run with the official `openai` SDK as the client: a 1024x1024 photo-like PNG (smooth structure plus sensor noise,
~1.6 MB), quality low, at concurrency 1 and 16:

    direct     SDK -> stand-in
    editroute  SDK -> editroute serve (own process; a policy with one openai backend) -> stand-in
    litellm    SDK -> LiteLLM proxy (own process, own venv under bench/, loopback only) -> stand-in

The stand-in runs `--canned`: after the first edit it answers with that answer, parsing and computing nothing, so
the upstream costs no CPU on this machine (a real API's work happens on its servers) and each proxy's own cost is
what differs. Added latency = the median over interleaved rounds of (proxy median - direct median) in the same
round, at each concurrency; proxy CPU per request from /proc. The ratio
editroute/LiteLLM of added latency is the figure benchmarks/RESULTS.md keeps (goal: < 0.5 at concurrency 1, <= 1
at 16). LiteLLM is installed into bench/litellm-venv on first use (`pip install 'litellm[proxy]'`).

    python benchmarks/proxy_overhead.py [--rounds 20] [--latency 0.05] [--json bench/proxy_overhead.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / "litellm-venv"
SERVE_EXTRAS = ROOT / "bench" / "serve-extras"  # the server extra's uvloop + httptools, if this env lacks them
MODEL = "gpt-image-2.6-sunburst"
UPSTREAM_KEY = "sk-bench-upstream"


def photo_png(size: int = 1024, seed: int = 7) -> bytes:
    """A photo-like PNG: smooth random structure (noise upsampled bicubically) plus per-pixel sensor noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = np.asarray(coarse).astype(np.int16) + rng.normal(0, 6, (size, size, 3)).astype(np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 120.0, headers: dict | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:3]} exited early with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not come up in {seconds:g} s")


def ensure_litellm() -> Path:
    exe = VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing LiteLLM's proxy into {VENV} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    return exe


def serve_extras() -> str:
    """A PYTHONPATH entry holding uvloop and httptools (editroute's `server` extra) when this env lacks them."""
    import importlib.util

    if all(importlib.util.find_spec(m) for m in ("uvloop", "httptools")):
        return ""
    if not (SERVE_EXTRAS / "uvloop").exists():
        print(f"installing the server extra's uvloop + httptools into {SERVE_EXTRAS} (once) ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(SERVE_EXTRAS),
                "uvloop>=0.19",
                "httptools>=0.6",
            ],
            check=True,
        )
    return str(SERVE_EXTRAS)


def io_stack(pid: int) -> str:
    """Which event loop and HTTP parser a uvicorn process loaded (from its memory map)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    loop = "uvloop" if "uvloop" in maps else "asyncio"
    return f"{loop} + {'httptools' if 'httptools' in maps else 'h11'}"


def litellm_version() -> str:
    out = subprocess.run([str(VENV / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Version:")), "?")


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    """The stand-in, editroute serve and LiteLLM's proxy, each in its own process on loopback."""

    def __init__(self, latency: float, work: Path, editroute_root: Path = ROOT) -> None:
        self.procs: list[subprocess.Popen] = []
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.upstream_port, self.editroute_port, self.litellm_port = free_port(), free_port(), free_port()
        upstream = f"http://127.0.0.1:{self.upstream_port}/v1"
        self.upstream = self._start(
            [sys.executable, "-m", "backends.standins.openai_server", "--port", str(self.upstream_port),
             "--latency", str(latency), "--api-key", UPSTREAM_KEY, "--canned"], env, work / "upstream.log",
        )  # fmt: skip
        wait_up(f"{upstream}/models", self.upstream, headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})

        self.key = "sk-bench-" + secrets.token_hex(24)  # both proxies check a bearer key
        (work / "upstream.key").write_text(UPSTREAM_KEY)
        policy = work / "policy.yaml"
        policy.write_text(
            f"backends:\n  api:\n    kind: openai\n    model: {MODEL}\n    base_url: {upstream}\n"
            f"    api_key_file: {work / 'upstream.key'}\n    max_retries: 0\nquality:\n  api: {{low: 0.7, medium: 0.8, "
            "high: 0.9}\n"
        )
        extras, root = serve_extras(), editroute_root
        self.editroute = self._start(
            [sys.executable, "-m", "pipeline.cli", "serve", "--policy", str(policy), "--port",
             str(self.editroute_port), "--out", str(work / "editroute-out")],
            {**env, "EDITROUTE_API_KEYS": self.key, "PYTHONPATH": os.pathsep.join(filter(None, [extras, str(root)]))},
            work / "editroute.log",
            root,  # `python -m` puts the working directory first on sys.path: run in the checkout measured
        )  # fmt: skip
        wait_up(f"http://127.0.0.1:{self.editroute_port}/healthz", self.editroute)

        config = work / "litellm.yaml"
        config.write_text(
            f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
            f"      api_base: {upstream}\n      api_key: {UPSTREAM_KEY}\n      max_retries: 0\n"
            "litellm_settings:\n  telemetry: false\n  num_retries: 0\n"
        )
        litellm_env = {
            **os.environ,
            "LITELLM_MASTER_KEY": self.key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price map from the internet
            "LITELLM_TELEMETRY": "False",
        }
        self.litellm = self._start(
            [str(ensure_litellm()), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.litellm_port),
             "--num_workers", "1"], litellm_env, work / "litellm.log",
        )  # fmt: skip
        wait_up(f"http://127.0.0.1:{self.litellm_port}/health/liveliness", self.litellm, seconds=240)

    def _start(self, cmd: list[str], env: dict, log: Path, cwd: Path = ROOT) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd)
        self.procs.append(proc)
        return proc

    def targets(self) -> dict[str, tuple[str, str, int | None]]:
        """name -> (base_url, api key, the proxy's pid)"""
        return {
            "direct": (f"http://127.0.0.1:{self.upstream_port}/v1", UPSTREAM_KEY, None),
            "editroute": (f"http://127.0.0.1:{self.editroute_port}/v1", self.key, self.editroute.pid),
            "litellm": (f"http://127.0.0.1:{self.litellm_port}/v1", self.key, self.litellm.pid),
        }

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def block(url: str, key: str, photo: bytes, concurrency: int, per_thread: int, pause: float = 0.0) -> list[float]:
    """`concurrency` SDK clients at once, each making `per_thread` edits, `pause` s apart; the latency of each."""
    from openai import OpenAI

    times: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def run() -> None:
        sdk = OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
        start.wait()
        for _ in range(per_thread):
            t = time.perf_counter()
            try:
                result = sdk.images.edit(model=MODEL, image=("photo.png", photo, "image/png"), prompt="warmer light",
                                         quality="low")  # fmt: skip
                assert result.data and result.data[0].b64_json
            except BaseException as exc:  # noqa: BLE001 - reported after the block
                with lock:
                    errors.append(exc)
                return
            with lock:
                times.append(time.perf_counter() - t)
            time.sleep(pause)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{url}: {len(errors)} request(s) failed, e.g. {errors[0]!r}")
    return times


def measure(
    stack: Stack, photo: bytes, concurrency: int, rounds: int, per_thread: int, seed: int, pause: float = 0.0
) -> dict:
    """Rounds of one block per target, in a shuffled order each round (so drift hits all three alike). A proxy's
    added latency is the median over rounds of (its median - direct's median) in that round: paired, so a busy
    moment on a shared machine shifts both sides of a difference."""
    rng = random.Random(seed)
    targets = stack.targets()
    times: dict[str, list[float]] = {name: [] for name in targets}
    paired: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
    for url, key, _ in targets.values():  # warm-up: connections, first-call imports
        block(url, key, photo, concurrency, 1)
    for _ in range(rounds):
        order = list(targets)
        rng.shuffle(order)
        this: dict[str, float] = {}
        for name in order:
            url, key, pid = targets[name]
            before = cpu_seconds(pid) if pid else 0.0
            got = block(url, key, photo, concurrency, per_thread, pause)
            cpu[name] += (cpu_seconds(pid) - before) if pid else 0.0
            times[name] += got
            this[name] = statistics.median(got)
        for name in targets:
            paired[name].append(this[name] - this["direct"])
    out: dict = {}
    for name, values in times.items():
        out[name] = {
            "requests": len(values),
            "median_s": round(statistics.median(values), 5),
            "p90_s": round(statistics.quantiles(values, n=10)[-1], 5),
            "added_ms": round(statistics.median(paired[name]) * 1000, 2),
            "proxy_cpu_ms_per_request": round(cpu[name] / len(values) * 1000, 2) if targets[name][2] else None,
        }
    lite, ours = out["litellm"]["added_ms"], out["editroute"]["added_ms"]
    out["ratio_added_editroute_over_litellm"] = round(ours / lite, 3) if lite > 0 else None
    out["ratio_cpu_editroute_over_litellm"] = round(
        out["editroute"]["proxy_cpu_ms_per_request"] / out["litellm"]["proxy_cpu_ms_per_request"], 3
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds per concurrency (default 20)")
    ap.add_argument("--latency", type=float, default=0.05, help="the stand-in's latency per edit, seconds")
    ap.add_argument("--per-round", type=int, default=3, help="edits per client per round (default 3)")
    ap.add_argument(
        "--pause",
        type=float,
        default=0.1,
        help="seconds a concurrency-1 client waits between its edits (default 0.1): what each proxy does after "
        "answering (editroute: files and ledger; LiteLLM: logging) then lands in CPU, not in the next edit",
    )
    ap.add_argument(
        "--editroute-root", type=Path, default=ROOT, help="the editroute checkout to serve (default: this one)"
    )
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "proxy_overhead.json", help="where to write results")
    args = ap.parse_args(argv)
    photo = photo_png()
    with tempfile.TemporaryDirectory(prefix="proxy-overhead-") as tmp:
        stack = Stack(args.latency, Path(tmp), args.editroute_root.resolve())
        try:
            results = {
                "command": "python benchmarks/proxy_overhead.py " + " ".join(argv or sys.argv[1:]),
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.python_version()}",
                "editroute_root": str(args.editroute_root.resolve()),
                "litellm": litellm_version(),
                "io": {"editroute": io_stack(stack.editroute.pid), "litellm": io_stack(stack.litellm.pid)},
                "photo_bytes": len(photo),
                "upstream_latency_s": args.latency,
                "concurrency_1": measure(stack, photo, 1, args.rounds, args.per_round, seed=1, pause=args.pause),
                "pause_s": args.pause,
                "concurrency_16": measure(stack, photo, 16, max(2, args.rounds // 4), 2, seed=16),
            }
        finally:
            stack.close()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
