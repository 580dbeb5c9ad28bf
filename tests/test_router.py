"""Router behaviour a user would notice: where each job goes, and why."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipeline.jobs import validate_manifest
from pipeline.routing import InMemorySpend, Router, build_backends, load_policy
from tests.routing_helpers import EXAMPLES, SHIPPED, job, make_router

# ---- capability filter ------------------------------------------------------------------------------


def test_maskless_job_never_goes_where_a_mask_is_required(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest}\n")
    assert router.route(job(mask=True)).backend == "cheap"
    d = router.route(job(mask=False))
    assert d.backend == "pricey"
    assert any("cheap cannot run this job" in r and "mask" in r for r in d.reasons)
    excluded = {a.backend: a.excluded for a in d.alternatives}
    assert "mask" in excluded["cheap"]


def test_sixteen_image_composite_and_transparent_background_skip_the_limited_backend(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest}\n")
    assert router.route(job(images=16)).backend == "pricey"
    assert router.route(job(background="transparent")).backend == "pricey"


def test_a_use_rule_cannot_force_a_job_where_it_cannot_run(tmp_path):
    router, *_ = make_router(tmp_path, "rules:\n  - {use: cheap}\n")
    d = router.route(job(mask=False))
    assert d.backend == "pricey"
    assert any("use cheap skipped" in r for r in d.reasons)


def test_pinned_job_still_gets_the_capability_check(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: best_quality}\n")
    assert router.route(job(backend="cheap")).backend == "cheap"  # pin beats the objective
    d = router.route(job(backend="cheap", mask=False))
    assert d.backend is None and not d.routable
    assert any("pinned to cheap, but cheap cannot run this job" in r for r in d.reasons)
    assert router.route(job(backend="nope")).backend is None


def test_no_capable_backend_is_held_with_a_reason(tmp_path):
    router, *_ = make_router(tmp_path, "")
    d = router.route(job(n=10, output_format="jpeg", background="transparent", mask=False))
    # pricey can run it (no limits); make one nobody can: 17 images are over every cap
    assert d.backend == "pricey"
    d = router.route(job(images=17))
    assert d.backend is None and "no backend in this policy can run this job" in d.reasons[-1]


# ---- rules -----------------------------------------------------------------------------------------

WHEN_CASES = [
    ("{quality: high}", {"quality": "high"}, {"quality": "low"}),
    ("{has_mask: true}", {}, {"mask": False}),  # the unmatched job has no mask: pricey anyway, so check reason
    ("{images: 1}", {"images": 1}, {"images": 2}),
    ("{n: {min: 5}}", {"n": 5}, {"n": 4}),
    ("{size: [1536x1024]}", {"size": "1536x1024"}, {"size": "1024x1024"}),
    ("{background: opaque}", {"background": "opaque"}, {"background": "auto"}),
    ("{tags: [text, logo]}", {"tags": ("logo",)}, {"tags": ("product",)}),
    ("{tags: {all: [text, fr]}}", {"tags": ("text", "fr", "x")}, {"tags": ("text",)}),
    ("{prompt_length: {max: 10}}", {"prompt": "short"}, {"prompt": "a much longer prompt"}),
    ("{prompt_regex: '(?i)\\bSALE\\b'}", {"prompt": "swap the Sale badge"}, {"prompt": "wholesale"}),
]


@pytest.mark.parametrize(("when", "hit", "miss"), WHEN_CASES, ids=[c[0] for c in WHEN_CASES])
def test_each_when_condition_selects_its_jobs(tmp_path, when, hit, miss):
    router, *_ = make_router(
        tmp_path, f"rules:\n  - name: r\n    when: {when}\n    use: pricey\nobjective: {{type: cheapest}}\n"
    )
    d_hit = router.route(job(**hit))
    assert d_hit.backend == "pricey"
    assert any(r.startswith("rule 'r'") and r.endswith("use pricey") for r in d_hit.reasons)
    d_miss = router.route(job(**miss))
    assert not any(r.startswith("rule 'r'") for r in d_miss.reasons)
    if miss.get("mask", True) and miss.get("images", 1) == 1:
        assert d_miss.backend == "cheap"


def test_first_matching_use_rule_wins(tmp_path):
    router, *_ = make_router(
        tmp_path,
        """
        rules:
          - {name: a, when: {tags: [x]}, use: pricey}
          - {name: b, use: cheap}
        objective: {type: best_quality}
        """,
    )
    assert router.route(job(tags=("x",))).backend == "pricey"
    assert router.route(job()).backend == "cheap"  # rule b beats the best_quality objective


def test_prefer_and_avoid_rank_within_the_objective(tmp_path):
    router, *_ = make_router(
        tmp_path,
        """
        rules:
          - {when: {tags: [product]}, prefer: cheap}
          - {when: {tags: [hero]}, avoid: cheap}
        objective: {type: best_quality}
        """,
    )
    assert router.route(job()).backend == "pricey"
    d = router.route(job(tags=("product",)))
    assert d.backend == "cheap"
    assert {a.backend: a.excluded for a in d.alternatives}["pricey"] == "ranked below a preferred backend"
    # the first rule that names a backend decides its rank
    assert router.route(job(tags=("product", "hero"))).backend == "cheap"


def test_avoid_is_soft_when_nothing_else_can_run_it(tmp_path):
    router, *_ = make_router(tmp_path, "rules:\n  - {avoid: pricey}\n")
    assert router.route(job(mask=False)).backend == "pricey"
    assert router.route(job()).backend == "cheap"


# ---- objectives --------------------------------------------------------------------------------------


def test_cheapest_meeting_min_quality(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest, min_quality: 0.65}\n")
    assert router.route(job(quality="high")).backend == "cheap"  # 0.7 >= 0.65
    d = router.route(job(quality="medium"))  # cheap scores 0.6
    assert d.backend == "pricey"
    assert "below min_quality 0.65" in {a.backend: a.excluded for a in d.alternatives}["cheap"]


def test_best_quality_under_max_cost_per_image(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: best_quality, max_cost_per_image: 0.01}\n")
    d = router.route(job(quality="high"))
    assert d.backend == "cheap"
    assert "over max_cost_per_image" in {a.backend: a.excluded for a in d.alternatives}["pricey"]
    router, *_ = make_router(tmp_path, "objective: {type: best_quality, max_cost_per_image: 0.10}\n")
    assert router.route(job(quality="high")).backend == "pricey"


def test_unmet_objective_relaxes_or_refuses(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest, min_quality: 0.95}\n")
    d = router.route(job())
    assert d.backend == "cheap" and any("relaxed" in r for r in d.reasons)
    router, *_ = make_router(tmp_path, "objective: {type: cheapest, min_quality: 0.95, when_unmet: refuse}\n")
    d = router.route(job())
    assert d.backend is None and any("when_unmet: refuse" in r for r in d.reasons)


def test_auto_quality_is_scored_as_high_unless_given(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest, min_quality: 0.65}\n")
    assert router.route(job(quality="auto")).backend == "cheap"  # cheap's high score is 0.7


# ---- budgets ------------------------------------------------------------------------------------------


def test_budget_stop_holds_the_job_once_its_estimate_would_overrun(tmp_path):
    router, _, spend = make_router(
        tmp_path,
        """
        objective: {type: best_quality}
        budgets:
          - {backend: pricey, period: day, limit_usd: 0.10, on_exhausted: stop}
        """,
    )
    spend.record("pricey", Decimal("0.05"))
    d = router.route(job())
    assert d.backend == "pricey" and any("fits" in r for r in d.reasons)  # 0.05 + 0.05 <= 0.10
    spend.record("pricey", Decimal("0.05"))
    d = router.route(job())
    assert d.backend is None
    assert any("on_exhausted: stop" in r and "job held" in r for r in d.reasons)


def test_budget_overflow_sends_the_job_to_the_named_backend(tmp_path):
    router, _, spend = make_router(
        tmp_path,
        """
        objective: {type: best_quality}
        budgets:
          - {backend: pricey, period: month, limit_usd: 1, on_exhausted: {overflow_to: cheap}}
        """,
    )
    spend.record("pricey", Decimal("0.99"))
    d = router.route(job())
    assert d.backend == "cheap"
    assert any("overflow to cheap" in r for r in d.reasons)
    assert "exhausted" in {a.backend: a.excluded for a in d.alternatives}["pricey"]
    # a job the overflow target cannot run is held, not sent where it cannot run
    d = router.route(job(mask=False))
    assert d.backend is None and any("overflow to cheap impossible" in r for r in d.reasons)


def test_a_free_job_fits_an_exhausted_budget(tmp_path):
    router, _, spend = make_router(
        tmp_path,
        """
        backends:
          free: {kind: function, cost_per_image: 0}
        quality: {free: 0.9}
        budgets:
          - {backend: free, limit_usd: 0}
        """,
        base="",
    )
    assert router.route(job()).backend == "free"


# ---- volume shift -------------------------------------------------------------------------------------

SHIFT = """
objective: {type: best_quality}
volume_shift:
  - {after_jobs: 3, counting: [pricey], to: cheap}
"""


def test_volume_shift_by_jobs_moves_eligible_work_at_its_threshold(tmp_path):
    router, _, spend = make_router(tmp_path, SHIFT)
    spend.record("pricey", Decimal("0.05"), jobs=2)
    d = router.route(job())
    assert d.backend == "pricey"  # 2 jobs: one below the threshold
    assert any("not yet, 2 jobs on pricey" in r for r in d.reasons)
    spend.record("pricey", Decimal("0.05"))
    d = router.route(job())
    assert d.backend == "cheap"  # 3 jobs: at the threshold
    assert any("3 jobs on pricey this month (threshold 3) reached" in r for r in d.reasons)
    assert router.route(job(mask=False)).backend == "pricey"  # not eligible: cheap cannot run it


def test_volume_shift_by_spend_and_its_when_filter(tmp_path):
    router, _, spend = make_router(
        tmp_path,
        """
        objective: {type: best_quality}
        volume_shift:
          after_usd: 10
          to: cheap
          when: {tags: [bulk]}
        """,
    )
    spend.record("pricey", Decimal("9.99"))
    assert router.route(job(tags=("bulk",))).backend == "pricey"
    spend.record("pricey", Decimal("0.01"))
    assert router.route(job(tags=("bulk",))).backend == "cheap"
    assert router.route(job(tags=("hero",))).backend == "pricey"


# ---- the decision ---------------------------------------------------------------------------------------


def test_decision_lists_alternatives_with_estimates_and_capable_fallbacks(tmp_path):
    router, *_ = make_router(
        tmp_path,
        """
        objective: {type: cheapest}
        fallbacks: {cheap: [pricey], pricey: [cheap]}
        """,
    )
    d = router.route(job(n=2))
    assert d.backend == "cheap" and d.estimate.usd == Decimal("0.004")
    (alt,) = d.alternatives
    assert alt.backend == "pricey" and alt.estimate.usd == Decimal("0.10") and alt.excluded is None
    assert d.fallbacks == ("pricey",)
    d = router.route(job(mask=False))
    assert d.backend == "pricey" and d.fallbacks == ()
    assert any("fallbacks: none (cheap cannot run this job)" in r for r in d.reasons)
    assert d.reasons[-1].startswith("chose pricey: $0.0500")


def test_routing_is_deterministic_and_ties_break_on_declaration_order(tmp_path):
    router, *_ = make_router(
        tmp_path,
        """
        backends:
          b: {kind: function, cost_per_image: 0.01}
          a: {kind: function, cost_per_image: 0.01}
        quality: {a: 0.8, b: 0.8}
        """,
        base="",
    )
    first = [router.route(job(f"j{i}", quality=q)) for i, q in enumerate(["low", "high", "auto"])]
    again = [router.route(job(f"j{i}", quality=q)) for i, q in enumerate(["low", "high", "auto"])]
    assert first == again
    assert {d.backend for d in first} == {"b"}


@pytest.mark.parametrize("policy_file", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_routes_every_example_manifest(policy_file):
    policy = load_policy(policy_file)
    backends = build_backends(policy)
    for manifest in sorted(EXAMPLES.glob("*.jsonl")) + sorted(EXAMPLES.glob("*.yaml")):
        jobs, problems = validate_manifest(manifest)
        assert not problems and jobs
        router = Router(policy, backends, InMemorySpend())
        for j in jobs:
            d = router.route(j)
            assert d.routable, (policy_file.name, j.id, d.reasons)
            assert d.reasons[-1].startswith(f"chose {d.backend}")


def test_cost_first_sends_the_maskless_example_self_hosted_but_not_maskless_variants():
    policy = load_policy(EXAMPLES.parent / "configs" / "policies" / "cost-first.yaml")
    router = Router(policy, build_backends(policy), InMemorySpend())
    jobs = {j.id: j for j in validate_manifest(EXAMPLES / "all.jsonl")[0]}
    nomask = router.route(jobs["ecom-shoe-nomask"])
    assert nomask.backend == "sdxl-local"
    assert "no mask: sdxl-local would infer one from the prompt (mask_inference)" in nomask.reasons
    variants = router.route(jobs["mkt-summer-6"])  # no mask, n=6: restyles the whole picture
    assert variants.backend != "sdxl-local" and "sdxl-local" in {a.backend for a in variants.alternatives}


# ---- require: (licence / provenance and mapping constraints) -------------------------------------------

THREE_WITH_CLEARED = """
backends:
  draft:
    kind: function
    cost_per_image: 0.03
    capabilities: {mask_mode: paste_back, n_mode: parallel_calls, size_mode: resized}
  cleared:
    kind: function
    cost_per_image: 0.10
    capabilities: {training_data: commercially_cleared, max_images: 1}
  premium:
    kind: function
    cost_per_image: 0.20
quality: {draft: 0.7, cleared: 0.8, premium: 0.9}
"""
LEGAL = """rules:
  - name: legal
    when: {tags: [legal-cleared]}
    require: {training_data: commercially_cleared}
"""


def test_require_sends_legal_jobs_only_where_the_training_data_is_cleared(tmp_path):
    router, *_ = make_router(tmp_path, LEGAL + "objective: {type: cheapest}\n", base=THREE_WITH_CLEARED)
    assert router.route(job(tags=("draft",))).backend == "draft"  # untagged work: the cheapest
    d = router.route(job(tags=("legal-cleared",)))
    assert d.backend == "cleared"
    text = "\n".join(d.reasons)
    assert (
        "rule 'legal' (tags any of legal-cleared): require training_data=commercially_cleared: only cleared "
        "qualifies (not draft: training_data undisclosed, premium: training_data undisclosed)" in text
    )
    excluded = {a.backend: a.excluded for a in d.alternatives}
    assert excluded["draft"] == (
        "lacks training_data=commercially_cleared, required by rule 'legal' (it has training_data undisclosed)"
    )


def test_require_beats_pins_rules_fallbacks_and_budget_overflow(tmp_path):
    extra = (
        LEGAL
        + "  - {when: {tags: [legal-cleared]}, use: premium}\n"
        + "budgets:\n  - {backend: cleared, limit_usd: 0.05, on_exhausted: {overflow_to: draft}}\n"
        + "fallbacks:\n  cleared: [premium, draft]\n"
    )
    router, *_ = make_router(tmp_path, extra, base=THREE_WITH_CLEARED)
    pinned = router.route(job(tags=("legal-cleared",), backend="premium"))
    assert pinned.backend is None
    assert any("pinned to premium, but premium lacks training_data=commercially_cleared" in r for r in pinned.reasons)
    d = router.route(job(tags=("legal-cleared",)))  # `use: premium` is skipped; cleared's budget is too small
    assert any("use premium skipped" in r for r in d.reasons)
    assert d.backend is None and any("overflow to draft impossible" in r for r in d.reasons)
    router, *_ = make_router(tmp_path, LEGAL + "fallbacks:\n  cleared: [premium, draft]\n", base=THREE_WITH_CLEARED)
    d = router.route(job(tags=("legal-cleared",)))
    assert d.backend == "cleared" and d.fallbacks == ()  # no fallback to undisclosed training data


def test_require_that_no_capable_backend_meets_holds_the_job(tmp_path):
    router, *_ = make_router(tmp_path, LEGAL, base=THREE_WITH_CLEARED)
    d = router.route(job(tags=("legal-cleared",), images=2))  # cleared takes one image
    assert d.backend is None
    assert "no capable backend qualifies: job held" in d.reasons[-1]


def test_a_policy_can_vouch_for_training_data_and_require_mapping_modes(tmp_path):
    base = THREE_WITH_CLEARED.replace(
        "  premium:\n    kind: function\n", "  premium:\n    kind: function\n    training_data: commercially_cleared\n"
    )
    rules = LEGAL + "  - {when: {n: {min: 2}}, require: {n_mode: native}}\n"
    router, *_ = make_router(tmp_path, rules + "objective: {type: cheapest}\n", base=base)
    d = router.route(job(tags=("legal-cleared",), images=2))
    assert d.backend == "premium"  # cleared cannot take 2 images; the policy vouches for premium
    assert router.route(job(n=3)).backend == "cleared"  # draft makes n by parallel calls


def test_explain_says_how_a_backend_maps_openai_semantics(tmp_path):
    router, *_ = make_router(tmp_path, "objective: {type: cheapest}\n", base=THREE_WITH_CLEARED)
    d = router.route(job(n=3, mask=True))
    assert d.backend == "draft"
    assert (
        "how draft runs it: mask by paste-back (it edits the whole picture; pixels outside the mask are kept "
        "exactly); n=3 as 3 parallel calls, each billed; made at the provider's nearest size, resized to the "
        "input's own size" in d.reasons
    )
    assert d.reasons[-1].startswith("chose draft")
    plain = router.route(job(mask=False, backend="premium"))
    assert not any(r.startswith("how ") for r in plain.reasons)
