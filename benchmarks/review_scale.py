"""Review page at scale: a synthetic run of 100,000 jobs (ledger rows + one result.json per job, outputs
hard-linked to one image), then the review index and the page's HTTP API timed on loopback.

Baselines in the same run: the same requests against a 1,000-job run (the ratio shows whether the page slows
with the run's size; target ~1x), and the deep page fetched with SQL OFFSET instead of the keyset cursor (what
naive paging would cost). Optional `--browser`: time to a ready grid (thumbnails loaded) in headless chromium.

    python benchmarks/review_scale.py [--jobs 100000] [--small 1000] [--repeat 20] [--browser] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.ledger import Ledger, ReviewFilter, to_nusd  # noqa: E402
from pipeline.review import Catalog, create_review_app  # noqa: E402
from pipeline.serve import running  # noqa: E402
from tests.imagery import gradient, mask_image  # noqa: E402

BACKENDS = ("api", "api-flare", "sdxl-local")
TIERS = ("low", "medium", "high")
TAGS = (("ecommerce", "product"), ("marketing",), ("localisation", "text"), ("prototype",))
RARE_TAG = "recall"  # on 1% of jobs: a selective filter
LINKS_PER_FILE = 50_000


def make_run(folder: Path, jobs: int, seed: int = 0) -> Path:
    """`jobs` finished jobs (5% failed) in a ledger, each done one with result.json and an output on disk."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    image, mask, output = folder / "input.png", folder / "mask.png", folder / "output.png"
    gradient(768, 512).save(image)
    mask_image(768, 512).save(mask)
    Image.effect_noise((768, 512), 40).convert("RGB").save(output)
    copies = [output]  # ext4 allows 65,000 links to one file
    for k in range(1, -(-jobs // LINKS_PER_FILE)):
        copies.append(folder / f"output-{k}.png")
        shutil.copyfile(output, copies[-1])
    ledger = Ledger.in_dir(folder)
    rows, t0 = [], 1_796_000_000_000
    for i in range(jobs):
        job_id = f"job{i:06d}"
        backend = BACKENDS[i % 3]
        failed = rng.random() < 0.05
        tags = list(TAGS[rng.randrange(len(TAGS))]) + ([RARE_TAG] if rng.random() < 0.01 else [])
        cost = to_nusd({"api": "0.0443", "api-flare": "0.004", "sdxl-local": "0.0003"}[backend])
        outputs = None
        if not failed:
            d = folder / job_id
            d.mkdir()
            os.link(copies[i // LINKS_PER_FILE], d / "0.png")
            outputs = json.dumps([{"path": f"{job_id}/0.png", "sha256": f"{i:064x}"}])
            record = {
                "job_id": job_id,
                "backend": backend,
                "model": backend,
                "cost_usd": "0.0443",
                "quality": TIERS[i % 3],
                "timings": {"total_s": round(rng.uniform(0.3, 9.0), 3)},
                "reasons": ["capable: api, api-flare, sdxl-local", f"chose {backend}"],
                "outputs": [{"path": f"{job_id}/0.png", "sha256": f"{i:064x}"}],
                "artifacts": [],
                "tags": tags,
                "request": {
                    "prompt": "Replace the background",
                    "quality": TIERS[i % 3],
                    "images": [str(image)],
                    "mask": str(mask),
                },
            }
            (d / "result.json").write_text(json.dumps(record))
        rows.append(
            (
                job_id,
                f"k{i}",
                f"k{i}",
                "failed" if failed else "done",
                backend,
                backend,
                cost,
                outputs,
                "Error" if failed else None,
                "synthetic failure" if failed else None,
                t0 + i,
                t0 + i,
            )
        )
    with ledger._write() as conn:
        conn.executemany(
            "INSERT INTO jobs(id, idempotency_key, request_hash, status, backend, planned_backend, cost_nusd, outputs, "
            "error_class, error, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    ledger.close()
    return folder


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Milliseconds: median and p95 over `repeat` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 2),
    }


def get(http: httpx.Client, path: str, **params) -> Callable[[], object]:
    def call() -> object:
        r = http.get(path, params=params)
        r.raise_for_status()
        return r

    return call


def measure(folder: Path, repeat: int, browser: bool) -> dict[str, object]:
    figures: dict[str, object] = {}
    catalog = Catalog(folder)
    t = time.perf_counter()
    figures["first_index_jobs"] = catalog.sync()
    figures["first_index_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    catalog.sync()
    figures["resync_unchanged_ms"] = round((time.perf_counter() - t) * 1000, 1)
    # 2% of jobs decided, as after a first review session
    items = catalog.ledger.review_page(ReviewFilter(status="done"), limit=10**7)
    for k, item in enumerate(items[::50]):
        catalog.ledger.record_review(item["job_id"], "bench", "accept" if k % 4 else "reject")
    last = items[-1]["seq"]
    app = create_review_app(folder, reviewer="bench", catalog=catalog)
    with running(app) as url, httpx.Client(base_url=url.removesuffix("/v1"), timeout=60) as http:
        requests = {
            "page html": get(http, "/"),
            "summary (facets, totals)": get(http, "/api/summary"),
            "first page (60)": get(http, "/api/jobs"),
            "deep page, keyset": get(http, "/api/jobs", after=last - 200),
            "filter backend": get(http, "/api/jobs", backend="sdxl-local"),
            "filter rare tag (1%)": get(http, "/api/jobs", tag=RARE_TAG),
            "filter decided: reject": get(http, "/api/jobs", decision="reject"),
            "filter undecided + backend + tag": get(http, "/api/jobs", decision="none", backend="api", tag="marketing"),
            "job detail": get(http, f"/api/jobs/{items[len(items) // 2]['job_id']}"),
        }
        figures["requests"] = {name: timed(fn, repeat) for name, fn in requests.items()}
        page = http.get("/api/jobs").json()["items"]
        t, made = time.perf_counter(), 0
        for it in page:
            for role in ("input", "mask", "output"):
                if it["has"][role]:  # a failed job has no files
                    http.get(f"/api/jobs/{it['id']}/thumb/{role}").raise_for_status()
                    made += 1
        figures["thumbnails_cold_ms_each"] = round((time.perf_counter() - t) * 1000 / made, 2)
        page = [it for it in page if it["status"] == "done"]
        figures["requests"]["thumbnail, cached"] = timed(get(http, f"/api/jobs/{page[0]['id']}/thumb/output"), repeat)
        decide_ids = iter([it["id"] for it in page] * (repeat + 1))
        figures["requests"]["decision (POST)"] = timed(
            lambda: http.post(f"/api/jobs/{next(decide_ids)}/decision", json={"decision": "accept"}).raise_for_status(),
            repeat,
        )
        conn = catalog.ledger._conn()
        offset = len(items) - 200
        figures["sql_deep_page_offset_ms"] = timed(
            lambda: conn.execute("SELECT * FROM review_items ORDER BY seq LIMIT 60 OFFSET ?", (offset,)).fetchall(),
            repeat,
        )["median_ms"]
        figures["sql_deep_page_keyset_ms"] = timed(
            lambda: conn.execute(
                "SELECT * FROM review_items WHERE seq > ? ORDER BY seq LIMIT 60", (last - 200,)
            ).fetchall(),
            repeat,
        )["median_ms"]
        if browser:
            figures["browser_ready_ms"] = browser_ready(url.removesuffix("/v1") + "/")
    catalog.close()
    return figures


def browser_ready(url: str) -> float | None:
    """Milliseconds from navigation to a grid whose visible thumbnails are loaded (thumbnails already cached; the
    ones below the fold load lazily as the reviewer scrolls)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="review-bench-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            browser.get(url)
            WebDriverWait(browser, 60).until(
                lambda b: b.execute_script(
                    "return document.body.dataset.ready === '1' && [...document.images]"
                    ".filter(i => i.getBoundingClientRect().top < innerHeight).every(i => i.complete)"
                )
            )
            times.append((time.perf_counter() - t) * 1000)
        return round(statistics.median(times), 1)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=1_000, help="the baseline run's size")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--browser", action="store_true", help="also time the page in headless chromium")
    ap.add_argument("--keep", type=Path, help="build the runs here and keep them (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="review-scale-"))
    results: dict[str, object] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "command": "python benchmarks/review_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    try:
        for label, n in (("small", args.small), ("large", args.jobs)):
            t = time.perf_counter()
            folder = make_run(root / f"run-{n}", n)
            print(f"built a {n:,}-job run in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            results[label] = {"jobs": n, **measure(folder, args.repeat, args.browser)}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    small, large = results["small"], results["large"]
    print(f"\n| request | {small['jobs']:,} jobs: median / p95 ms | {large['jobs']:,} jobs: median / p95 ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, big in large["requests"].items():
        s = small["requests"][name]
        print(
            f"| {name} | {s['median_ms']} / {s['p95_ms']} | {big['median_ms']} / {big['p95_ms']} | "
            f"{big['median_ms'] / max(s['median_ms'], 1e-9):.2f}x |"
        )
    for key in (
        "first_index_s",
        "resync_unchanged_ms",
        "thumbnails_cold_ms_each",
        "sql_deep_page_offset_ms",
        "sql_deep_page_keyset_ms",
        "browser_ready_ms",
    ):
        print(f"| {key} | {small.get(key)} | {large.get(key)} | |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
