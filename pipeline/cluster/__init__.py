"""Ray scale-out (`--executor ray`): self-hosted backends run on a pool of Ray actors per backend, each loading
its model once, while the driver keeps routing, budgets, the ledger and the output files. Owns the executor
(executor.py), the actor pool and its fault handling (actors.py), and the check of the policy's `ray:` section
against the cluster's resources before any actor starts (placement.py).

`import ray` happens only inside functions, so importing this wing does not import Ray. The run wing names
`RayExecutor` by string in its executor registry; nothing below imports this wing."""

from pipeline.cluster.actors import ActorPool, BackendActor, BackendRecipe
from pipeline.cluster.executor import DEFAULT_RAY_KINDS, RayExecutor, connect, ray_backend_names
from pipeline.cluster.placement import fmt_resources, plan_actors

__all__ = [
    "DEFAULT_RAY_KINDS",
    "ActorPool",
    "BackendActor",
    "BackendRecipe",
    "RayExecutor",
    "connect",
    "fmt_resources",
    "plan_actors",
    "ray_backend_names",
]
