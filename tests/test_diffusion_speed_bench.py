"""The diffusion speed benchmark runs on the CPU with --tiny (the same code the device run uses, on the stand-ins),
and the full-size architectures it builds on a GPU assemble (on the meta device: no memory, no download)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_tiny_run_times_the_whole_edit_against_plain_diffusers(tmp_path):
    # klein only: the other families run the same code with their own configs (and Qwen's tiny edit costs ~1 s)
    args = ["--tiny", "--families", "flux2-klein", "--rows", "plain,editroute,fp8,fbcache"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.diffusion_speed",
            *args,
            "--warmup",
            "0",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "speed.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    paths = {(r["family"], r["path"]) for r in rows if "error" not in r}
    assert paths >= {
        ("flux2-klein", "plain diffusers"),
        ("flux2-klein", "editroute"),
        ("flux2-klein", "editroute + fp8"),
    }
    assert ("flux2-klein", "editroute + fbcache") not in paths  # klein's blocks do not take the cache hook
    ours = [r for r in rows if r["path"].startswith("editroute") and "error" not in r]
    assert all(r["seconds_per_image"] >= r["pipeline_s"] > 0 and r["vs_plain"] > 0 for r in ours)
    assert "| family | path |" in out.stdout and "whole edit timed" in out.stdout


def test_full_architectures_assemble_on_the_meta_device():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.diffusion_arch", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "qwen-edit: QwenImageEditPlusPipeline transformer 20.43B, text_encoder 8.29B" in out.stdout
    assert "flux2-klein: Flux2KleinPipeline transformer 3.88B, text_encoder 4.02B" in out.stdout
