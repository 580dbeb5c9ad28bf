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
    all_hosted = policy_file.stem == "hosted-mix"  # three hosted services, no GPU
    assert hostings == ({"api"} if all_hosted else {"api", "self-hosted"})
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
    one = "one action of use / prefer / avoid per rule (a rule may also, or only, require:)"
    assert f"rules[0]: expected: {one}, not prefer and avoid (got " in msg
    msg = _error(tmp_path, TWO_BACKENDS + "rules:\n  - {when: {n: 2}}\n")
    assert f"rules[0]: expected: {one} (got {{'when': {{'n': 2}}}})" in msg


def test_rule_may_require_capabilities_alone_or_with_an_action(tmp_path):
    policy = load_policy(
        write_policy(
            tmp_path,
            TWO_BACKENDS
            + "rules:\n"
            + "  - {when: {tags: [legal-cleared]}, require: {training_data: commercially_cleared}}\n"
            + "  - {when: {n: {min: 2}}, require: {n_mode: [native]}, prefer: cheap}\n",
        )
    )
    first, second = policy.rules
    assert first.require.describe() == "training_data=commercially_cleared" and first.action == ""
    assert second.require.describe() == "n_mode=native" and second.action == "prefer cheap"


@pytest.mark.parametrize(
    ("require", "expected"),
    [
        (
            "{training_data: commercialy_cleared}",
            "rules[0].require.training_data: expected: one of commercially_cleared, undisclosed; "
            "did you mean 'commercially_cleared'? (got 'commercialy_cleared')",
        ),
        ("{trainingdata: commercially_cleared}", "rules[0].require.trainingdata: "),
        ("{mask_mode: pasteback}", "did you mean 'paste_back'?"),
        ("{}", "rules[0].require: expected: name at least one of training_data, mask_mode, n_mode, size_mode"),
    ],
)
def test_require_names_bad_keys_and_values_with_a_suggestion(tmp_path, require, expected):
    msg = _error(tmp_path, TWO_BACKENDS + f"rules:\n  - {{when: {{n: 2}}, require: {require}}}\n")
    assert expected in msg
    if "trainingdata" in require:
        assert "did you mean 'training_data'?" in msg


def test_a_policy_may_vouch_for_a_backends_training_data(tmp_path):
    vouched = TWO_BACKENDS.replace(
        "hosting: self-hosted", "hosting: self-hosted\n    training_data: commercially_cleared"
    )
    policy = load_policy(write_policy(tmp_path, vouched))
    assert [s.training_data for s in policy.backends.values()] == ["commercially_cleared", None]
    assert "training_data" not in policy.backends["cheap"].settings
    msg = _error(tmp_path, vouched.replace("training_data: commercially_cleared", "training_data: cleared"))
    assert "backends.cheap.training_data" in msg and "commercially_cleared" in msg
