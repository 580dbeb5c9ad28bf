from pipeline.cli import main


def test_doctor_reports_key_presence_without_the_key(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-doctor-secret-123")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "set (value not shown)" in out
    assert "sk-doctor-secret-123" not in out
    assert "extra sdxl" in out and "prices.yaml" in out


def test_doctor_without_key_says_how_to_fix(capsys):
    assert main(["doctor"]) == 0
    assert "not set" in capsys.readouterr().out


def test_doctor_says_where_each_self_hosted_model_loads_from(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing downloaded
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    local = tmp_path / "my-sdxl"
    local.mkdir()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
backends:
  mine: {{kind: sdxl, model: {local}}}
  hub: {{kind: sdxl, mask_inference: {{model: CIDAS/clipseg-rd64-refined}}}}
  boxes: {{kind: sdxl, mask_inference: {{grounded_sam: {{segmenter: {local}}}}}}}
quality: {{mine: 0.7, hub: 0.7, boxes: 0.7}}
objective: {{type: cheapest}}
""")
    assert main(["doctor", "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "local folder" in out
    assert "not downloaded diffusers/stable-diffusion-xl-1.0-inpainting-0.1" in out
    assert "not downloaded CIDAS/clipseg-rd64-refined" in out
    assert "not downloaded IDEA-Research/grounding-dino-tiny" in out and out.count("local folder") == 2
