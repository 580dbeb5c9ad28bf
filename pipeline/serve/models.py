"""What a request's `model` means on this server, and the policy as the server runs it.

`model` absent or `auto`: route by the policy. A policy backend's name: pin that backend (its fallbacks apply, as
for a pinned manifest job). An OpenAI model id (`gpt-image-2.6-flare`, ...): pin the policy's openai backend that
has that model, or the first openai backend re-targeted at it (a *variant*: same settings, budgets and ledger
name, its own threads; no fallbacks: the caller asked for that model). A model not served here is OpenAI's 404
`model_not_found`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Literal

from backends.base import EditBackend, EditRequest, EditResult
from backends.errors import EditError
from backends.openai import DEFAULT_MODEL as OPENAI_DEFAULT_MODEL
from backends.pricing import load_prices
from backends.registry import create_backend
from pipeline.ledger import Ledger
from pipeline.routing import Policy, Router
from pipeline.run import ExecContext, LocalExecutor
from pipeline.serve.settings import ServeSettings
from pipeline.serve.wire import ApiError

OPENAI_PREFIXES = ("gpt-image", "chatgpt-image", "dall-e")
OPENAI_KIND = "openai"


@dataclass(frozen=True)
class Target:
    kind: Literal["auto", "backend", "model"]
    backend: str | None = None  # the policy backend pinned (None: route)
    model: str | None = None  # the OpenAI model id asked for, when it re-targets a backend


class _OverrideExecutor:
    """Runs re-targeted backends on their own threads and every other backend on the shared executor (so a GPU
    backend keeps its single queue)."""

    def __init__(self, base: Any, overrides: dict[str, EditBackend]) -> None:
        self.base = base
        self.own = LocalExecutor(overrides)

    def submit(self, backend: str, request: EditRequest, **kwargs: Any) -> Future[EditResult]:
        return (self.own if backend in self.own.backends else self.base).submit(backend, request, **kwargs)

    def close(self) -> None:
        self.own.close()


@dataclass
class Variant:
    router: Router
    ctx: ExecContext
    executor: _OverrideExecutor


def serve_policy(policy: Policy, settings: ServeSettings) -> Policy:
    """The policy as the server runs it: each API backend without its own `concurrency:` gets the server's
    (`ServeSettings.api_concurrency`), and each without `max_retry_wait_s:` the server's cap on waiting."""
    changed = {}
    for name, spec in policy.backends.items():
        if spec.kind != OPENAI_KIND:
            continue
        extra = {"concurrency": settings.api_concurrency, "max_retry_wait_s": settings.max_retry_wait_s}
        missing = {k: v for k, v in extra.items() if k not in spec.settings}
        if missing:
            changed[name] = spec.model_copy(update={"settings": {**spec.settings, **missing}})
    return policy.model_copy(update={"backends": {**policy.backends, **changed}}) if changed else policy


class Models:
    """The server's reading of `model`, with the re-targeted variants it built (closed with the service)."""

    def __init__(
        self, policy: Policy, backends: dict[str, Any], executor: Any, ledger: Ledger, ctx: ExecContext
    ) -> None:
        self.policy, self.backends, self.executor, self.ledger, self.ctx = policy, backends, executor, ledger, ctx
        self.openai_backends = [n for n, spec in policy.backends.items() if spec.kind == OPENAI_KIND]
        self._prices = load_prices()
        self.variants: dict[str, Variant] = {}
        self._lock = threading.Lock()

    def model_ids(self) -> list[str]:
        """OpenAI model ids this server accepts (it needs an openai backend to run them)."""
        if not self.openai_backends:
            return []
        return [m for m, e in self._prices.models.items() if e.status != "retired" and not m.startswith("dall-e")]

    def resolve(self, model: str | None) -> Target:
        if model is None:
            return Target("auto")
        if model in self.policy.backends:
            return Target("backend", model)
        if model in self._prices.models or model.startswith(OPENAI_PREFIXES):
            if model.startswith("dall-e"):
                raise ApiError(
                    404,
                    f"The model '{model}' does not exist or you do not have access to it (editroute serves GPT "
                    "image models and its policy's backends; ask for 'auto').",
                    param="model",
                    code="model_not_found",
                )
            for name in self.openai_backends:
                if self.policy.backends[name].settings.get("model", OPENAI_DEFAULT_MODEL) == model:
                    return Target("backend", name)
            if not self.openai_backends:
                raise ApiError(
                    404,
                    f"The model '{model}' cannot run here: this server's policy has no OpenAI backend "
                    f"(ask for 'auto' or one of: {', '.join(self.policy.backends)}).",
                    param="model",
                    code="model_not_found",
                )
            self.variant(model)  # fails now if the model has no prices
            return Target("model", self.openai_backends[0], model)
        raise ApiError(
            404,
            f"The model '{model}' does not exist here: ask for 'auto', a backend of this server's policy "
            f"({', '.join(self.policy.backends)}) or an OpenAI image model id.",
            param="model",
            code="model_not_found",
        )

    def variant(self, model: str) -> Variant:
        with self._lock:
            hit = self.variants.get(model)
            if hit is not None:
                return hit
            base = self.openai_backends[0]
            try:
                backend = create_backend(OPENAI_KIND, base, {**self.policy.backends[base].settings, "model": model})
            except EditError as exc:
                raise ApiError(
                    404, f"The model '{model}' cannot run here: {exc.message}", param="model", code="model_not_found"
                ) from None
            backends = {**self.backends, base: backend}
            executor = _OverrideExecutor(self.executor, {base: backend})
            variant = Variant(
                Router(self.policy, backends, self.ledger),
                replace(self.ctx, executor=executor, backends=backends),
                executor,
            )
            self.variants[model] = variant
            return variant

    def backend_for(self, target: Target) -> Any:
        assert target.backend is not None
        return (
            self.variant(target.model).ctx.backends[target.backend] if target.model else self.backends[target.backend]
        )

    def close(self) -> None:
        for variant in self.variants.values():
            variant.executor.close()

    def retargeted(self) -> list[Any]:
        return [b for v in self.variants.values() for b in v.executor.own.backends.values()]
