"""The policy's `ray:` section is validated at load like every other section (no Ray started here)."""

import pytest

from pipeline.errors import ConfigError
from pipeline.routing import load_policy

POLICY = """
backends:
  local: {kind: function}
quality: {local: 0.5}
ray:
  {ray}
"""


def test_ray_section_loads(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("{ray}", "{num_gpus: 0, num_cpus: 1, resources: {sdxl: 1}, actors: 2}"))
    policy = load_policy(path)
    assert policy.ray.actor_needs() == {"CPU": 1.0, "sdxl": 1.0}


def test_ray_section_typo_names_the_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(POLICY.replace("{ray}", "{num_gpu: 1}"))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert "ray" in str(info.value) and "num_gpu" in str(info.value)


def test_run_accepts_ray_address():
    from pipeline.cli import build_parser

    args = build_parser().parse_args(
        ["run", "m.jsonl", "--policy", "p.yaml", "--out", "o", "--executor", "ray", "--ray-address", "auto"]
    )
    assert args.ray_address == "auto" and args.executor == "ray"
