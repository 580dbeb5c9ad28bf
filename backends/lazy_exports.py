"""Exports of a package that load on first use (PEP 562), for packages whose modules pull heavy dependencies or
are run with `python -m` (an eager import in `__init__` would import that module a second time).

    __all__, __getattr__ = lazy_exports(__name__, {"app": ("build",), "overhead": (("overhead_main", "main"),)})

Each module maps to the names it exports; a pair exports the module's second name under the first. Used by
`backends.standins` and by pipeline's lazy wings (`pipeline.serve`, `pipeline.bench`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Iterable[str | tuple[str, str]]]
) -> tuple[list[str], Callable[[str], Any]]:
    """(`__all__`, module-level `__getattr__`) for `package`: a name is imported from its module when first used."""
    where: dict[str, tuple[str, str]] = {}
    for module, names in exports.items():
        for entry in names:
            public, attr = (entry, entry) if isinstance(entry, str) else entry
            where[public] = (module, attr)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = where[name]
        return getattr(importlib.import_module(f"{package}.{module}"), attr)

    return sorted(where), __getattr__
