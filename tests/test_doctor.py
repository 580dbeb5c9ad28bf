from pipeline.cli import main


def test_doctor_reports_key_presence_without_the_key(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-doctor-secret-123")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "set (value not shown)" in out
    assert "sk-doctor-secret-123" not in out
    assert "extra diffusion" in out and "prices.yaml" in out


def test_doctor_without_key_says_how_to_fix(capsys):
    assert main(["doctor"]) == 0
    assert "not set" in capsys.readouterr().out


def test_doctor_says_where_each_self_hosted_model_loads_from(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing downloaded
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    local = tmp_path / "my-sdxl"
    local.mkdir()
    (local / "model_index.json").write_text("{}")  # a save_pretrained folder (as a pipeline and as a model)
    (local / "config.json").write_text("{}")
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


def test_doctor_says_memory_and_whether_each_self_hosted_backend_can_run_here(tmp_path, monkeypatch, capsys):
    import pipeline.commands.doctor as doctor

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("COLUMNS", "400")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
backends:
  qwen: {{kind: qwen-edit, device: cuda}}
  klein: {{kind: flux2-klein, model: {tmp_path / "nowhere"}, device: cuda}}
  slow: {{kind: flux2-klein, device: cpu}}
quality: {{qwen: 0.8, klein: 0.8, slow: 0.8}}
objective: {{type: cheapest}}
""")
    monkeypatch.setattr(doctor, "_cuda_memory", lambda: [24.0])  # one 24 GiB card
    assert main(["doctor", "--policy", str(policy)]) == 2  # the 20B Qwen does not fit as configured
    out = capsys.readouterr().out
    assert "not downloaded Qwen/Qwen-Image-Edit-2511" in out and "not a model folder" in out
    assert "Qwen-Image-Edit (20B): bf16 weights 53.7 GiB" in out
    assert "no: needs ~57.7 GiB, cuda:0 has 24 GiB; set `fp8: true, offload: model` to fit" in out
    assert "yes: needs ~16.9 GiB, cuda:0 has 24 GiB" in out
    assert "runs on the CPU as configured" in out
    monkeypatch.setattr(doctor, "_cuda_memory", lambda: None)
    assert main(["doctor"]) == 0  # no policy: each self-hosted kind's default model, for information
    out = capsys.readouterr().out
    assert "flux2-klein memory" in out and "no CUDA GPU here" in out and "qwen-edit weights" in out


def test_doctor_says_whether_gemini_and_firefly_credentials_are_set_never_what_they_are(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-doctor-SECRET-42")
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", "ff-doctor-client-id-77")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert "set (value not shown)" in rows["GEMINI_API_KEY"]
    assert "set (value not shown)" in rows["FIREFLY_SERVICES_CLIENT_ID"]
    assert "not set" in rows["FIREFLY_SERVICES_CLIENT_SECRET"]
    assert "PLACEHOLDER $0.10/operation" in rows["Firefly price"]
    assert "AIza-doctor-SECRET-42" not in out and "ff-doctor-client-id-77" not in out


def test_doctor_with_a_policy_checks_each_hosted_backends_credentials_and_firefly_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")
    secret = tmp_path / "ff-secret"
    secret.write_text("ff-doctor-SECRET-99\n")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "backends:\n"
        "  g: {kind: gemini}\n"
        "  ff: {kind: firefly, client_secret_file: " + str(secret) + "}\n"
        "  ff-contract: {kind: firefly, price_per_operation_usd: '0.045'}\n"
        "quality: {g: 0.7, ff: 0.8, ff-contract: 0.8}\n"
    )
    monkeypatch.setenv("FIREFLY_SERVICES_CLIENT_ID", "ff-doctor-client-id-77")
    assert main(["doctor", "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 3}
    assert "missing" in rows["g credentials"] and "GEMINI_API_KEY" in rows["g credentials"]
    assert "present (values not shown)" in rows["ff credentials"]
    assert "missing" in rows["ff-contract credentials"] and "FIREFLY_SERVICES_CLIENT_SECRET" in out
    assert "$0.10/operation" in rows["ff price"] and "PLACEHOLDER" in rows["ff price"]
    assert "$0.045/operation" in rows["ff-contract price"] and "contract rate" in rows["ff-contract price"]
    assert "ff-doctor-SECRET-99" not in out and "ff-doctor-client-id-77" not in out
