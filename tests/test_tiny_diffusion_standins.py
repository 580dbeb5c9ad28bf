"""The tiny random-weight Qwen-Image-Edit(-Plus) and FLUX.2 klein stand-ins: built offline, saved with
`save_pretrained`, loaded back with `<Pipeline>.from_pretrained(DIR)` as production loads a hub id, and used for
real (tiny) edits. The backends' tests stand on these checks: an edit runs without a mask, several input images are
taken, the same seed gives the same bytes, and the prompt and every input image change the output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.imagery import gradient

VISIBLE = 1.0  # mean |difference| in 0..255 levels that counts as "the output reacted" (float noise is ~0)


def _pictures() -> dict[str, Image.Image]:
    second = gradient(64, 64).rotate(90)
    return {"first": gradient(96, 64), "second": second, "second-mirrored": second.transpose(Image.FLIP_LEFT_RIGHT)}


class Edits:
    """Runs edits on one loaded pipeline and remembers them, so tests share the expensive calls."""

    def __init__(self, pipe, **call):
        self.pipe, self.call, self.pictures, self.seen = pipe, call, _pictures(), {}

    def run(self, names: tuple[str, ...], prompt: str = "make the sky red", seed: int = 7) -> Image.Image:
        import torch

        images = [self.pictures[name] for name in names]
        return self.pipe(
            image=images if len(images) > 1 else images[0],
            prompt=prompt,
            generator=torch.Generator().manual_seed(seed),
            **self.call,
        ).images[0]

    def cached(self, names: tuple[str, ...], prompt: str = "make the sky red", seed: int = 7) -> Image.Image:
        key = (names, prompt, seed)
        if key not in self.seen:
            self.seen[key] = self.run(names, prompt, seed)
        return self.seen[key]


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


@pytest.fixture(scope="module")
def qwen(tiny_qwen_edit_dir):  # noqa: F811 (fixture imported above)
    from diffusers import QwenImageEditPlusPipeline

    pipe = QwenImageEditPlusPipeline.from_pretrained(tiny_qwen_edit_dir)
    pipe.set_progress_bar_config(disable=True)
    # Always give height/width: without them the output is ~1 MP whatever the input size. true_cfg_scale 1: no CFG.
    return Edits(pipe, height=64, width=64, num_inference_steps=2, true_cfg_scale=1.0)


@pytest.fixture(scope="module")
def klein(tiny_flux2_klein_dir):  # noqa: F811
    from diffusers import Flux2KleinPipeline

    pipe = Flux2KleinPipeline.from_pretrained(tiny_flux2_klein_dir)
    pipe.set_progress_bar_config(disable=True)
    return Edits(pipe, num_inference_steps=2, guidance_scale=1.0)  # distilled: guidance is not used


@pytest.fixture(params=["qwen", "klein"])
def edits(request) -> Edits:
    return request.getfixturevalue(request.param)


def test_qwen_saved_pipeline_has_the_production_layout(tiny_qwen_edit_dir):  # noqa: F811
    import json

    index = json.loads((tiny_qwen_edit_dir / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPlusPipeline"
    assert {"processor", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"} <= set(index)
    config = json.loads((tiny_qwen_edit_dir / "transformer" / "config.json").read_text())
    assert config["zero_cond_t"] is True  # as Qwen-Image-Edit-2511's transformer


def test_klein_saved_pipeline_is_distilled(tiny_flux2_klein_dir):  # noqa: F811
    import json

    index = json.loads((tiny_flux2_klein_dir / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline" and index["is_distilled"] is True


def test_qwen_mask_less_single_image_edit_gives_the_requested_size(qwen):
    out = qwen.cached(("first",))
    assert out.mode == "RGB" and out.size == (64, 64)
    assert np.asarray(out).std() > 5  # a picture, not a flat fill


def test_klein_single_reference_edit_takes_the_reference_size_on_the_16px_grid(klein):
    # No height/width: klein's output takes the first reference's size, rounded DOWN to a multiple of 16.
    klein.pictures["odd"] = gradient(100, 72)
    out = klein.cached(("odd",))
    assert out.mode == "RGB" and out.size == (96, 64)


def test_two_image_edit_uses_the_second_image(edits):
    one = edits.cached(("first",))
    two = edits.cached(("first", "second"))
    assert two.size == one.size
    assert difference(one, two) > VISIBLE


def test_changing_the_second_image_changes_the_output(edits):
    base = edits.cached(("first", "second"))
    assert difference(base, edits.cached(("first", "second-mirrored"))) > VISIBLE


def test_same_seed_gives_identical_bytes(edits):
    base = edits.cached(("first", "second"))
    again = edits.run(("first", "second"))  # a fresh call, not the remembered one
    assert again.tobytes() == base.tobytes()


def test_different_seed_gives_a_different_output(edits):
    assert difference(edits.cached(("first",)), edits.cached(("first",), seed=8)) > VISIBLE


def test_different_prompt_gives_a_different_output(edits):
    base = edits.cached(("first",))
    assert difference(base, edits.cached(("first",), prompt="make the sky green")) > VISIBLE


def test_single_image_qwen_edit_variant_uses_its_image(tmp_path):
    from diffusers import QwenImageEditPipeline

    from backends.standins.tiny_qwen_edit import build_tiny_qwen_edit

    pipe = QwenImageEditPipeline.from_pretrained(build_tiny_qwen_edit(tmp_path / "edit", variant="edit"))
    pipe.set_progress_bar_config(disable=True)
    edits = Edits(pipe, height=64, width=64, num_inference_steps=2, true_cfg_scale=1.0)
    assert difference(edits.run(("first",)), edits.run(("second",))) > VISIBLE
    with pytest.raises(ValueError):  # one image only: several need the Plus pipeline
        edits.run(("first", "second"))


def test_build_is_idempotent_and_a_new_variant_rebuilds(tmp_path):
    import json

    from backends.standins.tiny_clip import STAMP
    from backends.standins.tiny_flux2_klein import build_tiny_flux2_klein

    target = tmp_path / "klein"
    build_tiny_flux2_klein(target)
    stamp = (target / STAMP).stat().st_mtime_ns
    assert build_tiny_flux2_klein(target) == target and (target / STAMP).stat().st_mtime_ns == stamp
    build_tiny_flux2_klein(target, variant="base")
    assert json.loads((target / "model_index.json").read_text())["is_distilled"] is False
    assert not target.with_name("klein.building").exists()


@pytest.mark.parametrize("module", ["tiny_qwen_edit", "tiny_flux2_klein"])
def test_main_prints_usage_for_help_and_builds_nothing(module, tmp_path, monkeypatch, capsys):
    import importlib

    main = importlib.import_module(f"backends.standins.{module}").main
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2 and "DIR" in capsys.readouterr().err.upper()
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_keeps_the_qwen_template_to_the_tokens_the_pipeline_drops():
    from diffusers import QwenImageEditPlusPipeline

    from backends.standins.tiny_qwen_edit import template_prefix
    from backends.standins.tiny_qwen_parts import qwen_tokenizer

    prefix, dropped = template_prefix(QwenImageEditPlusPipeline)
    tokenizer = qwen_tokenizer(prefix)
    assert len(tokenizer(prefix)["input_ids"]) == dropped == 64
    text = "Mach den Himmel grün ✓ 3×"  # outside the template: byte-level pieces, still lossless
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
