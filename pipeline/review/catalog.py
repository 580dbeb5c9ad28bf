"""A run folder as the review page sees it: each job's row in the ledger's review index, filled from the `jobs`
table and the job's `result.json`, and whether the run was made on stand-ins.

`Catalog.sync()` indexes only jobs that are new or changed since the last sync (their `updated_at` moved), in
chunks of `CHUNK` per write transaction so a run still writing the same ledger is never held up for long. The
first sync of a 100,000-job run reads 100,000 small JSON files once (benchmarks/review_scale.py measures it);
later ones cost one indexed query.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.ledger import UNDECIDED, Ledger, ReviewFilter
from pipeline.run import RESULT_FILE, open_existing_ledger

log = logging.getLogger(__name__)

CHUNK = 2000
RUNS_DIR = "runs"  # `editroute eval` keeps its runs under DIR/runs/ beside its ledger
# How a run folder says it was made on stand-ins (fake backends): `editroute demo` and `eval --stand-ins` write
# the marker; the policy copies they leave behind say the same for folders made before the marker existed.
STAND_IN_MARKER = "STAND-INS.txt"
STAND_IN_POLICIES = ("demo-policy.yaml", "standin-policy.yaml")


def stand_in_reason(out_dir: Path) -> str | None:
    """Why this run folder's outputs came from stand-ins (None: nothing says so)."""
    marker = out_dir / STAND_IN_MARKER
    if marker.is_file():
        first = marker.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return f"{marker.name}: {first[0] if first else 'made on stand-ins'}"
    for name in STAND_IN_POLICIES:
        if (out_dir / name).is_file():
            return f"{name}: this folder was made by editroute on local stand-ins"
    return None


def write_stand_in_marker(out_dir: Path, what: str) -> None:
    """Mark a run folder as made on stand-ins (`editroute demo`, `eval --stand-ins`); `what` names them."""
    (out_dir / STAND_IN_MARKER).write_text(
        f"{what}\nOutputs here come from local stand-ins (fake backends), not real services or models: "
        "review them to try the review page, never to measure quality a policy routes on.\n",
        encoding="utf-8",
    )


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


class Catalog:
    """The review index of one run folder (`OUT/editroute.db` plus `OUT/<job>/result.json`)."""

    def __init__(self, out_dir: str | Path, ledger: Ledger | None = None) -> None:
        self.out_dir = Path(out_dir).resolve()
        self.ledger = ledger if ledger is not None else open_existing_ledger(self.out_dir)
        self.stand_ins = stand_in_reason(self.out_dir)
        self._sync_lock = threading.Lock()
        self._synced_at = 0.0
        self._cached: dict[str, Any] = {}  # what only a sync changes: spend per backend, the filters' values

    def close(self) -> None:
        self.ledger.close()

    def job_dir(self, job_id: str) -> Path:
        here = self.out_dir / job_id
        if not here.is_dir() and (self.out_dir / RUNS_DIR / job_id).is_dir():
            return self.out_dir / RUNS_DIR / job_id
        return here

    def result(self, job_id: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.job_dir(job_id) / RESULT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def path(self, stored: str | None) -> Path | None:
        """A path from the index: outputs are relative to the folder the run wrote them in, inputs absolute."""
        if not stored:
            return None
        p = Path(stored)
        if p.is_absolute():
            return p
        here = self.out_dir / p
        return here if here.exists() or not (self.out_dir / RUNS_DIR / p).exists() else self.out_dir / RUNS_DIR / p

    # ---- indexing -------------------------------------------------------------------------------------------

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        """One index row from a `jobs` row (`Ledger.jobs_to_index`) and the job's result.json."""
        item: dict[str, Any] = {
            "seq": row["seq"],
            "job_id": row["id"],
            "status": row["status"],
            "backend": row["backend"],
            "cost_nusd": row["cost_nusd"],
            "error": row["error"],
            "job_updated_at": row["updated_at"],
            "tags": [],
        }
        outputs = json.loads(row["outputs"]) if row["outputs"] else []
        if outputs:
            item["output_path"] = outputs[0].get("path")
            item["output_sha256"] = outputs[0].get("sha256")
        data = self.result(row["id"]) if row["status"] == "done" else None
        if data is None:
            return item
        asked = data.get("request") if isinstance(data.get("request"), dict) else {}
        timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
        images = asked.get("images") or [None]
        mask = asked.get("mask")
        if mask is None:  # an inferred mask is kept beside the outputs as an artifact
            artifacts = [str(a.get("path")) for a in data.get("artifacts") or [] if isinstance(a, dict)]
            mask = next((p for p in artifacts if p.endswith("/mask.png")), None)
        total_s = timings.get("total_s")
        item.update(
            backend=data.get("backend") or row["backend"],
            tier=asked.get("quality") or data.get("quality"),
            prompt=asked.get("prompt"),
            tags=[str(t) for t in data.get("tags") or []],
            image_path=images[0],
            mask_path=mask,
            latency_ms=round(total_s * 1000) if isinstance(total_s, int | float) else None,
        )
        return item

    def sync(self) -> int:
        """Index new and changed jobs; returns how many rows were written."""
        with self._sync_lock:
            todo = self.ledger.jobs_to_index()
            for chunk in _chunks(todo, CHUNK):
                self.ledger.index_review_items([self.item(row) for row in chunk])
            self._synced_at = time.monotonic()
            if todo:
                self._cached.clear()
        if todo:
            log.info("review index: %d job(s) indexed", len(todo))
        return len(todo)

    def refresh(self, min_interval_s: float = 2.0) -> None:
        """Pick up jobs a running batch finished since the last look (at most every `min_interval_s`)."""
        if time.monotonic() - self._synced_at >= min_interval_s:
            self.sync()

    # ---- what the page shows above the grid --------------------------------------------------------------------

    def totals(self) -> list[dict[str, Any]]:
        """`Ledger.review_totals`, the spend part cached until the next sync writes (a decision stays fast)."""
        if "spend" not in self._cached:
            self._cached["spend"] = self.ledger.review_spend()
        return self.ledger.review_totals(self._cached["spend"])

    def facets(self) -> dict[str, list[dict[str, Any]]]:
        if "facets" not in self._cached:
            self._cached["facets"] = self.ledger.review_facets()
        return {**self._cached["facets"], **self.ledger.review_facets(decisions_only=True)}

    def driver(self, where: ReviewFilter) -> str | None:
        """The filter that matches the fewest jobs (from the filters' counts): its index drives the page's query."""
        facets = self.facets()
        total = sum(f["jobs"] for f in facets["status"])

        def matches(name: str) -> int:
            value = getattr(where, name)
            if name == "decision" and value == UNDECIDED:
                return total - sum(f["jobs"] for f in facets["decision"])
            return next((f["jobs"] for f in facets[name] if f["value"] == value), 0)

        given = where.given()
        return min(given, key=matches) if given else None
