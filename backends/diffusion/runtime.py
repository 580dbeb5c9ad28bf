"""The torch side every diffusion family shares: the process-wide pipeline cache, loading a diffusers pipeline
from a hub id or a local `save_pretrained` directory, the memory and speed options (offload, channels_last,
fused QKV, torch.compile of the whole denoiser or of its repeated blocks, fp8 weight storage, the attention
backend, first-block cache, VAE tiling), seeds, synchronised timing, and out-of-memory handling.

A family describes its pipeline once in a `PipelineFamily` (the diffusers class, the module that denoises, the
area it was trained at, and a hook for its own adapters, e.g. SDXL's LoRA and IP-Adapter) and names it in its
settings class (`family: ClassVar[PipelineFamily]`); everything here then works on those settings
(`PipelineSettings`; the transformer options are optional fields, read with their defaults when a family's
settings lack them).

torch and diffusers are imported inside functions only, so importing a family's backend stays light and a router
on a machine without them can still build the backend, read its capabilities and estimate.

One pipeline per (family, model, device, dtype, options) per process, shared by every backend object and
thread; calls on one device are serialised by that device's lock (one GPU runs one batch at a time anyway, and
per-tier switches such as SDXL's LoRA mutate the shared pipeline).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from backends.errors import BackendMisconfigured, BackendUnavailable
from backends.local_models import (
    INSTALL_HINT,
    LOAD_LOCK,
    import_torch,
    is_local_model,
    load_failure,
    quiet_progress,
    resolve_device,
    resolve_dtype,
)

log = logging.getLogger(__name__)

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}

_cache: dict[tuple, LoadedPipeline] = {}
_cache_lock = threading.Lock()
_device_locks: dict[str, threading.Lock] = {}
loads = 0  # from_pretrained calls in this process (tests check that backends share one pipeline)


@dataclass
class LoadedPipeline:
    pipe: Any
    device: str  # resolved: cuda:0, mps, cpu
    dtype: str  # fp16 | bf16 | fp32
    lock: threading.Lock
    base_scheduler: Any
    lora_scheduler: Any = None
    lora_active: bool = False
    load_s: float = 0.0
    native_megapixels: float = 1.0  # the area the model was built for, in units of 1024x1024
    calls: int = 0  # pipeline calls so far; the first one warms up (lazy init, compilation) and is not typical
    notes: list[str] = field(default_factory=list)


def _unet_megapixels(pipe: Any) -> float:
    return (pipe.unet.config.sample_size * pipe.vae_scale_factor) ** 2 / 1024**2


@dataclass(frozen=True)
class PipelineFamily:
    """What the shared runtime needs to know about one model family's diffusers pipeline."""

    name: str  # in messages and logs: "SDXL inpaint"
    pipeline_class: str  # the diffusers class `from_pretrained` loads, e.g. "StableDiffusionXLInpaintPipeline"
    example_model: str  # a hub id the error for a bad local directory suggests
    denoiser: str = "unet"  # the pipeline attribute torch.compile and channels_last apply to ("transformer")
    native_megapixels: Callable[[Any], float] = _unet_megapixels  # the trained area, from the loaded pipeline
    # Family-specific loading after the generic options and before placement on the device (LoRA, IP-Adapter);
    # returns notes for the load log.
    add_adapters: Callable[[LoadedPipeline, Any], list[str]] | None = None
    # The class to load for these settings when one family has several (Qwen: Edit Plus or single-image Edit,
    # read from the checkpoint's model_index.json); None: `pipeline_class`.
    choose_class: Callable[[Any], str] | None = None
    accelerator_dtype: str = "fp16"  # `dtype: auto` on cuda/mps (bf16 for transformers that overflow fp16)
    regional_compile: bool = False  # compile the denoiser's repeated blocks (diffusers' compile_repeated_blocks)
    fuse_qkv_on: str = "pipeline"  # pipeline: pipe.fuse_qkv_projections() (UNets) | denoiser | none (unsupported)
    first_block_cache: bool = True  # diffusers' first-block cache hook works on its transformer blocks


class PipelineSettings(Protocol):
    """The fields of a family's settings that the runtime reads."""

    family: ClassVar[PipelineFamily]
    model: str
    variant: str | None
    device: str
    dtype: str
    offload: str  # none | model | sequential
    compile: bool
    compile_mode: str
    channels_last: bool
    fuse_qkv: bool
    target_megapixels: float | None

    def cache_key(self) -> tuple: ...


def import_diffusers():
    try:
        import diffusers
    except ImportError as exc:
        raise BackendMisconfigured(
            f"self-hosted diffusion models need diffusers and transformers: {INSTALL_HINT}"
        ) from exc
    return diffusers


def device_lock(device: str) -> threading.Lock:
    with _cache_lock:
        return _device_locks.setdefault(device, threading.Lock())


def _key(settings: PipelineSettings) -> tuple:
    return (settings.family.name, *settings.cache_key())


def get_pipeline(settings: PipelineSettings) -> LoadedPipeline:
    """The shared pipeline for these settings, loading it on first use (once per process)."""
    key = _key(settings)
    with _cache_lock:
        loaded = _cache.get(key)
    if loaded is not None:
        return loaded
    device = resolve_device(settings.device)
    lock = device_lock(device)
    with lock:  # loading is GPU work too; and a second thread asking for the same key waits, then reuses
        with _cache_lock:
            loaded = _cache.get(key)
        if loaded is None:
            loaded = _load(settings, device, lock)
            with _cache_lock:
                _cache[key] = loaded
    return loaded


def cached(settings: PipelineSettings) -> LoadedPipeline | None:
    """The pipeline for these settings if this process has loaded it (never loads; no torch)."""
    with _cache_lock:
        return _cache.get(_key(settings))


def clear_cache() -> None:
    """Drop every loaded pipeline (tests; freeing a GPU)."""
    with _cache_lock:
        _cache.clear()
    gc.collect()
    torch = import_torch()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(settings: PipelineSettings, device: str, lock: threading.Lock) -> LoadedPipeline:
    global loads
    torch, diffusers = import_torch(), import_diffusers()
    family = settings.family
    dtype = resolve_dtype(settings.dtype, device, family.accelerator_dtype)
    class_name = family.choose_class(settings) if family.choose_class else family.pipeline_class
    model = settings.model
    local = is_local_model(model)
    if local:
        path = Path(model).expanduser()
        if not (path / "model_index.json").is_file():
            raise BackendMisconfigured(
                f"model directory {str(path)!r} not found or not a diffusers pipeline (no model_index.json); "
                f"give a hub id such as {family.example_model!r} or a save_pretrained directory"
            )
        model = str(path)
    start = time.perf_counter()
    try:
        # newer diffusers renamed torch_dtype -> dtype; older ones only know this
        with LOAD_LOCK, warnings.catch_warnings(), quiet_progress():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = getattr(diffusers, class_name).from_pretrained(
                model, torch_dtype=getattr(torch, DTYPES[dtype]), variant=settings.variant
            )
    except (OSError, ValueError) as exc:  # hub unreachable / not in cache / bad files
        what = f"{family.name} model"
        raise BackendMisconfigured(load_failure(what, model, exc, local=local, index_file="model_index.json")) from None
    loads += 1
    with LOAD_LOCK:  # adapters (LoRA, IP-Adapter's image encoder) are model loads too
        loaded = prepare_pipeline(pipe, settings, device, dtype, lock)
    loaded.load_s = time.perf_counter() - start
    log.info(
        "loaded %s %s on %s (%s%s) in %.1fs",
        family.name,
        model,
        device,
        dtype,
        ", " + ", ".join(loaded.notes) if loaded.notes else "",
        loaded.load_s,
    )
    return loaded


class _EmptyFloat32Notice(logging.Filter):
    """diffusers warns "modules in AutoencoderKL that should be kept in float32: []" on every `.to()`: with an
    empty list there is nothing to keep, so the notice is noise on the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def quiet_float32_notice() -> None:
    modeling_log = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFloat32Notice) for f in modeling_log.filters):
        modeling_log.addFilter(_EmptyFloat32Notice())


def prepare_pipeline(
    pipe: Any, settings: PipelineSettings, device: str, dtype: str, lock: threading.Lock | None = None
) -> LoadedPipeline:
    """Apply the settings' options to a pipeline already in `dtype`, and place it on `device`."""
    torch = import_torch()
    family = settings.family
    quiet_float32_notice()
    pipe.set_progress_bar_config(disable=True)
    notes: list[str] = []
    if settings.fuse_qkv and family.fuse_qkv_on != "none":
        (getattr(pipe, family.denoiser) if family.fuse_qkv_on == "denoiser" else pipe).fuse_qkv_projections()
        notes.append("fused qkv")
    if settings.channels_last:
        getattr(pipe, family.denoiser).to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        notes.append("channels_last")
    loaded = LoadedPipeline(
        pipe=pipe,
        device=device,
        dtype=dtype,
        lock=lock or device_lock(device),
        base_scheduler=pipe.scheduler,
        native_megapixels=family.native_megapixels(pipe),
    )
    if family.add_adapters is not None:
        notes += family.add_adapters(loaded, settings)
    notes += _transformer_options(pipe, settings, dtype)
    if settings.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
        notes.append("model cpu offload")
    elif settings.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
        notes.append("sequential cpu offload")
    else:
        pipe.to(device)
    if settings.compile and family.regional_compile:
        getattr(pipe, family.denoiser).compile_repeated_blocks(fullgraph=True, mode=settings.compile_mode)
        notes.append(f"torch.compile of repeated blocks ({settings.compile_mode})")
    elif settings.compile:
        setattr(pipe, family.denoiser, torch.compile(getattr(pipe, family.denoiser), mode=settings.compile_mode))
        notes.append(f"torch.compile({settings.compile_mode})")
    loaded.notes = notes
    return loaded


def _transformer_options(pipe: Any, settings: PipelineSettings, dtype: str) -> list[str]:
    """fp8 weight storage, attention backend, first-block cache and VAE tiling, where the settings have them."""
    torch = import_torch()
    denoiser = getattr(pipe, settings.family.denoiser)
    notes = []
    if getattr(settings, "fp8", False):
        # weights stored as float8_e4m3fn, each layer upcast to the compute dtype when it runs: half the memory
        # of bf16 for the denoiser, no speed gain (diffusers' layerwise casting, no extra library)
        compute = getattr(torch, DTYPES[dtype])
        denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        notes.append("fp8 weights (layerwise casting)")
    backend = getattr(settings, "attention_backend", None)
    if backend:
        _set_attention_backend(denoiser, backend)
        notes.append(f"attention {backend}")
    threshold = getattr(settings, "first_block_cache", None)
    if threshold:
        from diffusers import FirstBlockCacheConfig

        denoiser.enable_cache(FirstBlockCacheConfig(threshold=threshold))
        notes.append(f"first-block cache {threshold:g}")
    if getattr(settings, "vae_tiling", False):
        pipe.vae.enable_tiling()
        notes.append("vae tiling")
    return notes


def _set_attention_backend(denoiser: Any, backend: str) -> None:
    """This model's attention through `backend`, and only this model's: diffusers' `set_attention_backend` also
    makes it the process-wide default, which would switch every other pipeline loaded here (and those loaded later)
    to it, so the default is put back."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    try:
        denoiser.set_attention_backend(backend)
    except (ValueError, RuntimeError, ImportError) as exc:
        raise BackendMisconfigured(f"attention_backend {backend!r}: {str(exc).splitlines()[0]}") from None
    finally:
        _AttentionBackendRegistry.set_active_backend(before)


def register_pipeline(settings: PipelineSettings, pipe: Any) -> LoadedPipeline:
    """Put an already-built pipeline (e.g. benchmarks' random-weight full-size architecture, which has no files)
    in the cache under `settings`, prepared as a loaded one would be. Its parameters must already be in the
    settings' dtype."""
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device, settings.family.accelerator_dtype)
    loaded = prepare_pipeline(pipe, settings, device, dtype)
    with _cache_lock:
        _cache[_key(settings)] = loaded
    return loaded


def generators(seed: int, n: int) -> list:
    """One CPU generator per image (seed, seed+1, ...): image k is the same whatever n is, on any device."""
    torch = import_torch()
    return [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]


def synchronize(device: str) -> None:
    torch = import_torch()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    elif device == "mps":
        torch.mps.synchronize()


@contextmanager
def timed(device: str) -> Iterator[dict[str, float]]:
    """Seconds of device work: synchronised before and after on CUDA/MPS, wall time on CPU."""
    out: dict[str, float] = {}
    synchronize(device)
    start = time.perf_counter()
    yield out
    synchronize(device)
    out["seconds"] = time.perf_counter() - start


def is_oom(exc: BaseException) -> bool:
    torch = import_torch()
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def free_memory(device: str) -> None:
    """Give back what finished or failed work held (after an OOM: so the pipeline stays usable for the next,
    smaller request)."""
    gc.collect()
    torch = import_torch()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def oom_error(n: int, size: tuple[int, int], settings: PipelineSettings, device: str) -> BackendUnavailable:
    advice = [f"ask for fewer images than n={n}"] if n > 1 else []
    if settings.offload == "none":
        advice.append("set `offload: model` in the backend settings")
    if hasattr(settings, "fp8") and not getattr(settings, "fp8", False):
        advice.append("set `fp8: true` (half the transformer's weight memory)")
    if (settings.target_megapixels or 1.0) > 0.6:
        advice.append("lower `target_megapixels`")
    return BackendUnavailable(
        f"out of GPU memory on {device} at {size[0]}x{size[1]} working size; "
        + ("; ".join(advice) or "use a card with more memory")
    )


def peak_memory_gib(device: str) -> float | None:
    torch = import_torch()
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def run_guarded(call: Callable[[], Any], *, device: str, on_oom: Callable[[], BackendUnavailable]) -> Any:
    """Run a pipeline call; an out-of-memory error frees the cache and becomes BackendUnavailable."""
    try:
        return call()
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        free_memory(device)
        raise on_oom() from None
