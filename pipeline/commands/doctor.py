"""`editroute doctor [--policy FILE]`: what this machine can run, before you spend anything.

Checks the optional stacks (diffusion: torch/diffusers and the accelerator; server; ray), whether the OpenAI key,
the Gemini key and the Firefly client id/secret are configured (never printing them), how old the shipped prices
are and whether Firefly's is prices.yaml's placeholder, and, with --policy, that the policy loads and its
backends build (a retired model fails here), each Gemini/Firefly backend's credentials where it reads them, and
the rate each Firefly backend bills at. With a key set, it also reads `GET /v1/models` for the policy's
OpenAI backends and reports every model whose `shutdown_date` differs from prices.yaml, and any model the policy
uses that the API does not list. For each self-hosted backend (the policy's, else each self-hosted kind with its
default model): where its weights will load from (a local folder, the Hugging Face cache, or a download), how
much GPU memory it needs with its settings, and whether this machine can run it (CUDA present, VRAM against the
need, else what to set).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
from datetime import date

from rich.console import Console
from rich.table import Table

_STACKS = {
    "diffusion": ["torch", "torchvision", "diffusers", "transformers", "accelerate"],
    "server": ["fastapi", "uvicorn", "multipart"],
    "ray": ["ray"],
    "bench": ["matplotlib"],
}
_DISTRIBUTIONS = {"multipart": "python-multipart"}
PRICE_AGE_WARN_DAYS = 120


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check what this machine can run (GPU, extras, API key, prices)")
    p.add_argument("--policy", help="also check that this policy file loads")
    p.set_defaults(func=run)


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "installed"


SELF_HOSTED_KINDS = ("sdxl", "qwen-edit", "flux2-klein")


def _accelerator() -> str:
    import torch  # only when the diffusion stack is present

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        free, total = torch.cuda.mem_get_info()
        return f"CUDA: {', '.join(names)} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free on cuda:0)"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "Apple MPS"
    return "none (self-hosted models would run on CPU: fine for tests, far too slow for production)"


def _cuda_memory() -> list[float] | None:
    """Total GiB of each CUDA device; None without CUDA (or without torch)."""
    if not _version("torch"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(torch.cuda.device_count())]


def _model_status(model: str, index_file: str) -> str:
    """Where a self-hosted model will load from: a local folder, the Hugging Face cache, or a download."""
    from backends.local_models import weights_source

    where, _ = weights_source(model, index_file)
    if where == "local":
        return f"[green]local folder[/] {model}"
    if where == "missing":
        return f"[red]not a model folder[/] {model} (no {index_file} there)"
    if where == "cache":
        return f"[green]in the Hugging Face cache[/] {model}"
    return f"[yellow]not downloaded[/] {model}: the first job downloads it (offline: `hf download {model}` elsewhere)"


def _can_run(backend, vram: list[float] | None) -> tuple[str, bool]:
    """Whether this machine can run a self-hosted backend with its settings, and what to change if not."""
    from backends.diffusion.memory import lightest_fit

    s = backend.settings
    need = s.memory_need()
    if s.device == "cpu":
        return "[yellow]runs on the CPU as configured[/] (tests and demos; far too slow for production)", False
    if vram is None:
        return "[yellow]no CUDA GPU here[/]: it would run on the CPU (tests only; far too slow for production)", False
    index = int(s.device.partition(":")[2] or 0) if s.device.startswith("cuda") else 0
    if index >= len(vram):
        return f"[red]no cuda:{index}[/] ({len(vram)} CUDA device(s))", True
    card = vram[index]
    if need.gib <= card:
        return f"[green]yes[/]: needs ~{need.gib:g} GiB, cuda:{index} has {card:.0f} GiB", False
    fp8 = hasattr(s, "fp8")
    fit = lightest_fit(s.checkpoint(), card, "bf16" if fp8 else "fp16", fp8=fp8)
    hint = f"; set `{fit}` to fit" if fit else "; no memory option fits: use a bigger card"
    return f"[red]no[/]: needs ~{need.gib:g} GiB, cuda:{index} has {card:.0f} GiB{hint}", True


def _backend_rows(backends: dict, vram: list[float] | None) -> tuple[list[tuple[str, str]], int]:
    """Weights, memory and can-run rows for each self-hosted diffusion backend; and how many cannot run."""
    rows, problems = [], 0
    for name, backend in backends.items():
        settings = getattr(backend, "settings", None)
        if settings is None or not callable(getattr(settings, "memory_need", None)):
            continue
        rows.append((f"{name} weights", _model_status(settings.model, "model_index.json")))
        rows.append((f"{name} memory", settings.memory_need().detail))
        status, bad = _can_run(backend, vram)
        rows.append((f"{name} can run here", status))
        problems += bad
    return rows, problems


def _default_backends() -> dict:
    """Each self-hosted kind with its default settings (doctor without --policy)."""
    from backends.registry import create_backend

    return {kind: create_backend(kind, kind, {}) for kind in SELF_HOSTED_KINDS}


def _model_rows(policy) -> list[tuple[str, str]]:
    """One row per mask-inference model a policy's SDXL backends load."""
    rows = []
    for name, spec in policy.backends.items():
        if spec.kind != "sdxl":
            continue
        masks = spec.settings.get("mask_inference")
        if isinstance(masks, dict):
            from backends.masks import DEFAULT_MASK_MODEL, GroundedSamSettings

            grounded = masks.get("grounded_sam")
            if isinstance(grounded, dict):
                defaults = GroundedSamSettings()
                for role in ("detector", "segmenter"):
                    model = str(grounded.get(role) or getattr(defaults, role))
                    rows.append((f"{name} mask {role}", _model_status(model, "config.json")))
            else:
                model = str(masks.get("model") or DEFAULT_MASK_MODEL)
                rows.append((f"{name} masks", _model_status(model, "config.json")))
    return rows


def lifecycle_rows(backends: dict) -> tuple[list[tuple[str, str]], int]:
    """Compare GET /v1/models' shutdown_date with prices.yaml, once per base_url the policy's OpenAI backends use.
    Returns table rows and how many problems were found; skipped (and said so) without a key."""
    from backends.errors import EditError
    from backends.openai import OpenAIEditBackend
    from backends.pricing import load_prices

    table = load_prices()
    rows: list[tuple[str, str]] = []
    problems = 0
    by_url: dict[str, list[OpenAIEditBackend]] = {}
    for backend in backends.values():
        if isinstance(backend, OpenAIEditBackend):
            by_url.setdefault(backend.settings.base_url, []).append(backend)
    for url, group in by_url.items():
        label = f"models at {url}"
        try:
            listed = {m["id"]: m.get("shutdown_date") for m in group[0].list_models()}
        except EditError as exc:
            if "no API key" in exc.message:
                rows.append((label, "[yellow]skipped[/]: no API key set (shutdown dates not compared)"))
            else:
                problems += 1
                rows.append((label, f"[red]GET /models failed[/]: {exc.message}"))
            continue
        notes = []
        for model_id, shutdown in listed.items():
            entry = table.models.get(model_id)
            if entry is not None and (shutdown or None) != entry.shutdown:
                notes.append(
                    f"{model_id}: API shutdown_date {shutdown or 'none'}, prices.yaml {entry.shutdown or 'none'}"
                )
        for b in group:
            if b.settings.model not in listed:
                notes.append(f"{b.settings.model} (backend {b.name}): not listed by the API (retired or no access)")
        problems += len(notes)
        compared = sum(1 for m in listed if m in table.models)
        rows.append(
            (label, "[red]" + "; ".join(notes) + "[/] (update configs/prices.yaml)")
            if notes
            else (label, f"[green]ok[/]: shutdown dates of {compared} listed model(s) match prices.yaml")
        )
    return rows, problems


# The default places the hosted kinds read their secrets from (a policy can name others, or files).
HOSTED_SECRETS = (
    ("GEMINI_API_KEY", "Gemini backends"),
    ("FIREFLY_SERVICES_CLIENT_ID", "Firefly backends"),
    ("FIREFLY_SERVICES_CLIENT_SECRET", "Firefly backends"),
)


def credential_rows() -> list[tuple[str, str]]:
    """Whether each hosted kind's default secret variable is set; the value is never read into the output."""
    return [
        (
            env,
            "set (value not shown)"
            if os.environ.get(env, "").strip()
            else f"[yellow]not set[/] ({who} fail until it is)",
        )
        for env, who in HOSTED_SECRETS
    ]


def firefly_price_status(prices) -> str:
    from backends.adobe.prices import firefly_prices

    ff = firefly_prices(prices)
    if ff.operation_usd_is_placeholder:
        return (
            f"[yellow]PLACEHOLDER ${ff.operation_usd}/operation[/] in prices.yaml, not Adobe's price: set "
            "price_per_operation_usd (your contract's rate) on each firefly backend"
        )
    return f"${ff.operation_usd}/operation (prices.yaml, as of {ff.as_of})"


def hosted_rows(backends: dict) -> list[tuple[str, str]]:
    """Per Gemini/Firefly backend of a policy: are its credentials readable where it reads them (env or file; never
    shown), and for Firefly, which rate bills it."""
    from backends.adobe.backend import FireflyEditBackend
    from backends.errors import EditError
    from backends.google.backend import GeminiEditBackend

    rows = []
    for name, backend in backends.items():
        if not isinstance(backend, GeminiEditBackend | FireflyEditBackend):
            continue
        try:
            backend.check_credentials()
            rows.append((f"{name} credentials", "[green]present[/] (values not shown)"))
        except EditError as exc:
            rows.append((f"{name} credentials", f"[yellow]missing[/]: {exc.message}"))
        if isinstance(backend, FireflyEditBackend):
            placeholder = "PLACEHOLDER" in backend.rate_basis
            colour = "yellow" if placeholder else "green"
            rows.append((f"{name} price", f"[{colour}]${backend.rate}/operation[/]: {backend.rate_basis}"))
    return rows


def run(args: argparse.Namespace) -> int:
    from backends.pricing import load_prices

    console = Console()
    table = Table(title="editroute doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    problems = 0
    table.add_row("python", platform.python_version())
    for extra, modules in _STACKS.items():
        versions = {m: _version(m) for m in modules}
        missing = [m for m, v in versions.items() if v is None]
        status = (
            f'[red]missing {", ".join(missing)}[/] (pip install "editroute\\[{extra}]")'
            if missing
            else ", ".join(f"{m} {v}" for m, v in versions.items())
        )
        table.add_row(f"extra {extra}", status)
    if _version("torch"):
        table.add_row("accelerator", _accelerator())
    vram = _cuda_memory()
    key_set = bool(os.environ.get("OPENAI_API_KEY"))
    table.add_row(
        "OPENAI_API_KEY",
        "set (value not shown)"
        if key_set
        else "[yellow]not set[/] (API backends fail until it is, or use api_key_file)",
    )
    if not args.policy:  # with a policy: per backend, where each reads them (hosted_rows)
        for label, status in credential_rows():
            table.add_row(label, status)
    hf_home = os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface")
    table.add_row("HF cache", hf_home)
    prices = load_prices()
    oldest = min(date.fromisoformat(m.as_of) for m in prices.models.values() if m.status != "retired")
    age = (date.today() - oldest).days
    colour = "yellow" if age > PRICE_AGE_WARN_DAYS else "green"
    table.add_row("prices.yaml", f"[{colour}]oldest live model price from {oldest} ({age} days old)[/]")
    table.add_row("Firefly price", firefly_price_status(prices))
    if args.policy:
        from pipeline.errors import ConfigError
        from pipeline.routing import build_backends, load_policy

        try:
            policy = load_policy(args.policy)
            backends = build_backends(policy)  # a retired model fails here, naming its date and replacement
            table.add_row("policy", f"[green]ok[/]: backends {', '.join(policy.backends)}")
            rows, unrunnable = _backend_rows(backends, vram)
            problems += unrunnable
            for label, status in rows + _model_rows(policy) + hosted_rows(backends):
                table.add_row(label, status)
            rows, found = lifecycle_rows(backends)
            problems += found
            for label, status in rows:
                table.add_row(label, status)
            for backend in backends.values():
                getattr(backend, "close", lambda: None)()
        except ConfigError as exc:
            problems += 1
            table.add_row("policy", f"[red]{exc}[/]")
    else:
        for label, status in _backend_rows(_default_backends(), vram)[0]:  # defaults: information, not problems
            table.add_row(label, status)
    console.print(table)
    return 2 if problems else 0
