"""The review page in a real headless browser: Debian's chromium and chromedriver through selenium (no browser
download). `editroute demo` makes a run; `editroute review` serves it from a subprocess; a reviewer rejects every
self-hosted edit and accepts the API's with the keyboard (one with a note), opens before/after; the decisions are in
the ledger; the exported quality file is marked as stand-in scores, refused by a plain policy, and with the opt-in
it sends the masked product edits from the self-hosted backend to the API, which `plan --explain` says.
Screenshots go to a temporary folder whose path is printed (EDITROUTE_TEST_ARTIFACTS chooses another)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.commands.demo import ROOT
from pipeline.ledger import Ledger

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)
REVIEWER = "Robin (browser test)"


def chrome(user_data: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data}",
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture()
def review_server(tmp_path, tiny_sdxl_dir, capsys):
    """`editroute demo --out tmp` then `editroute review tmp` on a free port; yields (url, out folder)."""
    assert main(["demo", "--out", str(tmp_path / "demo"), "--sdxl-dir", str(tiny_sdxl_dir), "--json"]) == 0
    out = tmp_path / "demo" / "balanced"  # each demo policy runs in its own folder
    capsys.readouterr()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "review", str(out), "--port", "0", "--reviewer", REVIEWER],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    url, seen = None, []
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if "editroute review: http://" in line:
            url = line.split("editroute review: ", 1)[1].split()[0]
    if url is None:
        proc.kill()
        pytest.fail("editroute review did not start:\n" + "".join(seen))
    assert any("STAND-INS" in line for line in seen)  # the command says the run was made on stand-ins
    try:
        yield url, out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def artefacts() -> Path:
    folder = Path(os.environ.get("EDITROUTE_TEST_ARTIFACTS") or tempfile.mkdtemp(prefix="editroute-review-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nreview page screenshots: {folder}", file=sys.__stderr__)
    return folder


def test_a_reviewer_decides_with_the_keyboard_and_the_export_changes_the_next_plan(review_server, tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, out = review_server
    shots = artefacts()
    browser = chrome(tmp_path / "chromium-profile")
    wait = WebDriverWait(browser, 20)

    def cards() -> list[dict[str, str]]:  # read in one go in the page: cards are replaced as decisions land
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#grid .card'))"
            ".map(c => ({id: c.dataset.id, backend: c.dataset.backend, decision: c.dataset.decision}))"
        )

    def show(backend: str) -> list[str]:
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-filter="backend"]')).select_by_value(backend)
        wait.until(lambda _: (now := cards()) and all(c["backend"] == backend for c in now))
        return [c["id"] for c in cards()]

    def typed(*text: str) -> None:
        browser.find_element(By.TAG_NAME, "body").send_keys(*text)

    def all_decided(decision: str) -> bool:
        return all(c["decision"] == decision for c in cards())

    try:
        browser.get(url)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert "STAND-INS" in browser.find_element(By.ID, "standins").text
        assert browser.find_element(By.ID, "reviewer").text == REVIEWER
        wait.until(lambda b: b.execute_script("return [...document.images].every(i => i.complete)"))
        browser.save_screenshot(str(shots / "1-grid.png"))

        local = show("sdxl-local")
        assert len(local) >= 2
        typed("n")  # a note for the first one, then reject it; the rest rejected as fast as one types
        wait.until(lambda b: b.find_element(By.ID, "notebox").get_attribute("open") is not None)
        browser.switch_to.active_element.send_keys("noise where the backdrop should be", Keys.ENTER)
        wait.until(lambda b: b.find_element(By.ID, "notebox").get_attribute("open") is None)
        typed("r" * len(local))
        wait.until(lambda _: all_decided("reject"))

        api = show("api")
        typed("a" * len(api))
        wait.until(lambda _: all_decided("accept"))
        loaded = "return performance.getEntriesByType('resource').map(e => e.name)"
        assert not [u for u in browser.execute_script(loaded) if "/full/" in u]  # the grid loads thumbnails only
        typed(Keys.ARROW_LEFT * len(api), Keys.ENTER)  # back to the first, open before/after
        wait.until(lambda b: b.find_element(By.ID, "viewer").is_displayed())
        wait.until(lambda b: b.execute_script("return document.getElementById('v-after').naturalWidth") > 0)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#v-reasons li")) > 0)
        assert browser.find_element(By.ID, "v-id").text == api[0]
        full = {u.split("/api/jobs/")[1] for u in browser.execute_script(loaded) if "/full/" in u}
        assert {f.split("?")[0] for f in full} == {f"{api[0]}/full/input", f"{api[0]}/full/output"}
        browser.save_screenshot(str(shots / "2-before-after.png"))
        typed(Keys.ESCAPE)
        wait.until(lambda b: not b.find_element(By.ID, "viewer").is_displayed())
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-filter="backend"]')).select_by_value("")
        wait.until(lambda b: f"{len(api)} accepted" in b.find_element(By.ID, "totals").text)
        browser.execute_script("window.scrollTo(0, 0)")  # the totals: accepted, cost per accepted edit
        browser.save_screenshot(str(shots / "3-decided.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []  # no failed request, no script error, nothing fetched from outside
    finally:
        browser.quit()

    with Ledger.in_dir(out) as ledger:  # the decisions are in the ledger, with who made them
        for job in local:
            history = ledger.review_history(job)
            assert [(r.reviewer, r.decision, r.backend) for r in history] == [(REVIEWER, "reject", "sdxl-local")]
        assert ledger.review_history(local[0])[0].note == "noise where the backdrop should be"
        assert all(ledger.review_item(job)["decision"] == "accept" for job in api)

    quality = tmp_path / "quality.yaml"
    assert main(["review", str(out), "--export", str(quality)]) == 0
    assert "source: stand-ins" in quality.read_text()
    manifest = ROOT / "examples" / "all.jsonl"
    plain = tmp_path / "measured.yaml"
    plain.write_text((out / "demo-policy.yaml").read_text() + f"quality_file: {quality}\nquality_min_samples: 2\n")
    capsys.readouterr()
    assert main(["plan", str(manifest), "--policy", str(plain)]) == 2  # refused: scores from stand-ins
    assert "STAND-INS" in capsys.readouterr().err
    opted = tmp_path / "opted-in.yaml"
    opted.write_text(plain.read_text() + "allow_stand_in_quality: true\n")
    assert main(["plan", str(manifest), "--policy", str(out / "demo-policy.yaml"), "--explain"]) == 0
    before = capsys.readouterr().out
    assert main(["plan", str(manifest), "--policy", str(opted), "--explain"]) == 0
    after = " ".join(capsys.readouterr().out.split())
    assert "ecom-mug -> sdxl-local" in before and "ecom-mug -> api" in after
    assert f"sdxl-local measured on STAND-INS: 0/{len(local)} accepted" in after  # the demo's are all medium
    assert "sdxl-local (quality 0 is below min_quality 0.6)" in after
