"""`editroute policy check FILE`: validate a policy (schema, backend settings, names) and summarise it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="work with routing policies")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = psub.add_parser("check", help="validate a policy file and print its backends and rules")
    check.add_argument("file", help="policy YAML")
    check.set_defaults(func=run_check)


def _settings_text(settings: dict) -> str:
    parts = []
    for key, value in settings.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def run_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from pipeline.routing import TIERS, backend_traits, build_backends, load_policy

    policy = load_policy(args.file)
    backends = build_backends(policy)  # settings that validate but cannot build (unknown model) fail here
    console = Console()
    console.print(
        f"[green]ok[/green] {escape(args.file)}" + (f": {escape(policy.description)}" if policy.description else "")
    )
    table = Table(title="backends", title_justify="left")
    for col in ("name", "kind", "hosting", "training data", *(f"q {t}" for t in TIERS)):
        table.add_column(col)
    traits = {n: backend_traits(b.capabilities, policy.backends[n]) for n, b in backends.items()}
    for name, spec in policy.backends.items():
        q = policy.quality[name]
        data = traits[name]["training_data"] + (" (policy)" if spec.training_data else "")
        table.add_row(name, spec.kind, spec.hosting, data, *(f"{getattr(q, t):g}" for t in TIERS))
    console.print(table)
    for name, spec in policy.backends.items():
        console.print(f"  {name}: {escape(_settings_text(spec.settings)) or '(defaults)'}", soft_wrap=True)
    if policy.quality_file:
        console.print(f"quality scores: declared, overridden by {escape(policy.quality_file)}")
    if policy.rules:
        console.print("rules (in order):")
        for i, rule in enumerate(policy.rules):
            does = [rule.action] if rule.action else []
            if rule.require is not None:
                ok = [n for n, t in traits.items() if rule.require.misses(t) is None]
                held = "[yellow]no backend qualifies: matching jobs are held[/yellow]"
                who = f"qualify: {', '.join(ok)}" if ok else held
                does.insert(0, f"require {escape(rule.require.describe())} ({who})")
            console.print(
                f"  {i + 1}. {escape(rule.label(i))}: when {escape(rule.when.describe())} -> {' and '.join(does)}"
            )
    console.print(f"objective: {escape(policy.objective.describe())} (when unmet: {policy.objective.when_unmet})")
    for b in policy.budgets:
        then = f"overflow to {b.overflow_to}" if b.overflow_to else "stop"
        console.print(f"budget: {b.backend} ${b.limit_usd} per {b.period}, then {then}")
    for s in policy.volume_shift:
        threshold = f"{s.after_jobs} jobs" if s.after_jobs is not None else f"${s.after_usd}"
        counting = ", ".join(s.counting) or "all other backends"
        console.print(
            f"volume shift: after {threshold} this {s.period} on {counting}, {escape(s.when.describe())} -> {s.to}"
        )
    for name, chain in policy.fallbacks.items():
        console.print(f"fallbacks: {name} -> {', '.join(chain)}")
    for backend in backends.values():
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    return 0
