"""The torch side of the SDXL backend: device and dtype choice, the process-wide pipeline cache, LoRA and
IP-Adapter loading, synchronised timing, and translation of torch/diffusers failures into `backends.errors`.

torch and diffusers are imported inside functions only, so `import backends.diffusion.sdxl` stays light and a router
on a machine without them can still build the backend, read its capabilities and estimate.

One pipeline per (model, device, dtype, options) per process, shared by every backend object and thread;
calls on one device are serialised by that device's lock (one GPU runs one batch at a time anyway, and the
LoRA/scheduler switch between tiers mutates the shared pipeline).
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
from typing import Any

from backends.diffusion.sdxl_settings import Settings
from backends.errors import BackendMisconfigured, BackendUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "editroute[sdxl]"'
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
    native_megapixels: float = 1.0  # the area the UNet was built for, in units of 1024x1024
    calls: int = 0  # pipeline calls so far; the first one warms up (lazy init, compilation) and is not typical
    notes: list[str] = field(default_factory=list)


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendMisconfigured(f"the sdxl backend needs torch: {INSTALL_HINT}") from exc
    return torch


def _diffusers():
    try:
        import diffusers
    except ImportError as exc:
        raise BackendMisconfigured(f"the sdxl backend needs diffusers and transformers: {INSTALL_HINT}") from exc
    return diffusers


def resolve_device(requested: str) -> str:
    torch = _torch()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendMisconfigured(f"device {requested!r}: CUDA is not available here (torch "
                                       f"{torch.__version__}); use device: auto or cpu")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise BackendMisconfigured(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return f"cuda:{index}"
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise BackendMisconfigured("device 'mps': Apple MPS is not available here")
        return "mps"
    if requested == "cpu":
        return "cpu"
    raise BackendMisconfigured(f"unknown device {requested!r} (auto, cuda, cuda:N, mps, cpu)")


def resolve_dtype(requested: str, device: str) -> str:
    if requested != "auto":
        return requested
    return "fp32" if device == "cpu" else "fp16"


def device_lock(device: str) -> threading.Lock:
    with _cache_lock:
        return _device_locks.setdefault(device, threading.Lock())


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub comes with diffusers
        return "~/.cache/huggingface/hub"


def is_local_model(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def get_pipeline(settings: Settings) -> LoadedPipeline:
    """The shared pipeline for these settings, loading it on first use (once per process)."""
    key = settings.cache_key()
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


def cached(settings: Settings) -> LoadedPipeline | None:
    """The pipeline for these settings if this process has loaded it (never loads; no torch)."""
    with _cache_lock:
        return _cache.get(settings.cache_key())


def clear_cache() -> None:
    """Drop every loaded pipeline (tests; freeing a GPU)."""
    with _cache_lock:
        _cache.clear()
    gc.collect()
    torch = _torch()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load(settings: Settings, device: str, lock: threading.Lock) -> LoadedPipeline:
    global loads
    torch, diffusers = _torch(), _diffusers()
    dtype = resolve_dtype(settings.dtype, device)
    model = settings.model
    local = is_local_model(model)
    if local:
        path = Path(model).expanduser()
        if not (path / "model_index.json").is_file():
            raise BackendMisconfigured(
                f"model directory {str(path)!r} not found or not a diffusers pipeline (no model_index.json); "
                f"give a hub id such as 'diffusers/stable-diffusion-xl-1.0-inpainting-0.1' or a save_pretrained "
                f"directory")
        model = str(path)
    start = time.perf_counter()
    try:
        # newer diffusers renamed torch_dtype -> dtype; older ones only know this
        with warnings.catch_warnings(), quiet_progress():
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = diffusers.StableDiffusionXLInpaintPipeline.from_pretrained(
                model, torch_dtype=getattr(torch, DTYPES[dtype]), variant=settings.variant)
    except (OSError, ValueError) as exc:  # hub unreachable / not in cache / bad files
        where = "" if local else (f"; with no network it must already be in the Hugging Face cache at "
                                  f"{hf_cache_dir()} (download it elsewhere with `hf download {model}` and copy "
                                  f"the cache, or set HF_HOME)")
        raise BackendMisconfigured(f"cannot load SDXL inpaint model {model!r}: {str(exc).splitlines()[0]}{where}") \
            from None
    loads += 1
    loaded = prepare_pipeline(pipe, settings, device, dtype, lock)
    loaded.load_s = time.perf_counter() - start
    log.info("loaded SDXL inpaint %s on %s (%s%s) in %.1fs", model, device, dtype,
             ", " + ", ".join(loaded.notes) if loaded.notes else "", loaded.load_s)
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


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No per-file progress bars while a model loads or saves (the CLI owns the terminal); restored after."""
    import diffusers.utils.logging as dlog

    bars = []
    try:
        import transformers.utils.logging as tlog

        bars.append(tlog)
    except ImportError:  # pragma: no cover - transformers comes with the extra
        pass
    bars.append(dlog)
    was = [m.is_progress_bar_enabled() for m in bars]
    for m in bars:
        m.disable_progress_bar()
    try:
        yield
    finally:
        for m, on in zip(bars, was, strict=True):
            if on:
                m.enable_progress_bar()


def prepare_pipeline(pipe: Any, settings: Settings, device: str, dtype: str,
                     lock: threading.Lock | None = None) -> LoadedPipeline:
    """Apply the settings' options to a pipeline already in `dtype`, and place it on `device`."""
    torch = _torch()
    quiet_float32_notice()
    pipe.set_progress_bar_config(disable=True)
    notes: list[str] = []
    if settings.fuse_qkv:
        pipe.fuse_qkv_projections()
        notes.append("fused qkv")
    if settings.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        notes.append("channels_last")
    native = (pipe.unet.config.sample_size * pipe.vae_scale_factor) ** 2 / 1024**2
    loaded = LoadedPipeline(pipe=pipe, device=device, dtype=dtype, lock=lock or device_lock(device),
                            base_scheduler=pipe.scheduler, native_megapixels=native)
    if settings.ip_adapter is not None:
        _load_ip_adapter(pipe, settings)
        notes.append("ip-adapter")
    if settings.lora is not None:
        _load_lora(loaded, settings)
        notes.append("lora" + (" (fused)" if settings.lora.fuse else ""))
    if settings.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
        notes.append("model cpu offload")
    elif settings.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
        notes.append("sequential cpu offload")
    else:
        pipe.to(device)
    if settings.compile:
        pipe.unet = torch.compile(pipe.unet, mode=settings.compile_mode)
        notes.append(f"torch.compile({settings.compile_mode})")
    loaded.notes = notes
    return loaded


def register_pipeline(settings: Settings, pipe: Any) -> LoadedPipeline:
    """Put an already-built pipeline (e.g. benchmarks' random-weight full-size architecture, which has no files)
    in the cache under `settings`, prepared as a loaded one would be. Its parameters must already be in the
    settings' dtype."""
    device = resolve_device(settings.device)
    loaded = prepare_pipeline(pipe, settings, device, resolve_dtype(settings.dtype, device))
    with _cache_lock:
        _cache[settings.cache_key()] = loaded
    return loaded


def _load_lora(loaded: LoadedPipeline, settings: Settings) -> None:
    diffusers = _diffusers()
    lora, pipe = settings.lora, loaded.pipe
    assert lora is not None
    try:
        pipe.load_lora_weights(lora.model, weight_name=lora.weight_name, adapter_name="fast")
    except (OSError, ValueError) as exc:
        raise BackendMisconfigured(f"cannot load LoRA {lora.model!r}: {str(exc).splitlines()[0]} "
                                   f"(HF cache: {hf_cache_dir()})") from None
    if lora.scheduler == "tcd":
        loaded.lora_scheduler = diffusers.TCDScheduler.from_config(pipe.scheduler.config)
    elif lora.scheduler == "lcm":
        loaded.lora_scheduler = diffusers.LCMScheduler.from_config(pipe.scheduler.config)
    else:
        loaded.lora_scheduler = pipe.scheduler
    if lora.fuse:
        pipe.fuse_lora(lora_scale=lora.scale)
        pipe.scheduler = loaded.lora_scheduler
        loaded.lora_active = True
    else:
        pipe.disable_lora()


def _load_ip_adapter(pipe: Any, settings: Settings) -> None:
    ip = settings.ip_adapter
    assert ip is not None
    kwargs = {} if ip.image_encoder_folder is None else {"image_encoder_folder": ip.image_encoder_folder}
    try:
        pipe.load_ip_adapter(ip.model, subfolder=ip.subfolder, weight_name=ip.weight_name, **kwargs)
    except (OSError, ValueError) as exc:
        raise BackendMisconfigured(f"cannot load IP-Adapter {ip.model!r}: {str(exc).splitlines()[0]} "
                                   f"(HF cache: {hf_cache_dir()})") from None
    pipe.set_ip_adapter_scale(ip.scale)


def select_lora(loaded: LoadedPipeline, settings: Settings, use_lora: bool) -> None:
    """Switch the shared pipeline to the tier's LoRA state. Call with the device lock held."""
    lora = settings.lora
    if lora is None or lora.fuse or loaded.lora_active == use_lora:
        return
    pipe = loaded.pipe
    if use_lora:
        pipe.enable_lora()
        pipe.set_adapters(["fast"], adapter_weights=[lora.scale])
        pipe.scheduler = loaded.lora_scheduler
    else:
        pipe.disable_lora()
        pipe.scheduler = loaded.base_scheduler
    loaded.lora_active = use_lora


def generators(seed: int, n: int) -> list:
    """One CPU generator per image (seed, seed+1, ...): image k is the same whatever n is, on any device."""
    torch = _torch()
    return [torch.Generator("cpu").manual_seed(seed + k) for k in range(n)]


def synchronize(device: str) -> None:
    torch = _torch()
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
    torch = _torch()
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def free_memory(device: str) -> None:
    """Give back what finished or failed work held (after an OOM: so the pipeline stays usable for the next,
    smaller request)."""
    gc.collect()
    torch = _torch()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def oom_error(n: int, size: tuple[int, int], settings: Settings, device: str) -> BackendUnavailable:
    advice = [f"ask for fewer images than n={n}"] if n > 1 else []
    if settings.offload == "none":
        advice.append("set `offload: model` in the backend settings")
    if (settings.target_megapixels or 1.0) > 0.6:
        advice.append("lower `target_megapixels`")
    return BackendUnavailable(f"out of GPU memory on {device} at {size[0]}x{size[1]} working size; "
                              + ("; ".join(advice) or "use a card with more memory"))


def peak_memory_gib(device: str) -> float | None:
    torch = _torch()
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
