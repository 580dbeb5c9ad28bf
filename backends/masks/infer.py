"""Text-prompted masks: derive the edit region from the prompt, so self-hosted inpainting needs no mask.

    target = extract_target("remove the logo from the shelf")   # Target(phrase="logo", inverted=False)
    found = infer_mask(image, prompt, MaskSettings())            # InferredMask(mask_png, phrase, inverted, coverage)

1. `extract_target()` (pure): the phrase the prompt is about. "remove the logo from the shelf" -> "logo";
   "change the red badge to say SALE" -> "red badge"; "make the sky a sunset" -> "sky"; "place a lamp on the
   floor" -> "floor". A background phrase ("replace the background with...") is the inverse of the salient
   object: CLIPSeg is asked for `salient_phrase` and the region is inverted. No match: the prompt itself.
2. CLIPSeg (`CLIPSegForImageSegmentation`, default `CIDAS/clipseg-rd64-refined`, loaded once per process) scores
   every pixel for the phrase; the low-res logits are resized to the image, passed through a sigmoid,
   thresholded, dilated by `dilate_px` and feathered by `feather_px`. With `grounded_sam:` configured, Grounding
   DINO boxes the phrase and SAM segments the boxes instead (backends/masks/grounded_sam.py); the rest is the same.
3. The mask follows OpenAI's convention: RGBA PNG at the image's size, alpha 0 = edit. The feather ramps alpha
   from 0 at the region's edge up to 255 over `feather_px` OUTSIDE it, so the alpha-0 region is exactly the
   (dilated) match. An empty match raises `BackendUnavailable` before any GPU time is spent on the edit, so the job
   takes the policy's fallbacks (an API that needs no mask).

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backends.errors import BackendMisconfigured, BackendUnavailable

log = logging.getLogger(__name__)

DEFAULT_MASK_MODEL = "CIDAS/clipseg-rd64-refined"


class GroundedSamSettings(BaseModel):
    """`mask_inference.grounded_sam:` Grounding DINO boxes the phrase, SAM segments the boxes (grounded_sam.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: str = "IDEA-Research/grounding-dino-tiny"  # hub id or local directory
    segmenter: str = "facebook/sam-vit-base"  # hub id or local directory
    box_threshold: float = Field(default=0.3, gt=0, lt=1)  # detection score a box needs
    max_boxes: int = Field(default=3, ge=1, le=32)  # the best boxes are segmented and united


class MaskSettings(BaseModel):
    """`mask_inference:` of a self-hosted backend. Pixel sizes are at the input image's resolution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = DEFAULT_MASK_MODEL  # hub id or local directory (save_pretrained layout)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (a backend passes its own device for auto)
    threshold: float = Field(default=0.4, gt=0, lt=1)  # sigmoid probability that a pixel shows the phrase
    dilate_px: int = Field(default=8, ge=0, le=128)  # grow the region so the edit covers edges and shadows
    feather_px: int = Field(default=4, ge=0, le=128)  # alpha ramp outside the region
    min_coverage: float = Field(default=0.001, ge=0, lt=1)  # a smaller match counts as "nothing matched"
    salient_phrase: str = "the main object"  # what a background edit keeps (the mask is its inverse)
    grounded_sam: GroundedSamSettings | None = None  # Grounding DINO + SAM instead of CLIPSeg (`model`)

    @model_validator(mode="after")
    def _one_model(self) -> MaskSettings:
        if self.grounded_sam is not None and "model" in self.model_fields_set:
            raise ValueError("set either `model` (CLIPSeg) or `grounded_sam` (Grounding DINO + SAM), not both")
        return self


# ---- 1. the target phrase ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    phrase: str  # what the prompt is about ("logo", "background")
    inverted: bool = False  # the region is everything except the salient object (background edits)
    matched: bool = True  # False: no verb pattern matched; `phrase` is the cleaned prompt


_REMOVE = r"remove|erase|delete|get rid of|take out|take away|clean up|hide|clear"
_CHANGE = (r"replace|swap|change|switch|recolou?r|fix|edit|retouch|update|transform|convert|modify|alter|restyle|"
           r"darken|brighten|blur|sharpen|enhance|redo|redraw|repaint|rewrite|translate|localise|localize")
_COMPLEMENT = r"make|turn|paint|colou?r|tint|dye"  # "make the sky a sunset", "turn the car red"
_PLACE = r"place|put|add|insert|hang|position|set|mount|drop|stand"
_VERB = re.compile(rf"\b(?:(?P<remove>{_REMOVE})|(?P<change>{_CHANGE})|(?P<complement>{_COMPLEMENT})|"
                   rf"(?P<place>{_PLACE}))\b")
# longer phrases first: at one position the first alternative that matches wins ("on top of", not "on")
_LOCATION = re.compile(r"\b(?:on top of|in front of|next to|onto|on|into|inside|in|at|over|against|above|below|"
                       r"under|beside|behind|across|to)\s+(?P<rest>.+)")  # "add a hat to the dog": dog
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "its", "their", "his", "her", "my", "our",
                "your", "all", "any", "some", "every", "each", "image", "photo", "picture"}
_STOP = {"to", "into", "with", "for", "from", "on", "onto", "in", "at", "by", "under", "over", "behind", "near",
         "above", "below", "beside", "next", "so", "as", "and", "or", "but", "that", "which", "while", "then",
         "using", "like", "instead", "without", "is", "are", "looks", "look", "say", "says", "read", "reads",
         "become", "becomes", "here", "there", "a", "an", "the", "keep", "keeping", "leaving", "same", "please",
         "making", "it", "them",
         "everything", "something", "within", "inside", "across", "around", "against", "of", "off", "out", "away"}
_ATTRIBUTE_OF = {"colour", "color", "texture", "pattern", "shade", "style", "look", "appearance", "material",
                 "finish", "lighting"}  # "change the colour of the car" -> "car"
_BACKGROUND = {"background", "backdrop", "backgrounds", "surroundings", "bg"}
_MAX_WORDS = 4
_FALLBACK_WORDS = 12


def _clean(prompt: str) -> str:
    text = re.sub(r"(?<=[A-Za-z])’(?=[A-Za-z])", "'", prompt)  # person’s -> person's
    text = re.sub(r"[\"“”‘’«»]([^\"“”‘’«»]*)[\"“”‘’«»]", " ", text)  # quoted replacement text
    text = re.sub(r"(?<![A-Za-z])'[^']*'(?![A-Za-z])", " ", text)  # 'SALE', but not "shirt's"
    text = re.sub(r"[^a-z0-9\s'-]", " , ", text.lower())  # punctuation ends a phrase
    return re.sub(r"\s+", " ", text).strip()


def _noun_phrase(words: list[str]) -> list[str]:
    """Words after the verb up to the first stop word (determiners skipped in front), at most _MAX_WORDS."""
    i = 0
    while i < len(words) and words[i] in _DETERMINERS:
        i += 1
    out: list[str] = []
    while i < len(words) and words[i] != "," and words[i] not in _STOP:
        out.append(words[i])
        i += 1
    if out and out[-1] in _ATTRIBUTE_OF and i + 1 < len(words) and words[i] == "of":
        return _noun_phrase(words[i + 1:])
    if len(out) > 1 and out[-1] in _ATTRIBUTE_OF:  # "change the shirt colour to red" -> "shirt"
        out = out[:-1]
    return out[:_MAX_WORDS]


def _region(phrase: list[str]) -> Target | None:
    if not phrase:
        return None
    if any(w in _BACKGROUND for w in phrase):
        return Target("background", inverted=True)
    return Target(" ".join(phrase))


def extract_target(prompt: str) -> Target:
    """The region an edit prompt is about (see the module docstring). Pure; never raises."""
    text = _clean(prompt)
    for verb in _VERB.finditer(text):
        rest = text[verb.end():].split()
        kind = verb.lastgroup
        if kind == "place":
            where = _LOCATION.search(text, verb.end())
            found = _region(_noun_phrase(where.group("rest").split())) if where else None
        else:
            phrase = _noun_phrase(rest)
            ran_to_end = len(phrase) == len([w for w in rest if w not in _DETERMINERS])
            if kind == "complement" and len(phrase) > 1 and ran_to_end:
                phrase = phrase[:-1]  # "turn the car red": the last word is what it becomes
            found = _region(phrase)
        if found is not None:
            return found
    words = [w for w in text.split() if w != ","][:_FALLBACK_WORDS]
    fallback = _region(words) if any(w in _BACKGROUND for w in words) else None
    return fallback or Target(" ".join(words) or prompt.strip()[:80], matched=False)


# ---- 2. models, loaded once per process ---------------------------------------------------------------

@dataclass
class LoadedModel:
    model: Any
    processor: Any
    device: str


_models: dict[tuple[str, str, str], LoadedModel] = {}
_models_lock = threading.Lock()
loads = 0  # from_pretrained calls in this process (tests check the cache)


def load_pretrained(model_id: str, model_class: str, processor_class: str, *, device: str = "auto",
                    what: str = "model") -> LoadedModel:
    """`transformers.<model_class>` + `<processor_class>` from a hub id or local dir, cached per process.
    A missing or broken model raises `BackendMisconfigured` naming the id and the cache it looked in."""
    global loads
    from backends.diffusion.runtime import hf_cache_dir, is_local_model, resolve_device  # sdxl_runtime imports us

    resolved = resolve_device(device)
    key = (model_id, model_class, resolved)
    with _models_lock:
        hit = _models.get(key)
        if hit is not None:
            return hit
        try:
            import torch  # noqa: F401
            import transformers
        except ImportError as exc:
            raise BackendMisconfigured(f"the {what} needs torch and transformers: pip install "
                                       '"editroute[sdxl]"') from exc
        local = is_local_model(model_id)  # a path that is not there is a wrong path, not a hub id to download
        source = str(Path(model_id).expanduser()) if local else model_id
        where = f"directory {source}" if local else f"the Hugging Face cache at {hf_cache_dir()}"
        fix = ("Check the path (a save_pretrained directory)" if local else f"Download it first (`hf download "
               f"{model_id}`) or point the setting at a local save_pretrained directory")
        try:
            if local and not Path(source).is_dir():
                raise FileNotFoundError("no such directory")
            loads += 1
            model = getattr(transformers, model_class).from_pretrained(source)
            processor = getattr(transformers, processor_class).from_pretrained(source)
        except Exception as exc:  # OSError (not cached, offline), bad config, wrong class
            first = str(exc).splitlines()[0].rstrip(".") if str(exc) else exc.__class__.__name__
            raise BackendMisconfigured(
                f"cannot load {what} {model_id!r} from {where}: {first}. {fix}") from None
        model = model.to(resolved).eval()
        hit = _models[key] = LoadedModel(model, processor, resolved)
        log.info("loaded %s %s on %s", what, model_id, resolved)
        return hit


def clear_cache() -> None:
    with _models_lock:
        _models.clear()


# ---- 3. the mask -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InferredMask:
    mask_png: bytes  # RGBA at the image's size, alpha 0 = edit (OpenAI's convention)
    phrase: str  # the target phrase ("logo", "background")
    inverted: bool  # the region is the inverse of `query`'s match
    coverage: float  # fraction of the image to be edited (alpha 0)
    query: str = ""  # what CLIPSeg was asked for
    matched: bool = True  # False: no verb pattern matched; the prompt itself was the query

    def details(self) -> dict[str, Any]:
        return {"mask_inferred": True, "mask_phrase": self.phrase, "mask_inverted": self.inverted,
                "mask_coverage": round(self.coverage, 4), "mask_query": self.query}


def box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)^2 square around each pixel (zero padding), O(pixels) via integral images."""
    if r <= 0:
        return a.astype(np.float64)
    p = np.pad(a.astype(np.float64), r + 1)
    c = p.cumsum(0).cumsum(1)
    k = 2 * r + 1
    h, w = a.shape
    return c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]


def dilate(region: np.ndarray, r: int) -> np.ndarray:
    return region if r <= 0 else box_sum(region, r) > 0.5


def mask_from_region(region: np.ndarray, rgb: Image.Image | None = None, feather_px: int = 0) -> bytes:
    """RGBA PNG: alpha 0 on `region` (True = edit), ramping to 255 over `feather_px` outside it."""
    h, w = region.shape
    if feather_px > 0:
        near = box_sum(region, feather_px) / (2 * feather_px + 1) ** 2  # share of edit pixels nearby
        alpha = np.clip(255 * (1 - np.clip(near * 2, 0, 1)), 0, 255)
        alpha[region] = 0
        alpha[(~region) & (alpha < 1)] = 1  # only the region itself is alpha 0
    else:
        alpha = np.where(region, 0, 255)
    base = (rgb.convert("RGB") if rgb is not None else Image.new("RGB", (w, h), (0, 0, 0))).resize((w, h))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha.astype(np.uint8), "L"))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    return buf.getvalue()


def probabilities(image: Image.Image, query: str, settings: MaskSettings) -> np.ndarray:
    """CLIPSeg's (or Grounding DINO + SAM's) per-pixel probability for `query` at the image's size (H x W, 0..1)."""
    if settings.grounded_sam is not None:
        from backends.masks.grounded_sam import probabilities as grounded_probabilities

        return grounded_probabilities(image, query, settings)
    import torch

    loaded = load_pretrained(settings.model, "CLIPSegForImageSegmentation", "CLIPSegProcessor",
                             device=settings.device, what="mask model")
    inputs = loaded.processor(text=[query], images=[image.convert("RGB")], padding=True, truncation=True,
                              return_tensors="pt")
    inputs = {k: v.to(loaded.device) for k, v in inputs.items()}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    low = logits.reshape(-1, *logits.shape[-2:])[0].float().cpu().numpy()
    up = Image.fromarray(low.astype(np.float32), "F").resize(image.size, Image.Resampling.BILINEAR)
    return 1.0 / (1.0 + np.exp(-np.asarray(up, dtype=np.float64)))


def infer_mask(image: Image.Image, prompt: str, settings: MaskSettings, *, job_id: str | None = None
               ) -> InferredMask:
    """The edit region for `prompt` on `image` as an OpenAI-convention mask (see the module docstring)."""
    target = extract_target(prompt)
    query = settings.salient_phrase if target.inverted else target.phrase
    prob = probabilities(image, query, settings)
    match = prob >= settings.threshold
    region = ~match if target.inverted else match
    region = dilate(region, settings.dilate_px) if region.any() else region
    coverage = float(region.mean())
    if not region.any() or coverage < settings.min_coverage:
        what = f"everything except {query!r}" if target.inverted else repr(query)
        raise BackendUnavailable(  # this backend cannot run the job; an API that needs no mask still can
            f"mask=None: no region of the image matched the phrase {target.phrase!r} (looked for {what}; best "
            f"score {prob.max():.2f} vs threshold {settings.threshold}, coverage {coverage:.4f} < min_coverage "
            f"{settings.min_coverage}); give a mask, name the region plainly in the prompt, or lower "
            f"mask_inference.{'grounded_sam.box_threshold or ' if settings.grounded_sam else ''}threshold",
            job_id=job_id)
    log.info("inferred mask for %r: %s%r covers %.1f%%", prompt[:60], "not " if target.inverted else "", query,
             100 * coverage)
    return InferredMask(mask_from_region(region, image, settings.feather_px), target.phrase, target.inverted,
                        coverage, query, target.matched)


__all__ = ["DEFAULT_MASK_MODEL", "InferredMask", "MaskSettings", "Target", "extract_target", "infer_mask",
           "load_pretrained", "mask_from_region"]
