"""Models this process runs itself, whatever they are for: device and dtype choice, where weights come from (a hub
id in the Hugging Face cache, or a local `save_pretrained` directory), transformers models loaded once per process,
and quiet progress bars while loading. Shared by mask inference (`backends.masks`), the diffusion families
(`backends.diffusion`) and the CLIP scorer of `editroute eval`, so none of them imports another for these.

torch, transformers and diffusers are imported inside functions only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.errors import BackendMisconfigured

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "editroute[diffusion]"'


def import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BackendMisconfigured(f"self-hosted models need torch: {INSTALL_HINT}") from exc
    return torch


def resolve_device(requested: str) -> str:
    """`auto` (cuda > mps > cpu), `cuda`, `cuda:N`, `mps` or `cpu` -> the device to use; a device this machine
    lacks is `BackendMisconfigured`, naming what it has."""
    torch = import_torch()
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendMisconfigured(
                f"device {requested!r}: CUDA is not available here (torch {torch.__version__}); use device: auto or cpu"
            )
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


def resolve_dtype(requested: str, device: str, accelerator_default: str = "fp16") -> str:
    """`auto`: fp32 on the CPU, else the family's accelerator dtype (fp16 for SDXL; bf16 for the Qwen and FLUX.2
    transformers, whose activations overflow fp16)."""
    if requested != "auto":
        return requested
    return "fp32" if device == "cpu" else accelerator_default


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub comes with diffusers
        return "~/.cache/huggingface/hub"


def is_local_model(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def load_failure(what: str, model: str, exc: BaseException, *, local: bool, index_file: str) -> str:
    """Why a model did not load, in one short line. A hub model missing from the cache gets our own sentence, not
    the library's paragraph (which names its own options and a stack trace the user never sees)."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = first if len(first) <= 160 else first[:157] + "..."
    if local or _in_hub_cache(model, index_file):
        return f"cannot load {what} {model!r}: {first}"
    why = "HF_HUB_OFFLINE is set" if _hub_offline() else f"the download failed ({first})"
    return (
        f"cannot load {what} {model!r}: not in the Hugging Face cache ({hf_cache_dir()}) and {why}; fetch it "
        f"with `hf download {model}` online and copy the cache, or set HF_HOME"
    )


def _in_hub_cache(model: str, index_file: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, index_file), str)
    except Exception:  # pragma: no cover - a malformed id: let the library's own message speak
        return True


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def cached_file(model: str, filename: str) -> str | None:
    """Path of `filename` of hub id `model` in the local Hugging Face cache, else None (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        return None
    try:
        found = try_to_load_from_cache(model, filename)
    except Exception:  # not a valid repo id: not in the cache
        return None
    return found if isinstance(found, str) else None


def weights_source(model: str, index_file: str = "model_index.json") -> tuple[str, str | None]:
    """Where a model's weights will load from, without loading or downloading: ("local", dir) for a directory,
    ("cache", path) for a hub id in the Hugging Face cache, ("download", None) for one the first job downloads, or
    ("missing", None) for a local path that is not there."""
    if is_local_model(model):
        path = Path(model).expanduser()
        return ("local", str(path)) if (path / index_file).is_file() else ("missing", None)
    found = cached_file(model, index_file)
    return ("cache", found) if found else ("download", None)


def read_model_json(model: str, filename: str = "model_index.json") -> dict[str, Any] | None:
    """A small JSON file of a checkpoint (model_index.json, transformer/config.json) from a local directory or
    the Hugging Face cache; None when neither has it. Never downloads, never imports torch."""
    import json

    path: str | None
    if is_local_model(model):
        candidate = Path(model).expanduser() / filename
        path = str(candidate) if candidate.is_file() else None
    else:
        path = cached_file(model, filename)
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


# ---- transformers models (mask models, CLIP), loaded once per process ----------------------------------


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    device: str


_models: dict[tuple[str, str, str], LoadedModel] = {}
_models_lock = threading.Lock()
# One model load at a time in the process: transformers/diffusers load through accelerate's `init_empty_weights`,
# which patches `nn.Module.register_parameter` globally, so a model built on another thread meanwhile (e.g. a
# mask model next to a diffusion pipeline) would get its parameters on the `meta` device.
LOAD_LOCK = threading.RLock()
loads = 0  # from_pretrained calls in this process (tests check the cache)


def load_pretrained(
    model_id: str, model_class: str, processor_class: str, *, device: str = "auto", what: str = "model"
) -> LoadedModel:
    """`transformers.<model_class>` + `<processor_class>` from a hub id or local dir, cached per process.
    A missing or broken model raises `BackendMisconfigured` naming the id and the cache it looked in."""
    global loads
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
            raise BackendMisconfigured(f"the {what} needs torch and transformers: {INSTALL_HINT}") from exc
        local = is_local_model(model_id)  # a path that is not there is a wrong path, not a hub id to download
        source = str(Path(model_id).expanduser()) if local else model_id
        where = f"directory {source}" if local else f"the Hugging Face cache at {hf_cache_dir()}"
        fix = (
            "Check the path (a save_pretrained directory)"
            if local
            else f"Download it first (`hf download "
            f"{model_id}`) or point the setting at a local save_pretrained directory"
        )
        try:
            if local and not Path(source).is_dir():
                raise FileNotFoundError("no such directory")
            loads += 1
            with LOAD_LOCK:
                model = getattr(transformers, model_class).from_pretrained(source)
                processor = getattr(transformers, processor_class).from_pretrained(source)
        except Exception as exc:  # OSError (not cached, offline), bad config, wrong class
            first = str(exc).splitlines()[0].rstrip(".") if str(exc) else exc.__class__.__name__
            raise BackendMisconfigured(f"cannot load {what} {model_id!r} from {where}: {first}. {fix}") from None
        model = model.to(resolved).eval()
        hit = _models[key] = LoadedModel(model, processor, resolved)
        log.info("loaded %s %s on %s", what, model_id, resolved)
        return hit


def clear_cache() -> None:
    """Drop every loaded transformers model (tests; freeing memory)."""
    with _models_lock:
        _models.clear()
