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
