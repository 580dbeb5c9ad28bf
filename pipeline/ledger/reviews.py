"""People's review decisions on a run's outputs, and the review page's index of the run (schema v3).

    reviews       every decision ever made: job_id, reviewer, decision accept|reject|skip, note, at (unix ms),
                  and what was judged: backend, tier, output_sha256. Never updated or deleted (the history).
    review_items  one row per job, for the review page and the export: seq (the job's rowid in `jobs`: the
                  page's order and keyset cursor), status, backend, tier, cost, latency, prompt, tags, the files
                  to show, and the CURRENT decision: the latest review of this same output (a job run again with
                  other outputs is undecided again; its old decisions stay in `reviews`). Derived from `jobs` and
                  each job's result.json by `pipeline.review`, so it can be rebuilt at any time.
    review_tags   (seq, tag), indexed both ways: the tag filter without scanning, a job's tags replaced at once.

Mixed into `Ledger` (store.py), which provides `_conn` and `_write`. Everything the page asks is a keyset query
over an index (`seq`), so a page of 60 jobs costs the same at 100 jobs or 100,000.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipeline.ledger.schema import from_nusd, now_ms

Decision = Literal["accept", "reject", "skip"]
DECISIONS: tuple[Decision, ...] = ("accept", "reject", "skip")
UNDECIDED = "none"  # the decision filter's value for jobs nobody has decided yet

ITEM_COLUMNS = (
    "seq",
    "job_id",
    "status",
    "backend",
    "tier",
    "cost_nusd",
    "latency_ms",
    "prompt",
    "tags",
    "image_path",
    "mask_path",
    "output_path",
    "output_sha256",
    "error",
    "job_updated_at",
)


@dataclass(frozen=True)
class Review:
    id: int
    job_id: str
    reviewer: str
    decision: Decision
    note: str | None
    backend: str | None
    tier: str | None
    output_sha256: str | None
    at: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ReviewFilter:
    """What the page shows; None = any. `decision` is accept|reject|skip or `UNDECIDED`."""

    backend: str | None = None
    tag: str | None = None
    status: str | None = None
    decision: str | None = None
    tier: str | None = None

    def given(self) -> list[str]:
        return [f for f in FILTERS if getattr(self, f) is not None]

    def driver(self, wanted: str | None = None) -> str | None:
        """The filter whose index drives the query: `wanted` if given, else the first given in `FILTERS`."""
        given = self.given()
        return wanted if wanted in given else (given[0] if given else None)

    def query(self, select: str, driver: str | None = None) -> tuple[str, list[Any]]:
        """`SELECT {select} FROM ... WHERE ...` over the index (alias `i`), driven by one filter's index.

        The driver is the filter read through its index in job order, so a page streams and stops after `limit`
        rows: with several filters SQLite would otherwise pick an index, collect every match and sort them. The
        caller names the most selective filter (from the filters' counts); by default the first given in
        `FILTERS` order. The other filters are checked per row (unary + keeps SQLite off their indexes)."""
        driver = self.driver(driver)
        sql: list[str] = []
        args: list[Any] = []
        source = "review_items i"
        if driver == "tag":
            source = "review_tags d JOIN review_items i ON i.seq = d.seq"
        elif driver is not None:
            source = f"review_items i INDEXED BY review_items_{driver}"
        for column in ("backend", "status", "tier", "decision"):
            value = getattr(self, column)
            if value is None:
                continue
            plus = "" if column == driver else "+"
            if column == "decision" and value == UNDECIDED:
                sql.append(f"{plus}i.decision IS NULL")
            else:
                sql.append(f"{plus}i.{column}=?")
                args.append(value)
        if self.tag is not None:
            if driver == "tag":
                sql.append("d.tag=?")
            else:
                sql.append("EXISTS (SELECT 1 FROM review_tags t WHERE t.seq = i.seq AND t.tag = ?)")
            args.append(self.tag)
        return f"SELECT {select} FROM {source}" + (" WHERE " + " AND ".join(sql) if sql else ""), args


FILTERS = ("status", "decision", "tier", "tag", "backend")  # the default driver: the first one given


class ReviewsMixin:
    if TYPE_CHECKING:  # provided by Ledger

        def _conn(self) -> sqlite3.Connection: ...

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    # ---- decisions ----------------------------------------------------------------------------------------

    def record_review(self, job_id: str, reviewer: str, decision: Decision, note: str | None = None) -> Review:
        """Add a decision on the job's current output; it becomes the job's current decision. KeyError: the job
        is not in the review index; ValueError: not a decision, or the job has no output to judge."""
        if decision not in DECISIONS:
            raise ValueError(f"decision: expected one of {', '.join(DECISIONS)} (got {decision!r})")
        if not reviewer.strip():
            raise ValueError("reviewer: a name is needed (who decided)")
        t = now_ms()
        with self._write() as conn:
            item = conn.execute(
                "SELECT backend, tier, output_sha256, status FROM review_items WHERE job_id=?", (job_id,)
            ).fetchone()
            if item is None:
                raise KeyError(job_id)
            if item["status"] != "done" and decision != "skip":
                raise ValueError(f"job {job_id!r} is {item['status']}: there is no output to accept or reject")
            cur = conn.execute(
                "INSERT INTO reviews(job_id, reviewer, decision, note, backend, tier, output_sha256, at) "
                "VALUES(?,?,?,?,?,?,?,?)",
                (job_id, reviewer, decision, note or None, item["backend"], item["tier"], item["output_sha256"], t),
            )
            conn.execute("UPDATE review_items SET decision=?, decided_at=? WHERE job_id=?", (decision, t, job_id))
            row = conn.execute("SELECT * FROM reviews WHERE id=?", (cur.lastrowid,)).fetchone()
        return Review(**dict(row))

    def review_history(self, job_id: str) -> list[Review]:
        rows = self._conn().execute("SELECT * FROM reviews WHERE job_id=? ORDER BY id", (job_id,))
        return [Review(**dict(r)) for r in rows]

    def reviewers(self) -> list[str]:
        return [r[0] for r in self._conn().execute("SELECT DISTINCT reviewer FROM reviews ORDER BY reviewer")]

    def decision_counts(self) -> list[dict[str, Any]]:
        """Current decisions per backend and tier: accepted, rejected, skipped (for the quality export)."""
        rows = self._conn().execute(
            "SELECT backend, tier, SUM(decision='accept') AS accepted, SUM(decision='reject') AS rejected, "
            "SUM(decision='skip') AS skipped FROM review_items WHERE decision IS NOT NULL AND backend IS NOT NULL "
            "GROUP BY backend, tier ORDER BY backend, tier"
        )
        return [dict(r) for r in rows]

    # ---- the index ----------------------------------------------------------------------------------------

    def jobs_to_index(self) -> list[dict[str, Any]]:
        """Jobs the review index lacks or holds in an older state (their `updated_at` changed)."""
        rows = self._conn().execute(
            "SELECT j.rowid AS seq, j.id, j.status, COALESCE(j.backend, j.planned_backend) AS backend, "
            "j.cost_nusd, j.outputs, j.error, j.updated_at FROM jobs j LEFT JOIN review_items i ON i.seq = j.rowid "
            "WHERE i.seq IS NULL OR i.job_updated_at != j.updated_at OR i.job_id != j.id ORDER BY j.rowid"
        )
        return [dict(r) for r in rows]

    def index_review_items(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Insert or refresh index rows (`ITEM_COLUMNS`, `tags` a list). A row keeps its current decision if its
        output is the one that decision judged; otherwise the latest review of this output counts (or none)."""
        if not items:
            return
        with self._write() as conn:
            for item in items:
                row = {k: item.get(k) for k in ITEM_COLUMNS}
                tags = list(row["tags"] or ())
                row["tags"] = json.dumps(tags)
                conn.execute("DELETE FROM review_items WHERE seq=? OR job_id=?", (row["seq"], row["job_id"]))
                conn.execute("DELETE FROM review_tags WHERE seq=?", (row["seq"],))
                latest = conn.execute(
                    "SELECT decision, at FROM reviews WHERE job_id=? AND output_sha256 IS ? ORDER BY id DESC LIMIT 1",
                    (row["job_id"], row["output_sha256"]),
                ).fetchone()
                conn.execute(
                    f"INSERT INTO review_items({', '.join(ITEM_COLUMNS)}, decision, decided_at) "
                    f"VALUES({', '.join('?' * len(ITEM_COLUMNS))}, ?, ?)",
                    (*row.values(), *(latest if latest else (None, None))),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO review_tags(seq, tag) VALUES(?, ?)", [(row["seq"], t) for t in tags]
                )

    def review_page(
        self,
        where: ReviewFilter,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 60,
        driver: str | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `limit` index rows matching `where`, in job order, after the cursor `after` (a seq) or, going
        back, the `limit` rows just before `before`. `driver`: the most selective filter (`ReviewFilter.query`)."""
        query, args = where.query("i.*", driver)
        seq = "d.seq" if where.driver(driver) == "tag" else "i.seq"  # the driver's order: no sort, early stop
        order = "ASC"
        bound = []
        if before is not None:
            bound, order = [f"{seq} < ?"], "DESC"
            args.append(before)
        elif after is not None:
            bound = [f"{seq} > ?"]
            args.append(after)
        if bound:
            query += (" AND " if " WHERE " in query else " WHERE ") + bound[0]
        rows = [_item(r) for r in self._conn().execute(f"{query} ORDER BY {seq} {order} LIMIT ?", (*args, limit))]
        return rows[::-1] if order == "DESC" else rows

    def review_item(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM review_items WHERE job_id=?", (job_id,)).fetchone()
        return _item(row) if row else None

    def review_count(self, where: ReviewFilter, driver: str | None = None) -> int:
        query, args = where.query("COUNT(*)", driver)
        return self._conn().execute(query, args).fetchone()[0]

    def review_facets(self, *, decisions_only: bool = False) -> dict[str, list[dict[str, Any]]]:
        """The values each filter can take, with their job counts (`decisions_only`: just the decision counts,
        the only ones a decision changes)."""
        conn = self._conn()

        def counts(column: str) -> list[dict[str, Any]]:
            return [
                {"value": v, "jobs": n}
                for v, n in conn.execute(
                    f"SELECT {column}, COUNT(*) FROM review_items WHERE {column} IS NOT NULL "
                    f"GROUP BY {column} ORDER BY {column}"
                )
            ]

        if decisions_only:
            return {"decision": counts("decision")}
        return {
            "backend": counts("backend"),
            "tier": counts("tier"),
            "status": counts("status"),
            "decision": counts("decision"),
            "tag": [
                {"value": t, "jobs": n}
                for t, n in conn.execute("SELECT tag, COUNT(*) FROM review_tags GROUP BY tag ORDER BY tag")
            ],
        }

    def review_spend(self) -> dict[str, dict[str, int]]:
        """Per backend: jobs, done, cost_nusd (changes only when the index does; the page caches it)."""
        per: dict[str, dict[str, int]] = {}
        for backend, status, n, nusd in self._conn().execute(
            "SELECT backend, status, COUNT(*), COALESCE(SUM(cost_nusd), 0) FROM review_items "
            "WHERE backend IS NOT NULL GROUP BY backend, status"
        ):
            r = per.setdefault(backend, {"jobs": 0, "done": 0, "cost_nusd": 0})
            r["jobs"] += n
            r["done"] += n if status == "done" else 0
            r["cost_nusd"] += nusd
        return per

    def review_totals(self, spend: Mapping[str, Mapping[str, int]] | None = None) -> list[dict[str, Any]]:
        """Per backend: jobs, done, decided, accepted, rejected, the cost of the jobs judged (accept or reject)
        and of all its jobs, and the cost per accepted edit = cost of judged jobs / accepted (None before any
        acceptance): what a usable image cost there, the rejected attempts included. `spend`: `review_spend()`
        if the caller has it; the decided rows are one scan of a covering index, fast at 100k jobs."""
        spend = self.review_spend() if spend is None else spend
        per = {
            b: {"backend": b, **s, "judged": 0, "accepted": 0, "rejected": 0, "skipped": 0, "judged_nusd": 0}
            for b, s in spend.items()
        }
        for decision, backend, n, nusd in self._conn().execute(
            "SELECT decision, backend, COUNT(*), COALESCE(SUM(cost_nusd), 0) FROM review_items "
            "WHERE decision IS NOT NULL AND backend IS NOT NULL GROUP BY decision, backend"
        ):
            r = per.setdefault(
                backend,
                {
                    "backend": backend,
                    "jobs": 0,
                    "done": 0,
                    "cost_nusd": 0,
                    "judged": 0,
                    "accepted": 0,
                    "rejected": 0,
                    "skipped": 0,
                    "judged_nusd": 0,
                },
            )
            r[{"accept": "accepted", "reject": "rejected", "skip": "skipped"}[decision]] += n
            if decision != "skip":
                r["judged"] += n
                r["judged_nusd"] += nusd
        out = []
        for backend in sorted(per):
            d = dict(per[backend])
            d["cost_usd"] = from_nusd(d.pop("cost_nusd"))
            d["judged_cost_usd"] = judged = from_nusd(d.pop("judged_nusd"))
            d["cost_per_accepted_usd"] = judged / d["accepted"] if d["accepted"] else None
            out.append(d)
        return out


def _item(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["tags"] = json.loads(d["tags"]) if d["tags"] else []
    d["cost_usd"] = from_nusd(d.pop("cost_nusd"))
    return d
