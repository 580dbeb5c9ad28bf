"""How much GPU memory a self-hosted checkpoint needs with the memory options its settings choose (pure Python).

Weights are parameter counts x bytes per parameter (2 for bf16/fp16, 4 for fp32, 1 for a denoiser stored in fp8);
the counts are the full-size architectures instantiated on the meta device (diffusers 0.42.1, transformers 5.25).
Activations come on top: `activations_gib` is an estimate at ~1 MP per image until benchmarks/diffusion_speed.py
measures the peak on a card. With `offload: model` one component is on the GPU at a time (the largest sets the
peak); `offload: sequential` streams layer by layer (a GiB or two, very slow).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
SEQUENTIAL_GIB = 1.5  # the largest layer in flight plus buffers, for any of these models


@dataclass(frozen=True)
class Checkpoint:
    name: str
    params_b: dict[str, float]  # component -> billions of parameters
    denoiser: str  # the component `fp8: true` stores in fp8
    activations_gib: float  # at ~1 MP per image, batch 1 (estimate)

    def weights_gib(self, dtype: str = "bf16", fp8: bool = False) -> dict[str, float]:
        out = {}
        for part, billions in self.params_b.items():
            per = 1 if (fp8 and part == self.denoiser) else BYTES.get(dtype, 2)
            out[part] = billions * 1e9 * per / GIB
        return out


@dataclass(frozen=True)
class MemoryNeed:
    gib: float  # GPU memory to plan for: weights resident at once + activations
    detail: str


def need(ckpt: Checkpoint, *, dtype: str = "bf16", offload: str = "none", fp8: bool = False) -> MemoryNeed:
    parts = ckpt.weights_gib(dtype, fp8)
    total = sum(parts.values())
    if offload == "model":
        biggest = max(parts, key=lambda k: parts[k])
        resident, how = parts[biggest], f"model offload: the {biggest} ({parts[biggest]:.1f} GiB) at a time"
    elif offload == "sequential":
        resident, how = SEQUENTIAL_GIB, "sequential offload: layer by layer (slow)"
    else:
        resident, how = total, "all weights on the GPU"
    weights = f"{dtype}{' + fp8 ' + ckpt.denoiser if fp8 else ''} weights {total:.1f} GiB"
    return MemoryNeed(
        round(resident + ckpt.activations_gib, 1),
        f"{ckpt.name}: {weights}; {how}; + ~{ckpt.activations_gib:g} GiB activations (estimate)",
    )


OPTIONS: tuple[tuple[str, dict], ...] = (
    ("defaults", {}),
    ("fp8: true", {"fp8": True}),
    ("offload: model", {"offload": "model"}),
    ("fp8: true, offload: model", {"fp8": True, "offload": "model"}),
    ("offload: sequential", {"offload": "sequential"}),
)


def table_rows(ckpt: Checkpoint, dtype: str = "bf16", fp8: bool = True) -> list[tuple[str, float]]:
    """The documented options and what each needs (docs/self-hosted-diffusion.md lists these)."""
    return [
        (label, need(ckpt, dtype=dtype, **kw).gib)  # type: ignore[arg-type]
        for label, kw in OPTIONS
        if fp8 or not kw.get("fp8")
    ]


def lightest_fit(ckpt: Checkpoint, vram_gib: float, dtype: str = "bf16", fp8: bool = True) -> str | None:
    """The first option (fastest first) whose need fits in `vram_gib`; None when none does."""
    for label, gib in table_rows(ckpt, dtype, fp8):
        if gib <= vram_gib:
            return label
    return None
