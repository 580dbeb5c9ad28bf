"""Upload bytes of a batch lane: input images through the Files API (`image_upload: files`) or inline as data URLs
(`image_upload: data_url`), measured on the wire for the same manifest.

Two manifests of edits that can wait a day (`deadline: 24h`), each job with its own prompt and a mask:
  shared    N jobs sharing one reference image (a catalogue restyle: one product shot, many variants)
  distinct  M jobs, each with its own image (a catalogue: one photo per product)
Images are realistic 1024x1024 product-shot JPEGs (~0.2 MB; masks PNG). `editroute run`'s own code path
(`run_batch`, the batch lane) runs against the loopback stand-in; once every batch is created the run is stopped
(the batches are cancelled before any line runs: nothing here measures the stand-in's "model"), and the bytes of
every upload (`POST /files` request bodies: images, masks and the JSONL input files) are summed.

    python benchmarks/batch_upload_bytes.py [--shared 1000] [--distinct 200]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEY = "sk-bench-loopback-only"  # the stand-in's key; not a real credential

POLICY = """
backends:
  api-batch:
    kind: openai-batch
    model: gpt-image-2
    base_url: {url}
    image_upload: {mode}
    poll_interval: 0.05
    poll_max_interval: 0.2
    collect_s: 60
quality: {{api-batch: 0.8}}
"""


def photo(seed: int) -> bytes:
    """A 1024x1024 product-shot-like JPEG: lit gradient backdrop, an object, sensor noise (~0.2 MB at q90)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    img = Image.linear_gradient("L").resize((1024, 1024)).convert("RGB")
    draw = ImageDraw.Draw(img)
    colour = tuple(rng.randrange(40, 220) for _ in range(3))
    x, y = rng.randrange(200, 400), rng.randrange(200, 400)
    draw.ellipse((x, y, x + 420, y + 520), fill=colour)
    noise = Image.effect_noise((1024, 1024), 18).convert("RGB")
    img = Image.blend(img, noise, 0.12).filter(ImageFilter.GaussianBlur(0.6))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mask() -> bytes:
    from PIL import Image, ImageDraw

    m = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    ImageDraw.Draw(m).rectangle((0, 0, 1023, 180), fill=(0, 0, 0, 0))
    buf = io.BytesIO()
    m.save(buf, "PNG")
    return buf.getvalue()


def manifest(folder: Path, jobs: int, distinct: bool) -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "img" / "mask.png").write_bytes(mask())
    lines = []
    for i in range(jobs):
        name = f"img/p{i}.jpg" if distinct else "img/p0.jpg"
        if distinct or i == 0:
            (folder / name).write_bytes(photo(i))
        lines.append(
            json.dumps(
                {
                    "id": f"j{i:05d}",
                    "image": name,
                    "mask": "img/mask.png",
                    "prompt": f"Replace the backdrop with a warm autumn scene, variant {i}",
                    "quality": "medium",
                    "size": "1024x1024",
                    "deadline": "24h",
                }
            )
        )
    path = folder / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(jobs_file: Path, mode: str, jobs: int) -> dict:
    from backends.standins import FakeOpenAIServer
    from pipeline.run import run_batch

    out = jobs_file.parent / f"out-{mode}"
    os.environ["OPENAI_API_KEY"] = KEY
    with FakeOpenAIServer(api_key=KEY, batch_delay_s=3600) as api:
        policy = jobs_file.parent / f"policy-{mode}.yaml"
        policy.write_text(POLICY.format(url=api.base_url, mode=mode))
        stop = threading.Event()

        def watch() -> None:  # every job in a created batch: stop (cancels them before any line runs)
            while not stop.is_set():
                total = sum(b["request_counts"]["total"] or _lines(api, b) for b in list(api.batches.values()))
                if total >= jobs:
                    stop.set()
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()
        t0 = time.perf_counter()
        run_batch(jobs_file, policy, out, stop=stop)
        seconds = time.perf_counter() - t0
        uploads = [r for r in api.requests if r.method == "POST" and r.path.endswith("/files")]
        images = [r for r in uploads if r.fields.get("purpose") != "batch"]
        inputs = [r for r in uploads if r.fields.get("purpose") == "batch"]
        return {
            "mode": mode,
            "jobs": jobs,
            "batches": len(api.batch_creates),
            "image_uploads": len(images),
            "image_bytes": sum(r.body_bytes for r in images),
            "jsonl_bytes": sum(r.body_bytes for r in inputs),
            "total_bytes": sum(r.body_bytes for r in uploads),
            "seconds": seconds,
        }


def _lines(api, batch) -> int:
    return api.files[batch["input_file_id"]]["content"].count(b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=int, default=1000, help="jobs sharing one reference image")
    ap.add_argument("--distinct", type=int, default=200, help="jobs with an image each")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, jobs, distinct in (("shared", args.shared, False), ("distinct", args.distinct, True)):
            folder = Path(tmp) / name
            jobs_file = manifest(folder, jobs, distinct)
            image_mb = (folder / "img" / "p0.jpg").stat().st_size / 1e6
            for mode in ("files", "data_url"):
                rows.append({"manifest": name, "image_mb": image_mb, **measure(jobs_file, mode, jobs)})
    print(f"# batch lane upload bytes ({date.today()}, {platform.machine()}, {os.cpu_count()} cores)\n")
    print("| manifest | image_upload | jobs | batches | image uploads | image MB | JSONL MB | total MB | KB/job |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['manifest']} ({r['image_mb']:.2f} MB JPEG each) | {r['mode']} | {r['jobs']} | {r['batches']} | "
            f"{r['image_uploads']} | {r['image_bytes'] / 1e6:.2f} | {r['jsonl_bytes'] / 1e6:.2f} | "
            f"{r['total_bytes'] / 1e6:.2f} | {r['total_bytes'] / r['jobs'] / 1e3:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
