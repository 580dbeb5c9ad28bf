"""Image-quality metrics for `editroute eval`: numpy only, no model.

- `psnr` and `ssim` compare the output with the input OUTSIDE the edit region (how well it was preserved).
  SSIM is Wang et al. (2004) on luma with a uniform 7x7 window and sample covariance (scikit-image's defaults),
  averaged over the pixels whose whole window lies in the kept region.
- `seam` measures what the edit added at the mask border, against the input, as the sum of two excesses (each
  clamped at 0; luma gradient magnitudes, +8 levels so flat areas do not turn tiny changes into huge ratios):
    crossing  = how much sharper the output is than the input within 1 px of the border, over the border pixels
                where the input was continuous (an object outline that was already an edge in the input is left
                out: a new background may make it crisper without a seam)
    roughness = how much rougher the fill is at 3-6 px inside the border than the rougher side of the border was
                in the input (noise pasted beside a clean object is a seam too, however noisy its own surroundings)
  0 = nothing new at the border; 1 = twice as sharp, or twice as rough, as the input there. A textured fill where
  the input was smooth costs a little; that is the price of catching noise. (An earlier version divided by the
  gradient of the fill's own surroundings, so a noisy fill read as seamless.)
- `quality_score` combines them (and CLIP's prompt adherence) into one number in 0..1, the formula below.

    adherence    = clip(2.5 x cos(CLIP image, CLIP text), 0, 1)      CLIP-S (Hessel et al., 2021)
    preservation = 0.5 x clip(SSIM, 0, 1) + 0.5 x min(PSNR, 40 dB) / 40
    seam_score   = 1 / (1 + seam)
    quality      = 0.5 x adherence + 0.35 x preservation + 0.15 x seam_score
                   (a metric that does not apply, e.g. preservation without a mask, drops out and the
                    weights of the others are renormalised)
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from backends.masks import box_sum, dilate

WEIGHTS = {"adherence": 0.5, "preservation": 0.35, "seam": 0.15}
PSNR_CAP_DB = 40.0
SEAM_FLOOR = 8.0  # luma levels per pixel added to every gradient mean in `seam` (a barely visible texture)
CLIP_S_WEIGHT = 2.5
FORMULA = (
    "quality = 0.5 adherence + 0.35 preservation + 0.15 seam_score (weights renormalised over the metrics "
    "that apply); adherence = clip(2.5 cos(CLIP image, text), 0, 1); preservation = 0.5 clip(SSIM, 0, 1) + "
    f"0.5 min(PSNR, {PSNR_CAP_DB:g} dB)/{PSNR_CAP_DB:g} outside the mask; seam_score = 1/(1 + seam)"
)


def rgb_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64)


def luma(a: np.ndarray) -> np.ndarray:
    return a @ np.array([0.299, 0.587, 0.114]) if a.ndim == 3 else a


def align(output: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The output mapped onto the input's pixel grid: a letterboxed output (another aspect ratio) is cropped to
    where the input sits, then resized. Same size: unchanged, so identical pixels compare as identical."""
    if output.size == size:
        return output
    (ow, oh), (iw, ih) = output.size, size
    scale = min(ow / iw, oh / ih)
    cw, ch = max(1, round(iw * scale)), max(1, round(ih * scale))
    left, top = (ow - cw) // 2, (oh - ch) // 2
    return output.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.LANCZOS)


def edit_region(mask: Image.Image | None, size: tuple[int, int]) -> np.ndarray | None:
    """True where the OpenAI-convention mask says edit (alpha 0); None without a mask."""
    if mask is None:
        return None
    m = mask.convert("RGBA")
    if m.size != size:
        m = m.resize(size, Image.Resampling.NEAREST)
    return np.asarray(m.getchannel("A")) == 0


def psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB over `region` (all pixels if None); inf when identical."""
    diff = (a - b) if region is None else (a - b)[region]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, region: np.ndarray | None = None, win: int = 7) -> float:
    """Mean SSIM of the luma of `a` and `b` over windows inside `region` (see the module docstring)."""
    x, y = luma(a), luma(b)
    r = win // 2
    n = win * win

    def mean(v: np.ndarray) -> np.ndarray:
        return box_sum(v, r) / n

    mx, my = mean(x), mean(y)
    cov = n / (n - 1)
    vx, vy = cov * (mean(x * x) - mx * mx), cov * (mean(y * y) - my * my)
    vxy = cov * (mean(x * y) - mx * my)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    smap = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    inside = np.zeros(x.shape, bool)
    inside[r : x.shape[0] - r, r : x.shape[1] - r] = True  # windows that do not hang over the image's edge
    keep = inside if region is None else inside & (box_sum(region, r) >= n - 0.5)
    if not keep.any():
        keep = region if region is not None and region.any() else np.ones(x.shape, bool)
    return float(smap[keep].mean())


def _gradient(a: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(luma(a))
    return np.hypot(gx, gy)


def seam(output: np.ndarray, source: np.ndarray, edit: np.ndarray | None) -> float | None:
    """Crossing + roughness excess at the mask border, against the input (module docstring); None when there is
    no border (no mask, or a mask that edits all or nothing)."""
    if edit is None or edit.all() or not edit.any():
        return None
    keep = ~edit
    band = dilate(edit, 1) & dilate(keep, 1)
    edit_ring = dilate(keep, 6) & ~dilate(keep, 2)
    keep_ring = dilate(edit, 6) & ~dilate(edit, 2)
    if not band.any() or not edit_ring.any() or not keep_ring.any():
        return None
    g_out, g_src = _gradient(output), _gradient(source)

    def mean(g: np.ndarray, where: np.ndarray) -> float:
        return float(g[where].mean())

    src_rough = max(mean(g_src, keep_ring), mean(g_src, edit_ring))
    continuous = band & (g_src <= src_rough + SEAM_FLOOR)  # border pixels that were not an edge in the input
    crossing = 0.0
    if continuous.any():
        crossing = (mean(g_out, continuous) + SEAM_FLOOR) / (mean(g_src, continuous) + SEAM_FLOOR) - 1
    roughness = (mean(g_out, edit_ring) + SEAM_FLOOR) / (src_rough + SEAM_FLOOR) - 1
    return max(0.0, crossing) + max(0.0, roughness)


def adherence(clip_cosine: float | None) -> float | None:
    if clip_cosine is None:
        return None
    return float(min(1.0, max(0.0, CLIP_S_WEIGHT * clip_cosine)))


def preservation(psnr_db: float | None, ssim_value: float | None) -> float | None:
    if psnr_db is None or ssim_value is None or math.isnan(psnr_db) or math.isnan(ssim_value):
        return None
    return 0.5 * min(1.0, max(0.0, ssim_value)) + 0.5 * min(psnr_db, PSNR_CAP_DB) / PSNR_CAP_DB


def seam_score(seam_value: float | None) -> float | None:
    return None if seam_value is None else 1.0 / (1.0 + seam_value)


def quality_score(
    adherence_value: float | None, preservation_value: float | None, seam_value: float | None
) -> float | None:
    """The combined score in 0..1 (`FORMULA`); None when no metric applies."""
    parts = {"adherence": adherence_value, "preservation": preservation_value, "seam": seam_score(seam_value)}
    used = {k: v for k, v in parts.items() if v is not None}
    if not used:
        return None
    total = sum(WEIGHTS[k] for k in used)
    return sum(WEIGHTS[k] * v for k, v in used.items()) / total
