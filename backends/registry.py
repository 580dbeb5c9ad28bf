"""How a policy's `kind:` becomes a backend object.

One dict of lazily imported "module:Class" paths, so `import backends` stays light (no torch) and a
missing optional dependency surfaces only when that kind is used, with the extra to install.
Each backend class provides `Settings` (a pydantic model, extra="forbid") and
`from_settings(name, settings) -> backend`.

Test-only stand-in kinds (`kind: function`: its images are not edits) live apart, in `STANDIN_KINDS`: a policy
gets one only with `$EDITROUTE_ALLOW_STANDINS=1` (the test suite sets it), and no error lists or suggests them.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from backends.errors import BackendMisconfigured

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

BACKEND_KINDS: dict[str, str] = {
    "openai": "backends.openai:OpenAIEditBackend",
    "openai-batch": "backends.openai.batch:OpenAIBatchBackend",
    "sdxl": "backends.diffusion.sdxl:SDXLInpaintBackend",
    "qwen-edit": "backends.diffusion.qwen_edit:QwenEditBackend",
    "flux2-klein": "backends.diffusion.flux2_klein:Flux2KleinBackend",
    "gemini": "backends.google.backend:GeminiEditBackend",
    "firefly": "backends.adobe.backend:FireflyEditBackend",
}

STANDIN_KINDS: dict[str, str] = {"function": "backends.standins.function:FunctionBackend"}
STANDIN_ENV = "EDITROUTE_ALLOW_STANDINS"

# Which extra brings the dependencies of a kind, for the install hint.
_EXTRAS = {"sdxl": "diffusion", "qwen-edit": "diffusion", "flux2-klein": "diffusion"}


class UnknownBackendKind(ValueError):
    pass


def backend_class(kind: str) -> type:
    try:
        path = BACKEND_KINDS.get(kind) or _standin(kind)
    except KeyError:
        close = difflib.get_close_matches(kind, BACKEND_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownBackendKind(f"unknown backend kind {kind!r} (known: {', '.join(BACKEND_KINDS)}).{hint}") from None
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        extra = _EXTRAS.get(kind)
        hint = f' Install it with: pip install "editroute[{extra}]"' if extra else ""
        raise BackendMisconfigured(f"backend kind {kind!r} needs {exc.name!r}.{hint}") from exc
    return getattr(module, class_name)


def _standin(kind: str) -> str:
    path = STANDIN_KINDS[kind]  # KeyError: not a kind at all
    if os.environ.get(STANDIN_ENV) != "1":
        raise UnknownBackendKind(
            f"backend kind {kind!r} is a test-only stand-in (its images are not edits), refused unless "
            f"{STANDIN_ENV}=1 (the test suite sets it); backend kinds: {', '.join(BACKEND_KINDS)}"
        )
    return path


def parse_settings(model: type[M], settings: Mapping[str, Any], *, backend: str, kind: str) -> M:
    """A backend's `Settings` from a policy entry; a bad entry is `BackendMisconfigured` listing every problem."""
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(settings))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BackendMisconfigured(f"bad {kind} settings: {problems}", backend=backend) from None


def create_backend(kind: str, name: str, settings: Mapping[str, Any] | None = None):
    """Build a backend from a policy entry's settings (validated by the class's `Settings`)."""
    cls = backend_class(kind)
    return cls.from_settings(name, dict(settings or {}))
