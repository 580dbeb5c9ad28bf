"""`quality_file:` in a policy: measured scores that replace declared ones, and the note that says which won.

A quality file (written by `editroute review --export` or `editroute eval`) holds:

    source: review            # review (people's accept/reject) | eval (metrics) | stand-ins (fake backends)
    quality:                  # per backend and tier, 0..1: the acceptance rate, or the eval's mean score
      api: {medium: 0.883}
    samples:                  # optional, per backend and tier
      api:
        medium: {accepted: 212, judged: 240, low: 0.836, high: 0.918}   # review: Wilson 95% interval
      sdxl: {low: {runs: 24}}                                          # eval: how many runs were scored

A measured acceptance rate replaces the declared score only when at least `quality_min_samples` outputs were
judged (policy setting, default 30); below that the declared score stays and the note says so. Scores measured on
stand-ins are refused unless the policy sets `allow_stand_in_quality: true`, and then logged loudly.
A file without `source:` (older `editroute eval` output) overrides as before.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.configfile import YamlDoc, load_yaml, problem_line
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

TIERS = ("low", "medium", "high")
SCORED = (*TIERS, "auto")
DEFAULT_MIN_SAMPLES = 30
SOURCES = ("review", "eval", "stand-ins")
STAND_INS = "stand-ins"


def percent(x: float) -> str:
    return f"{x:.0%}"


def measured_note(entry: dict[str, Any], score: float, source: str) -> str:
    """How a measured score reads in `plan --explain`: "measured: 212/240 accepted (88% ± 4%)"."""
    where = " on STAND-INS" if source == STAND_INS else ""
    if "judged" in entry:
        text = f"measured{where}: {entry['accepted']}/{entry['judged']} accepted ({percent(score)}"
        if all(isinstance(entry.get(k), int | float) for k in ("low", "high")):
            text += f" ± {percent((entry['high'] - entry['low']) / 2)}"
        return text + ")"
    if "runs" in entry:
        return f"measured{where} by eval: {score:g} over {entry['runs']} run(s)"
    return f"measured{where}: {score:g} (quality_file)"


def _count(entry: Any, key: str) -> int | None:
    v = entry.get(key) if isinstance(entry, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _setting(data: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    """A policy setting read before validation (a wrong value falls back here; pydantic reports it later)."""
    v = data.get(key, default)
    return v if isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) else default


def merge_quality_file(data: dict[str, Any], doc: YamlDoc) -> list[str]:
    """Fold `quality_file:` into `data["quality"]` (per tier) and record in `data["quality_notes"]` where each
    backend's score came from. Returns problems (line-exact messages); raises nothing."""
    if "quality_notes" in data:
        return [problem_line(doc, doc.path, ["quality_notes"], "set by editroute from quality_file:, not by hand")]
    rel = data.get("quality_file")
    if not rel:
        return []
    if not isinstance(rel, str):
        return [problem_line(doc, doc.path, ["quality_file"], "expected: a path to a YAML file", rel)]
    path = (doc.path.parent / rel).resolve()
    try:
        qdoc = load_yaml(path, "quality file")
    except ConfigError as exc:
        return [problem_line(doc, doc.path, ["quality_file"], str(exc))]
    top = qdoc.data if isinstance(qdoc.data, dict) else {}
    block = top.get("quality")
    if not isinstance(block, dict):
        return [
            problem_line(qdoc, path, ["quality"], "expected: a `quality:` mapping of backend -> {low, medium, high}")
        ]
    source = top.get("source")
    if source is not None and source not in SOURCES:
        return [problem_line(qdoc, path, ["source"], f"expected: one of {', '.join(SOURCES)}", source)]
    if source == STAND_INS:
        if not _setting(data, "allow_stand_in_quality", False, bool):
            return [
                problem_line(
                    doc,
                    doc.path,
                    ["quality_file"],
                    f"{path} was measured on STAND-INS (source: stand-ins: fake backends whose outputs are noise), "
                    "so its scores say nothing about your backends and this policy will not route on them. Measure "
                    "on your real backends (`editroute eval` without --stand-ins, or `editroute review` over a real "
                    "run), or set `allow_stand_in_quality: true` to try it anyway (demos and tests only)",
                )
            ]
        log.warning(
            "%s: ROUTING ON STAND-IN SCORES from %s (allow_stand_in_quality: true): they come from fake backends "
            "and say nothing about real ones; use this for demos and tests only",
            doc.path,
            path,
        )
    samples = top.get("samples") if isinstance(top.get("samples"), dict) else {}
    min_samples = _setting(data, "quality_min_samples", DEFAULT_MIN_SAMPLES, int)
    declared = dict(data.get("quality") or {})
    notes: dict[str, dict[str, str]] = {}
    for name, scores in block.items():
        if name not in (data.get("backends") or {}):
            continue  # measured for a backend this policy does not use
        if isinstance(scores, int | float) and not isinstance(scores, bool):
            scores = {t: scores for t in TIERS}
        if not isinstance(scores, dict):
            return [problem_line(qdoc, path, ["quality", name], "expected: {low, medium, high} scores", scores)]
        measured = {k: v for k, v in scores.items() if k in SCORED}
        bad = [
            k for k, v in measured.items() if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1
        ]
        if bad:  # blame the quality file, not the policy the scores are merged into
            return [
                problem_line(qdoc, path, ["quality", name, k], "expected: a score from 0 to 1", measured[k])
                for k in bad
            ]
        base = declared.get(name)
        base = {t: base for t in TIERS} if isinstance(base, int | float) else dict(base or {})
        counts = samples.get(name) if isinstance(samples.get(name), dict) else {}
        for tier, score in measured.items():
            entry = counts.get(tier) if isinstance(counts.get(tier), dict) else {}
            judged, accepted = _count(entry, "judged"), _count(entry, "accepted")
            note = measured_note(entry, score, source)
            if judged is not None and judged < min_samples:
                few = f"measured {accepted}/{judged} accepted: too few samples, needs {min_samples}"
                was = base.get(tier, base.get("high") if tier == "auto" else None)
                if isinstance(was, int | float) and not isinstance(was, bool):
                    notes.setdefault(name, {})[tier] = f"declared {was:g} ({few})"
                    continue
                note += f"; too few samples (needs {min_samples}) but nothing is declared"
            base[tier] = score
            notes.setdefault(name, {})[tier] = note
        declared[name] = base
    data["quality"] = declared
    data["quality_notes"] = notes
    return []


def quality_note(notes: dict[str, dict[str, str]], backend: str, tier: str, score: float) -> str:
    """Where `backend`'s score at `tier` came from, for a policy with a quality file."""
    mine = notes.get(backend, {})
    note = mine.get(tier) or (mine.get("high") if tier == "auto" and "auto" not in mine else None)
    return note or f"declared {score:g}"
