"""Partial images from a diffusers pipeline call while it denoises (OpenAI's streaming `partial_images` for
self-hosted models): at evenly spaced steps, the chosen rows of the current latents are decoded with the
pipeline's VAE (as the pipeline decodes its final latents) and handed to a per-row callback; a `stop()` that
turns true interrupts the call at its next step (diffusers' `_interrupt`).

    hook = StepPreviews({row: (count, deliver)}, stop=lambda: channel.cancelled)
    pipe(..., **hook.call_kwargs())        # callback_on_step_end + callback_on_step_end_tensor_inputs
    hook.interrupted                       # True: the call stopped early (its outputs are not the edit)

Any family whose pipeline takes `callback_on_step_end` with `latents` and has a `vae` can use it. Decoding a
preview costs one VAE decode of one row (a few percent of a 30-step SDXL call each); the device time is measured
with the call's, so it is billed as the call's GPU-seconds are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Deliver = Callable[[Any], None]  # receives a PIL image at the pipeline's working size


def preview_steps(total: int, count: int) -> set[int]:
    """Step numbers (1-based, after that step) at which to preview: `count` points evenly spaced before the end."""
    if count <= 0 or total <= 1:
        return set()
    return {s for k in range(1, count + 1) if 1 <= (s := round(total * k / (count + 1))) < total}


class StepPreviews:
    def __init__(self, rows: Mapping[int, tuple[int, Deliver]], stop: Callable[[], bool] = lambda: False) -> None:
        self.rows = dict(rows)  # latent row -> (partial images wanted, where each goes)
        self.stop = stop
        self.interrupted = False
        self.sent = 0

    def call_kwargs(self) -> dict[str, Any]:
        return {"callback_on_step_end": self, "callback_on_step_end_tensor_inputs": ["latents"]}

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.stop():
            pipe._interrupt = True  # noqa: SLF001 - diffusers' documented way to stop a call early
            self.interrupted = True
            return callback_kwargs
        total = int(getattr(pipe, "num_timesteps", 0) or getattr(pipe, "_num_timesteps", 0) or 0)
        latents = callback_kwargs.get("latents")
        for row, (count, deliver) in self.rows.items():
            if latents is None or step + 1 not in preview_steps(total, count):
                continue
            try:
                deliver(decode_row(pipe, latents, row))
                self.sent += 1
            except Exception:  # noqa: BLE001 - a preview failing must not fail the edit
                log.exception("preview at step %d of row %d failed", step + 1, row)
        return callback_kwargs


def decode_row(pipe: Any, latents: Any, row: int) -> Any:
    """One row of the latents as a PIL image, decoded as the pipeline decodes its final latents."""
    import torch

    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    with torch.no_grad():
        if upcast:  # SDXL's VAE overflows in fp16: decode in fp32, as the pipeline does
            vae.to(dtype=torch.float32)
        try:
            lat = latents[row : row + 1].to(dtype=next(iter(vae.post_quant_conv.parameters())).dtype)
            mean = getattr(vae.config, "latents_mean", None)
            std = getattr(vae.config, "latents_std", None)
            if mean is not None and std is not None:
                mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(lat.device, lat.dtype)
                std_t = torch.tensor(std).view(1, -1, 1, 1).to(lat.device, lat.dtype)
                lat = lat * std_t / vae.config.scaling_factor + mean_t
            else:
                lat = lat / vae.config.scaling_factor
            image = vae.decode(lat, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(dtype=torch.float16)
    return pipe.image_processor.postprocess(image, output_type="pil")[0]
