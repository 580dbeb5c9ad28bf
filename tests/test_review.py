"""`editroute review`: decisions in the ledger (history kept, the latest counts, restarts), the run's index and
its keyset pages, the page's HTTP API on a real loopback server (thumbnails once, full size only when opened, no
path from the request, no cross-site writes), the serve mount behind keys, the export with Wilson intervals, and a
policy that routes differently on measured quality and says why. The browser test is test_review_browser.py."""

from __future__ import annotations

import csv
import io
import json
import math
from decimal import Decimal

import httpx
import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import ConfigError
from pipeline.ledger import ReviewFilter
from pipeline.review import Catalog, create_review_app, wilson
from pipeline.routing import load_policy
from pipeline.serve import running
from tests.imagery import gradient, mask_image
from tests.review_helpers import ledger_of, make_run, review_by_backend, write_jobs, write_policy


@pytest.fixture()
def run_dir(tmp_path):
    return make_run(tmp_path, per_backend=40)


# ---- decisions in the ledger -------------------------------------------------------------------------------


def test_decisions_keep_their_history_the_latest_counts_and_survive_a_restart(run_dir):
    catalog = Catalog(run_dir)
    assert catalog.sync() == 80 and catalog.sync() == 0  # the second look finds nothing new
    ledger = catalog.ledger
    ledger.record_review("job000", "dana", "accept")
    ledger.record_review("job000", "lee", "reject", "halo around the bottle")
    ledger.record_review("job001", "dana", "skip")
    with pytest.raises(ValueError, match="decision"):
        ledger.record_review("job001", "dana", "maybe")
    with pytest.raises(KeyError):
        ledger.record_review("no-such-job", "dana", "accept")
    catalog.close()

    with ledger_of(run_dir) as again:  # a new process: everything is still there
        history = again.review_history("job000")
        assert [(r.reviewer, r.decision, r.note) for r in history] == [
            ("dana", "accept", None),
            ("lee", "reject", "halo around the bottle"),
        ]
        assert history[0].backend == "cheap" and history[0].tier == "medium" and len(history[0].output_sha256) == 64
        assert again.review_item("job000")["decision"] == "reject"  # the latest decision counts
        counts = {(r["backend"], r["tier"]): r for r in again.decision_counts()}
        assert counts[("cheap", "medium")]["rejected"] == 1 and counts[("good", "medium")]["skipped"] == 1
        assert again.reviewers() == ["dana", "lee"]


def test_a_job_run_again_with_a_new_output_is_undecided_again_and_keeps_its_history(run_dir, tmp_path):
    catalog = Catalog(run_dir)
    catalog.sync()
    catalog.ledger.record_review("job002", "dana", "accept")
    # the same job id runs again on another picture: a new output, which nobody has judged yet
    manifest = tmp_path / "again.jsonl"
    entry = json.loads((tmp_path / "job.jsonl").read_text().splitlines()[2])
    gradient(64, 64).save(tmp_path / "square.png")
    mask_image(64, 64).save(tmp_path / "square-mask.png")
    entry.update(image=str(tmp_path / "square.png"), mask=str(tmp_path / "square-mask.png"))
    entry["prompt"] = "Replace the background with a beach"
    manifest.write_text(json.dumps(entry) + "\n")
    from pipeline.run import NullProgress, run_batch

    assert run_batch(manifest, load_policy(write_policy(tmp_path)), run_dir, progress=NullProgress()).ok
    assert catalog.sync() == 1
    item = catalog.ledger.review_item("job002")
    assert item["decision"] is None and item["prompt"] == "Replace the background with a beach"
    assert [r.decision for r in catalog.ledger.review_history("job002")] == ["accept"]
    catalog.close()


# ---- the index and its pages -------------------------------------------------------------------------------


def test_the_index_holds_what_the_page_shows(run_dir):
    catalog = Catalog(run_dir)
    catalog.sync()
    item = catalog.ledger.review_item("job000")
    assert item["backend"] == "cheap" and item["tier"] == "medium" and item["status"] == "done"
    assert item["tags"] == ["product", "ecommerce"] and item["prompt"].startswith("Replace the background")
    assert item["cost_usd"] == Decimal("0.004") and item["latency_ms"] is not None
    assert catalog.path(item["image_path"]).name == "shelf.png" and catalog.path(item["mask_path"]).is_file()
    assert catalog.path(item["output_path"]) == run_dir / "job000" / "0.png"
    assert catalog.stand_ins is None
    catalog.close()


def test_keyset_pages_walk_every_matching_job_once_both_ways(run_dir):
    catalog = Catalog(run_dir)
    catalog.sync()
    ledger = catalog.ledger
    for k in range(0, 80, 3):
        ledger.record_review(f"job{k:03d}", "dana", "accept" if k % 2 else "reject")

    def walk(where: ReviewFilter, driver: str | None = None) -> list[str]:
        seen, after = [], None
        while True:
            page = ledger.review_page(where, after=after, limit=7, driver=driver)
            if not page:
                return seen
            seen += [r["job_id"] for r in page]
            after = page[-1]["seq"]

    everything = walk(ReviewFilter())  # in the order the run recorded the jobs (its threads pick the order)
    assert sorted(everything) == [f"job{k:03d}" for k in range(80)]

    def expect(keep) -> list[str]:
        return [j for j in everything if keep(int(j[3:]))]

    cheap = walk(ReviewFilter(backend="cheap"))
    assert cheap == expect(lambda k: k % 2 == 0) and ledger.review_count(ReviewFilter(backend="cheap")) == 40
    assert walk(ReviewFilter(tag="ecommerce")) == cheap  # even-numbered jobs carry the tag
    assert walk(ReviewFilter(decision="reject")) == expect(lambda k: k % 3 == 0 and k % 2 == 0)
    assert walk(ReviewFilter(decision="none")) == expect(lambda k: k % 3 != 0)
    assert walk(ReviewFilter(backend="good", decision="accept")) == expect(lambda k: k % 3 == 0 and k % 2 == 1)
    assert ledger.review_count(ReviewFilter(backend="good", decision="accept")) == 13
    # whichever filter's index drives the query (the page picks the most selective), the pages are the same
    combined = ReviewFilter(backend="good", decision="none", tag="product", status="done", tier="medium")
    walks = {driver: walk(combined, driver) for driver in combined.given()}
    assert len({tuple(w) for w in walks.values()}) == 1 and walks["tag"] == expect(lambda k: k % 2 and k % 3)
    assert {ledger.review_count(combined, driver) for driver in combined.given()} == {len(walks["tag"])}
    seqs = {r["job_id"]: r["seq"] for r in ledger.review_page(ReviewFilter(), limit=100)}
    back = ledger.review_page(ReviewFilter(), before=seqs[everything[20]], limit=5)
    assert [r["job_id"] for r in back] == everything[15:20]
    catalog.close()


# ---- the page's API on loopback ----------------------------------------------------------------------------


def _base(url: str) -> str:
    return url.removesuffix("/v1")


def test_the_review_api_serves_pages_thumbnails_once_and_full_size_only_on_request(run_dir):
    app = create_review_app(run_dir, reviewer="dana")
    with running(app) as url, httpx.Client(base_url=_base(url), timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200 and "static/review.js" in page.text and "https://" not in page.text
        js = http.get("/static/review.js")
        assert js.status_code == 200 and "fetch(" in js.text and "http://" not in js.text and "https://" not in js.text
        assert http.get("/static/../app.py").status_code == 404

        summary = http.get("/api/summary").json()
        assert summary["reviewer"] == "dana" and summary["stand_ins"] is None
        assert {f["value"]: f["jobs"] for f in summary["facets"]["backend"]} == {"cheap": 40, "good": 40}
        first = http.get("/api/jobs", params={"limit": 25, "backend": "good"}).json()
        assert len(first["items"]) == 25 and first["matching"] == 40 and first["prev"] is None
        assert all(i["backend"] == "good" for i in first["items"]) and "image_path" not in first["items"][0]
        second = http.get("/api/jobs", params={"limit": 25, "backend": "good", "after": first["next"]}).json()
        assert len(second["items"]) == 15 and second["next"] is None and second["prev"] == second["items"][0]["seq"]
        back = http.get("/api/jobs", params={"limit": 25, "backend": "good", "before": second["prev"]}).json()
        assert [i["id"] for i in back["items"]] == [i["id"] for i in first["items"]]

        thumbs = run_dir / "job000" / ".thumbs"
        assert not thumbs.exists()  # nothing is made until someone looks
        for role in ("input", "mask", "output"):
            r = http.get(f"/api/jobs/job000/thumb/{role}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
        made = {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()}
        assert len(made) == 3
        http.get("/api/jobs/job000/thumb/output")
        assert {p.name: p.stat().st_mtime_ns for p in thumbs.iterdir()} == made  # cached, not made again
        full = http.get("/api/jobs/job000/full/output")
        assert full.status_code == 200 and full.content == (run_dir / "job000" / "0.png").read_bytes()
        assert http.get("/api/jobs/job000/full/secret").status_code == 404
        assert http.get("/api/jobs/..%2F..%2Fetc/full/input").status_code == 404
        assert http.get("/api/jobs/nope/thumb/input").status_code == 404

        detail = http.get("/api/jobs/job001").json()
        assert detail["reasons"] and detail["reasons"][0].startswith("capable") and detail["history"] == []
        decided = http.post("/api/jobs/job001/decision", json={"decision": "reject", "note": "seam on the left"})
        assert decided.status_code == 200 and decided.json()["item"]["decision"] == "reject"
        assert decided.json()["totals"]["rejected"] == 1
        assert http.get("/api/jobs/job001").json()["history"][0]["note"] == "seam on the left"
        # writes only from this page: a JSON body, same origin
        form = http.post(
            "/api/jobs/job001/decision", content=b'{"decision":"accept"}', headers={"content-type": "text/plain"}
        )
        assert form.status_code == 415
        other = http.post(
            "/api/jobs/job001/decision", json={"decision": "accept"}, headers={"origin": "https://evil.example"}
        )
        assert other.status_code == 403
        assert http.post("/api/jobs/job001/decision", json={"decision": "maybe"}).status_code == 400
        # a page on another name that resolves to 127.0.0.1 (DNS rebinding) gets nothing
        assert http.get("/api/summary", headers={"host": "evil.example"}).status_code == 403
        assert http.get("/api/quality.yaml").text.count("source: review") == 1
    with ledger_of(run_dir) as ledger:
        assert [r.decision for r in ledger.review_history("job001")] == ["reject"]


def test_serve_mounts_the_review_page_behind_its_keys(run_dir, tmp_path):
    from pipeline.commands.serve import mount_review
    from pipeline.serve import ServeConfig, build

    policy = write_policy(tmp_path, name="serve-policy.yaml")
    app, service, keys = build(ServeConfig(policy=policy, out_dir=run_dir), env={"EDITROUTE_API_KEYS": "k-1,k-2"})
    mount_review(app, service.out_dir, keys)
    with running(app) as url, httpx.Client(base_url=_base(url), timeout=10) as http:
        assert http.get("/review", follow_redirects=False).status_code in (307, 308)
        login = http.get("/review/")
        assert login.status_code == 401 and 'name="key"' in login.text
        assert http.get("/review/api/summary").status_code == 401
        assert http.get("/review/api/jobs/job000/full/output").status_code == 401
        bad = http.post("/review/login", data={"key": "wrong", "name": "dana"}, follow_redirects=False)
        assert bad.status_code == 303 and "failed" in bad.headers["location"]
        ok = http.post("/review/login", data={"key": "k-2", "name": "Dana"}, follow_redirects=False)
        cookie = ok.headers["set-cookie"].lower()
        assert (
            ok.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie and "path=/review" in cookie
        )
        assert http.get("/review/").status_code == 200
        assert http.get("/review/api/summary").json()["reviewer"] == "Dana"
        assert http.post("/review/api/jobs/job004/decision", json={"decision": "accept"}).status_code == 200
        scripted = httpx.get(f"{_base(url)}/review/api/summary", headers={"authorization": "Bearer k-1"})
        assert scripted.status_code == 200
        assert http.get("/healthz").json()["auth"] is True  # the edit API is untouched
    with ledger_of(run_dir) as ledger:
        assert [(r.reviewer, r.decision) for r in ledger.review_history("job004")] == [("Dana", "accept")]


# ---- export, policy, plan ----------------------------------------------------------------------------------


def test_wilson_interval():
    """Against the closed form and its textbook values (5 of 10: 0.237-0.763)."""
    assert tuple(round(x, 4) for x in wilson(5, 10)) == (0.2366, 0.7634)
    assert tuple(round(x, 4) for x in wilson(212, 240)) == (0.8366, 0.918)  # 88% ± 4%
    z2 = 1.959963984540054**2
    assert wilson(6, 6) == (pytest.approx(6 / (6 + z2)), 1.0)  # all accepted: the bound is n / (n + z^2)
    assert wilson(0, 6) == (0.0, pytest.approx(z2 / (6 + z2)))
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(5, 10)
    assert math.isclose(0.5 - low, high - 0.5)


def test_measured_quality_changes_the_route_and_plan_explains_why(run_dir, tmp_path, capsys):
    """The issue's constructed case: declared scores send product edits to the cheap self-hosted backend; people
    accept only 6 of its 40 edits and 38 of 40 API edits; with the exported file the plan sends them to the API,
    and --explain says the score is measured, how sure it is, and that cheap now misses min_quality."""
    review_by_backend(run_dir, {"cheap": 6, "good": 38})
    quality = tmp_path / "measured" / "quality.yaml"
    assert main(["review", str(run_dir), "--export", str(quality)]) == 0
    written = yaml.safe_load(quality.read_text())
    assert written["source"] == "review" and written["reviewers"] == ["dana"] and written["interval"] == "wilson 95%"
    assert written["quality"] == {"cheap": {"medium": 0.15}, "good": {"medium": 0.95}}
    cheap = written["samples"]["cheap"]["medium"]
    assert (cheap["accepted"], cheap["judged"], cheap["rejected"]) == (6, 40, 34)
    assert cheap["low"] == round(wilson(6, 40)[0], 4) and cheap["high"] == round(wilson(6, 40)[1], 4)
    assert "use it: add `quality_file:" in " ".join(capsys.readouterr().err.split())

    manifest = write_jobs(tmp_path / "next", "next", 3)
    declared = write_policy(tmp_path, name="declared.yaml")
    measured = write_policy(tmp_path, f"quality_file: {quality}\n", name="measured.yaml")
    assert main(["plan", str(manifest), "--policy", str(declared), "--explain"]) == 0
    before = capsys.readouterr().out
    assert before.count("-> cheap") == 3 and "quality at medium" not in before
    assert main(["plan", str(manifest), "--policy", str(measured), "--explain"]) == 0
    after = " ".join(capsys.readouterr().out.split())
    assert after.count("-> good") == 3
    assert (
        "quality at medium: cheap measured: 6/40 accepted (15% ± 11%); good measured: 38/40 accepted (95% ± 8%)"
        in after
    )
    assert "cheap (quality 0.15 is below min_quality 0.6)" in after


def test_too_few_judged_outputs_keep_the_declared_score_and_the_plan_says_so(run_dir, tmp_path, capsys):
    catalog = Catalog(run_dir)
    catalog.sync()
    for k, decision in zip(range(0, 12, 2), ["accept"] + ["reject"] * 5, strict=True):  # cheap: 1 of 6 accepted
        catalog.ledger.record_review(f"job{k:03d}", "dana", decision)
    catalog.close()
    quality = tmp_path / "few.yaml"
    assert main(["review", str(run_dir), "--export", str(quality)]) == 0
    manifest = write_jobs(tmp_path / "next", "next", 1)
    policy = write_policy(tmp_path, f"quality_file: {quality}\n", name="few-policy.yaml")
    assert load_policy(policy).score("cheap", "medium") == 0.8  # declared: 6 judged is under the 30 needed
    capsys.readouterr()
    assert main(["plan", str(manifest), "--policy", str(policy), "--explain"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "-> cheap" in out and "cheap declared 0.8 (measured 1/6 accepted: too few samples, needs 30)" in out
    assert "good declared 0.85" in out
    lowered = write_policy(tmp_path, f"quality_file: {quality}\nquality_min_samples: 5\n", name="five.yaml")
    assert load_policy(lowered).score("cheap", "medium") == pytest.approx(1 / 6, abs=1e-4)


def test_a_review_of_a_stand_in_run_is_marked_and_refused_as_routing_input(run_dir, tmp_path, caplog):
    (run_dir / "demo-policy.yaml").write_text("# made by editroute demo\n")  # what a demo folder holds
    review_by_backend(run_dir, {"cheap": 0, "good": 40})
    quality = tmp_path / "standin.yaml"
    assert main(["review", str(run_dir), "--export", str(quality)]) == 0
    assert yaml.safe_load(quality.read_text())["source"] == "stand-ins"
    assert "STAND-INS" in quality.read_text()
    policy = write_policy(tmp_path, f"quality_file: {quality}\nquality_min_samples: 5\n", name="standin-policy.yaml")
    with pytest.raises(ConfigError, match="STAND-INS"):
        load_policy(policy)
    opted = write_policy(
        tmp_path, f"quality_file: {quality}\nquality_min_samples: 5\nallow_stand_in_quality: true\n", name="opt.yaml"
    )
    with caplog.at_level("WARNING"):
        assert load_policy(opted).score("cheap", "medium") == 0.0
    assert "ROUTING ON STAND-IN SCORES" in caplog.text


def test_report_shows_cost_per_accepted_edit(run_dir, capsys):
    assert main(["report", str(run_dir), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["review"]["judged"] == 0 and plain["backends"][0]["cost_per_accepted_usd"] is None
    review_by_backend(run_dir, {"cheap": 24, "good": 38})
    assert main(["report", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    per = {b["backend"]: b for b in report["backends"]}
    # 40 cheap edits at $0.004 for 24 accepted; 40 API edits at $0.21 for 38 accepted
    assert per["cheap"]["cost_per_accepted_usd"] == "0.006666666666666666666666666667"
    assert per["good"]["cost_per_accepted_usd"].startswith("0.22105263")
    assert (per["good"]["accepted"], per["good"]["judged"]) == (38, 40)
    assert report["review"]["accepted"] == 62
    assert main(["report", str(run_dir), "--csv"]) == 0
    rows = {r["backend"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["cheap"]["accepted"] == "24" and rows["cheap"]["cost_per_accepted_usd"].startswith("0.00666")
    assert main(["report", str(run_dir)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "62 of 80 judged edits accepted; cost per accepted edit $0.1381" in text
    assert "│ good │ 38/40 │ 95% │ $0.2211 │" in text


def test_a_quality_file_is_checked_and_its_notes_are_the_loaders_alone(tmp_path):
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("source: vibes\nquality: {cheap: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bogus.yaml:1: source: expected: one of review, eval, stand-ins"):
        load_policy(write_policy(tmp_path, f"quality_file: {bogus}\n", name="p1.yaml"))
    with pytest.raises(ConfigError, match="quality_notes: set by editroute"):
        load_policy(write_policy(tmp_path, "quality_notes: {cheap: {low: measured}}\n", name="p2.yaml"))
    legacy = tmp_path / "legacy.yaml"  # an older `editroute eval` file: no source, no samples
    legacy.write_text("quality:\n  cheap: {medium: 0.5, high: 0.4}\n")
    policy = load_policy(write_policy(tmp_path, f"quality_file: {legacy}\n", name="p3.yaml"))
    assert policy.score("cheap", "medium") == 0.5 and policy.score("cheap", "low") == 0.8
    assert policy.quality_notes == {
        "cheap": {"medium": "measured: 0.5 (quality_file)", "high": "measured: 0.4 (quality_file)"}
    }
    with pytest.raises(ConfigError, match="quality_min_samples"):
        load_policy(write_policy(tmp_path, "quality_min_samples: 0\n", name="p4.yaml"))


def test_the_review_index_queries_never_scan_or_sort_the_whole_run(run_dir):
    """What keeps the page fast at 100,000 jobs, checked on SQLite's own query plans (no timing): replacing a job's
    tags finds them by key (they were scanned, so indexing 100,000 jobs took 452 s), each page streams in job order
    from one filter's index (never collects every match and sorts), the totals read covering indexes."""
    catalog = Catalog(run_dir)
    catalog.sync()
    conn = catalog.ledger._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    catalog.ledger.index_review_items([catalog.item(r) for r in catalog.ledger.jobs_to_index()])  # nothing to do
    catalog.ledger.index_review_items(
        [{**catalog.ledger.review_item("job000"), "cost_nusd": 4_000_000, "job_updated_at": 1}]
    )
    filters = [
        ReviewFilter(),
        ReviewFilter(tag="ecommerce"),
        ReviewFilter(decision="none", backend="good", tag="product"),
        ReviewFilter(status="done", tier="medium", decision="accept"),
    ]
    for where in filters:
        for driver in [None, *where.given()]:
            catalog.ledger.review_page(where, after=3, limit=5, driver=driver)
            catalog.ledger.review_page(where, before=70, limit=5, driver=driver)
    catalog.ledger.review_totals()
    conn.set_trace_callback(None)
    plans = {}
    for sql in statements:
        if sql.lstrip().upper().startswith(("SELECT", "DELETE")):
            plans[sql] = " | ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert any("DELETE FROM review_tags" in sql for sql in plans)
    for sql, plan in plans.items():
        assert "TEMP B-TREE FOR ORDER BY" not in plan, (sql, plan)
        if "review_tags" in sql and sql.startswith("DELETE"):
            assert "SEARCH" in plan, (sql, plan)
        if "GROUP BY" in sql and "review_items" in sql:
            assert "COVERING INDEX" in plan, (sql, plan)
    catalog.close()


def test_the_command_refuses_another_host_and_a_busy_port_before_indexing(run_dir, capsys):
    import socket

    assert main(["review", str(run_dir), "--host", "0.0.0.0"]) == 2
    assert "listens on loopback only" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["review", str(run_dir), "--port", str(busy.getsockname()[1])]) == 2
    assert "--port" in (err := capsys.readouterr().err) and "cannot listen there: already in use" in err
    with ledger_of(run_dir) as ledger:
        assert ledger.review_count(ReviewFilter()) == 0  # nothing was indexed: it failed first
    assert main(["review", str(run_dir.parent / "nowhere")]) == 2
    assert "no ledger here" in capsys.readouterr().err
