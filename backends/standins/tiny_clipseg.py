"""A tiny RANDOM-WEIGHT CLIPSeg model + processor (text-prompted masks in tests). Its masks are noise.

Production masks come from `CIDAS/clipseg-rd64-refined`; this has the same classes (`CLIPSegForImageSegmentation`,
`CLIPSegProcessor` = `ViTImageProcessor` + `CLIPTokenizer`) at 64x64 input, saved with `save_pretrained` and read
back through the same `from_pretrained` path as the real one, with no network.

    python -m backends.standins.tiny_clipseg DIR
"""

from __future__ import annotations

import shutil
from pathlib import Path

from backends.standins.tiny_clip import (
    build_main,
    char_tokenizer,
    finish,
    image_processor,
    is_built,
    text_config,
    vision_config,
)

IMAGE_SIZE = 64


def build_tiny_clipseg(path: str | Path, *, overwrite: bool = False) -> Path:
    """Build into `path` (idempotent) and return it; seeded, so every build has the same weights."""
    path = Path(path)
    if is_built(path, "clipseg") and not overwrite:
        return path
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = char_tokenizer(tmp / "_vocab")
    torch.manual_seed(0)
    config = CLIPSegConfig(text_config=text_config(), vision_config=vision_config(IMAGE_SIZE, 16), projection_dim=32,
                           reduce_dim=16, extract_layers=[1], decoder_num_attention_heads=2,
                           decoder_intermediate_size=32)
    CLIPSegForImageSegmentation(config).eval().save_pretrained(tmp)
    CLIPSegProcessor(image_processor=image_processor(IMAGE_SIZE), tokenizer=tokenizer).save_pretrained(tmp)
    return finish(tmp, path, "clipseg")


def main(argv: list[str] | None = None) -> int:
    return build_main(argv, "tiny_clipseg", build_tiny_clipseg,
                      lambda out: f"tiny random-weight CLIPSeg stand-in (masks are noise) at {out}")


if __name__ == "__main__":
    raise SystemExit(main())
