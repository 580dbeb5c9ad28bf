"""A tiny RANDOM-WEIGHT CLIP model + processor (prompt-adherence scoring in tests). Its scores mean nothing.

Production scoring uses a real CLIP (default `openai/clip-vit-large-patch14`); this has the same classes
(`CLIPModel`, `CLIPProcessor`) at a size that saves to well under 1 MB, is written with `save_pretrained` and read
back by the scorer through the same `from_pretrained` path, with no network. The tokenizer is a character-level
BPE vocabulary written locally (every lowercase letter and digit), so different prompts give different tokens.

    python -m backends.standins.tiny_clip DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import string
import sys
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STANDIN_VERSION = 1
STAMP = "EDITROUTE_STANDIN.json"
IMAGE_SIZE = 32
_SPECIALS = ["<unk>", "<|startoftext|>", "<|endoftext|>"]
VOCAB = [
    *_SPECIALS,
    *(c for c in string.ascii_lowercase + string.digits),
    *(c + "</w>" for c in string.ascii_lowercase + string.digits),
]
VOCAB_SIZE = 99  # >= len(VOCAB); ids above it are never produced


def is_built(path: str | Path, what: str) -> bool:
    try:
        stamp = json.loads((Path(path) / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("version") == STANDIN_VERSION and stamp.get("kind") == what


def char_tokenizer(workdir: Path):
    """A `CLIPTokenizer` over single characters (no merges), `model_max_length=77`, from local files."""
    from transformers import CLIPTokenizer

    workdir.mkdir(parents=True, exist_ok=True)
    vocab, merges = workdir / "vocab.json", workdir / "merges.txt"
    vocab.write_text(json.dumps({tok: i for i, tok in enumerate(VOCAB)}), encoding="utf-8")
    merges.write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(
        str(vocab),
        str(merges),
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    )


def text_config() -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": 77,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }


def vision_config(image_size: int, patch_size: int) -> dict:
    return {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def image_processor(size: int):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        do_center_crop=False,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def finish(tmp: Path, path: Path, kind: str) -> Path:
    """Stamp the build (last) and move it into place, so a crash never leaves a half build that looks done."""
    shutil.rmtree(tmp / "_vocab", ignore_errors=True)
    (tmp / STAMP).write_text(
        json.dumps(
            {
                "version": STANDIN_VERSION,
                "kind": kind,
                "what": f"editroute tiny random-weight {kind} stand-in: outputs mean nothing",
            }
        ),
        encoding="utf-8",
    )
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def build_standin(path: str | Path, kind: str, save: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Build a `kind` stand-in into `path` (idempotent) and return it: `save(tmp)` writes it into a scratch
    directory (its tokenizer files under `tmp/_vocab`), seeded so every build has the same weights."""
    path = Path(path)
    if is_built(path, kind) and not overwrite:
        return path
    import torch

    tmp = path.with_name(path.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    save(tmp)
    finish(tmp, path, kind)
    log.info("built tiny random-weight %s stand-in at %s", kind, path)
    return path


def _save_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = char_tokenizer(out / "_vocab")
    config = CLIPConfig(text_config=text_config(), vision_config=vision_config(IMAGE_SIZE, 8), projection_dim=16)
    CLIPModel(config).eval().save_pretrained(out)
    CLIPProcessor(image_processor=image_processor(IMAGE_SIZE), tokenizer=tokenizer).save_pretrained(out)


def build_tiny_clip(path: str | Path, *, overwrite: bool = False) -> Path:
    """Build into `path` (idempotent) and return it; seeded, so every build has the same weights."""
    return build_standin(path, "clip", _save_clip, overwrite=overwrite)


def build_main(
    argv: list[str] | None, module: str, build: Callable[[str], Path], describe: Callable[[Path], str]
) -> int:
    """`python -m backends.standins.<module> DIR`: build a stand-in into DIR and say what it is (not a real model)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m backends.standins.{module}",
        description=f"Build the {module} stand-in (random weights, for tests and offline tries) into DIR.",
    )
    parser.add_argument("dir", metavar="DIR", help="folder to build into (reused when it already holds this build)")
    args = parser.parse_args(argv)
    sys.stderr.write(describe(build(args.dir)) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return build_main(
        argv,
        "tiny_clip",
        build_tiny_clip,
        lambda out: f"tiny random-weight CLIP stand-in (scores mean nothing) at {out}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
