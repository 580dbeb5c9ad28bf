"""Parts the tiny Qwen-Image-Edit and FLUX.2 klein stand-ins share: a local byte-level Qwen2 BPE tokenizer (both
pipelines' text encoders are Qwen models), the weight "sharpening" that makes random weights react to inputs, and
a quiet save, and the command line of builders that come in variants.

Nothing here touches the network. The tokenizer has the production class (`Qwen2Tokenizer`, the same pre-tokenizer
regex and byte-level alphabet as Qwen's), a 256-byte base vocabulary, Qwen's special tokens, and just enough merges
that each word of a given `template` becomes one token, as it does in Qwen's real 151k vocabulary. That matters for
Qwen-Image-Edit: the pipeline drops a fixed number of leading tokens (its system prompt) from the text embeddings, so
the template must tokenize to exactly that count or the user's instruction would be cut or padded with template.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Qwen2/2.5/3's special tokens that the pipelines' prompts and processors use (ids are local, not Qwen's).
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_MAX_ROUNDS = 8  # merge rounds; the Qwen-Image-Edit template needs 2


def qwen_tokenizer(template: str, *, extra_specials: Iterable[str] = (), chat_template: str | None = None):
    """A `Qwen2Tokenizer` built from local data only; every pre-token of `template` (outside special tokens) is one
    token. Unknown text still tokenizes (byte fallback is the byte-level alphabet), so any prompt works."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = [*QWEN_SPECIALS, *extra_specials]
    vocab: dict[str, int] = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    merges: list[tuple[str, str]] = []
    plain = template
    for token in specials:
        plain = plain.replace(token, "\x00")
    for _ in range(_MAX_ROUNDS):
        tokenizer = _make(Qwen2Tokenizer, AddedToken, vocab, merges, specials, chat_template)
        backend = tokenizer.backend_tokenizer
        words = [word for chunk in plain.split("\x00") for word, _ in backend.pre_tokenizer.pre_tokenize_str(chunk)]
        split = [[piece.value for piece in backend.model.tokenize(word)] for word in words]
        split = [pieces for pieces in split if len(pieces) > 1]
        if not split:
            return tokenizer
        # BPE applies the lowest-ranked merge first, so an earlier word's merge can break a later word's chain; each
        # round appends merges for what is still split, which ranks them after (and never disturbs) the others.
        known = set(merges)
        for pieces in split:
            joined = pieces[0]
            for piece in pieces[1:]:
                if (joined, piece) not in known:
                    known.add((joined, piece))
                    merges.append((joined, piece))
                vocab.setdefault(joined + piece, len(vocab))
                joined += piece
    raise RuntimeError("tiny Qwen tokenizer: template words still split after merging; template too irregular")


def _make(
    cls,
    added_token,
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    specials: list[str],
    chat_template: str | None,
):
    full = dict(vocab)
    for token in specials:
        full[token] = len(full)
    tokenizer = cls(
        vocab=full,
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [added_token(t, special=True) for t in specials]})
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def save_quietly(pipeline, out) -> None:
    """`save_pretrained` without per-file progress bars (the same quieting the SDXL stand-in uses)."""
    from backends.local_models import quiet_progress

    with quiet_progress():
        pipeline.save_pretrained(out)


def special_ids(tokenizer) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}


def token_roles(tokenizer) -> dict[str, int]:
    """A Qwen text config's bos/eos/pad ids, as Qwen assigns them, in our local tokenizer."""
    ids = special_ids(tokenizer)
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def sharpen(module, *, gain: float, attention_gain: float = 1.0, text_key_gain: float = 1.0) -> None:
    """Zero every bias, multiply every parameter of 2+ dimensions (matrices, conv kernels, the Qwen VAE's (C, 1, 1)
    norm scales) by `gain`, every q/k RMSNorm weight by `attention_gain` and the text stream's key norm
    (`norm_added_k`, joint-attention DiTs) by `text_key_gain` on top.

    WHY: with PyTorch's default init a tiny random network shrinks its signal layer by layer, biases dominate, and
    attention over thousands of image tokens is near uniform, so the output barely depends on the prompt or on any
    one input image (differences of 1e-6). Larger weights keep the signal alive and sharper attention lets a few
    tokens matter; longer text keys let a ~20-token prompt win attention against thousands of image tokens. Tests
    can then see that each input was used."""
    import torch

    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim >= 2:
                param.mul_(gain)
            elif ".norm_added_k." in name:
                param.mul_(attention_gain * text_key_gain)
            elif ".norm_q." in name or ".norm_k." in name or ".norm_added_q." in name:
                param.mul_(attention_gain)


@dataclass(frozen=True)
class VariantStandin:
    """A tiny stand-in that comes in variants, described once for its builder and its command line."""

    what: str  # the family, for messages ("FLUX.2 klein")
    module: str  # backends.standins.<module>, for the command line
    stamp: str  # build stamp prefix: a build is stamped `<stamp>-<variant>-r<recipe>`
    recipe: int  # bumped when the recipe changes, so existing builds are rebuilt
    variants: Mapping[str, object]
    default: str
    make: Callable[[str], object]  # variant -> the pipeline in memory
    describe: Callable[[str, Path], str]  # what the command line says it built

    def check(self, variant: str) -> None:
        if variant not in self.variants:
            raise ValueError(f"unknown tiny {self.what} variant {variant!r}; choose one of {', '.join(self.variants)}")

    def build(self, path: str | Path, *, variant: str, overwrite: bool) -> Path:
        """Build `make(variant)` into `path` through the shared `build_standin` (idempotent, atomic, stamped with
        the variant and recipe so a changed recipe rebuilds)."""
        from backends.standins.tiny_clip import build_standin

        self.check(variant)
        kind = f"{self.stamp}-{variant}-r{self.recipe}"
        return build_standin(path, kind, lambda out: save_quietly(self.make(variant), out), overwrite=overwrite)

    def main(self, argv: list[str] | None, doc: str | None) -> int:
        """`python -m backends.standins.<module> DIR [--variant V] [--overwrite]`; argparse, so `--help` prints
        usage instead of building into a folder named `--help`."""
        parser = argparse.ArgumentParser(
            prog=f"python -m backends.standins.{self.module}",
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("dir", type=Path, help="directory to build into")
        parser.add_argument(
            "--variant", choices=list(self.variants), default=self.default, help=f"default: {self.default}"
        )
        parser.add_argument("--overwrite", action="store_true", help="rebuild even if DIR already holds this build")
        args = parser.parse_args(argv)
        out = self.build(args.dir, variant=args.variant, overwrite=args.overwrite)
        sys.stderr.write(self.describe(args.variant, out) + "\n")
        return 0
