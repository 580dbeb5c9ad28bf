"""Edit backends: the `EditBackend` interface (`backends.base`), its errors (`backends.errors`) and its
implementations, one folder per family (`backends.openai`, `backends.diffusion`; `backends.masks` infers masks
for them), built from a policy's `kind:` by `backends.registry`. Knows nothing of routing: never imports
`pipeline`. Importing this package is cheap: no torch, no diffusers."""

from backends.base import Capabilities, CostEstimate, EditBackend, EditRequest, EditResult, Usage
from backends.errors import (
    BackendMisconfigured,
    BackendUnavailable,
    BudgetExceeded,
    ContentRejected,
    EditError,
    InvalidRequest,
    RateLimited,
)
from backends.images import InputImage

__all__ = [
    "BackendMisconfigured",
    "BackendUnavailable",
    "BudgetExceeded",
    "Capabilities",
    "ContentRejected",
    "CostEstimate",
    "EditBackend",
    "EditError",
    "EditRequest",
    "EditResult",
    "InputImage",
    "InvalidRequest",
    "RateLimited",
    "Usage",
]
