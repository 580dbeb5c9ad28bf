"""`editroute demo [--out DIR]`: the example batch end to end on a machine with no GPU and no API key.

Everything runs against local STAND-INS, and says so: a loopback fake of OpenAI's image edit API
(`backends.standins.openai_server`, realistic usage and prices, not the real service) and a tiny random-weight
SDXL inpainting pipeline (`backends.standins.tiny_sdxl`, built once into a cache folder; its outputs are noise),
and for a policy with `mask_inference:` a tiny random-weight CLIPSeg (`backends.standins.tiny_clipseg`, noise too);
for a policy naming `kind: gemini` or `kind: firefly`, loopback fakes of those services with credentials of their
own (`backends.standins.hosted_standins`).
A shipped policy is used with only its backends' connection settings pointed at the stand-ins. Each policy
gets its own folder, DIR/<policy name>/ (so `editroute demo --policy cost-first.yaml` after `editroute demo`
runs every job anew under the other policy), with the policy that ran saved as demo-policy.yaml. The API
stand-in lives only while the demo runs, so the saved file holds a placeholder for its URL and says how to
rerun it (`editroute demo --policy` the original or the saved file). Running the same demo again shows resume:
nothing is re-billed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pipeline.commands import ExitCode
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO_KEY_ENV = "EDITROUTE_DEMO_STANDIN_KEY"  # the stand-in's key lives only in this process's environment
DEMO_KEY = "sk-standin-demo-not-a-real-key"
SAVED_POLICY = "demo-policy.yaml"
# What the saved policy holds instead of the stand-in's URL (a random port, dead once the demo ends).
URL_PLACEHOLDER = "http://127.0.0.1:0/filled-in-by-editroute-demo-at-run-time/v1"
BANNER = (
    "[bold yellow]DEMO on local stand-ins[/]: a loopback fake of OpenAI's image edit API ({url}) and a tiny "
    "random-weight SDXL pipeline (outputs are noise). No key, no GPU; nothing leaves this machine."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the example batch offline against local stand-ins (no GPU, no key)")
    p.add_argument(
        "--out", default="editroute-demo", metavar="DIR", help="output folder; each policy runs in DIR/<policy name>/"
    )
    p.add_argument(
        "--policy",
        default=str(ROOT / "configs" / "policies" / "balanced.yaml"),
        help="policy to use (its backends are pointed at the stand-ins), or a demo-policy.yaml the demo saved",
    )
    p.add_argument("--manifest", default=str(ROOT / "examples" / "all.jsonl"), help="manifest to run")
    p.add_argument(
        "--sdxl-dir",
        default=None,
        help="where the tiny stand-in SDXL pipeline is built/cached (default: ~/.cache/editroute/...)",
    )
    p.add_argument("--json", action="store_true", help="print the final report as JSON")
    p.set_defaults(func=run)


def standin_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "editroute"


def read_policy(policy_path: Path) -> dict[str, Any]:
    """The policy file as a mapping, read once per command: the stand-in steps below all work on it."""
    import yaml

    data = yaml.safe_load(policy_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
        raise ConfigError(f"{policy_path}: not a policy (no `backends:` mapping)")
    return data


def standin_policy(
    policy_path: Path,
    *,
    api_url: str,
    sdxl_dir: Path | None,
    clipseg_dir: Path | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The policy with each backend's connection pointed at a stand-in (routing, budgets, rules unchanged).
    `data`: the file as `read_policy` gave it (changed in place), else it is read here."""
    data = read_policy(policy_path) if data is None else data
    for name, spec in data["backends"].items():
        kind = spec.get("kind")
        if kind in ("openai", "openai-batch"):
            spec.update(base_url=api_url, api_key_env=DEMO_KEY_ENV, max_retries=1)
            spec.pop("api_key_file", None)
            if kind == "openai-batch":  # the stand-in finishes a batch in moments: poll it as often
                spec.update(poll_interval=0.05, poll_max_interval=0.5)
        elif kind == "sdxl":
            if sdxl_dir is None:
                raise ConfigError(
                    f"backends.{name}: the demo's SDXL stand-in needs torch and diffusers: "
                    'pip install "editroute[sdxl]"'
                )
            tiny = {"steps": 2, "guidance_scale": 1.0, "strength": 0.99}
            spec.update(
                model=str(sdxl_dir),
                device="cpu",
                dtype="fp32",
                variant=None,
                offload="none",
                compile=False,
                target_megapixels=64 * 64 / 1024**2,
                feather_px=2,
                tiers={"low": tiny, "medium": tiny, "high": tiny},
                # a 64x64 call on a CPU is all per-call overhead (0.4-1.5 s), so the plan's estimate needs
                # this stand-in's own rate, not SDXL-on-a-GPU's 0.11 s per step-megapixel
                seconds_per_step_mp=100.0,
            )
            for key in ("lora", "ip_adapter", "variant"):
                spec.pop(key, None)
            for tier in spec["tiers"].values():
                tier["use_lora"] = False
            if spec.get("mask_inference") is not None:  # mask-less jobs: a tiny CLIPSeg infers the mask
                if clipseg_dir is None:
                    raise ConfigError(f"backends.{name}.mask_inference: the demo's CLIPSeg stand-in is missing")
                spec["mask_inference"] = {**spec["mask_inference"], "model": str(clipseg_dir), "device": "cpu"}
                spec["mask_inference"].pop("grounded_sam", None)  # the demo's stand-in is CLIPSeg either way
        elif kind in ("qwen-edit", "flux2-klein"):  # instruction editors: their tiny stand-ins, built once
            data["backends"][name] = _instruct_standin(name, kind, spec)
        elif kind in ("gemini", "firefly"):  # loopback fakes, started by `run` (HostedStandins)
            from backends.standins import hosted_standin_settings

            data["backends"][name] = hosted_standin_settings(kind, spec)
    if data.get("quality_file"):  # the demo's copy lives elsewhere: keep pointing at the same file
        data["quality_file"] = str((policy_path.parent / str(data["quality_file"])).resolve())
    return data


def _instruct_standin(name: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"backends.{name}: the demo's {kind} stand-in needs torch and diffusers: "
            'pip install "editroute[diffusion]"'
        ) from None
    from backends.standins import instruct_standin_settings

    return {
        "kind": kind,
        **instruct_standin_settings(kind, {k: v for k, v in spec.items() if k != "kind"}, standin_cache_dir()),
    }


def quiet_model_libraries() -> None:
    """The tiny pipeline's load bars and tokenizer warnings are noise in a demo; the report is the point."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "diffusers"):
        os.environ.setdefault(f"{name.upper()}_VERBOSITY", "error")
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="(transformers|diffusers|torch)")
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog
    except ImportError:
        return
    for lib in (dlog, tlog):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def build_sdxl_standin(folder: str | None) -> Path | None:
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return None
    from backends.standins import STANDIN_VERSION, build_tiny_sdxl

    path = Path(folder) if folder else standin_cache_dir() / f"tiny-sdxl-v{STANDIN_VERSION}"
    return build_tiny_sdxl(path)


def build_clipseg_standin(data: dict[str, Any]) -> Path | None:
    """The CLIPSeg stand-in, built (once; cached) only for a policy (`read_policy`) that infers masks."""
    if not any(isinstance(s, dict) and s.get("mask_inference") is not None for s in data["backends"].values()):
        return None
    try:
        import transformers  # noqa: F401
    except ImportError:
        return None
    from backends.standins import STANDIN_VERSION, build_tiny_clipseg

    return build_tiny_clipseg(standin_cache_dir() / f"tiny-clipseg-v{STANDIN_VERSION}")


def policy_folder(out: Path, policy_path: Path) -> Path:
    """DIR/<policy name>: a saved demo-policy.yaml reruns in the folder it was saved in."""
    if policy_path.name == SAVED_POLICY:
        return out / policy_path.resolve().parent.name
    return out / policy_path.stem


def saved_policy_text(data: dict[str, Any], source: Path) -> str:
    import yaml

    return (
        f"# {source.name} pointed at local stand-ins by `editroute demo`. The API stand-in lives only while the\n"
        f"# demo runs (its URL is filled in then): rerun with `editroute demo --policy {source}`\n"
        f"# or `editroute demo --policy <this file>`; for a real run use the original policy.\n"
        + yaml.safe_dump(data, sort_keys=False)
    )


def pointed_at(policy: Any, urls: dict[str, str]) -> Any:
    """The loaded policy with the running stand-ins' URLs in place of the placeholders (`urls`: placeholder -> URL;
    in memory only)."""

    def filled(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: urls.get(v, v) if k in ("base_url", "token_url") else v for k, v in settings.items()}

    backends = {
        name: spec.model_copy(update={"settings": filled(spec.settings)}) for name, spec in policy.backends.items()
    }
    return policy.model_copy(update={"backends": backends})


def policy_kinds(data: dict[str, Any]) -> set[str]:
    """The backend kinds a policy (`read_policy`) names (to start only the stand-ins it needs)."""
    return {str(s.get("kind")) for s in data["backends"].values() if isinstance(s, dict)}


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from backends.standins import FakeOpenAIServer, HostedStandins
    from pipeline.routing import load_policy
    from pipeline.run import NullProgress, RichProgress, build_report, check_out_dir, render, run_batch, to_json

    console = Console(stderr=args.json)
    source = Path(args.policy)
    if not source.is_file():
        raise ConfigError(f"--policy {source}: no such file")
    out = policy_folder(Path(args.out), source)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"policy {source.name}: outputs in {out}/", highlight=False)
    from pipeline.review import write_stand_in_marker

    data = read_policy(source)
    kinds = policy_kinds(data)
    fakes = ["a loopback fake of OpenAI's image edit API"] + ["a tiny random-weight SDXL"] * ("sdxl" in kinds)
    fakes += [f"a loopback fake of {k.title()}" for k in ("gemini", "firefly") if k in kinds]
    write_stand_in_marker(out, "editroute demo: " + ", ".join(fakes))
    quiet_model_libraries()
    sdxl_dir = None
    if "sdxl" in kinds:
        console.print("building the tiny stand-in SDXL pipeline (once; cached) ...", highlight=False)
        sdxl_dir = build_sdxl_standin(args.sdxl_dir)
    os.environ[DEMO_KEY_ENV] = DEMO_KEY
    with FakeOpenAIServer(api_key=DEMO_KEY) as server, HostedStandins(kinds) as hosted:
        console.print(BANNER.format(url=server.base_url), highlight=False)
        for kind, label in hosted.labels.items():
            console.print(f"[bold yellow]{kind} stand-in[/]: {label}", highlight=False)
        data = standin_policy(
            source,
            api_url=URL_PLACEHOLDER,
            sdxl_dir=sdxl_dir,
            clipseg_dir=build_clipseg_standin(data) if sdxl_dir is not None else None,
            data=data,
        )
        saved = out / SAVED_POLICY
        if not (saved.is_file() and saved.samefile(source)):  # rerunning the saved file keeps its header
            saved.write_text(saved_policy_text(data, source), encoding="utf-8")
        urls = {URL_PLACEHOLDER: server.base_url, **hosted.urls}
        policy = pointed_at(load_policy(saved), urls)  # errors name the saved file's lines
        progress = NullProgress() if args.json else RichProgress(console)
        result = run_batch(args.manifest, policy, out, progress=progress)
    from pipeline.ledger import Ledger

    with Ledger(result.ledger_path) as ledger:
        report = build_report(ledger)
    report["stand_ins"] = {
        "openai": "loopback fake of the image edit API (not the real service)",
        **({"sdxl": "tiny random-weight pipeline (outputs are noise)"} if "sdxl" in kinds else {}),
        **hosted.labels,
    }
    report["this_run"] = result.tally.as_dict()
    if args.json:
        print(to_json(report))
    else:
        t = result.tally
        console.print(
            f"this run: {t.done} done, {t.reused} already done (not billed again), {t.failed} failed", highlight=False
        )
        render(report, console)
        console.print(
            f"[yellow]costs are what the real services would bill for these calls, computed by the "
            f"stand-ins; images are noise.[/] outputs: {out}/<job id>/, report again: "
            f"editroute report {out}",
            highlight=False,
        )
    return ExitCode.OK if result.ok else ExitCode.JOBS_FAILED
