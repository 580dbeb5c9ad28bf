"""Tiny RANDOM-WEIGHT Grounding DINO and SAM models + processors (Grounding DINO + SAM masks in tests). Their
boxes and masks are noise.

Production uses `IDEA-Research/grounding-dino-tiny` and `facebook/sam-vit-base`; these have the same classes
(`GroundingDinoForObjectDetection` with a tiny Swin backbone and a tiny BERT text encoder + `GroundingDinoProcessor`
with a character-level `BertTokenizer` written locally; `SamModel` + `SamProcessor` at 64x64 input), saved with
`save_pretrained` into `DIR/grounding-dino` and `DIR/sam` and read back through the same `from_pretrained` path
as the real ones, with no network.

    python -m backends.standins.tiny_grounded_sam DIR
"""

from __future__ import annotations

import string
from pathlib import Path

from backends.standins.tiny_clip import build_main, build_standin

KIND = "grounded_sam"
DETECTOR, SEGMENTER = "grounding-dino", "sam"
IMAGE_SIZE = 64
MAX_TEXT = 256  # tokens; longer phrases are cut by the model, as with the real one
_CHARS = string.ascii_lowercase + string.digits
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "'", "-", *_CHARS, *("##" + c for c in _CHARS)]


def detector_dir(path: str | Path) -> Path:
    return Path(path) / DETECTOR


def segmenter_dir(path: str | Path) -> Path:
    return Path(path) / SEGMENTER


def _tokenizer(workdir: Path):
    """A WordPiece `BertTokenizer` over single characters (every word splits into letters), from a local file."""
    from transformers import BertTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    vocab = workdir / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return BertTokenizer(str(vocab), do_lower_case=True, model_max_length=MAX_TEXT)


def _save_detector(out: Path, tokenizer) -> None:
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    swin = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        out_features=["stage2", "stage3", "stage4"],
    )
    bert = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=MAX_TEXT,
    )
    # d_model: the model's GroupNorm uses 32 groups; 2 decoder layers: its box heads are tied across layers
    config = GroundingDinoConfig(
        backbone_config=swin,
        text_config=bert,
        d_model=32,
        num_queries=10,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=MAX_TEXT,
    )
    GroundingDinoForObjectDetection(config).eval().save_pretrained(out)
    # 128: at 64 the last feature level is 1x1, which the model's GroupNorm rejects
    images = GroundingDinoImageProcessorPil(size={"shortest_edge": 2 * IMAGE_SIZE, "longest_edge": 4 * IMAGE_SIZE})
    GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)


def _save_segmenter(out: Path) -> None:
    import torch
    from transformers import SamConfig, SamImageProcessorPil, SamModel, SamProcessor

    patch = 8
    config = SamConfig(
        vision_config={
            "hidden_size": 16,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": patch,
            "window_size": 4,
            "global_attn_indexes": [1],
            "num_pos_feats": 8,
            "mlp_dim": 32,
        },
        prompt_encoder_config={
            "hidden_size": 16,
            "image_size": IMAGE_SIZE,
            "patch_size": patch,
            "mask_input_channels": 4,
        },
        mask_decoder_config={
            "hidden_size": 16,
            "mlp_dim": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 16,
        },
    )
    model = SamModel(config).eval()
    with torch.no_grad():  # SAM's own init (std 1e-10 in the image encoder) gives a flat 0.5 map; spread it
        for param in model.parameters():
            param.normal_(std=0.3)
    model.save_pretrained(out)
    low = IMAGE_SIZE // patch * 4  # SAM's low-res masks are 4x its embedding grid
    images = SamImageProcessorPil(
        size={"longest_edge": IMAGE_SIZE},
        pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        mask_size={"longest_edge": low},
        mask_pad_size={"height": low, "width": low},
    )
    SamProcessor(image_processor=images).save_pretrained(out)


def _save_both(out: Path) -> None:
    _save_detector(detector_dir(out), _tokenizer(out / "_vocab"))
    _save_segmenter(segmenter_dir(out))


def build_tiny_grounded_sam(path: str | Path, *, overwrite: bool = False) -> Path:
    """Build both models into `path` (idempotent) and return it; seeded, so every build has the same weights.
    The detector is `detector_dir(path)`, the segmenter `segmenter_dir(path)`."""
    return build_standin(path, KIND, _save_both, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    return build_main(
        argv,
        "tiny_grounded_sam",
        build_tiny_grounded_sam,
        lambda out: (
            f"tiny random-weight Grounding DINO at {detector_dir(out)} and SAM at "
            f"{segmenter_dir(out)} (boxes and masks are noise)"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
