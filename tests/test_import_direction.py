"""The layout's import rules, checked on the source of every .py under pipeline/ and backends/ (parsed with
`ast`, nothing imported; imports inside functions count the same as module-level ones).

1. `backends` never imports `pipeline`.
2. Imports go down the stack, never up, and never sideways between sibling wings:

       pipeline  0 base: errors, configfile, jobs (and pipeline/__init__)
                 1 routing   2 ledger   3 run
                 4 eval, serve, cluster, bench, review (siblings)
                 5 commands, cli
       backends  0 contract: every module at backends/ top (base, errors, images, validation, registry,
                   pricing, local_models)
                 1 masks, openai (siblings)   2 diffusion   3 standins

   So a lower level never imports a higher one, and masks never import diffusion.
3. A wing is a sub-package (pipeline/<wing>/, backends/<wing>/). From outside it, import the wing package and only
   names in its `__all__`: `from pipeline.ledger import Ledger`. Naming one of its modules is refused
   (`from pipeline.ledger.store import Ledger`, `import pipeline.ledger.store`, `from pipeline.ledger import store`).
   Inside a wing, modules import each other directly.
4. A wing exports no name that is also one of its modules: the package attribute would be the object and hide the
   module (`pipeline.run.execute` would be a function, and `import pipeline.run.execute as m` would bind it).

EXCEPTIONS lists each deliberate break of rule 3, with its reason.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("pipeline", "backends")

LEVELS: dict[str, int] = {
    "pipeline": 0,
    "pipeline.routing": 1,
    "pipeline.ledger": 2,
    "pipeline.run": 3,
    "pipeline.eval": 4,
    "pipeline.serve": 4,
    "pipeline.cluster": 4,
    "pipeline.bench": 4,
    "pipeline.review": 4,
    "pipeline.commands": 5,
    "pipeline.cli": 5,
    "backends": 0,
    "backends.masks": 1,
    "backends.openai": 1,
    "backends.google": 1,
    "backends.adobe": 1,
    "backends.diffusion": 2,
    "backends.standins": 3,
}
WINGS = tuple(p for p in LEVELS if p.count(".") == 1 and p != "pipeline.cli")

# (importing module, imported module): why this module import from outside the wing is deliberate
EXCEPTIONS: dict[tuple[str, str], str] = {
    (
        "pipeline.bench.overhead",
        "pipeline.run.execute",
    ): "the per-file baseline swaps the writer the execution core calls (execute.write_files), in its own process",
}


@dataclass(frozen=True)
class Import:
    module: str  # the module (or package) that is imported
    names: tuple[str, ...]  # for `from module import names`; () for `import module`
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in the source, anywhere in it, with relative imports resolved against `module`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, *([target] if target else [])])
            found.append(Import(target, tuple(a.name for a in node.names), node.lineno))
    return found


def tree(name: str) -> str:
    return name.split(".")[0]


def wing_of(name: str) -> str | None:
    head = ".".join(name.split(".")[:2])
    return head if head in WINGS else None


def level_of(name: str) -> tuple[str, int] | None:
    """(the stack entry, its level) a module belongs to; None outside pipeline/backends."""
    if tree(name) not in TREES:
        return None
    head = ".".join(name.split(".")[:2])
    if head in LEVELS:
        return head, LEVELS[head]
    return tree(name), LEVELS[tree(name)]  # a module at the top of the tree: the base / contract level


def violations(
    sources: Mapping[str, str], exports: Mapping[str, Iterable[str]], packages: Iterable[str] = ()
) -> list[str]:
    """Every break of the rules in this module's docstring. `sources`: module name -> source text (all the modules,
    so `from pkg import name` can tell a submodule from a name); `exports`: wing -> its `__all__`."""
    packages = set(packages)
    exported = {wing: set(names) for wing, names in exports.items()}
    known = set(sources)
    problems = []
    for wing, names in exported.items():
        for clash in sorted(n for n in names if f"{wing}.{n}" in known):
            problems.append(f"{wing} exports {clash!r}, which is also its module {wing}.{clash}: rename one")
    for importer, source in sources.items():
        mine = level_of(importer)
        if mine is None:
            continue
        for imp in imports_of(source, importer, importer in packages):
            submodules = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in known]
            targets = submodules or [imp.module]
            for target in targets:
                where = f"{importer}:{imp.line} imports {target}"
                theirs = level_of(target)
                if theirs is None:
                    continue
                if tree(importer) == "backends" and tree(target) == "pipeline":
                    problems.append(f"{where}: backends never import pipeline")
                    continue
                if tree(importer) != tree(target):
                    continue  # pipeline -> backends is the allowed direction
                (my_entry, my_level), (their_entry, their_level) = mine, theirs
                if their_level > my_level:
                    problems.append(
                        f"{where}: level {my_level} ({my_entry}) imports level {their_level} "
                        f"({their_entry}); imports go down the stack"
                    )
                elif their_level == my_level and my_entry != their_entry and {my_entry, their_entry} <= set(WINGS):
                    problems.append(f"{where}: sibling wings {my_entry} and {their_entry} do not import each other")
                their_wing = wing_of(target)
                if their_wing is None or their_wing == wing_of(importer) or (importer, target) in EXCEPTIONS:
                    continue
                if target != their_wing:
                    problems.append(f"{where}: a module inside the wing {their_wing}; import from {their_wing}")
                else:
                    private = [n for n in imp.names if n not in exported.get(their_wing, ())]
                    if private:
                        problems.append(f"{where}: {', '.join(private)} not in {their_wing}.__all__")
    return problems


def repo_sources() -> tuple[dict[str, str], set[str]]:
    sources, packages = {}, set()
    for top in TREES:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = module_name(path)
            sources[name] = path.read_text(encoding="utf-8")
            if path.name == "__init__.py":
                packages.add(name)
    return sources, packages


def wing_exports() -> dict[str, list[str]]:
    return {wing: list(getattr(importlib.import_module(wing), "__all__", [])) for wing in WINGS}


def test_the_repository_follows_the_import_rules():
    sources, packages = repo_sources()
    assert len(sources) > 80 and "pipeline.routing.policy" in sources and "backends.masks.infer" in sources
    assert violations(sources, wing_exports(), packages) == []


def test_every_wing_says_what_it_owns_and_exports_names_that_exist():
    for wing, names in wing_exports().items():
        package = importlib.import_module(wing)
        assert (package.__doc__ or "").strip(), f"{wing}: its docstring says what it owns"
        for name in names:
            assert getattr(package, name) is not None, f"{wing}.{name}"


def test_every_exception_is_still_needed():
    sources, packages = repo_sources()
    for importer, target in EXCEPTIONS:
        assert any(imp.module == target for imp in imports_of(sources[importer], importer)), (importer, target)


# ---- the checker catches what it should (synthetic modules: the repository is never edited) -------------------

EXPORTS = {
    "pipeline.run": ["run_batch"],
    "pipeline.ledger": ["Ledger"],
    "pipeline.routing": ["Router"],
    "backends.masks": ["infer_mask"],
    "backends.diffusion": ["SDXLInpaintBackend"],
}
MODULES = {
    "pipeline.run.runner": "",
    "pipeline.ledger.store": "",
    "pipeline.routing.router": "",
    "backends.masks.infer": "",
    "backends.diffusion.sdxl": "",
    "pipeline.jobs": "",
}


def check(importer: str, source: str, exports: Mapping[str, Iterable[str]] = EXPORTS) -> list[str]:
    return violations({**MODULES, importer: source}, exports)


def test_a_planted_upward_import_is_caught_also_inside_a_function():
    assert check("pipeline.routing.policy", "from pipeline.ledger import Ledger\n") == [
        "pipeline.routing.policy:1 imports pipeline.ledger: level 1 (pipeline.routing) imports level 2 "
        "(pipeline.ledger); imports go down the stack"
    ]
    inside = check("pipeline.jobs", "def f():\n    from pipeline.run import run_batch\n")
    assert inside and "pipeline.jobs:2" in inside[0] and "level 0" in inside[0]


def test_backends_importing_pipeline_is_caught():
    found = check("backends.diffusion.sdxl", "import pipeline.jobs\n")
    assert found == ["backends.diffusion.sdxl:1 imports pipeline.jobs: backends never import pipeline"]


def test_masks_importing_diffusion_and_sibling_wings_are_caught():
    assert (
        "level 1 (backends.masks) imports level 2"
        in check("backends.masks.infer", "from backends.diffusion import SDXLInpaintBackend")[0]
    )
    with_eval = {**EXPORTS, "pipeline.eval": ["run_eval"]}
    sideways = check("pipeline.serve.app", "from pipeline.eval import run_eval", with_eval)
    assert sideways and "sibling wings pipeline.serve and pipeline.eval" in sideways[0]


def test_reaching_into_a_wing_is_caught_and_its_public_names_are_not():
    assert check("pipeline.run.runner", "from pipeline.ledger import Ledger\nfrom pipeline.routing import Router") == []
    assert check("pipeline.ledger.spend", "from pipeline.ledger.store import Ledger") == []  # inside the wing
    private = check("pipeline.run.execute", "from pipeline.ledger.store import Ledger")
    assert private == [
        "pipeline.run.execute:1 imports pipeline.ledger.store: a module inside the wing "
        "pipeline.ledger; import from pipeline.ledger"
    ]
    assert "not in pipeline.ledger.__all__" in check("pipeline.run.execute", "from pipeline.ledger import migrate")[0]
    assert "a module inside the wing" in check("pipeline.run.execute", "from pipeline.ledger import store")[0]
    assert "a module inside the wing" in check("pipeline.run.execute", "import pipeline.ledger.store")[0]


def test_an_export_that_hides_a_module_is_caught():
    found = violations({"pipeline.run.execute": "", "pipeline.run": ""}, {"pipeline.run": ["execute"]})
    assert found == ["pipeline.run exports 'execute', which is also its module pipeline.run.execute: rename one"]
