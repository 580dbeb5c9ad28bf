"""A tiny RANDOM-WEIGHT CLIPSeg model + processor (text-prompted masks in tests). Its masks are noise.

Production masks come from `CIDAS/clipseg-rd64-refined`; this has the same classes (`CLIPSegForImageSegmentation`,
`CLIPSegProcessor` = `ViTImageProcessor` + `CLIPTokenizer`) at 64x64 input, saved with `save_pretrained` and read
back through the same `from_pretrained` path as the real one, with no network.

    python -m backends.standins.tiny_clipseg DIR
"""

from __future__ import annotations

from pathlib import Path

from backends.standins.tiny_clip import (
    build_main,
    build_standin,
    char_tokenizer,
    image_processor,
    text_config,
    vision_config,
)

IMAGE_SIZE = 64


def _save_clipseg(out: Path) -> None:
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

    tokenizer = char_tokenizer(out / "_vocab")
    config = CLIPSegConfig(
        text_config=text_config(),
        vision_config=vision_config(IMAGE_SIZE, 16),
        projection_dim=32,
        reduce_dim=16,
        extract_layers=[1],
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
    )
    CLIPSegForImageSegmentation(config).eval().save_pretrained(out)
    CLIPSegProcessor(image_processor=image_processor(IMAGE_SIZE), tokenizer=tokenizer).save_pretrained(out)


def build_tiny_clipseg(path: str | Path, *, overwrite: bool = False) -> Path:
    """Build into `path` (idempotent) and return it; seeded, so every build has the same weights."""
    return build_standin(path, "clipseg", _save_clipseg, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    return build_main(
        argv,
        "tiny_clipseg",
        build_tiny_clipseg,
        lambda out: f"tiny random-weight CLIPSeg stand-in (masks are noise) at {out}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
