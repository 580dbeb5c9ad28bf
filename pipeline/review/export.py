"""People's decisions as measured quality: the acceptance rate per backend and tier, with its sample and a Wilson
score interval, written as a quality file a policy includes with `quality_file:`.

    rate = accepted / judged, judged = accepted + rejected (the latest decision on each job's current output;
    skips are counted but judge nothing)

Why Wilson (Wilson, 1927; the interval Agresti & Coull 1998 and Brown, Cai & DasGupta 2001 recommend over the
normal "Wald" interval): it stays inside 0..1 and keeps close to its nominal 95% coverage for small samples and
rates near 0 or 1, exactly where review samples live (5 of 6 accepted; 238 of 240). The policy replaces a declared
score only from `quality_min_samples` judged outputs (default 30): below that one decision moves the rate by more
than 3 points and the 95% interval is wider than ±15 points at a middling rate, wider than the gap between the
declared scores it would replace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.ledger import Ledger

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval
INTERVAL = "wilson 95%"


def wilson(accepted: int, judged: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: (low, high); (0, 1) with no sample."""
    if judged <= 0:
        return 0.0, 1.0
    p = accepted / judged
    z2 = z * z
    centre = (p + z2 / (2 * judged)) / (1 + z2 / judged)
    half = z * math.sqrt(p * (1 - p) / judged + z2 / (4 * judged * judged)) / (1 + z2 / judged)
    low = 0.0 if accepted == 0 else max(0.0, centre - half)  # exact at the ends (no 1e-17 from rounding)
    high = 1.0 if accepted == judged else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Measured:
    backend: str
    tier: str
    accepted: int
    rejected: int
    skipped: int

    @property
    def judged(self) -> int:
        return self.accepted + self.rejected

    @property
    def rate(self) -> float | None:
        return self.accepted / self.judged if self.judged else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.accepted, self.judged)

    def describe(self) -> str:
        """ "212/240 accepted (88% ± 4%)", ± being half the Wilson interval's width."""
        if not self.judged:
            return f"nothing judged ({self.skipped} skipped)"
        low, high = self.interval
        return f"{self.accepted}/{self.judged} accepted ({self.rate:.0%} ± {(high - low) / 2:.0%})"


def measure(ledger: Ledger) -> list[Measured]:
    return [
        Measured(r["backend"], r["tier"] or "unknown", r["accepted"] or 0, r["rejected"] or 0, r["skipped"] or 0)
        for r in ledger.decision_counts()
    ]


def quality_document(
    rows: list[Measured], *, run: Path, reviewers: list[str], stand_ins: str | None
) -> tuple[list[str], dict[str, Any]]:
    """(comment lines, the YAML mapping) of the quality file."""
    quality: dict[str, dict[str, float]] = {}
    samples: dict[str, dict[str, dict[str, Any]]] = {}
    for m in rows:
        if not m.judged or m.tier == "unknown":
            continue
        low, high = m.interval
        quality.setdefault(m.backend, {})[m.tier] = round(m.rate or 0.0, 4)
        samples.setdefault(m.backend, {})[m.tier] = {
            "accepted": m.accepted,
            "rejected": m.rejected,
            "judged": m.judged,
            "skipped": m.skipped,
            "low": round(low, 4),
            "high": round(high, 4),
        }
    head = [
        f"# Measured by people: `editroute review {run} --export` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "# quality: per backend and tier, the acceptance rate = accepted / (accepted + rejected), the latest",
        "#   decision on each job's current output (skips judge nothing).",
        "# samples: the counts and a 95% Wilson score interval (low, high) around each rate.",
        "# A policy includes this file with `quality_file:`; a rate replaces the declared score once `judged`",
        "#   reaches the policy's `quality_min_samples` (default 30), and `editroute plan --explain` says which won.",
    ]
    if stand_ins:
        head += [
            f"# STAND-INS: the reviewed outputs came from fake backends ({stand_ins}).",
            "#   A policy refuses this file unless it sets `allow_stand_in_quality: true` (demos and tests only).",
        ]
    doc = {
        "source": "stand-ins" if stand_ins else "review",
        "run": str(run),
        "reviewers": reviewers,
        "interval": INTERVAL,
        "quality": quality,
        "samples": samples,
    }
    return head, doc


def write_quality_file(ledger: Ledger, run: Path, target: Path, *, stand_ins: str | None) -> list[Measured]:
    """Write the quality file for this run's decisions to `target` (atomically); returns what it measured."""
    from pipeline.run import atomic_write_bytes

    rows = measure(ledger)
    head, doc = quality_document(rows, run=run, reviewers=ledger.reviewers(), stand_ins=stand_ins)
    text = "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode())
    return rows
