"""Policy files: the shipped ones load, and a wrong one says which file, line, key, value and what was expected."""

from __future__ import annotations

import pytest

from backends.standins import FunctionBackend
from pipeline.errors import ConfigError
from pipeline.routing import build_backends, load_policy
from tests.routing_helpers import SHIPPED, TWO_BACKENDS, write_policy


def _error(tmp_path, body: str) -> str:
    path = write_policy(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    return str(info.value)


def test_shipped_policies_exist():
    assert {p.stem for p in SHIPPED} >= {"cost-first", "quality-first", "balanced", "volume-shift"}


@pytest.mark.parametrize("policy_file", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_loads_and_builds_without_gpu_or_key(policy_file):
    policy = load_policy(policy_file)
    kinds = {spec.kind for spec in policy.backends.values()}
    assert "openai" in kinds and "function" not in kinds  # real kinds only, never the test-only one
    hostings = {spec.hosting for spec in policy.backends.values()}
    assert hostings == {"api", "self-hosted"}
    backends = build_backends(policy)
    assert list(backends) == list(policy.backends)


def test_backend_entries_become_objects_with_their_settings(tmp_path):
    policy = load_policy(write_policy(tmp_path, TWO_BACKENDS))
    backends = build_backends(policy)
    assert isinstance(backends["cheap"], FunctionBackend)
    assert backends["cheap"].capabilities.mask_optional is False
    assert policy.hosting("cheap") == "self-hosted" and policy.hosting("pricey") == "api"
    assert policy.score("cheap", "medium") == 0.6


def test_unknown_key_names_file_line_path_and_suggests(tmp_path):
    msg = _error(tmp_path, TWO_BACKENDS + "objective:\n  type: cheapest\n  min_qualty: 0.5\n")
    assert f"{tmp_path / 'policy.yaml'}:16: objective.min_qualty: unknown key; did you mean 'min_quality'?" in msg


def test_bad_value_names_path_value_and_expectation(tmp_path):
    msg = _error(tmp_path, TWO_BACKENDS + "objective: {type: cheap}\n")
    assert "policy.yaml:14: objective.type: expected: Input should be 'cheapest' or 'best_quality' (got 'cheap')" in msg


def test_every_problem_is_reported_at_once(tmp_path):
    msg = _error(
        tmp_path,
        TWO_BACKENDS
        + """
rules:
  - when: {images: {min: 3, max: 1}}
    use: pricey
  - when: {prompt_regex: "([unclosed"}
    use: pricey
budgets:
  - {backend: pricey, period: week, limit_usd: -1}
""",
    )
    assert "3 problems" in msg or "4 problems" in msg
    assert "rules[0].when.images: expected: min (3) is greater than max (1)" in msg
    assert "rules[1].when.prompt_regex: expected: a valid Python regular expression" in msg
    assert "budgets[0].period: expected: Input should be 'day' or 'month' (got 'week')" in msg
    assert "budgets[0].limit_usd: expected: Input should be greater than or equal to 0 (got -1)" in msg


def test_names_must_refer_to_declared_backends(tmp_path):
    msg = _error(
        tmp_path,
        TWO_BACKENDS
        + """
rules:
  - {prefer: [pricy]}
budgets:
  - {backend: cheap, limit_usd: 5, on_exhausted: {overflow_to: cheap}}
fallbacks: {pricey: [local]}
""",
    )
    assert "rules[0].prefer[0]: expected: one of the backends (cheap, pricey) (got 'pricy')" in msg
    assert "budgets[0].on_exhausted.overflow_to: expected: a backend other than the budget's own (got 'cheap')" in msg
    assert "fallbacks.pricey[0]: expected: one of the backends (cheap, pricey) (got 'local')" in msg


def test_rule_needs_exactly_one_action(tmp_path):
    msg = _error(tmp_path, TWO_BACKENDS + "rules:\n  - {prefer: cheap, avoid: pricey}\n")
    assert "rules[0]: expected: exactly one action of use / prefer / avoid per rule, not prefer and avoid (got " in msg
    msg = _error(tmp_path, TWO_BACKENDS + "rules:\n  - {when: {n: 2}}\n")
    assert "rules[0]: expected: exactly one action of use / prefer / avoid per rule (got {'when': {'n': 2}})" in msg


def test_on_exhausted_is_stop_or_overflow_in_one_message(tmp_path):
    msg = _error(
        tmp_path, TWO_BACKENDS + "budgets:\n  - {backend: cheap, limit_usd: 1, on_exhausted: {overflow: pricey}}\n"
    )
    assert msg.endswith(
        "budgets[0].on_exhausted: expected: stop, or {overflow_to: <backend>} (got {'overflow': 'pricey'})"
    )  # one problem, not one per union branch
    policy = load_policy(
        write_policy(
            tmp_path,
            TWO_BACKENDS + "budgets:\n  - {backend: cheap, limit_usd: 1, on_exhausted: {overflow_to: pricey}}\n",
        )
    )
    assert policy.budgets[0].overflow_to == "pricey"


def test_unknown_kind_and_missing_quality(tmp_path):
    msg = _error(
        tmp_path,
        """
backends:
  api: {kind: opneai}
  local: {kind: function}
quality: {local: 0.5}
""",
    )
    assert "policy.yaml:3: backends.api.kind: unknown backend kind 'opneai'" in msg and "Did you mean 'openai'" in msg
    assert "quality: expected: a score for backend 'api'" in msg


def test_backend_settings_are_checked_with_the_kinds_own_model(tmp_path):
    msg = _error(
        tmp_path,
        """
backends:
  api:
    kind: openai
    model: gpt-image-2.6-flare
    concurency: 4
    max_retries: 99
quality: {api: 0.9}
""",
    )
    assert "policy.yaml:6: backends.api.concurency: unknown key; did you mean 'concurrency'?" in msg
    assert "policy.yaml:7: backends.api.max_retries: expected: Input should be less than or equal to 10 (got 99)" in msg


def test_nested_backend_settings_get_suggestions_too(tmp_path):
    msg = _error(
        tmp_path,
        """
backends:
  local:
    kind: sdxl
    mask_inference: {treshold: 0.3}
quality: {local: 0.6}
""",
    )
    assert "policy.yaml:5: backends.local.mask_inference.treshold: unknown key; did you mean 'threshold'?" in msg


def test_volume_shift_needs_one_threshold(tmp_path):
    msg = _error(tmp_path, TWO_BACKENDS + "volume_shift: {to: cheap}\n")
    assert "volume_shift[0]: expected: give exactly one of after_jobs or after_usd" in msg


def test_measured_quality_file_overrides_declared_scores(tmp_path):
    (tmp_path / "measured").mkdir()
    (tmp_path / "measured" / "quality.yaml").write_text(
        "quality:\n  cheap: {low: 0.9, medium: 0.91}\n  other-policy-backend: {low: 0.1}\n", encoding="utf-8"
    )
    policy = load_policy(write_policy(tmp_path, TWO_BACKENDS + "quality_file: measured/quality.yaml\n"))
    assert policy.score("cheap", "low") == 0.9 and policy.score("cheap", "medium") == 0.91
    assert policy.score("cheap", "high") == 0.7  # not measured: declared score stays
    assert policy.score("pricey", "low") == 0.7


def test_a_bad_quality_file_is_blamed_not_the_policy(tmp_path):
    (tmp_path / "q.yaml").write_text("quality:\n  cheap: {low: 1.5, medium: 0.5}\n", encoding="utf-8")
    msg = _error(tmp_path, TWO_BACKENDS + "quality_file: q.yaml\n")
    assert msg == f"{tmp_path / 'q.yaml'}:2: quality.cheap.low: expected: a score from 0 to 1 (got 1.5)"
    msg = _error(tmp_path, TWO_BACKENDS + "quality_file: gone.yaml\n")
    assert msg.startswith(f"{tmp_path / 'policy.yaml'}:") and "quality_file: " in msg and "gone.yaml" in msg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")
    msg = _error(tmp_path, "backends:\n  a: {kind: function\n")
    assert "policy.yaml:3: not valid YAML" in msg
